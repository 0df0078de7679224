#pragma once
// Reading an HTTP/1.1 request head so that the raw-byte checks see exactly
// what arrived before anything acts on the parsed head.

#include "gateway/net.hpp"
#include "gateway/proxy/http_rules.hpp"

#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http/error.hpp>

#include <optional>

namespace rampart::gateway {

/// A request head read from a client. `ec`: reading failed (map it with
/// head_error_status). `rejected`: the bytes arrived but break a rule of
/// check_raw_header or of Beast's parser; answer its status and close.
struct header_read {
    error_code ec;
    std::optional<rejection> rejected;
};

// Reads a request head through `p`, like http::async_read_header, but the
// bytes stay in `buffer` until the head is complete, so that
// check_raw_header sees exactly what arrived before anything acts on the
// parsed head; then they are consumed. Beast may take the request line and
// the fields in separate put() calls: `used` counts what it took. A head that
// Beast refuses is checked as far as it arrived, for a better status (505 for
// an unsupported version) and reason. Each pass reads at least one byte into
// a buffer bounded by its max_size (full: buffer_overflow), and the caller's
// header deadline bounds the time.
template <class Stream, class Parser>
net::awaitable<header_read> read_request_header(Stream& stream, beast::flat_buffer& buffer, Parser& p) {
    std::size_t used = 0;
    for (;;) {
        if (buffer.size() > used) {
            const char* data = static_cast<const char*>(buffer.data().data());
            error_code ec;
            used += p.put(net::const_buffer(data + used, buffer.size() - used), ec);
            if (!ec && p.is_header_done()) {
                auto rejected = check_raw_header(std::string_view(data, used));
                buffer.consume(used);
                co_return header_read{{}, std::move(rejected)};
            }
            if (ec && ec != http::error::need_more) {
                if (ec == http::error::header_limit || ec == http::error::body_limit) {
                    co_return header_read{ec, std::nullopt}; // 431, 413: not a malformed request
                }
                auto rejected = check_raw_header(std::string_view(data, buffer.size()));
                if (!rejected) {
                    rejected = rejection{http::status::bad_request, ec.message()};
                }
                co_return header_read{{}, std::move(rejected)};
            }
        }
        const std::size_t room = beast::read_size(buffer, 65536);
        if (room == 0) {
            co_return header_read{http::error::buffer_overflow, std::nullopt};
        }
        auto [ec, n] = co_await stream.async_read_some(buffer.prepare(room), use_tuple);
        if (ec) {
            if (ec == net::error::eof) {
                ec = buffer.size() > 0 ? http::error::partial_message : http::error::end_of_stream;
            }
            co_return header_read{ec, std::nullopt};
        }
        buffer.commit(n);
    }
}

} // namespace rampart::gateway
