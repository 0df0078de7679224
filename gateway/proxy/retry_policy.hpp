#pragma once
// What to do after an attempt against one upstream server failed: send the
// request again on a new connection to the same server (a kept-alive
// connection had gone stale), try another server of the pool, answer the
// client with a status, or cut the client connection. Sans-I/O: the proxy
// attempt reports what happened, the policy decides from that, the request
// (idempotent? whole in memory?), the retries left and whether the worker
// drains. Its unit tests (tests/unit/gateway/retry_policy_test.cpp) hold the
// whole decision table.

#include <ostream> // boost/core/detail/string_view.hpp (Boost 1.81) uses it without including it

#include <boost/beast/http/status.hpp>
#include <boost/beast/http/verb.hpp>

namespace rampart::gateway {

/// Where an attempt failed.
enum class attempt_stage {
    connect,       ///< no connection: nothing of the request was sent
    send,          ///< writing the request (head or body) failed
    response_head, ///< no final response head: an error, a timeout, a 101 or endless 1xx
    response_body, ///< the response body failed after its head arrived
};

struct attempt_failure_facts {
    attempt_stage stage = attempt_stage::connect;
    bool timed_out = false;
    bool reused_connection = false; ///< a kept-alive connection taken from the idle pool
    bool peer_closed = false;       ///< the server closed (EOF, reset), not some other error
    bool response_started = false;  ///< part of the response reached the client (response_body)
};

enum class retry_action {
    resend_new_connection, ///< the same server again, on a new connection
    retry_elsewhere,       ///< another server of the pool
    answer,                ///< answer the client with `status`, then close
    abort,                 ///< cut the client connection: part of the response reached it
};

struct retry_decision {
    retry_action action = retry_action::answer;
    boost::beast::http::status status = boost::beast::http::status::bad_gateway;
};

/// GET, HEAD, OPTIONS, TRACE, PUT and DELETE (RFC 9110 9.2.2).
bool is_idempotent(boost::beast::http::verb v);

/// One request's retry state: the attempts it may still make, the stale
/// connection it may still replace, the status it would answer.
class retry_policy {
public:
    /// `replayable`: the whole request is in memory (it can be sent again);
    /// `retries`: the pool's extra attempts on other servers.
    retry_policy(bool idempotent, bool replayable, unsigned retries)
        : idempotent_(idempotent), replayable_(replayable), attempts_left_(1 + retries) {}

    /// A server was chosen for the next attempt.
    void on_server_chosen() {
        if (attempts_left_ > 0) {
            --attempts_left_;
        }
        stale_resend_used_ = false;
    }

    /// The request may be sent again whole: a kept-alive connection need not
    /// be checked for liveness before it is used.
    bool resendable() const { return idempotent_ && replayable_; }
    /// Whether the stale-connection resend of the current server was used
    /// (the next connection to it must then be a checked or a new one).
    bool stale_resend_used() const { return stale_resend_used_; }

    /// The attempt failed: what now. `draining`: the worker is stopping
    /// (no new attempts).
    retry_decision on_failure(const attempt_failure_facts& f, bool draining);

    /// No server could be chosen: 503, or what the last failure was.
    boost::beast::http::status no_server_status() const { return last_status_; }
    unsigned attempts_left() const { return attempts_left_; }

private:
    bool idempotent_;
    bool replayable_;
    unsigned attempts_left_;
    bool stale_resend_used_ = false;
    boost::beast::http::status last_status_ = boost::beast::http::status::service_unavailable;
};

} // namespace rampart::gateway
