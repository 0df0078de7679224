#include "gateway/session.hpp"

#include "gateway/retry_policy.hpp"
#include "gateway/router.hpp"

#include "gateway/access_log.hpp"
#include "gateway/http_rules.hpp"
#include "gateway/log.hpp"
#include "gateway/tls_socket.hpp"
#include "gateway/worker.hpp"

#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>

#include <openssl/ssl.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <tuple>

namespace rampart::gateway {

using clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- session_base

session_base::session_base(worker_context& w, admission a) : w_(w), admission_(a), timer_(w.io) {
    timer_.expires_at(clock::time_point::max());
    w_.sessions.insert(this);
    w_.counters.connections_total.fetch_add(1, std::memory_order_relaxed);
    w_.counters.connections_active.fetch_add(1, std::memory_order_relaxed);
    w_.shared.connections_open.fetch_add(1, std::memory_order_relaxed);
    if (admission_.slot != nullptr) {
        admission_.slot->connections.fetch_add(1, std::memory_order_relaxed);
    }
}

session_base::~session_base() {
    w_.sessions.erase(this);
    w_.counters.connections_active.fetch_sub(1, std::memory_order_relaxed);
    w_.shared.connections_open.fetch_sub(1, std::memory_order_relaxed);
    if (admission_.slot != nullptr) {
        admission_.slot->connections.fetch_sub(1, std::memory_order_relaxed);
    }
}

void session_base::violation() {
    w_.shared.abuse_violations.fetch_add(1, std::memory_order_relaxed);
    if (admission_.slot != nullptr) {
        admission_.slot->violations.fetch_add(1, std::memory_order_relaxed);
    }
}

// An idle keep-alive connection is not closed at once: a client may have a
// request on the wire already, and closing under it would fail that
// request. It gets a short grace to send one more, answered with
// Connection: close; one that stays quiet is closed when the grace ends.
void session_base::drain() {
    if (idle_) {
        set_deadline(drain_grace, phase::idle);
    }
}

void session_base::terminate() {
    closing_ = true;
    cancel_io();
}

void session_base::set_deadline(clock::duration d, phase p) {
    phase_ = p;
    deadline_ = clock::now() + d;
    if (deadline_ < timer_.expiry()) {
        timer_.expires_at(deadline_);  // wakes the watchdog, which waits again
    }
}

bool session_base::take_timeout() {
    bool t = timed_out_;
    timed_out_ = false;
    return t;
}

void session_base::start_watchdog() { wait_timer(); }

void session_base::stop_watchdog() {
    stopped_ = true;
    timer_.cancel();
}

// One timer per session, armed for the earliest deadline it has seen. Moving
// a deadline later (the common case: each phase gets a fresh budget) costs no
// timer operation: when the timer fires early the watchdog just re-arms it.
// A plain handler rather than a coroutine: an idle connection then holds one
// small pending operation instead of a coroutine frame. The handler owns a
// reference to the session, released when the watchdog stops.
void session_base::wait_timer() {
    timer_.async_wait([self = shared_from_this()](const error_code&) { self->on_timer(); });
}

void session_base::on_timer() {
    if (stopped_) {
        return;
    }
    auto now = clock::now();
    if (deadline_ <= now) {
        timed_out_ = true;
        timer_.expires_at(clock::time_point::max());
        cancel_io();
    } else if (timer_.expiry() <= now) {
        timer_.expires_at(deadline_);
    }
    wait_timer();
}

namespace {

/// Errors that only mean "the peer went away": not worth a log line.
bool is_disconnect(const error_code& ec) {
    return ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::broken_pipe ||
           ec == net::error::operation_aborted || ec == net::ssl::error::stream_truncated ||
           ec == http::error::end_of_stream || ec == http::error::partial_message;
}

/// Maps a failed request-header read to the answer the client gets.
/// nullopt: close without answering (the client left or timed out while idle).
std::optional<http::status> header_error_status(const error_code& ec, bool timed_out) {
    if (timed_out) {
        return http::status::request_timeout;
    }
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
        return http::status::request_header_fields_too_large;
    }
    if (ec == http::error::body_limit) {
        return http::status::payload_too_large;
    }
    if (is_disconnect(ec)) {
        return std::nullopt;
    }
    if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
        return http::status::bad_request;  // any other parse error: malformed request
    }
    return std::nullopt;
}

/// A request head read from a client. `ec`: reading failed (map it with
/// header_error_status). `rejected`: the bytes arrived but break a rule of
/// check_raw_header or of Beast's parser; answer its status and close.
struct header_read {
    error_code ec;
    std::optional<rejection> rejected;
};

// Reads a request head through `p`, like http::async_read_header, but the
// bytes stay in `buffer` until the head is complete, so that
// check_raw_header sees exactly what arrived before anything acts on the
// parsed header; then they are consumed. Beast may take the request line and
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
                    co_return header_read{ec, std::nullopt};  // 431, 413: not a malformed request
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

/// The reason a request was refused, at debug level (a client can cause
/// any number of these: never above debug).
void log_refused(const std::string& client, const rejection& r) {
    if (log_enabled(log_level::debug)) {
        log(log_level::debug, "request from " + client + " refused (" +
                                  std::to_string(static_cast<unsigned>(r.status)) + "): " + r.reason);
    }
}

