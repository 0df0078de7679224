#pragma once
// The HTTP/1.1 client connection: framing and keep-alive over any stream
// (TLS in production, Beast's in-memory test stream in unit tests). It turns
// bytes into requests, hands each to an exchange as that exchange's
// downstream, and turns the exchange's response back into bytes: chunked
// coding, Connection, 100 Continue, the tunnel after a 101. Per-phase
// deadlines come from connection_base.
//
// An idle keep-alive connection holds only this object, the stream and an
// empty read buffer: the parser, the writer and the exchange live in the
// frame of serve_one, which exists only while a request is served.

#include "gateway/log.hpp"
#include "gateway/proxy/connection_base.hpp"
#include "gateway/proxy/downstream.hpp"
#include "gateway/proxy/error_status.hpp"
#include "gateway/proxy/exchange.hpp"
#include "gateway/proxy/http1_writer.hpp"
#include "gateway/proxy/http_rules.hpp"
#include "gateway/proxy/request_head.hpp"
#include "gateway/proxy/tls_socket.hpp"
#include "gateway/proxy/worker.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <algorithm>
#include <cstring>
#include <optional>
#include <tuple>
#include <type_traits>

namespace rampart::gateway {

/// Stream-specific steps of the connection; the generic versions suit
/// Beast's test stream.
template <class Stream> struct stream_ops {
    static void cancel(Stream& s) { s.close(); }
    /// The write side is done.
    static void shutdown_send(Stream&) {}
    static constexpr bool can_tunnel = false;
};

template <> struct stream_ops<tls_socket> {
    static void cancel(tls_socket& s) {
        error_code ec;
        s.next_layer().cancel(ec);
    }
    /// close_notify, then FIN.
    static void shutdown_send(tls_socket& s) {
        s.shutdown();
        error_code ec;
        s.next_layer().shutdown(tcp::socket::shutdown_send, ec);
    }
    static constexpr bool can_tunnel = true;
};

template <class Stream> class http1_connection : public connection_base, public downstream {
public:
    /// `stream_args`: what the stream is constructed from.
    template <class... StreamArgs>
    http1_connection(worker_context& w, admission a, connection_facts facts, StreamArgs&&... stream_args)
        : connection_base(w, a), stream_(std::forward<StreamArgs>(stream_args)...), facts_(std::move(facts)) {
        buffer_.max_size(w.cfg->gw.limits_settings.header_bytes + relay_chunk);
    }

    Stream& stream() { return stream_; }

    enum class outcome { keep_alive, close, abort };

    /// Serves requests until the client closes, a deadline passes, the worker
    /// drains or a request cannot be answered. True: end gracefully (the
    /// last response is complete); false: cut the connection.
    net::awaitable<bool> serve_requests() {
        while (!closing_) {
            if (buffer_.size() == 0) {
                // Wait for the next request under the idle deadline, here
                // rather than in serve_one: a coroutine frame holds all of its
                // function's locals, and an idle keep-alive connection should
                // keep neither a read buffer nor serve_one's parser and
                // writer. The header deadline starts once bytes arrive.
                buffer_.shrink_to_fit();
                idle_ = true;
                if (w_.draining) {
                    set_deadline(drain_grace, phase::idle);
                } else {
                    arm(phase::idle);
                }
                error_code wait_ec;
                if constexpr (std::is_same_v<Stream, tls_socket>) {
                    // What a read left unsent (an alert, a key update) goes
                    // first: the client may be waiting for it.
                    if (stream_.has_unsent()) {
                        wait_ec = co_await stream_.flush();
                    }
                    // Readiness only: no read buffer while the client is quiet.
                    if (!wait_ec && !stream_.has_buffered()) {
                        std::tie(wait_ec) = co_await stream_.next_layer().async_wait(tcp::socket::wait_read);
                    }
                }
                idle_ = false;
                const bool quiet = take_timeout();
                if (wait_ec || closing_) {
                    // Closed by the drain (its grace ended, or its deadline
                    // passed): say goodbye properly (close_notify).
                    co_return closing_ || (quiet && w_.draining);
                }
            }
            const outcome next = co_await serve_one();
            if (next != outcome::keep_alive) {
                co_return next == outcome::close;
            }
        }
        co_return true;
    }

    // ------------------------------------------------------------ downstream
    http::request<http::buffer_body>& request() override { return rs_->parser.get(); }

    bool request_done() const override { return rs_->identity ? rs_->remaining == 0 : rs_->parser.is_done(); }

    std::optional<std::uint64_t> request_remaining() const override {
        if (rs_->identity) {
            return rs_->remaining;
        }
        if (auto n = rs_->parser.content_length_remaining()) {
            return *n;
        }
        return std::nullopt;
    }

    net::awaitable<body_read> read_body(net::mutable_buffer into) override {
        request_state& rs = *rs_;
        if (rs.identity) {
            // A body of known length needs no parser: it is taken from the
            // read buffer (what arrived with the head), then from the stream,
            // never beyond its end (what follows is the next request).
            const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(into.size(), rs.remaining));
            if (want == 0) {
                co_return body_read{};
            }
            std::size_t n = 0;
            if (buffer_.size() > 0) {
                n = net::buffer_copy(net::buffer(into.data(), want), buffer_.data());
                buffer_.consume(n);
            } else {
                auto [ec, got] = co_await stream_.async_read_some(net::buffer(into.data(), want), use_tuple);
                if (ec) {
                    co_return body_read{ec == net::error::eof ? error_code(http::error::partial_message) : ec, 0};
                }
                n = got;
            }
            rs.remaining -= n;
            co_return body_read{{}, n};
        }
        // Chunked: the parser decodes it. Beast reads into the buffer as
        // much as its free capacity allows, then copies into the body:
        // room made here saves header-sized reads.
        buffer_.reserve(std::min<std::size_t>(relay_chunk, buffer_.max_size()));
        auto& body = rs.parser.get().body();
        body.data = into.data();
        body.size = into.size();
        auto [ec, n] = co_await http::async_read(stream_, buffer_, rs.parser, use_tuple);
        const std::size_t got = into.size() - body.size;
        body.data = nullptr;
        body.size = 0;
        if (ec && ec != http::error::need_buffer) {
            co_return body_read{ec, 0};
        }
        if (rs.parser.is_done()) {
            // Trailers were merged into the head: they go nowhere.
            drop_trailers(rs.parser.get().base(), rs.header_fields);
        }
        co_return body_read{{}, got};
    }

