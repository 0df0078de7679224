#pragma once
// The client side of one exchange, as the connection that carries it sees
// it: the request's body to read, the response to write. An exchange knows
// nothing of HTTP/1.1 framing (chunked coding, Connection, keep-alive,
// 100 Continue on the wire): the connection under it does. An HTTP/1.1
// connection is one downstream per request in turn; an HTTP/2 connection
// would be one per stream.

#include "gateway/net.hpp"

#include <cstdint>
#include <optional>

namespace rampart::gateway {

/// Size of the pieces a body is relayed in, either way.
constexpr std::size_t relay_chunk = 64 * 1024;

struct body_read {
    error_code ec;
    std::size_t bytes = 0; ///< body bytes placed at the front of the buffer
};

enum class tunnel_end { client_closed, upstream_closed, idle_timeout, failed };

struct tunnel_result {
    tunnel_end end = tunnel_end::failed;
    std::uint64_t client_to_upstream = 0;
    std::uint64_t upstream_to_client = 0;
};

class downstream {
public:
    virtual ~downstream() = default;

    // ------------------------------------------------------------- request
    /// The request head, as read and checked by the connection.
    virtual http::request<http::buffer_body>& request() = 0;
    /// True when the whole request body has been read (or there is none).
    virtual bool request_done() const = 0;
    /// Body bytes still to come when the length is known.
    virtual std::optional<std::uint64_t> request_remaining() const = 0;
    /// Reads body bytes into `into` (decoded: no chunk framing); at most its
    /// size, at least one unless the body is done. Trailers are dropped.
    virtual net::awaitable<body_read> read_body(net::mutable_buffer into) = 0;

    // ------------------------------------------------------------ response
    /// An interim 100 Continue, for a client that sent Expect: 100-continue.
    virtual net::awaitable<error_code> write_continue() = 0;
    /// A whole response made by the gateway itself (errors, redirects).
    /// `close`: the connection ends after it.
    virtual net::awaitable<error_code> write_response(http::response<http::string_body>& res, bool close) = 0;
    /// Starts a response whose body follows in pieces: the head, with the
    /// first piece of the body when there is one (`last`: it is the whole
    /// body). `length_unknown`: the body has neither Content-Length nor
    /// chunked coding and ends when its source closes.
    virtual net::awaitable<error_code> write_head(http::response<http::buffer_body>& res, net::const_buffer body,
                                                  bool last, bool length_unknown) = 0;
    /// The next piece of the body started by write_head.
    virtual net::awaitable<error_code> write_body(net::const_buffer body, bool last) = 0;
    /// True once write_head's head went out (a failure after it can only cut
    /// the connection).
    virtual bool head_written() const = 0;
    /// After a 101 response went out (write_head): bytes both ways between the
    /// client and `up` until either side closes, `up_buffer` holding bytes the
    /// upstream already sent.
    virtual net::awaitable<tunnel_result> tunnel(tcp_socket& up, beast::flat_buffer& up_buffer) = 0;
    /// Whether this downstream can carry a tunnel (HTTP/1.1 can).
    virtual bool can_tunnel() const = 0;
    /// The client's protocol version as Beast numbers it (10, 11; 20 for HTTP/2).
    virtual unsigned version() const = 0;
    /// Whether the connection stays open after this response.
    virtual bool keep_alive() const = 0;
};

} // namespace rampart::gateway