std::string client_address(const tcp_socket& s) {
    error_code ec;
    auto ep = s.remote_endpoint(ec);
    if (ec) {
        return "unknown";
    }
    auto a = ep.address();
    if (a.is_v6() && a.to_v6().is_v4_mapped()) {
        a = net::ip::make_address_v4(net::ip::v4_mapped, a.to_v6());
    }
    return a.to_string();
}

constexpr std::size_t relay_chunk = 64 * 1024;
/// Bodies larger than this (with a Content-Length) bypass the parser.
constexpr std::uint64_t direct_threshold = 16 * 1024;

enum class relay_result { done, read_failed, write_failed };

// ---------------------------------------------------------------- TLS session

class tls_session final : public session_base {
public:
    tls_session(worker_context& w, tcp_socket socket, admission a)
        : session_base(w, a), stream_(std::move(socket), w.tls_context), client_{client_address(stream_.next_layer()), true} {
        buffer_.max_size(w.cfg->gw.limits_settings.header_bytes + relay_chunk);
    }

    void start() {
        start_watchdog();
        auto self = std::static_pointer_cast<tls_session>(shared_from_this());
        net::co_spawn(w_.io, run(self), [](std::exception_ptr e) {
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& ex) {
                    log(log_level::error, std::string("session failed: ") + ex.what());
                }
            }
        });
    }