    net::awaitable<error_code> write_continue() override {
        static constexpr char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
        auto [ec, n] = co_await net::async_write(stream_, net::buffer(line, sizeof line - 1), use_tuple);
        co_return ec;
    }

    net::awaitable<error_code> write_response(http::response<http::string_body>& res, bool close) override {
        if (close || !keeps_alive()) {
            rs_->keep_alive = false;
            res.keep_alive(false);
        }
        rs_->head_written = true;
        auto [ec, n] = co_await http::async_write(stream_, res, use_tuple);
        co_return ec;
    }

    net::awaitable<error_code> write_head(http::response<http::buffer_body>& res, net::const_buffer body, bool last,
                                          bool length_unknown) override {
        request_state& rs = *rs_;
        bool keep = keeps_alive();
        if (length_unknown && !last) {
            // The body ends when its source closes: chunked coding frames it
            // for an HTTP/1.1 client; an HTTP/1.0 client reads until close.
            if (version_ == 11) {
                res.chunked(true);
            } else {
                keep = false;
            }
        }
        const bool upgrade = res.result() == http::status::switching_protocols;
        std::string upgrade_to;
        if (upgrade) {
            upgrade_to = res[http::field::upgrade];
            keep = false;
        }
        rewrite_response(res.base(), w_.hsts_value, keep, version_);
        if (upgrade) {
            res.set(http::field::connection, "Upgrade");
            res.set(http::field::upgrade, upgrade_to);
        }
        rs.keep_alive = keep;
        rs.response = &res;
        rs.writer.start(res.base(), res.chunked());
        rs.head_written = true;
        co_return co_await write_piece(body, last);
    }

    net::awaitable<error_code> write_body(net::const_buffer body, bool last) override {
        if (rs_->response == nullptr) {
            co_return make_error_code(net::error::invalid_argument); // no write_head before: a caller's bug
        }
        co_return co_await write_piece(body, last);
    }

    bool head_written() const override { return rs_->head_written; }

    net::awaitable<tunnel_result> tunnel(tcp_socket& up, beast::flat_buffer& up_buffer) override {
        tunnel_result t;
        if constexpr (stream_ops<Stream>::can_tunnel) {
            using namespace net::experimental::awaitable_operators;
            arm(phase::tunnel);
            auto close_upstream = [&up] {
                error_code ignored;
                up.shutdown(tcp::socket::shutdown_send, ignored); // the server sees the client's end
            };
            auto close_client = [this] { stream_ops<Stream>::shutdown_send(stream_); };
            co_await (pump(stream_, buffer_, up, t.client_to_upstream, close_upstream, tunnel_end::client_closed, t) &&
                      pump(up, up_buffer, stream_, t.upstream_to_client, close_client, tunnel_end::upstream_closed, t));
            if (take_timeout()) {
                t.end = tunnel_end::idle_timeout;
            }
        }
        co_return t;
    }

    bool can_tunnel() const override { return stream_ops<Stream>::can_tunnel; }
    unsigned version() const override { return version_; }
    bool keep_alive() const override { return rs_->keep_alive; }

protected:
    void cancel_io() override {
        stream_ops<Stream>::cancel(stream_);
        cancel_upstream();
    }

    // What one request needs while it is served; lives in serve_one's frame.
    struct request_state {
        request_parser parser;
        field_snapshot header_fields; ///< the head's fields, to tell trailers apart
        bool identity = false;        ///< the body has a Content-Length (or no body): read without the parser
        std::uint64_t remaining = 0;  ///< its bytes still to read
        bool keep_alive = false;
        bool head_written = false;
        http::response<http::buffer_body>* response = nullptr; ///< the head written by write_head
        http1_writer writer;                                   ///< its head and body framing
    };

