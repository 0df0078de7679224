#pragma once
// HTTP/2 to clients, on a TLS connection whose handshake chose h2 in ALPN.
//
// The framing is nghttp2's, driven sans-I/O: bytes read from the TLS stream
// go in through nghttp2_session_mem_recv, bytes to send come out of
// nghttp2_session_mem_send; socket I/O, deadlines and TLS stay Rampart's.
// Each stream is one exchange (routes, static files, pools, retries,
// limits, access log) whose downstream is the stream: the request head
// mapped to HTTP/1.1 (app servers stay HTTP/1.1), the request body read as
// DATA arrives with the flow-control window opened only as the exchange
// consumes it (the upstream's pace), the response sent as the client's
// window allows.
//
// The connection counts what a client does that only costs the server
// (resets, pings, SETTINGS, empty DATA, WINDOW_UPDATE, oversized or endless
// header blocks, a window that never opens) and ends an abusive connection
// with GOAWAY ENHANCE_YOUR_CALM and one violation of the client.

#include "gateway/net.hpp"
#include "gateway/proxy/connection_base.hpp"
#include "gateway/proxy/exchange.hpp"
#include "gateway/proxy/tls_socket.hpp"

#include <memory>

namespace rampart::gateway {

class h2_session;

/// What an h2 connection is closed for; the index of worker_counters::h2_abuse.
enum class h2_abuse : unsigned {
    rapid_reset,        ///< streams reset by the client faster than max_concurrent_streams a second
    continuation_flood, ///< a header block in too many frames or too many bytes
    hpack_bomb,         ///< a header block that decodes to far more than limits.header_bytes
    ping_flood,
    settings_flood,
    empty_data_flood, ///< DATA frames without a byte and without END_STREAM
    window_update_flood,
    zero_window,      ///< a response stalled on a window the client never opens
    too_many_streams, ///< streams beyond max_concurrent_streams
    protocol_error,   ///< a connection error found by the framing layer
    count
};
constexpr std::size_t h2_abuse_kinds = static_cast<std::size_t>(h2_abuse::count);
static_assert(h2_abuse_kinds == h2_abuse_counters, "worker_counters::h2_abuse has one counter per kind");
/// Names for logs and metrics, indexed by h2_abuse.
const char* to_string(h2_abuse a);

/// Serves HTTP/2 on `stream` for `conn` until the client leaves, the worker
/// drains or the connection is closed for abuse. True: ended gracefully
/// (GOAWAY sent; close_notify may follow).
class h2_connection {
public:
    h2_connection(connection_base& conn, tls_socket& stream, const connection_facts& facts);
    ~h2_connection();
    h2_connection(const h2_connection&) = delete;
    h2_connection& operator=(const h2_connection&) = delete;

    net::awaitable<bool> run();
    /// The worker drains: GOAWAY now, streams in flight finish.
    void drain();

private:
    std::shared_ptr<h2_session> session_;
};

} // namespace rampart::gateway