private:
    void cancel_io() override {
        error_code ec;
        stream_.next_layer().cancel(ec);
        if (up_) {
            up_->socket.cancel(ec);
        }
    }

    const config::timeouts& timeouts() const { return w_.cfg->gw.timeouts_settings; }

    clock::duration budget(phase p) const {
        const auto& t = timeouts();
        switch (p) {
        case phase::handshake: return t.handshake;
        case phase::idle: return t.idle;
        case phase::header: return t.header;
        case phase::upstream_connect: return t.upstream_connect;
        case phase::queue: return w_.cfg->gw.pools[pool_].queue_timeout + std::chrono::seconds(1);
        case phase::upstream_response: return t.upstream_response;
        case phase::request_body:
        case phase::upstream_send:
        case phase::response_body: return t.body;
        }
        return t.body;
    }

    void arm(phase p) { set_deadline(budget(p), p); }

    net::awaitable<void> run(std::shared_ptr<tls_session> self) {
        arm(phase::handshake);
        error_code ec = co_await stream_.handshake();
        if (ec) {
            w_.counters.handshake_failures.fetch_add(1, std::memory_order_relaxed);
            const bool timed_out = take_timeout();
            const int reason = timed_out ? 0 : is_disconnect(ec) ? 1 : 2;
            w_.counters.handshake_failures_by[reason].fetch_add(1, std::memory_order_relaxed);
            if (reason != 1) {
                violation();  // a stalled or broken handshake, not a client that left
            }
            log(log_level::debug, "handshake from " + client_.address + " failed: " + ec.message());
            finish_abortive();
            co_return;
        }
        SSL* ssl = stream_.native_handle();
        resumed_ = SSL_session_reused(ssl) == 1;
        tls_version_ = SSL_get_version(ssl);  // static strings, valid for the process's life
        cipher_ = SSL_get_cipher_name(ssl);
        if (resumed_) {
            w_.counters.handshakes_resumed.fetch_add(1, std::memory_order_relaxed);
        } else {
            w_.counters.handshakes_full.fetch_add(1, std::memory_order_relaxed);
        }
        (SSL_version(stream_.native_handle()) == TLS1_3_VERSION ? w_.counters.handshakes_tls13
                                                                 : w_.counters.handshakes_tls12)
            .fetch_add(1, std::memory_order_relaxed);
        bool graceful = true;
        while (!closing_) {
            if (buffer_.size() == 0) {
                // Wait for the next request under the idle deadline, here
                // rather than in serve_one: a coroutine frame holds all of its
                // function's locals, and an idle keep-alive connection should
                // keep neither a read buffer nor serve_one's parsers and
                // serializers, only OpenSSL's SSL object and this frame. The
                // header deadline starts once bytes arrive.
                buffer_.shrink_to_fit();
                idle_ = true;
                if (w_.draining) {
                    set_deadline(drain_grace, phase::idle);
                } else {
                    arm(phase::idle);
                }
                error_code wait_ec;
                if (!stream_.has_buffered()) {
                    std::tie(wait_ec) = co_await stream_.next_layer().async_wait(tcp::socket::wait_read);
                }
                idle_ = false;
                const bool quiet = take_timeout();
                if (wait_ec || closing_) {
                    // Closed by the drain (its grace ended, or its deadline
                    // passed): say goodbye properly (close_notify).
                    graceful = closing_ || (quiet && w_.draining);
                    break;
                }
            }
            auto next = co_await serve_one();
            if (next == outcome::keep_alive) {
                continue;
            }
            graceful = next == outcome::close;
            break;
        }
        if (graceful) {
            finish_graceful();
        } else {
            finish_abortive();
        }
        (void)self;
    }

    enum class outcome { keep_alive, close, abort };

    // Serves one request (serve_request), then writes its access log line
    // while the parsed request head still exists. Returns whether the
    // connection stays open for another request.
    net::awaitable<outcome> serve_one() {
        const auto& limits = w_.cfg->gw.limits_settings;
        // Beast checks chunk-extension syntax but not the bytes inside a
        // quoted string; declared before the parser, which keeps a reference.
        auto check_chunk = [](std::uint64_t, std::string_view extensions, error_code& ec) {
            if (!valid_chunk_extensions(extensions)) {
                ec = http::error::bad_chunk_extension;
            }
        };
        request_parser p;
        p.header_limit(static_cast<std::uint32_t>(limits.header_bytes));
        p.body_limit(limits.body_bytes);
        p.on_chunk_header(check_chunk);
        rec_ = request_log{};
        head_request_ = false;
        const outcome result = co_await serve_request(p);
        log_request(p.get());
        std::string().swap(rec_.request_id);  // an idle connection keeps no heap memory for it
        co_return result;
    }

    // Reads one request through `p`, proxies it and writes the response.
    // Returns whether the connection stays open for another request.
    net::awaitable<outcome> serve_request(request_parser& p) {
        const auto& limits = w_.cfg->gw.limits_settings;
        arm(phase::header);
        {
            auto [ec, rejected] = co_await read_request_header(stream_, buffer_, p);
            if (ec) {
                auto status = header_error_status(ec, take_timeout());
                if (!status) {
                    co_return outcome::abort;
                }
                w_.counters.requests_total.fetch_add(1, std::memory_order_relaxed);
                co_return co_await reject(*status, 11);
            }
            rec_.head_read = true;
            rec_.request_id = pick_request_id(p.get(), w_.request_ids);
            if (rejected) {
                w_.counters.requests_total.fetch_add(1, std::memory_order_relaxed);
                log_refused(client_.address, *rejected);
                co_return co_await reject(rejected->status, 11);
            }
        }
        auto& req = p.get();
        const unsigned version = req.version();
        w_.counters.requests_total.fetch_add(1, std::memory_order_relaxed);
        if (auto r = validate_request(req.base(), limits.header_count)) {
            log_refused(client_.address, *r);
            co_return co_await reject(r->status, version);
        }
        bool keep_alive = req.keep_alive() && !w_.draining;
        const bool head = req.method() == http::verb::head;
        head_request_ = head;
        const bool expect_continue = iequals(req[http::field::expect], "100-continue");
        rewrite_request(req.base(), client_, w_.cfg->site);
        req.set("X-Request-Id", rec_.request_id);
        // Only a chunked body can bring trailers.
        const field_snapshot header_fields = req.chunked() ? snapshot_fields(req.base()) : field_snapshot{};

        // The path routes are matched in and the app server receives, in
        // normal form; what would escape it or hide a '/' is refused.
        if (const std::string_view target = req.target(); target != "*") {
            const auto query = target.find('?');
            const std::string_view raw_path = target.substr(0, query);
            if (!is_normal_path(raw_path)) {  // the common case needs no copy
                const auto path = normalise_path(raw_path);
                if (!path) {
                    log_refused(client_.address, rejection{http::status::bad_request,
                                                           "request path with an encoded '/' or '\\', a control "
                                                           "character, a bad escape or a '..' above the root"});
                    co_return co_await reject(http::status::bad_request, version);
                }
                if (*path != raw_path) {
                    req.target(*path + std::string(query == std::string_view::npos ? "" : target.substr(query)));
                }
            }
        }
        std::size_t pool = w_.default_pool;
        route_ = nullptr;
        if (!w_.routes.empty()) {
            const std::string_view target = req.target();
            const config::route* route = w_.routes.match(host_name(req[http::field::host]),
                                                         target.substr(0, target.find('?')), req.method_string());
            if (route == nullptr) {
                co_return co_await reply_error(http::status::not_found, version, !p.is_done() || !keep_alive);
            }
            if (route->redirect) {
                // The request's path and query go with it; a body is not read.
                const std::string location = route->redirect->to + std::string(target == "*" ? "/" : target);
                co_return co_await reply_error(static_cast<http::status>(route->redirect->status), version,
                                               !p.is_done() || !keep_alive, {}, location);
            }
            pool = route->pool_index;
            route_ = route;
            apply_header_rules(req.base(), route->request_headers);
        }
        pool_ = pool;
        const config::pool& pool_cfg = w_.cfg->gw.pools[pool];
        if (pool_cfg.rate_limit && !within_rate(pool, *pool_cfg.rate_limit)) {
            violation();
            co_return co_await reply_error(http::status::too_many_requests, version, !p.is_done() || !keep_alive,
                                           retry_after(*pool_cfg.rate_limit));
        }

        if (expect_continue && !p.is_done()) {
            arm(phase::response_body);
            static constexpr char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";
            auto [ec, n] = co_await net::async_write(stream_, net::buffer(continue_line, sizeof continue_line - 1),
                                                     use_tuple);
            if (ec) {
                co_return outcome::abort;
            }
        }

        // Request buffering: a body up to buffer_body_bytes is read whole
        // before any backend is chosen. A malformed or incomplete body then
        // never reaches a backend, a slow client holds no backend connection,
        // and the request can be sent again to another server. A larger body
        // streams, starting with what was read here.
        std::string body_prefix;
        if (!p.is_done() && limits.buffer_body_bytes > 0) {
            auto [result, rec] = co_await read_body_prefix(p, body_prefix, limits.buffer_body_bytes);
            if (result != relay_result::done) {
                co_return co_await client_body_failed(rec, version);
            }
            if (req.chunked()) {
                drop_trailers(req.base(), header_fields);
            }
        }
        rec_.bytes_received = body_prefix.size();
        // What a retry may resend: the whole request is in memory.
        retry_policy policy(is_idempotent(req.method()), p.is_done(), pool_cfg.retries);

        std::optional<response_parser> rp;
        std::optional<slot> taken;
        std::uint64_t tried = 0;
        // The outer loop comes round again only when a response's body fails
        // before any byte of it reached the client (see below).
        for (;;) {
        for (;;) {
            taken.reset();  // a retry releases the server it leaves
            // The common case needs no coroutine frame: a server has a slot.
            auto now_choice = pick_now(pool, tried);
            std::optional<std::size_t> member = now_choice.member;
            if (!member && now_choice.full) {
                member = co_await wait_in_queue(pool, tried);
            }
            if (!member) {
                co_return co_await reply_error(policy.no_server_status(), version, true);
            }
            taken.emplace(*this, pool, *member);
            tried |= *member < 64 ? std::uint64_t{1} << *member : 0;
            policy.on_server_chosen();
            const std::size_t server = w_.member_servers[pool][*member];
            server_health& state = *w_.members[pool][*member];
            state.count_request();
            rec_.upstream = server;
            const auto attempt_start = clock::now();

            // What went wrong with this server; std::nullopt when the
            // response header arrived.
            std::optional<attempt_failure_facts> failure;
            std::optional<error_code> failure_ec;
            retry_decision decision;
            for (int connection = 0; connection < 2; ++connection) {
                // A request that may be resent skips the liveness peek: if
                // the backend closed this keep-alive connection, the failure
                // comes before any response byte and the policy sends it
                // again on a new connection to the same server.
                up_ = w_.upstreams.take(server, !policy.resendable() || policy.stale_resend_used());
                const bool reused = up_ != nullptr;
                if (!up_) {
                    up_ = std::make_unique<upstream_connection>(w_.io.get_executor());
                    up_->server = server;
                    arm(phase::upstream_connect);
                    error_code ec = co_await connect_upstream(up_->socket, w_.server_endpoints[server]);
                    if (ec) {
                        failure = attempt_failure_facts{attempt_stage::connect, take_timeout()};
                        failure_ec = ec;
                    }
                }
                if (!failure) {
                    http::request_serializer<http::buffer_body> sr{req};
                    std::uint64_t sent_up = 0;
                    auto [res, rec] = co_await relay(stream_, buffer_, p, sr, up_->socket, phase::request_body,
                                                     phase::upstream_send, sent_up, body_prefix);
                    rec_.bytes_received = std::max(rec_.bytes_received, sent_up);
                    if (res == relay_result::read_failed) {
                        // The client's body failed: too large, malformed, too slow or gone.
                        up_.reset();
                        co_return co_await client_body_failed(rec, version);
                    }
                    if (res == relay_result::write_failed) {
                        failure = attempt_failure_facts{attempt_stage::send, take_timeout(), reused};
                        failure_ec = rec;
                    }
                }
                if (!failure) {
                    arm(phase::upstream_response);
                    error_code ec;
                    // Interim 1xx responses (100 Continue, 103 Early Hints) are
                    // consumed here: the gateway answered Expect itself.
                    for (int interim = 0; interim < 8; ++interim) {
                        rp.emplace();
                        rp->header_limit(64 * 1024);
                        rp->body_limit(boost::none);
                        if (head) {
                            rp->skip(true);
                        }
                        auto [hec, hn] = co_await http::async_read_header(up_->socket, up_->buffer, *rp, use_tuple);
                        ec = hec;
                        if (ec || rp->get().result_int() / 100 != 1) {
                            break;
                        }
                    }
                    if (ec) {
                        failure = attempt_failure_facts{attempt_stage::response_head, take_timeout(), reused,
                                                        ec == http::error::end_of_stream || ec == net::error::eof ||
                                                            ec == net::error::connection_reset};
                        failure_ec = ec;
                    } else if (rp->get().result_int() / 100 == 1) {
                        // 101 (protocol switch) or an endless run of interim responses.
                        failure = attempt_failure_facts{attempt_stage::response_head};
                        failure_ec = http::error::bad_status;
                    }
                }
                if (failure) {
                    decision = policy.on_failure(*failure, w_.draining);
                    if (decision.action == retry_action::resend_new_connection) {
                        up_.reset();
                        rp.reset();
                        failure.reset();
                        continue;
                    }
                }
                break;
            }
            if (!failure) {
                rec_.upstream_time = clock::now() - attempt_start;
                if (rp->get().result_int() >= 500) {
                    record_failure(state, server, pool_cfg);  // passed on, but counts against the server
                } else {
                    record_success(state, pool_cfg);
                }
                break;
            }
            up_.reset();
            rp.reset();
            record_failure(state, server, pool_cfg);
            log(log_level::warn, "upstream " + w_.cfg->servers[server].name + " failed: " +
                                     (failure->timed_out ? std::string("timeout") : failure_ec->message()));
            if (decision.action != retry_action::retry_elsewhere) {
                co_return co_await reply_error(decision.status, version, true);
            }
            state.count_retry();
            ++rec_.retries;
        }

        auto& res = rp->get();
        // Reaching here means the request went out whole (relay returned done).
        const std::size_t server = up_->server;
        server_health& state = *w_.server_states[server];
        const bool upstream_reusable = rp->keep_alive();
        if (rp->need_eof() && !rp->is_done()) {
            // The backend delimits the body by closing: re-frame it as chunked
            // for an HTTP/1.1 client; an HTTP/1.0 client reads until close.
            if (version == 11) {
                res.chunked(true);
            } else {
                keep_alive = false;
            }
        }
        keep_alive = keep_alive && !w_.draining;
        rewrite_response(res.base(), w_.hsts_value, keep_alive, version);
        add_missing_headers(res.base(), w_.cfg->gw.security_headers);
        if (route_ != nullptr) {
            apply_header_rules(res.base(), route_->response_headers);
        }
        res.set("X-Request-Id", rec_.request_id);

        http::response_serializer<http::buffer_body> rs{res};
        auto [result, ec] = co_await relay(up_->socket, up_->buffer, *rp, rs, stream_, phase::response_body,
                                           phase::response_body, rec_.bytes_sent);
        if (rs.is_header_done() || result == relay_result::done) {
            count_status(res.result_int());
            if (const unsigned cls = res.result_int() / 100; cls >= 1 && cls <= 5) {
                state.count_response(cls);
            }
        }
        if (result != relay_result::done) {
            const bool timed_out = take_timeout();
            if (result == relay_result::read_failed) {
                log(log_level::warn, "upstream " + w_.cfg->servers[server].name + " failed mid-response: " +
                                         (timed_out ? std::string("timeout") : ec.message()));
                attempt_failure_facts f{attempt_stage::response_body, timed_out};
                f.response_started = rs.is_header_done();
                record_failure(state, server, pool_cfg);
                if (policy.on_failure(f, w_.draining).action == retry_action::retry_elsewhere) {
                    state.count_retry();
                    ++rec_.retries;
                    up_.reset();
                    rp.reset();
                    continue;
                }
            }
            // Part of the response already reached the client: the only
            // honest signal left is to cut the connection.
            up_.reset();
            co_return outcome::abort;
        }
        if (upstream_reusable) {
            w_.upstreams.give_back(std::move(up_));
        } else {
            up_.reset();
        }
        co_return keep_alive ? outcome::keep_alive : outcome::close;
        }
    }

    // Writes the message in `p` (header and body) from `src` to `dst` through
    // the serializer `sr`, holding at most one chunk in memory whatever the
    // body size. The header goes out with the first body chunk: one TLS record
    // and one syscall for small messages. The deadline is renewed for each
    // read and each write: it bounds inactivity, not the whole transfer.
    //
    // `prefix`: body bytes already read from `src` (request buffering); they
    // go out first. `body_bytes` grows by each body byte written to `dst`.
    template <class Parser, class Serializer, class Source, class Sink>
    net::awaitable<std::pair<relay_result, error_code>> relay(Source& src, beast::flat_buffer& src_buffer, Parser& p,
                                                              Serializer& sr, Sink& dst, phase read_phase,
                                                              phase write_phase, std::uint64_t& body_bytes,
                                                              std::string_view prefix = {}) {
        if (auto len = p.content_length_remaining(); len && *len > direct_threshold && !p.get().chunked()) {
            co_return co_await relay_identity(src, src_buffer, sr, dst, *len, read_phase, write_phase, body_bytes,
                                              prefix);
        }
        bool pending_prefix = !prefix.empty();
        const bool chunked = p.get().chunked();
        const field_snapshot header_fields = chunked ? snapshot_fields(p.get().base()) : field_snapshot{};
        std::size_t size = relay_chunk;
        if (auto len = p.content_length_remaining(); len && *len < size) {
            size = static_cast<std::size_t>(*len) + 1;
        }
        std::unique_ptr<char[]> chunk;
        auto& body = p.get().body();
        // Beast reads into the source's flat_buffer as much as its free
        // capacity allows (at least 512 bytes) and then copies into the
        // body. Without room made here, a body arrives in header-sized reads:
        // 1 MiB took ~250 recv() calls and as many composed operations.
        if (!p.is_done()) {
            src_buffer.reserve(std::min<std::size_t>(relay_chunk, src_buffer.max_size()));
        }
        do {
            if (pending_prefix) {
                pending_prefix = false;
                body.data = const_cast<char*>(prefix.data());
                body.size = prefix.size();
                body.more = !p.is_done();
            } else if (!p.is_done()) {
                if (!chunk) {
                    chunk.reset(new char[size]);
                }
                body.data = chunk.get();
                body.size = size;
                arm(read_phase);
                auto [ec, n] = co_await http::async_read(src, src_buffer, p, use_tuple);
                if (ec == http::error::need_buffer) {
                    ec = {};
                }
                if (ec) {
                    co_return std::pair{relay_result::read_failed, ec};
                }
                body.size = size - body.size;
                // No data must be null: Beast writes an empty piece of a
                // chunked body as a zero-length chunk, which ends the body.
                body.data = body.size != 0 ? chunk.get() : nullptr;
                body.more = !p.is_done();
                if (chunked && p.is_done()) {
                    drop_trailers(p.get().base(), header_fields);
                }
            } else {
                body.data = nullptr;
                body.size = 0;
                body.more = false;
            }
            arm(write_phase);
            const std::size_t chunk_bytes = body.data != nullptr ? body.size : 0;
            auto [ec, n] = co_await http::async_write(dst, sr, use_tuple);
            if (ec == http::error::need_buffer) {
                ec = {};
            }
            if (ec) {
                co_return std::pair{relay_result::write_failed, ec};
            }
            body_bytes += chunk_bytes;
        } while (!p.is_done() || !sr.is_done());
        co_return std::pair{relay_result::done, error_code{}};
    }

    // A large body of known length needs no parsing: after the header it is
    // moved socket to socket through one chunk, without passing through the
    // parser's buffer and a second copy. Afterwards the parser and serializer
    // do not know the body is complete; the caller relies on the result.
    template <class Serializer, class Source, class Sink>
    net::awaitable<std::pair<relay_result, error_code>> relay_identity(Source& src, beast::flat_buffer& src_buffer,
                                                                       Serializer& sr, Sink& dst,
                                                                       std::uint64_t remaining, phase read_phase,
                                                                       phase write_phase, std::uint64_t& body_bytes,
                                                                       std::string_view prefix) {
        arm(write_phase);
        auto [hec, hn] = co_await http::async_write_header(dst, sr, use_tuple);
        if (hec) {
            co_return std::pair{relay_result::write_failed, hec};
        }
        if (!prefix.empty()) {
            auto [pec, pn] = co_await net::async_write(dst, net::buffer(prefix), use_tuple);
            if (pec) {
                co_return std::pair{relay_result::write_failed, pec};
            }
            body_bytes += prefix.size();
        }
        std::unique_ptr<char[]> chunk(new char[relay_chunk]);
        while (remaining > 0) {
            std::size_t n = 0;
            const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, relay_chunk));
            if (src_buffer.size() > 0) {
                // Body bytes that arrived with the header. Never more than
                // this body: what follows belongs to the next message.
                n = std::min(want, src_buffer.size());
                net::buffer_copy(net::buffer(chunk.get(), n), src_buffer.data());
                src_buffer.consume(n);
            } else {
                arm(read_phase);
                auto [ec, got] = co_await src.async_read_some(net::buffer(chunk.get(), want), use_tuple);
                if (ec) {
                    co_return std::pair{relay_result::read_failed,
                                        ec == net::error::eof ? error_code(http::error::partial_message) : ec};
                }
                n = got;
            }
            arm(write_phase);
            auto [wec, wn] = co_await net::async_write(dst, net::buffer(chunk.get(), n), use_tuple);
            if (wec) {
                co_return std::pair{relay_result::write_failed, wec};
            }
            body_bytes += n;
            remaining -= n;
        }
        co_return std::pair{relay_result::done, error_code{}};
    }

    // Reads the request body into `out`, at most `limit` bytes. done: the
    // whole body or the first `limit` bytes are in `out` (p.is_done() tells
    // which); read_failed: the client's body failed (see client_body_failed).
    net::awaitable<std::pair<relay_result, error_code>> read_body_prefix(request_parser& p, std::string& out,
                                                                         std::uint64_t limit) {
        std::size_t want = static_cast<std::size_t>(limit);
        if (auto len = p.content_length_remaining(); len && *len < want) {
            want = static_cast<std::size_t>(*len);
        }
        out.resize(want);
        auto& body = p.get().body();
        std::size_t filled = 0;
        while (!p.is_done() && filled < want) {
            body.data = out.data() + filled;
            body.size = want - filled;
            arm(phase::request_body);
            auto [ec, n] = co_await http::async_read(stream_, buffer_, p, use_tuple);
            filled = want - body.size;
            if (ec == http::error::need_buffer) {
                ec = {};
            }
            if (ec) {
                out.clear();
                co_return std::pair{relay_result::read_failed, ec};
            }
        }
        out.resize(filled);
        co_return std::pair{relay_result::done, error_code{}};
    }

    // The answer to a request body that could not be read.
    net::awaitable<outcome> client_body_failed(const error_code& ec, unsigned version) {
        if (take_timeout()) {
            co_return co_await reject(http::status::request_timeout, version);
        }
        if (ec == http::error::body_limit) {
            co_return co_await reply_error(http::status::payload_too_large, version, true);
        }
        if (is_disconnect(ec)) {
            co_return outcome::abort;
        }
        co_return co_await reject(http::status::bad_request, version);
    }

    // A request refused before any backend: malformed, too slow. Counts as a
    // violation of the client; the connection closes after the answer.
    net::awaitable<outcome> reject(http::status status, unsigned version) {
        w_.counters.requests_rejected.fetch_add(1, std::memory_order_relaxed);
        violation();
        co_return co_await reply_error(status, version, true);
    }

    // The client's request token bucket for this pool (shared by all workers).
    bool within_rate(std::size_t pool, const config::rate& r) {
        const mono_ns now = mono_now();
        client_slot* bucket = find_client(w_.shared, admission_.address, static_cast<std::uint32_t>(pool), now);
        if (bucket == nullptr || take_token(*bucket, r.per_second(), r.burst, now)) {
            return true;
        }
        w_.pool_states[pool]->rate_limited.fetch_add(1, std::memory_order_relaxed);
        return false;
    }

    static std::string retry_after(const config::rate& r) {
        const double seconds = 1.0 / r.per_second();
        return std::to_string(std::max<long>(1, static_cast<long>(std::ceil(seconds))));
    }

    /// A request's hold on a server slot (its `active` count); released when
    /// the request is done with the server, waking a queued request.
    class slot {
    public:
        slot(tls_session& s, std::size_t pool, std::size_t member) : s_(s), pool_(pool), member_(member) {}
        ~slot() {
            s_.w_.members[pool_][member_]->release();
            auto& waiters = s_.w_.queue_waiters[pool_];
            if (!waiters.empty()) {
                waiters.front()->cancel();
            }
        }
        slot(const slot&) = delete;
        slot& operator=(const slot&) = delete;

    private:
        tls_session& s_;
        std::size_t pool_;
        std::size_t member_;
    };

    // A server of `pool` not in `tried`, with a slot taken on it. When every
    // candidate is at max_connections the request waits in the pool's
    // bounded queue, up to queue_timeout. nullopt: no server (503).
    balancer::choice pick_now(std::size_t pool, std::uint64_t tried) {
        const auto& pc = w_.cfg->gw.pools[pool];
        w_.balancers[pool].refresh_weights(w_.shared.weights_version.load(std::memory_order_relaxed), w_.members[pool]);
        return w_.balancers[pool].pick(w_.pool_states[pool]->next, w_.members[pool], mono_now(), tried,
                                       pc.max_connections);
    }

    // Every candidate was full: wait in the pool's bounded queue.
    net::awaitable<std::optional<std::size_t>> wait_in_queue(std::size_t pool, std::uint64_t tried) {
        const auto& pc = w_.cfg->gw.pools[pool];
        auto& ps = *w_.pool_states[pool];
        balancer::choice c;
        if (pc.queue_size == 0 || w_.draining) {
            co_return std::nullopt;
        }
        if (ps.queued.fetch_add(1, std::memory_order_relaxed) >= pc.queue_size) {
            ps.queued.fetch_sub(1, std::memory_order_relaxed);
            co_return std::nullopt;
        }
        net::steady_timer wake(w_.io);
        auto& waiters = w_.queue_waiters[pool];
        waiters.push_back(&wake);
        arm(phase::queue);
        const auto end = clock::now() + pc.queue_timeout;
        std::optional<std::size_t> got;
        // Woken at once by a slot freed in this worker; slots freed by other
        // workers are noticed by polling every few milliseconds.
        while (!closing_ && clock::now() < end) {
            wake.expires_after(std::min<clock::duration>(std::chrono::milliseconds(5), end - clock::now()));
            co_await wake.async_wait(use_tuple);
            c = w_.balancers[pool].pick(ps.next, w_.members[pool], mono_now(), tried, pc.max_connections);
            if (c.member || !c.full) {
                got = c.member;
                break;
            }
        }
        std::erase(waiters, &wake);
        ps.queued.fetch_sub(1, std::memory_order_relaxed);
        if (!got && clock::now() >= end) {
            ps.queue_timeouts.fetch_add(1, std::memory_order_relaxed);
        }
        co_return got;
    }

    // Passive outlier detection (server_health::on_attempt_failure): all
    // workers see an ejection through shared memory.
    void record_failure(server_health& s, std::size_t server, const config::pool& pc) {
        const auto e = s.on_attempt_failure(pc.outlier, mono_now());
        if (e.ejected) {
            log(log_level::warn, "upstream " + w_.cfg->servers[server].name + " ejected for " +
                                     std::to_string(e.length / 1'000'000) + " ms after " +
                                     std::to_string(e.failures) + " consecutive failures");
        }
    }

    static void record_success(server_health& s, const config::pool& pc) {
        s.on_attempt_success(pc.outlier, mono_now());
    }

    void count_status(unsigned status) {
        rec_.status = status;
        unsigned cls = status / 100;
        if (cls >= 1 && cls <= 5) {
            w_.counters.responses_by_class[cls].fetch_add(1, std::memory_order_relaxed);
        }
    }

    // Sends a short error response. `close`: the connection ends after it
    // (always when the request could not be read completely).
    net::awaitable<outcome> reply_error(http::status status, unsigned version, bool close,
                                        std::string_view retry_after = {}, std::string_view location = {}) {
        count_status(static_cast<unsigned>(status));
        auto res = make_error_response(status, version, w_.hsts_value, close || w_.draining);
        add_missing_headers(res.base(), w_.cfg->gw.security_headers);
        if (!retry_after.empty()) {
            res.set(http::field::retry_after, retry_after);
        }
        if (!location.empty()) {
            res.set(http::field::location, location);
        }
        if (head_request_) {
            // HEAD: the length the body would have, and no body (bytes
            // after the head would be read as the next response).
            const auto length = res.body().size();
            res.body().clear();
            res.content_length(length);
        }
        res.set("X-Request-Id", request_id());
        arm(phase::response_body);
        auto [ec, n] = co_await http::async_write(stream_, res, use_tuple);
        if (ec) {
            take_timeout();
            co_return outcome::abort;
        }
        rec_.bytes_sent = res.body().size();
        co_return close ? outcome::close : outcome::keep_alive;
    }

    // close_notify, then close. Half-closing first (FIN after our last
    // bytes) lets the client read the whole response before the socket goes.
    void finish_graceful() {
        stream_.shutdown();
        error_code ec;
        stream_.next_layer().shutdown(tcp::socket::shutdown_send, ec);
        finish_abortive();
    }

    void finish_abortive() {
        // Bytes on the wire, counted by OpenSSL's socket BIO once per
        // connection rather than on every read and write.
        if (SSL* ssl = stream_.native_handle()) {
            w_.counters.bytes_in.fetch_add(BIO_number_read(SSL_get_rbio(ssl)), std::memory_order_relaxed);
            w_.counters.bytes_out.fetch_add(BIO_number_written(SSL_get_wbio(ssl)), std::memory_order_relaxed);
        }
        error_code ec;
        stream_.next_layer().shutdown(tcp::socket::shutdown_both, ec);
        stream_.next_layer().close(ec);
        up_.reset();
        stop_watchdog();
    }

    // The request being served, as the access log will record it.
    struct request_log {
        clock::time_point start = clock::now();
        std::chrono::system_clock::time_point wall = std::chrono::system_clock::now();
        bool head_read = false;  ///< a complete request head arrived
        unsigned status = 0;     ///< of the response started; 0: none
        std::uint64_t bytes_sent = 0;
        std::uint64_t bytes_received = 0;
        std::optional<std::size_t> upstream;  ///< index in snapshot::servers of the last server tried
        std::optional<clock::duration> upstream_time;
        unsigned retries = 0;
        std::string request_id;
    };

    /// The request's id; one is made up for a request whose head could not be read.
    const std::string& request_id() {
        if (rec_.request_id.empty()) {
            rec_.request_id = w_.request_ids.next();
        }
        return rec_.request_id;
    }

    // One access log line per request that got an answer or whose head was
    // read (499 when the client left before any answer, as nginx logs it).
    // Nothing for a connection that closed or timed out between requests.
    void log_request(const http::request_header<>& h) {
        if (rec_.status == 0 && !rec_.head_read) {
            return;
        }
        w_.counters.request_latency.observe(clock::now() - rec_.start);
        if (rec_.upstream_time) {
            w_.counters.upstream_latency.observe(*rec_.upstream_time);
        }
        if (w_.requests_log == nullptr) {
            return;
        }
        access_record r;
        r.time = rec_.wall;
        r.client = client_.address;
        r.method = h.method_string();
        r.host = h[http::field::host];
        r.path = h.target();
        r.status = rec_.status != 0 ? rec_.status : 499;
        r.bytes_sent = rec_.bytes_sent;
        r.bytes_received = rec_.bytes_received;
        r.request_time = clock::now() - rec_.start;
        r.upstream = rec_.upstream ? std::string_view(w_.cfg->servers[*rec_.upstream].name) : std::string_view();
        r.upstream_time = rec_.upstream_time;
        r.tls_version = tls_version_;
        r.cipher = cipher_;
        r.resumed = resumed_;
        r.request_id = request_id();
        r.retries = rec_.retries;
        w_.requests_log->write(r);
    }

    tls_socket stream_;
    client_info client_;
    beast::flat_buffer buffer_;
    upstream_ptr up_;
    request_log rec_;
    bool head_request_ = false;
    std::size_t pool_ = 0;  ///< the pool of the request being served (its queue deadline)
    const config::route* route_ = nullptr;  ///< its route; null without routes
    const char* tls_version_ = nullptr;
    const char* cipher_ = nullptr;
    bool resumed_ = false;
};

