#pragma once
// One try of a request against one app server: take an idle keep-alive
// connection or open one, send the request (its head, the body read before,
// and the rest as it streams from the client), read the response head.
// What to do when it fails is not decided here but by the retry policy
// (retry_policy.hpp), which this try consults only for the one case that
// stays with the same server: a reused connection the server had closed.

#include "gateway/net.hpp"
#include "gateway/proxy/downstream.hpp"
#include "gateway/proxy/retry_policy.hpp"
#include "gateway/proxy/upstream.hpp"

#include <cstdint>
#include <optional>
#include <string_view>

namespace rampart::gateway {

struct worker_context;
class exchange_host;

struct attempt_result {
    /// What went wrong with the server; nullopt when the response head arrived.
    std::optional<attempt_failure_facts> failure;
    error_code ec;           ///< the failure's error
    retry_decision decision; ///< the policy's answer to the failure
    /// The client's request body failed while it streamed (`ec` says how):
    /// not the server's fault, the exchange answers the client.
    bool client_failed = false;
    std::uint64_t body_sent = 0; ///< request body bytes the server received
};

class proxy_attempt {
public:
    /// `body_prefix`: the request body read before the server was chosen;
    /// the rest comes from `down`. `head`: a HEAD request (no response body).
    /// `upgrade`: a 101 answer is the expected success, not a failure.
    proxy_attempt(worker_context& w, exchange_host& conn, downstream& down, std::string_view body_prefix, bool head,
                  bool upgrade)
        : w_(w), conn_(conn), down_(down), body_prefix_(body_prefix), head_(head), upgrade_(upgrade) {}

    /// Tries `server`. On success `up` holds the connection and `rp` the
    /// parsed response head; on failure both are reset.
    net::awaitable<attempt_result> run(std::size_t server, retry_policy& policy, upstream_ptr& up,
                                       std::optional<response_parser>& rp);

private:
    net::awaitable<std::pair<bool, error_code>> send(tcp_socket& socket, std::uint64_t& sent, bool& client_failed);

    worker_context& w_;
    exchange_host& conn_;
    downstream& down_;
    std::string_view body_prefix_;
    bool head_;
    bool upgrade_;
};

} // namespace rampart::gateway