    // Serves one request and writes its access log line while the parsed
    // head still exists. Returns whether the connection stays open.
    net::awaitable<outcome> serve_one() {
        const auto& limits = w_.cfg->gw.limits_settings;
        // Beast checks chunk-extension syntax but not the bytes inside a
        // quoted string; declared before the parser, which keeps a reference.
        auto check_chunk = [](std::uint64_t, std::string_view extensions, error_code& ec) {
            if (!valid_chunk_extensions(extensions)) {
                ec = http::error::bad_chunk_extension;
            }
        };
        request_state rs;
        rs.parser.header_limit(static_cast<std::uint32_t>(limits.header_bytes));
        rs.parser.body_limit(limits.body_bytes);
        rs.parser.on_chunk_header(check_chunk);
        rs_ = &rs;
        version_ = 11;
        exchange ex(w_, *this, *this, facts_);
        const outcome result = co_await serve_request(rs, ex);
        ex.finish(rs.parser.get());
        rs_ = nullptr;
        co_return result;
    }

    net::awaitable<outcome> serve_request(request_state& rs, exchange& ex) {
        arm(phase::header);
        auto [ec, rejected] = co_await read_request_header(stream_, buffer_, rs.parser);
        if (ec) {
            const auto status = head_error_status(ec, take_timeout());
            if (!status) {
                co_return outcome::abort;
            }
            w_.counters.requests_total.fetch_add(1, std::memory_order_relaxed);
            co_return end_of(co_await ex.refuse(*status, false));
        }
        w_.counters.requests_total.fetch_add(1, std::memory_order_relaxed);
        if (rejected) {
            log_refused(facts_.client.address, rejected->status, rejected->reason);
            co_return end_of(co_await ex.refuse(rejected->status, true));
        }
        auto& req = rs.parser.get();
        version_ = req.version();
        if (auto r = validate_request(req.base(), w_.cfg->gw.limits_settings.header_count)) {
            log_refused(facts_.client.address, r->status, r->reason);
            co_return end_of(co_await ex.refuse(r->status, true));
        }
        rs.keep_alive = req.keep_alive() && !w_.draining;
        if (req.chunked()) {
            rs.header_fields = snapshot_fields(req.base());
        } else {
            rs.identity = true;
            rs.remaining = rs.parser.is_done() ? 0 : rs.parser.content_length().value_or(0);
        }
        co_return end_of(co_await ex.serve());
    }

    outcome end_of(exchange_end e) const {
        switch (e) {
        case exchange_end::abort:
            return outcome::abort;
        case exchange_end::tunnel:
            return outcome::close;
        case exchange_end::done:
            break;
        }
        return rs_->keep_alive && request_done() && !w_.draining ? outcome::keep_alive : outcome::close;
    }

    bool keeps_alive() const { return rs_->keep_alive && request_done() && !w_.draining; }

    // One piece of the body (with the head before the first), in one write:
    // over TLS one record for a small response.
    net::awaitable<error_code> write_piece(net::const_buffer piece, bool last) {
        const auto buffers = rs_->writer.piece(piece, last);
        if (net::buffer_size(buffers) == 0) {
            co_return error_code{};
        }
        auto [ec, n] = co_await net::async_write(stream_, buffers, use_tuple);
        co_return ec;
    }

    // One direction of a tunnel: what `pending` holds first (bytes that
    // arrived with the upgrade's request or response), then whatever `from`
    // delivers, written to `to`, until `from` closes (`pass_close` passes the
    // close on, `t.end` says who closed) or fails (both directions end).
    template <class From, class To, class PassClose>
    net::awaitable<void> pump(From& from, beast::flat_buffer& pending, To& to, std::uint64_t& count,
                              PassClose pass_close, tunnel_end closed, tunnel_result& t) {
        std::unique_ptr<char[]> piece(new char[relay_chunk]);
        for (;;) {
            std::size_t n = 0;
            if (pending.size() > 0) {
                n = net::buffer_copy(net::buffer(piece.get(), relay_chunk), pending.data());
                pending.consume(n);
            } else {
                auto [ec, got] = co_await from.async_read_some(net::buffer(piece.get(), relay_chunk), use_tuple);
                if (ec) {
                    if (ec == net::error::eof || ec == net::ssl::error::stream_truncated) {
                        pass_close();
                        t.end = closed;
                    } else {
                        cancel_io(); // gone or cut: end the other direction too
                    }
                    co_return;
                }
                n = got;
            }
            arm(phase::tunnel);
            auto [wec, wn] = co_await net::async_write(to, net::buffer(piece.get(), n), use_tuple);
            if (wec) {
                cancel_io();
                co_return;
            }
            count += n;
            arm(phase::tunnel);
        }
    }

    Stream stream_;
    connection_facts facts_;
    beast::flat_buffer buffer_;
    request_state* rs_ = nullptr;
    unsigned version_ = 11;
};

} // namespace rampart::gateway
