#include "gateway/proxy/exchange_host.hpp"

#include "gateway/proxy/worker.hpp"

namespace rampart::gateway {

using clock = std::chrono::steady_clock;

exchange_host::exchange_host(worker_context& w) : w_(w), timer_(w.io) {
    timer_.expires_at(clock::time_point::max());
}

void exchange_host::set_deadline(clock::duration d, phase p) {
    phase_ = p;
    deadline_ = clock::now() + d;
    if (deadline_ < timer_.expiry()) {
        timer_.expires_at(deadline_); // wakes the watchdog, which waits again
    }
}

void exchange_host::arm(phase p) {
    const auto& t = w_.cfg->gw.timeouts_settings;
    clock::duration d = t.body;
    switch (p) {
    case phase::handshake:
        d = t.handshake;
        break;
    case phase::idle:
        d = t.idle;
        break;
    case phase::header:
        d = t.header;
        break;
    case phase::upstream_connect:
        d = t.upstream_connect;
        break;
    case phase::queue:
        d = queue_budget_;
        break;
    case phase::upstream_response:
        d = t.upstream_response;
        break;
    case phase::tunnel:
        d = t.tunnel;
        break;
    case phase::request_body:
    case phase::upstream_send:
    case phase::response_body:
        d = t.body;
        break;
    }
    set_deadline(d, p);
}

bool exchange_host::take_timeout() {
    bool t = timed_out_;
    timed_out_ = false;
    return t;
}

void exchange_host::cancel_upstream() {
    if (upstream_ != nullptr) {
        error_code ec;
        upstream_->cancel(ec);
    }
}

void exchange_host::start_watchdog(std::shared_ptr<exchange_host> self) {
    wait_timer(std::move(self));
}

void exchange_host::stop_watchdog() {
    stopped_ = true;
    timer_.cancel();
}

// One timer, armed for the earliest deadline it has seen. Moving a deadline
// later (the common case: each phase gets a fresh budget) costs no timer
// operation: when the timer fires early the watchdog just re-arms it. A
// plain handler rather than a coroutine: an idle connection then holds one
// small pending operation instead of a coroutine frame. The handler owns a
// reference to its owner, released when the watchdog stops.
void exchange_host::wait_timer(std::shared_ptr<exchange_host> self) {
    timer_.async_wait([self = std::move(self)](const error_code&) mutable {
        auto* p = self.get();
        p->on_timer(std::move(self));
    });
}

void exchange_host::on_timer(std::shared_ptr<exchange_host> self) {
    if (stopped_) {
        return;
    }
    auto now = clock::now();
    if (deadline_ <= now) {
        timed_out_ = true;
        timer_.expires_at(clock::time_point::max());
        cancel_io();
    } else if (timer_.expiry() <= now) {
        timer_.expires_at(deadline_);
    }
    wait_timer(std::move(self));
}

} // namespace rampart::gateway
