#pragma once
// One request and its response, whatever connection carries it: the path in
// normal form, the route, the rate limit, then the route's action (a pool of
// app servers with retries, a static file, a redirect), the response's
// headers, a tunnel after an upgrade, and the access log line.
//
// The exchange talks to the client only through its `downstream` (the
// connection's view of one request), so HTTP/1.1 framing, keep-alive and
// TLS stay in the connection layer, and an HTTP/2 stream can be served by
// the same code.

#include "config/config.hpp"
#include "gateway/net.hpp"
#include "gateway/proxy/compression.hpp"
#include "gateway/proxy/downstream.hpp"
#include "gateway/proxy/http_rules.hpp"
#include "gateway/proxy/retry_policy.hpp"
#include "gateway/proxy/upstream.hpp"
#include "gateway/server_health.hpp"
#include "gateway/shared_state.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace rampart::gateway {

struct worker_context;
class exchange_host;
class upstream_pool;

/// How the client connection was set up, for the access log.
struct connection_facts {
    client_info client;
    const char* tls_version = nullptr; ///< static strings from OpenSSL; null on plain HTTP
    const char* cipher = nullptr;
    bool resumed = false;
};

/// How an exchange ended for its connection: `done` (the response went out
/// whole; the connection's framing decides whether it stays open), `tunnel`
/// (an upgraded connection ran and ended: close) or `abort` (cut the
/// connection without another byte).
enum class exchange_end { done, tunnel, abort };

class exchange {
public:
    exchange(worker_context& w, exchange_host& conn, downstream& down, const connection_facts& facts);
    exchange(const exchange&) = delete;
    exchange& operator=(const exchange&) = delete;

    /// Serves a request whose head was read and passed the connection's checks.
    net::awaitable<exchange_end> serve();
    /// Answers a request the connection refused (framing, limits, timeouts):
    /// counted as rejected and as a violation of the client, then closed.
    /// `head_read`: its head was complete (it gets an access log line).
    net::awaitable<exchange_end> refuse(http::status status, bool head_read);
    /// A request body that failed mid-way (`ec` from downstream::read_body):
    /// its status from error_status, or abort when the client left.
    net::awaitable<exchange_end> body_failed(const error_code& ec);
    /// The access log line and latency histograms; call last, with the head
    /// as far as it was read.
    void finish(const http::request_header<>& h);

private:
    net::awaitable<exchange_end> serve_pool(std::size_t pool_index, bool upgrade);
    net::awaitable<exchange_end> serve_static();
    net::awaitable<exchange_end> send_file(http::response<http::buffer_body>& res, int fd, std::uint64_t offset,
                                           std::uint64_t length);
    net::awaitable<exchange_end> relay_response(upstream_pool& pool, retry_policy& policy, bool& retry);
    net::awaitable<exchange_end> run_tunnel();
    net::awaitable<exchange_end> reply(http::status status, bool close, std::string_view retry_after = {},
                                       std::string_view location = {});
    net::awaitable<exchange_end> send(http::response<http::string_body>& res, bool close);
    net::awaitable<exchange_end> reject(http::status status);
    net::awaitable<std::optional<exchange_end>> check_access(http::fields& f);
    net::awaitable<exchange_end> maintenance();
    void start_encoding(http::response_header<>& res);
    net::awaitable<error_code> emit(http::response<http::buffer_body>& res, net::const_buffer piece, bool last,
                                    bool length_unknown, bool bulk = false);
    std::optional<std::uint64_t> affinity_key(const http::fields& f, const config::hash_key& k) const;
    static std::string sticky_set_cookie(const config::sticky& st, std::string_view value);
    bool within_rate(std::size_t pool, const config::rate& r);
    /// From a trusted proxy: the client it forwards for (X-Forwarded-For)
    /// becomes this request's client.
    void take_forwarded_client(const http::fields& f);
    /// Counts a violation against this request's client.
    void violation();
    void record_failure(server_health& s, std::size_t server, const config::pool& pc);
    void count_status(unsigned status);
    const std::string& request_id();

    worker_context& w_;
    exchange_host& conn_;
    downstream& down_;
    const connection_facts& facts_;
    /// This request's client: the connection's (facts_.client), or whom a
    /// trusted proxy forwards for, kept in `forwarded_client_` (then
    /// `forwarded_` holds its address and `client_slot_` its entry in the
    /// client table). A pointer, so the usual request copies nothing.
    const client_info* client_;
    client_info forwarded_client_;
    std::optional<client_address> forwarded_;
    const client_slot* client_slot_ = nullptr;
    const config::route* route_ = nullptr; ///< null without routes
    bool head_request_ = false;
    std::string body_prefix_; ///< the request body read before a server was chosen
    upstream_ptr up_;
    std::optional<response_parser> rp_;

    // The request, as the access log will record it.
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    std::chrono::system_clock::time_point wall_ = std::chrono::system_clock::now();
    bool head_read_ = false;
    unsigned status_ = 0; ///< of the response started; 0: none
    std::uint64_t bytes_sent_ = 0;
    std::uint64_t bytes_received_ = 0;
    std::optional<std::size_t> upstream_; ///< index in snapshot::servers of the last server tried
    std::optional<std::chrono::steady_clock::duration> upstream_time_;
    unsigned retries_ = 0;
    std::string request_id_;
    std::string auth_user_;               ///< the basic_auth user the request was let in as; "" none
    std::string sticky_cookie_;           ///< Set-Cookie for the chosen member; "" when the client's cookie named it
    std::optional<body_encoder> encoder_; ///< set while the response is compressed
    std::string encoded_;                 ///< the encoder's output for the piece being written
};

} // namespace rampart::gateway
