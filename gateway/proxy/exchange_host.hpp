#pragma once
// What an exchange needs from whatever carries it: an HTTP/1.1 connection
// (one exchange at a time) or one HTTP/2 stream (many on one connection).
// It gives each phase of the exchange its deadline from the configuration
// and enforces it with a watchdog: when the deadline passes, everything the
// exchange is waiting on (the client's side and the upstream socket in use)
// is cancelled and take_timeout() says why. It also speaks for the client:
// its address, its violations.

#include "gateway/net.hpp"
#include "gateway/shared_state.hpp"

#include <chrono>
#include <memory>

namespace rampart::gateway {

struct worker_context;

/// What an exchange (or a connection) is waiting for; decides the answer
/// when its deadline passes.
enum class phase {
    handshake,
    idle,
    header,
    request_body,
    queue,
    upstream_connect,
    upstream_send,
    upstream_response,
    response_body,
    tunnel
};

/// A client connection let in by the accept loop: its address and the shared
/// per-client slot its connection is counted in (null when the table had no
/// room). The connection releases the count when it ends.
struct admission {
    client_address address;
    client_slot* slot = nullptr;
};

class exchange_host {
public:
    explicit exchange_host(worker_context& w);
    virtual ~exchange_host() = default;
    exchange_host(const exchange_host&) = delete;
    exchange_host& operator=(const exchange_host&) = delete;

    /// Arms the deadline for what happens next. Cheap: a later deadline only
    /// updates a field; the timer is re-armed when it fires.
    void set_deadline(std::chrono::steady_clock::duration d, phase p);
    /// Arms the deadline `p` has in the configuration (the queue's: `queue_budget`).
    void arm(phase p);
    /// True once if the deadline passed since the last call (and clears it).
    bool take_timeout();
    /// The upstream socket the exchange is using, cancelled with the client's
    /// side when a deadline passes; null when none.
    void use_upstream(tcp_socket* s) { upstream_ = s; }
    /// The deadline of the queue phase (the pool's queue_timeout and a margin).
    void queue_budget(std::chrono::steady_clock::duration d) { queue_budget_ = d; }
    worker_context& worker() { return w_; }

    /// Counts a violation against the client (L7 -> L3 blocking).
    virtual void violation() = 0;
    /// The client's address and its shared slot.
    virtual const admission& admitted() const = 0;
    /// True once what carries the exchange is being torn down: waits give up.
    virtual bool closing() const = 0;

protected:
    /// What the watchdog does when the deadline passes: cancel every
    /// operation the exchange (or connection) has in flight.
    virtual void cancel_io() = 0;
    void cancel_upstream();
    /// Starts the watchdog; `self` (this object) is kept alive until stop_watchdog().
    void start_watchdog(std::shared_ptr<exchange_host> self);
    void stop_watchdog();
    phase current_phase() const { return phase_; }

    worker_context& w_;

private:
    void wait_timer(std::shared_ptr<exchange_host> self);
    void on_timer(std::shared_ptr<exchange_host> self);

    net::steady_timer timer_;
    std::chrono::steady_clock::time_point deadline_;
    std::chrono::steady_clock::duration queue_budget_{};
    tcp_socket* upstream_ = nullptr;
    phase phase_ = phase::handshake;
    bool timed_out_ = false;
    bool stopped_ = false;
};

} // namespace rampart::gateway
