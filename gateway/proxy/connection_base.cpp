#include "gateway/proxy/connection_base.hpp"

#include "gateway/proxy/worker.hpp"

namespace rampart::gateway {

using clock = std::chrono::steady_clock;

connection_base::connection_base(worker_context& w, admission a) : w_(w), admission_(a), timer_(w.io) {
    timer_.expires_at(clock::time_point::max());
    w_.connections.insert(this);
    w_.counters.connections_total.fetch_add(1, std::memory_order_relaxed);
    w_.counters.connections_active.fetch_add(1, std::memory_order_relaxed);
    w_.shared.connections_open.fetch_add(1, std::memory_order_relaxed);
    if (admission_.slot != nullptr) {
        admission_.slot->connections.fetch_add(1, std::memory_order_relaxed);
    }
}

connection_base::~connection_base() {
    w_.connections.erase(this);
    w_.counters.connections_active.fetch_sub(1, std::memory_order_relaxed);
    w_.shared.connections_open.fetch_sub(1, std::memory_order_relaxed);
    if (admission_.slot != nullptr) {
        admission_.slot->connections.fetch_sub(1, std::memory_order_relaxed);
    }
}

void connection_base::violation() {
    w_.shared.abuse_violations.fetch_add(1, std::memory_order_relaxed);
    if (admission_.slot != nullptr) {
        admission_.slot->violations.fetch_add(1, std::memory_order_relaxed);
    }
}

// An idle keep-alive connection is not closed at once: a client may have a
// request on the wire already, and closing under it would fail that
// request. It gets a short grace to send one more, answered with
// Connection: close; one that stays quiet is closed when the grace ends.
void connection_base::drain() {
    if (idle_) {
        set_deadline(drain_grace, phase::idle);
    }
}

void connection_base::terminate() {
    closing_ = true;
    cancel_io();
}

void connection_base::set_deadline(clock::duration d, phase p) {
    phase_ = p;
    deadline_ = clock::now() + d;
    if (deadline_ < timer_.expiry()) {
        timer_.expires_at(deadline_);  // wakes the watchdog, which waits again
    }
}

void connection_base::arm(phase p) {
    const auto& t = w_.cfg->gw.timeouts_settings;
    clock::duration d = t.body;
    switch (p) {
    case phase::handshake: d = t.handshake; break;
    case phase::idle: d = t.idle; break;
    case phase::header: d = t.header; break;
    case phase::upstream_connect: d = t.upstream_connect; break;
    case phase::queue: d = queue_budget_; break;
    case phase::upstream_response: d = t.upstream_response; break;
    case phase::tunnel: d = t.tunnel; break;
    case phase::request_body:
    case phase::upstream_send:
    case phase::response_body: d = t.body; break;
    }
    set_deadline(d, p);
}

bool connection_base::take_timeout() {
    bool t = timed_out_;
    timed_out_ = false;
    return t;
}

void connection_base::cancel_upstream() {
    if (upstream_ != nullptr) {
        error_code ec;
        upstream_->cancel(ec);
    }
}

void connection_base::start_watchdog() { wait_timer(); }

void connection_base::stop_watchdog() {
    stopped_ = true;
    timer_.cancel();
}

// One timer per connection, armed for the earliest deadline it has seen.
// Moving a deadline later (the common case: each phase gets a fresh budget)
// costs no timer operation: when the timer fires early the watchdog just
// re-arms it. A plain handler rather than a coroutine: an idle connection
// then holds one small pending operation instead of a coroutine frame. The
// handler owns a reference to the connection, released when the watchdog stops.
void connection_base::wait_timer() {
    timer_.async_wait([self = shared_from_this()](const error_code&) { self->on_timer(); });
}

void connection_base::on_timer() {
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
    wait_timer();
}

}  // namespace rampart::gateway
