#include "gateway/proxy/client_connection.hpp"

#include "gateway/log.hpp"
#include "gateway/proxy/access_log.hpp"
#include "gateway/proxy/error_status.hpp"
#include "gateway/proxy/h2_connection.hpp"
#include "gateway/proxy/http1_connection.hpp"
#include "gateway/proxy/http_rules.hpp"
#include "gateway/proxy/request_head.hpp"
#include "gateway/proxy/static_files.hpp"
#include "gateway/proxy/tls_socket.hpp"
#include "gateway/proxy/worker.hpp"

#include <boost/beast/http/write.hpp>

#include <openssl/ssl.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

namespace rampart::gateway {

template class http1_connection<tls_socket>;

namespace {

using clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- TLS

class tls_connection final : public http1_connection<tls_socket> {
public:
    tls_connection(worker_context& w, tcp_socket&& socket, admission a)
        : tls_connection(w, std::move(socket), a, a.address.to_string()) {}

    void start() {
        start_watchdog();
        auto self = std::static_pointer_cast<tls_connection>(shared_from_this());
        net::co_spawn(w_.io, run(self), [self](std::exception_ptr e) {
            if (e) {
                // Whatever threw, the connection still ends: sockets closed,
                // watchdog stopped (it holds the last reference), counts released.
                log_exception("connection failed: ", e);
                self->finish(false);
            }
        });
    }

private:
    // The address is read before the socket moves into the TLS stream.
    tls_connection(worker_context& w, tcp_socket&& socket, admission a, std::string address)
        : http1_connection(w, a, connection_facts{client_info{std::move(address), true, {}}}, std::move(socket),
                           w.tls_context) {}

    net::awaitable<void> run(std::shared_ptr<tls_connection> self) {
        arm(phase::handshake);
        const error_code ec = co_await stream_.handshake();
        if (ec) {
            w_.counters.handshake_failures.fetch_add(1, std::memory_order_relaxed);
            const bool timed_out = take_timeout();
            const int reason = timed_out ? 0 : is_disconnect(ec) ? 1 : 2;
            w_.counters.handshake_failures_by[reason].fetch_add(1, std::memory_order_relaxed);
            if (reason != 1) {
                violation(); // a stalled or broken handshake, not a client that left
            }
            log(log_level::debug, "handshake from " + facts_.client.address + " failed: " + ec.message());
            finish(false);
            co_return;
        }
        SSL* ssl = stream_.native_handle();
        if (certs::is_acme_tls(ssl)) {
            // A tls-alpn-01 validation: the handshake was the answer.
            w_.counters.acme_challenges_answered.fetch_add(1, std::memory_order_relaxed);
            finish(true);
            co_return;
        }
        facts_.resumed = SSL_session_reused(ssl) == 1;
        facts_.tls_version = SSL_get_version(ssl); // static strings, valid for the process's life
        facts_.cipher = SSL_get_cipher_name(ssl);
        (facts_.resumed ? w_.counters.handshakes_resumed : w_.counters.handshakes_full)
            .fetch_add(1, std::memory_order_relaxed);
        (SSL_version(ssl) == TLS1_3_VERSION ? w_.counters.handshakes_tls13 : w_.counters.handshakes_tls12)
            .fetch_add(1, std::memory_order_relaxed);
        const unsigned char* alpn = nullptr;
        unsigned int alpn_length = 0;
        SSL_get0_alpn_selected(ssl, &alpn, &alpn_length);
        bool graceful = false;
        if (alpn_length == 2 && std::memcmp(alpn, "h2", 2) == 0) {
            h2_.emplace(*this, stream_, facts_);
            graceful = co_await h2_->run();
        } else {
            graceful = co_await serve_requests();
        }
        finish(graceful);
        (void)self;
    }

    void drain() override {
        if (h2_) {
            h2_->drain();
        } else {
            http1_connection::drain();
        }
    }

    // Graceful: close_notify, then a half-close (FIN after the last bytes)
    // so the client reads the whole response before the socket goes.
    void finish(bool graceful) {
        if (graceful) {
            stream_ops<tls_socket>::shutdown_send(stream_);
        }
        // Bytes on the wire, counted by the connection's BIO once per
        // connection rather than on every read and write.
        if (SSL* ssl = stream_.native_handle()) {
            w_.counters.bytes_in.fetch_add(BIO_number_read(SSL_get_rbio(ssl)), std::memory_order_relaxed);
            w_.counters.bytes_out.fetch_add(BIO_number_written(SSL_get_wbio(ssl)), std::memory_order_relaxed);
        }
        error_code ec;
        if (!graceful) {
            stream_.next_layer().shutdown(tcp::socket::shutdown_both, ec);
        } // else the FIN is out already: close() alone releases the socket
        stream_.next_layer().close(ec);
        stop_watchdog();
    }

    std::optional<h2_connection> h2_; ///< set once ALPN chose h2
};

// ---------------------------------------------------------------- plain HTTP

// Port 80: every request gets a redirect to the same path on https. One
// request per connection.
class redirect_connection final : public connection_base {
public:
    redirect_connection(worker_context& w, tcp_socket socket, admission a)
        : connection_base(w, a), socket_(std::move(socket)) {
        buffer_.max_size(w.cfg->gw.limits_settings.header_bytes + 8 * 1024);
    }

