#pragma once
// What every client connection has, whatever it speaks: its deadline and the
// watchdog that enforces it, its place in the worker's connection set (for
// the drain), and its count in the shared connection limits.

#include "gateway/net.hpp"
#include "gateway/shared_state.hpp"

#include <chrono>
#include <memory>

namespace rampart::gateway {

struct worker_context;

/// What a connection is waiting for; decides the answer when its deadline passes.
enum class phase { handshake, idle, header, request_body, queue, upstream_connect, upstream_send,
                   upstream_response, response_body, tunnel };

/// A client connection let in by the accept loop: its address and the shared
/// per-client slot its connection is counted in (null when the table had no
/// room). The connection releases the count when it ends.
struct admission {
    client_address address;
    client_slot* slot = nullptr;
};

class connection_base : public std::enable_shared_from_this<connection_base> {
public:
    connection_base(worker_context& w, admission a);
    virtual ~connection_base();
    connection_base(const connection_base&) = delete;
    connection_base& operator=(const connection_base&) = delete;

    /// How long an idle keep-alive connection may still send one request
    /// once the worker drains.
    static constexpr std::chrono::milliseconds drain_grace{1000};

    /// Drain: a busy connection closes after its current response; an idle
    /// one after one more request or `drain_grace` of silence; a tunnel when
    /// the drain deadline passes (terminate).
    void drain();
    /// Drain deadline passed: abort whatever is in flight.
    void terminate();

    /// Arms the deadline for what the connection does next. Cheap: a later
    /// deadline only updates a field; the timer is re-armed when it fires.
    void set_deadline(std::chrono::steady_clock::duration d, phase p);
    /// Arms the deadline `p` has in the configuration (the queue's: `queue_budget`).
    void arm(phase p);
    /// True once if the deadline passed since the last call (and clears it).
    bool take_timeout();
    /// Counts a violation against this client (L7 -> L3 blocking).
    void violation();
    /// The upstream socket an exchange is using, cancelled with the client's
    /// when a deadline passes; null when none.
    void use_upstream(tcp_socket* s) { upstream_ = s; }
    /// The deadline of the queue phase (the pool's queue_timeout and a margin).
    void queue_budget(std::chrono::steady_clock::duration d) { queue_budget_ = d; }
    bool closing() const { return closing_; }
    worker_context& worker() { return w_; }
    const admission& admitted() const { return admission_; }

protected:
    /// Cancels every socket operation in flight (the watchdog's tool): the
    /// client's and the upstream's in use.
    virtual void cancel_io() = 0;
    void cancel_upstream();
    /// Starts the watchdog; call once from the derived class's start().
    void start_watchdog();
    /// Stops the watchdog; call when the connection ends.
    void stop_watchdog();

    worker_context& w_;
    admission admission_;
    phase phase_ = phase::handshake;
    bool idle_ = false;
    bool closing_ = false;

private:
    void wait_timer();
    void on_timer();
    net::steady_timer timer_;
    std::chrono::steady_clock::time_point deadline_;
    std::chrono::steady_clock::duration queue_budget_{};
    tcp_socket* upstream_ = nullptr;
    bool timed_out_ = false;
    bool stopped_ = false;
};

}  // namespace rampart::gateway
