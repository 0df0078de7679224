#include "gateway/proxy/connection_base.hpp"

#include "gateway/proxy/worker.hpp"

namespace rampart::gateway {

connection_base::connection_base(worker_context& w, admission a) : exchange_host(w), admission_(a) {
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

} // namespace rampart::gateway