// ---------------------------------------------------------------- redirect session

class redirect_session final : public session_base {
public:
    redirect_session(worker_context& w, tcp_socket socket, admission a) : session_base(w, a), socket_(std::move(socket)) {
        buffer_.max_size(w.cfg->gw.limits_settings.header_bytes + 8 * 1024);
    }

    void start() {
        start_watchdog();
        auto self = std::static_pointer_cast<redirect_session>(shared_from_this());
        net::co_spawn(w_.io, run(self), net::detached);
    }

private:
    void cancel_io() override {
        error_code ec;
        socket_.cancel(ec);
    }

    net::awaitable<void> run(std::shared_ptr<redirect_session> self) {
        const auto start = clock::now();
        const auto wall = std::chrono::system_clock::now();
        const std::string client = w_.requests_log != nullptr ? client_address(socket_) : std::string();
        const auto& t = w_.cfg->gw.timeouts_settings;
        http::request_parser<http::empty_body> p;
        p.header_limit(static_cast<std::uint32_t>(w_.cfg->gw.limits_settings.header_bytes));
        set_deadline(t.header, phase::header);
        auto [ec, rejected] = co_await read_request_header(socket_, buffer_, p);
        http::response<http::string_body> res;
        if (ec) {
            auto status = header_error_status(ec, take_timeout());
            if (!status) {
                close();
                co_return;
            }
            res = make_error_response(*status, 11, "", true);
        } else if (rejected) {
            res = make_error_response(rejected->status, 11, "", true);
        } else if (auto r = validate_request(p.get().base(), w_.cfg->gw.limits_settings.header_count)) {
            res = make_error_response(r->status, p.get().version(), "", true);
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
        set_deadline(t.body, phase::response_body);
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
            r.status = res.result_int();
            r.bytes_sent = wec ? 0 : res.body().size();
            r.request_time = clock::now() - start;
            r.request_id = id;
            w_.requests_log->write(r);
        }
        close();
        (void)self;
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

}  // namespace

void start_tls_session(worker_context& w, tcp_socket socket, admission a) {
    std::make_shared<tls_session>(w, std::move(socket), a)->start();
}

void start_redirect_session(worker_context& w, tcp_socket socket, admission a) {
    std::make_shared<redirect_session>(w, std::move(socket), a)->start();
}

}  // namespace rampart::gateway