    void start() {
        start_watchdog();
        auto self = std::static_pointer_cast<redirect_connection>(shared_from_this());
        net::co_spawn(w_.io, run(self), [self](std::exception_ptr e) {
            if (e) {
                log_exception("connection failed: ", e);
                self->close();
            }
        });
    }

private:
    void cancel_io() override {
        error_code ec;
        socket_.cancel(ec);
    }

    net::awaitable<void> run(std::shared_ptr<redirect_connection> self) {
        const auto start = clock::now();
        const auto wall = std::chrono::system_clock::now();
        const std::string client = w_.requests_log != nullptr ? admitted().address.to_string() : std::string();
        http::request_parser<http::empty_body> p;
        p.header_limit(static_cast<std::uint32_t>(w_.cfg->gw.limits_settings.header_bytes));
        arm(phase::header);
        auto [ec, rejected] = co_await read_request_header(socket_, buffer_, p);
        http::response<http::string_body> res;
        if (ec) {
            const auto status = head_error_status(ec, take_timeout());
            if (!status) {
                close();
                co_return;
            }
            res = make_error_response(*status, 11, "", true);
        } else if (rejected) {
            res = make_error_response(rejected->status, 11, "", true);
        } else if (auto r = validate_request(p.get().base(), w_.cfg->gw.limits_settings.header_count)) {
            res = make_error_response(r->status, p.get().version(), "", true);
        } else if (auto answer = acme_answer(p.get())) {
            // An ACME server validating http-01 (RFC 8555 section 8.3): the
            // key authorization the master published, nothing else.
            res = http::response<http::string_body>(http::status::ok, p.get().version());
            res.set(http::field::content_type, "text/plain");
            res.set(http::field::cache_control, "no-store");
            res.body() = std::move(*answer);
            res.keep_alive(false);
            res.prepare_payload();
            w_.counters.acme_challenges_answered.fetch_add(1, std::memory_order_relaxed);
        } else {
            auto& req = p.get();
            auto location = https_location(req[http::field::host], req.target(), w_.https_port, w_.cfg->site);
            if (!location) {
                res = make_error_response(http::status::bad_request, req.version(), "", true);
            } else {
                res = make_error_response(http::status::moved_permanently, req.version(), "", true);
                res.set(http::field::location, *location);
            }
        }
        const std::string id = ec ? w_.request_ids.next() : pick_request_id(p.get(), w_.request_ids);
        res.set("X-Request-Id", id);
        arm(phase::response_body);
        auto [wec, wn] = co_await http::async_write(socket_, res, use_tuple);
        take_timeout();
        if (w_.requests_log != nullptr) {
            const auto& req = p.get();
            access_record r;
            r.time = wall;
            r.client = client;
            r.method = req.method_string();
            r.host = req[http::field::host];
            r.path = req.target();
            r.referer = req[http::field::referer];
            r.user_agent = req[http::field::user_agent];
            r.protocol = !ec && req.version() == 10 ? "http/1.0" : "http/1.1";
            r.status = res.result_int();
            r.bytes_sent = wec ? 0 : res.body().size();
            r.request_time = clock::now() - start;
            r.request_id = id;
            w_.requests_log->write(r);
        }
        close();
        (void)self;
    }

    /// The key authorization for a GET of /.well-known/acme-challenge/TOKEN
    /// whose token the master published; any other request is redirected.
    std::optional<std::string> acme_answer(const http::request<http::empty_body>& req) const {
        static constexpr std::string_view prefix = "/.well-known/acme-challenge/";
        const std::string_view target = req.target();
        if ((req.method() != http::verb::get && req.method() != http::verb::head) || !target.starts_with(prefix)) {
            return std::nullopt;
        }
        const std::string_view token = target.substr(prefix.size());
        const bool plain = !token.empty() && std::all_of(token.begin(), token.end(), [](unsigned char c) {
            return std::isalnum(c) != 0 || c == '-' || c == '_';
        });
        if (!plain) {
            return std::nullopt;
        }
        if (auto published = find_acme_http(w_.shared.acme, token)) {
            return published;
        }
        if (w_.acme_webroot) {
            return webroot_answer(*w_.acme_webroot, target);
        }
        return std::nullopt;
    }

    /// The file certbot wrote for the token (its answer is a few dozen
    /// bytes; anything over 4 KiB is not one).
    static std::optional<std::string> webroot_answer(const static_root& root, std::string_view target) {
        static_request r;
        r.method = "GET";
        r.path = target;
        static_answer a = serve(root, r);
        if (a.status != 200 || !a.file || a.length > 4096) {
            return std::nullopt;
        }
        std::string body(static_cast<std::size_t>(a.length), '\0');
        const ssize_t n = ::pread(a.file.get(), body.data(), body.size(), static_cast<off_t>(a.offset));
        if (n != static_cast<ssize_t>(body.size())) {
            return std::nullopt;
        }
        return body;
    }

    void close() {
        error_code ec;
        socket_.shutdown(tcp::socket::shutdown_both, ec);
        socket_.close(ec);
        stop_watchdog();
    }

    tcp_socket socket_;
    beast::flat_buffer buffer_;
};

} // namespace

void start_tls_connection(worker_context& w, tcp_socket socket, admission a) {
    std::make_shared<tls_connection>(w, std::move(socket), a)->start();
}

void start_redirect_connection(worker_context& w, tcp_socket socket, admission a) {
    std::make_shared<redirect_connection>(w, std::move(socket), a)->start();
}

} // namespace rampart::gateway
