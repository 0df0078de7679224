#pragma once
// Client connections. A session is one accepted connection served by one
// coroutine on its worker's io_context, with a watchdog that enforces the
// deadline of whatever the session is currently waiting for.

#include "gateway/net.hpp"
#include "gateway/shared_state.hpp"

#include <chrono>
#include <memory>

namespace rampart::gateway {

struct worker_context;

/// What the session is waiting for; decides the answer when its deadline passes.
enum class phase { handshake, idle, header, request_body, queue, upstream_connect, upstream_send,
                   upstream_response, response_body };

/// A client connection let in by the accept loop: its address and the shared
/// per-client slot its connection is counted in (null when the table had no
/// room). The session releases the count when it ends.
struct admission {
    client_address address;
    client_slot* slot = nullptr;
};

/// Common part of every client session: deadline, watchdog, registration in
/// the worker's session set (for drain).
class session_base : public std::enable_shared_from_this<session_base> {
public:
    session_base(worker_context& w, admission a);
    virtual ~session_base();
    session_base(const session_base&) = delete;
    session_base& operator=(const session_base&) = delete;

    /// How long an idle keep-alive connection may still send one request
    /// once the worker drains.
    static constexpr std::chrono::milliseconds drain_grace{1000};

    /// Drain: a busy session closes after its current response; an idle one
    /// after one more request or `drain_grace` of silence.
    void drain();
    /// Drain deadline passed: abort whatever is in flight.
    void terminate();

protected:
    /// Arms the deadline for what the session does next. Cheap: a later
    /// deadline only updates a field; the timer is re-armed when it fires.
    void set_deadline(std::chrono::steady_clock::duration d, phase p);
    /// True once if the deadline passed since the last call (and clears it).
    bool take_timeout();
    /// Cancels every socket operation in flight (the watchdog's tool).
    virtual void cancel_io() = 0;
    /// Starts the watchdog; call once from the derived class's start().
    void start_watchdog();
    /// Stops the watchdog; call when the session ends.
    void stop_watchdog();

    /// Counts a violation against this client (L7 -> L3 blocking).
    void violation();

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
    bool timed_out_ = false;
    bool stopped_ = false;
};

/// Serves an HTTPS client connection: handshake, then requests proxied to the
/// default pool, until the client closes, a deadline passes or the worker drains.
void start_tls_session(worker_context& w, tcp_socket socket, admission a);
/// Serves a plain HTTP client connection: every request gets 301 to https.
void start_redirect_session(worker_context& w, tcp_socket socket, admission a);

}  // namespace rampart::gateway
