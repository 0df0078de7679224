#pragma once
// One HTTP/1.1 message on the wire, written by Rampart rather than by Beast's
// serializer: the head is laid out once into one contiguous buffer and goes
// out with the first body piece, and chunked framing is a size line before
// and a CRLF after each piece.
//
// Why not http::serializer: it hands the stream a buffers_cat_view of about
// four buffers per header field, walked by a variant iterator on every
// write. That iterator and the per-field iovecs of the resulting sendmsg cost
// more per small proxied request than the rest of the serialisation. Here a
// piece is at most three buffers: [head and/or chunk size line] [data]
// [chunk CRLF and/or last chunk]. Over TLS, tls_socket gathers them into one
// SSL_write, so a small response is one TLS record.
//
// What Beast's serializer would write, byte for byte (the unit tests compare
// the two): the start line with Beast's reason phrase when the message has
// none, the fields in their order, "0\r\n\r\n" as the last chunk and no
// trailer.

#include <array>
#include <cstddef>
#include <string>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/message.hpp>

namespace rampart::gateway {

class http1_writer {
public:
    /// Lays out a head; it is written with the next piece. `chunked`: the
    /// body gets chunk framing (the head says Transfer-Encoding: chunked).
    void start(const boost::beast::http::request_header<>& head, bool chunked);
    void start(const boost::beast::http::response_header<>& head, bool chunked);

    /// The buffers of one piece of the body (empty `data`: none), after the
    /// head if it is still pending; `last` ends the body (the last chunk).
    /// Valid until the next call.
    std::array<boost::asio::const_buffer, 3> piece(boost::asio::const_buffer data, bool last);

    bool head_pending() const { return head_pending_; }
    bool chunked() const { return chunked_; }

private:
    void begin(bool chunked);
    void append_fields(const boost::beast::http::fields& fields);

    std::string prefix_; ///< the head and/or a chunk size line; keeps its capacity between pieces
    bool head_pending_ = false;
    bool chunked_ = false;
};

/// The head alone, as text (the writer's layout): for tests and logs.
std::string head_text(const boost::beast::http::request_header<>& head);
std::string head_text(const boost::beast::http::response_header<>& head);

} // namespace rampart::gateway
