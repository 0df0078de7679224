#include "gateway/proxy/exchange.hpp"

#include "gateway/log.hpp"
#include "gateway/proxy/compression.hpp"
#include "gateway/proxy/error_status.hpp"
#include "gateway/proxy/exchange_host.hpp"
#include "gateway/proxy/proxy_attempt.hpp"
#include "gateway/proxy/router.hpp"
#include "gateway/proxy/static_files.hpp"
#include "gateway/proxy/worker.hpp"

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>

#include <openssl/crypto.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>

namespace rampart::gateway {

using clock = std::chrono::steady_clock;

namespace {

/// Response bodies larger than this (with a Content-Length) bypass the parser.
constexpr std::uint64_t direct_threshold = 16 * 1024;

/// A static file goes out in pieces of this size: one pread and one write of
/// four full TLS records each (sendfile cannot help when TLS is done in user
/// space). 16 KiB pieces passed through Beast's serializer cost 1.6 times
/// nginx's CPU per MiB; 64 KiB pieces written as they are, 0.96 times
/// (bench/results/2026-12-07-request-path-layers.md).
constexpr std::size_t static_piece = 64 * 1024;

std::string retry_after(const config::rate& r) {
    const double seconds = 1.0 / r.per_second();
    return std::to_string(std::max<long>(1, static_cast<long>(std::ceil(seconds))));
}

bool has_token(std::string_view list, std::string_view token) {
    for (auto t : http::token_list{list}) {
        if (iequals(t, token)) {
            return true;
        }
    }
    return false;
}

enum class upgrade_kind { none, websocket, bad };

/// A WebSocket opening handshake (RFC 6455 4.1) is the one upgrade passed on.
/// Any other Upgrade (h2c included) is not one: its fields are removed like
/// every hop-by-hop field and the request is served as it is.
upgrade_kind classify_upgrade(const http::request_header<>& h, unsigned version, bool has_body) {
    if (h.count(http::field::upgrade) == 0 || !has_token(h[http::field::connection], "upgrade") ||
        !has_token(h[http::field::upgrade], "websocket")) {
        return upgrade_kind::none;
    }
    const auto key = h[http::field::sec_websocket_key];
    // The key: 16 random bytes in base64, 24 characters ending in "==".
    const bool key_ok = key.size() == 24 && key.ends_with("==") && h.count(http::field::sec_websocket_key) == 1 &&
                        std::all_of(key.begin(), key.end() - 2, [](char c) {
                            return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/';
                        });
    if (h.method() != http::verb::get || version != 11 || has_body || !key_ok ||
        h[http::field::sec_websocket_version] != "13") {
        return upgrade_kind::bad;
    }
    return upgrade_kind::websocket;
}

/// A tunnel's place under limits.tunnels, shared by all workers.
class tunnel_slot {
public:
    explicit tunnel_slot(std::atomic<std::uint32_t>& open) : open_(&open) {}
    ~tunnel_slot() { open_->fetch_sub(1, std::memory_order_relaxed); }
    tunnel_slot(const tunnel_slot&) = delete;
    tunnel_slot& operator=(const tunnel_slot&) = delete;

private:
    std::atomic<std::uint32_t>* open_;
};

} // namespace

exchange::exchange(worker_context& w, exchange_host& conn, downstream& down, const connection_facts& facts)
    : w_(w), conn_(conn), down_(down), facts_(facts), client_(&facts.client), client_slot_(conn.admitted().slot) {}

void exchange::take_forwarded_client(const http::fields& f) {
    const network_set& trusted = w_.trusted_proxies;
    if (trusted.empty() || !trusted.contains(conn_.admitted().address)) {
        return;
    }
    forwarded_client_ = facts_.client;
    forwarded_client_.via = facts_.client.address;
    client_ = &forwarded_client_;
    std::string who = client_from_forwarded_for(f, trusted);
    if (who.empty()) {
        return; // the proxy's own request (a health check), or a chain not to be believed
    }
    forwarded_client_.address = std::move(who);
    forwarded_ = client_address::parse(forwarded_client_.address);
    client_slot* slot = find_client(w_.shared, *forwarded_, scope_connections, mono_now());
    if (slot != nullptr) {
        slot->via_proxy.store(1, std::memory_order_relaxed); // blocked at layer 7, never in the firewall
    }
    client_slot_ = slot;
}

void exchange::violation() {
    if (forwarded_) {
        count_violation(w_.shared, *forwarded_, mono_now());
    } else {
        conn_.violation();
    }
}

net::awaitable<exchange_end> exchange::serve() {
    auto& req = down_.request();
    head_read_ = true;
    request_id_ = pick_request_id(req, w_.request_ids);
    head_request_ = req.method() == http::verb::head;
    const bool expect_continue = iequals(req[http::field::expect], "100-continue");
    const upgrade_kind upgrade = classify_upgrade(req.base(), down_.version(),
                                                  !down_.request_done() || down_.request_remaining().value_or(0) > 0);
    take_forwarded_client(req.base());
    if (upgrade == upgrade_kind::bad) {
        log_refused(client_->address, http::status::bad_request, "a WebSocket upgrade that breaks RFC 6455 4.1");
        co_return co_await reject(http::status::bad_request);
    }
    if (client_slot_ != nullptr) {
        // Blocked for abuse behind a trusted proxy (the firewall would block the proxy).
        const mono_ns blocked = client_slot_->blocked_until.load(std::memory_order_relaxed);
        if (blocked != 0 && blocked > mono_now()) {
            w_.counters.requests_blocked.fetch_add(1, std::memory_order_relaxed);
            log_refused(client_->address, http::status::forbidden, "client blocked for abuse (layer 7)");
            co_return co_await reply(http::status::forbidden, true);
        }
    }
    rewrite_request(req.base(), *client_, w_.cfg->site);
    req.set("X-Request-Id", request_id_);

    // The path routes are matched in and the app server receives, in
    // normal form; what would escape it or hide a '/' is refused.
    if (const std::string_view target = req.target(); target != "*") {
        const auto query = target.find('?');
        const std::string_view raw_path = target.substr(0, query);
        if (!is_normal_path(raw_path)) { // the common case needs no copy
            const auto path = normalise_path(raw_path);
            if (!path) {
                log_refused(client_->address, http::status::bad_request,
                            "request path with an encoded '/' or '\\', a control character, a bad escape or a '..' "
                            "above the root");
                co_return co_await reject(http::status::bad_request);
            }
            if (*path != raw_path) {
                req.target(*path + std::string(query == std::string_view::npos ? "" : target.substr(query)));
            }
        }
    }
    if (w_.shared.maintenance_site.load(std::memory_order_relaxed) != 0) {
        co_return co_await maintenance();
    }
    std::size_t pool = w_.default_pool;
    if (!w_.routes.empty()) {
        const std::string_view target = req.target();
        route_ =
            w_.routes.match(host_name(req[http::field::host]), target.substr(0, target.find('?')), req.method_string());
        if (route_ == nullptr) {
            co_return co_await reply(http::status::not_found, false);
        }
        if (in_maintenance(w_.shared,
                           w_.route_guards[static_cast<std::size_t>(route_ - w_.cfg->gw.routes.data())].name_key)) {
            co_return co_await maintenance();
        }
        if (!route_->access.empty()) {
            if (const auto refused = co_await check_access(req.base())) {
                co_return *refused;
            }
        }
        if (route_->redirect) {
            // The request's path and query go with it; a body is not read.
            const std::string location = route_->redirect->to + std::string(target == "*" ? "/" : target);
            co_return co_await reply(static_cast<http::status>(route_->redirect->status), false, {}, location);
        }
        if (route_->files) {
            co_return co_await serve_static();
        }
        pool = route_->pool_index;
        apply_header_rules(req.base(), route_->request_headers);
    }
    const config::pool& pool_cfg = w_.cfg->gw.pools[pool];
    if (pool_cfg.rate_limit && !within_rate(pool, *pool_cfg.rate_limit)) {
        violation();
        co_return co_await reply(http::status::too_many_requests, false, retry_after(*pool_cfg.rate_limit));
    }
    std::optional<tunnel_slot> tunnel;
    if (upgrade == upgrade_kind::websocket && down_.can_tunnel()) {
        const unsigned limit = w_.cfg->gw.limits_settings.tunnels;
        if (w_.shared.tunnels_open.fetch_add(1, std::memory_order_relaxed) >= limit) {
            w_.shared.tunnels_open.fetch_sub(1, std::memory_order_relaxed);
            w_.counters.tunnels_refused.fetch_add(1, std::memory_order_relaxed);
            co_return co_await reply(http::status::service_unavailable, false);
        }
        tunnel.emplace(w_.shared.tunnels_open);
        req.set(http::field::connection, "Upgrade");
        req.set(http::field::upgrade, "websocket");
    }
    // An HTTP/1.0 client does not know 100 Continue (RFC 9110 10.1.1).
    if (expect_continue && !down_.request_done() && down_.version() >= 11) {
        conn_.arm(phase::response_body);
        if (co_await down_.write_continue()) {
            co_return exchange_end::abort;
        }
    }
    co_return co_await serve_pool(pool, tunnel.has_value());
}

// The key of balance: hash for this request; none when the request has no
// such header or cookie (the pool's schedule chooses then).
std::optional<std::uint64_t> exchange::affinity_key(const http::fields& f, const config::hash_key& k) const {
    switch (k.what) {
    case config::hash_key::kind::source:
        return stable_hash(client_->address);
    case config::hash_key::kind::uri: {
        const std::string_view target = down_.request().target();
        return stable_hash(target.substr(0, target.find('?')));
    }
    case config::hash_key::kind::header: {
        const auto it = f.find(k.name);
        if (it == f.end()) {
            return std::nullopt;
        }
        return stable_hash(it->value());
    }
    case config::hash_key::kind::cookie: {
        const auto v = find_cookie(f, k.name);
        if (!v) {
            return std::nullopt;
        }
        return stable_hash(*v);
    }
    }
    return std::nullopt;
}

// Set-Cookie of a sticky session: the member's value, for the whole site,
// over HTTPS only, out of scripts' reach.
std::string exchange::sticky_set_cookie(const config::sticky& st, std::string_view value) {
    std::string c = st.cookie + "=" + std::string(value) + "; Path=/";
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(st.ttl).count();
    if (seconds > 0) {
        c += "; Max-Age=" + std::to_string(seconds);
    }
    return c + "; Secure; HttpOnly; SameSite=Lax";
}

// Proxies the request to a server of `pool_index`, trying others as the
// retry policy allows, then relays the response.
net::awaitable<exchange_end> exchange::serve_pool(std::size_t pool_index, bool upgrade) {
    auto& req = down_.request();
    upstream_pool& pool = w_.pools[pool_index];
    const config::pool& pool_cfg = pool.config();
    const auto& limits = w_.cfg->gw.limits_settings;

    // Request buffering: a body up to buffer_body_bytes is read whole
    // before any server is chosen. A malformed or incomplete body then
    // never reaches a server, a slow client holds no server connection,
    // and the request can be sent again to another server. A larger body
    // streams, starting with what was read here.
    if (!down_.request_done() && limits.buffer_body_bytes > 0) {
        std::size_t want = static_cast<std::size_t>(limits.buffer_body_bytes);
        if (auto len = down_.request_remaining(); len && *len < want) {
            want = static_cast<std::size_t>(*len);
        }
        body_prefix_.resize(want);
        std::size_t filled = 0;
        while (!down_.request_done() && filled < want) {
            conn_.arm(phase::request_body);
            auto got = co_await down_.read_body(net::buffer(body_prefix_.data() + filled, want - filled));
            if (got.ec) {
                body_prefix_.clear();
                co_return co_await body_failed(got.ec);
            }
            filled += got.bytes;
        }
        body_prefix_.resize(filled);
    }
    bytes_received_ = body_prefix_.size();
    // What a retry may resend: the whole request is in memory.
    retry_policy policy(is_idempotent(req.method()), down_.request_done(), pool_cfg.retries);

    // Affinity: the member the sticky cookie names (the cookie itself is the
    // gateway's and does not go on to the app), and the key of balance: hash.
    pick_hint hint;
    if (pool_cfg.sticky_cookie) {
        if (const auto value = find_cookie(req.base(), pool_cfg.sticky_cookie->cookie)) {
            hint.sticky = pool.sticky_member(*value);
        }
        remove_cookie(req.base(), pool_cfg.sticky_cookie->cookie);
    }
    if (pool_cfg.algorithm == config::balance::hash) {
        hint.key = affinity_key(req.base(), pool_cfg.hash);
    }

    std::optional<upstream_pool::slot> taken;
    std::uint64_t tried = 0;
    for (;;) {
        taken.reset(); // a retry releases the server it leaves
        // The common case needs no coroutine frame: a server has a slot.
        const auto now_choice = pool.pick_now(tried, hint);
        std::optional<std::size_t> member = now_choice.member;
        if (!member && now_choice.full) {
            member = co_await pool.wait_in_queue(tried, conn_, w_.draining, hint);
        }
        if (!member) {
            co_return co_await reply(policy.no_server_status(), true);
        }
        if (pool_cfg.sticky_cookie && hint.sticky != member) {
            sticky_cookie_ = sticky_set_cookie(*pool_cfg.sticky_cookie, pool.sticky_value(*member));
        } else {
            sticky_cookie_.clear();
        }
        taken.emplace(pool, *member);
        tried |= *member < 64 ? std::uint64_t{1} << *member : 0;
        policy.on_server_chosen();
        const std::size_t server = pool.server_of(*member);
        server_health& state = pool.health(*member);
        state.count_request();
        upstream_ = server;
        const auto attempt_start = clock::now();

        proxy_attempt attempt(w_, conn_, down_, body_prefix_, head_request_, upgrade);
        const attempt_result r = co_await attempt.run(server, policy, up_, rp_);
        bytes_received_ = std::max(bytes_received_, r.body_sent);
        if (r.client_failed) {
            co_return co_await body_failed(r.ec);
        }
        if (r.failure) {
            record_failure(state, server, pool_cfg);
            log(log_level::warn, "upstream " + w_.cfg->servers[server].name +
                                     " failed: " + (r.failure->timed_out ? std::string("timeout") : r.ec.message()));
            if (r.decision.action != retry_action::retry_elsewhere) {
                co_return co_await reply(r.decision.status, true);
            }
            state.count_retry();
            ++retries_;
            continue;
        }
        upstream_time_ = clock::now() - attempt_start;
        if (rp_->get().result_int() >= 500) {
            record_failure(state, server, pool_cfg); // passed on, but counts against the server
        } else {
            state.on_attempt_success(pool_cfg.outlier, mono_now());
        }
        if (upgrade && rp_->get().result_int() == 101) {
            taken.reset(); // a tunnel is not a request in flight: max_connections does not count it
            co_return co_await run_tunnel();
        }
        bool retry = false;
        const exchange_end end = co_await relay_response(pool, policy, retry);
        if (!retry) {
            co_return end;
        }
        state.count_retry();
        ++retries_;
    }
}

// Relays the response whose head is in rp_ to the client, holding at most
// one piece of the body in memory whatever its size. `retry`: the body
// failed before any byte of it reached the client and the policy sends the
// request to another server.
net::awaitable<exchange_end> exchange::relay_response(upstream_pool& pool, retry_policy& policy, bool& retry) {
    auto& res = rp_->get();
    const std::size_t server = up_->server;
    server_health& state = *w_.server_states[server];
    const bool reusable = rp_->keep_alive();
    const bool length_unknown = rp_->need_eof() && !rp_->is_done();
    add_missing_headers(res.base(), w_.cfg->gw.security_headers);
    if (route_ != nullptr) {
        apply_header_rules(res.base(), route_->response_headers);
    }
    start_encoding(res.base()); // before the gateway's own cookie, which holds no secret of the app's
    if (!sticky_cookie_.empty()) {
        res.insert(http::field::set_cookie, sticky_cookie_); // beside the app's own cookies
    }
    res.set("X-Request-Id", request_id_);

    bool read_failed = false;
    error_code ec;
    std::unique_ptr<char[]> chunk;
    if (auto len = rp_->content_length_remaining(); len && *len > direct_threshold && !rp_->is_done()) {
        // A large body of known length needs no parsing: it moves socket
        // to socket through one piece, without the parser's buffer and a
        // second copy. The parser does not see it; the loop counts it.
        conn_.arm(phase::response_body);
        ec = co_await emit(res, {}, false, false);
        chunk.reset(new char[relay_chunk]);
        for (std::uint64_t remaining = *len; !ec && remaining > 0;) {
            std::size_t n = 0;
            const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, relay_chunk));
            if (up_->buffer.size() > 0) {
                // Body bytes that arrived with the head. Never more than
                // this body: what follows belongs to the next response.
                n = std::min(want, up_->buffer.size());
                net::buffer_copy(net::buffer(chunk.get(), n), up_->buffer.data());
                up_->buffer.consume(n);
            } else {
                conn_.arm(phase::response_body);
                auto [rec, got] = co_await up_->socket.async_read_some(net::buffer(chunk.get(), want));
                if (rec) {
                    ec = rec == net::error::eof ? error_code(http::error::partial_message) : rec;
                    read_failed = true;
                    break;
                }
                n = got;
            }
            remaining -= n;
            conn_.arm(phase::response_body);
            ec = co_await emit(res, net::const_buffer(chunk.get(), n), remaining == 0, false, true);
        }
    } else {
        std::size_t size = relay_chunk;
        if (auto known = rp_->content_length_remaining(); known && *known < size) {
            size = static_cast<std::size_t>(*known) + 1;
        }
        auto& body = res.body();
        // Beast reads into the source's flat_buffer as much as its free
        // capacity allows (at least 512 bytes) and then copies into the
        // body. Without room made here, a body arrives in header-sized
        // reads: 1 MiB took ~250 recv() calls and as many operations.
        if (!rp_->is_done()) {
            up_->buffer.reserve(std::min<std::size_t>(relay_chunk, up_->buffer.max_size()));
        }
        bool last = false;
        do {
            std::size_t n = 0;
            if (!rp_->is_done()) {
                if (!chunk) {
                    chunk.reset(new char[size]);
                }
                body.data = chunk.get();
                body.size = size;
                conn_.arm(phase::response_body);
                // read_some, not read: a piece goes on as soon as it arrived,
                // so a page the app sends slowly (or events) is not held
                // until 64 KiB have gathered.
                auto [rec, got] = co_await http::async_read_some(up_->socket, up_->buffer, *rp_, use_tuple);
                if (rec && rec != http::error::need_buffer) {
                    ec = rec;
                    read_failed = true;
                    break;
                }
                n = size - body.size;
            }
            last = rp_->is_done();
            if (n == 0 && !last && down_.head_written()) {
                continue; // only chunk framing arrived: nothing to pass on yet
            }
            conn_.arm(phase::response_body);
            ec = co_await emit(res, net::const_buffer(chunk.get(), n), last, length_unknown);
        } while (!ec && !last);
    }
    if (down_.head_written()) {
        count_status(res.result_int());
        if (const unsigned cls = res.result_int() / 100; cls >= 1 && cls <= 5) {
            state.count_response(cls);
        }
    }
    if (ec) {
        const bool timed_out = conn_.take_timeout();
        if (read_failed) {
            log(log_level::warn, "upstream " + w_.cfg->servers[server].name +
                                     " failed mid-response: " + (timed_out ? std::string("timeout") : ec.message()));
            attempt_failure_facts f{attempt_stage::response_body, timed_out};
            f.response_started = down_.head_written();
            record_failure(state, server, pool.config());
            if (policy.on_failure(f, w_.draining).action == retry_action::retry_elsewhere) {
                up_.reset();
                rp_.reset();
                conn_.use_upstream(nullptr);
                retry = true;
                co_return exchange_end::done;
            }
        }
        // Part of the response already reached the client: the only honest
        // signal left is to cut the connection.
        up_.reset();
        conn_.use_upstream(nullptr);
        co_return exchange_end::abort;
    }
    conn_.use_upstream(nullptr);
    if (reusable) {
        w_.upstreams.give_back(std::move(up_));
    } else {
        up_.reset();
    }
    co_return exchange_end::done;
}

// Compression of the app server's response, when the route (or the
// gateway) has it on and the response qualifies: Vary for every qualifying
// response, then the client's choice of coding.
void exchange::start_encoding(http::response_header<>& res) {
    encoder_.reset();
    const config::compression& cs = w_.cfg->gw.compression_settings;
    const bool on = route_ != nullptr && route_->compress ? *route_->compress : cs.enabled;
    if (!on || !compressible(res, down_.request().method(), cs)) {
        return;
    }
    add_vary_accept_encoding(res);
    const content_coding coding = choose_coding(down_.request()[http::field::accept_encoding], cs.codings);
    if (coding == content_coding::identity) {
        return;
    }
    mark_encoded(res, coding);
    if (head_request_) {
        return; // the head a GET would get, and no body to encode
    }
    encoder_.emplace(coding, cs);
    w_.counters.compressed_responses.fetch_add(1, std::memory_order_relaxed);
}

// Writes a piece of the response body (the head first, with it), through the
// encoder when there is one. Not a conditional expression of two co_awaits:
// GCC 12 resumes the wrong frame after one (a crash on the first response).
net::awaitable<error_code> exchange::emit(http::response<http::buffer_body>& res, net::const_buffer piece, bool last,
                                          bool length_unknown, bool bulk) {
    net::const_buffer out = piece;
    if (encoder_) {
        encoded_.clear();
        // A body of known length relayed directly (a download) is not
        // flushed piece by piece, as nginx's gzip does not: each flush ends
        // a deflate block and builds new trees (4 % more CPU per MiB). A
        // parsed body is: a full relay piece means more is on its way, a
        // shorter one (the source had no more for now) is flushed so that a
        // streamed response is not held back.
        const bool flush = !bulk && piece.size() < relay_chunk;
        if (!encoder_->encode(std::string_view(static_cast<const char*>(piece.data()), piece.size()), last, encoded_,
                              flush)) {
            co_return make_error_code(net::error::invalid_argument);
        }
        out = net::buffer(encoded_);
        w_.counters.compression_bytes_in.fetch_add(piece.size(), std::memory_order_relaxed);
        w_.counters.compression_bytes_out.fetch_add(out.size(), std::memory_order_relaxed);
        if (down_.head_written() && out.size() == 0 && !last) {
            co_return error_code{};
        }
        if (!down_.head_written()) {
            if (last) {
                res.content_length(out.size()); // the whole body in one piece: its length is known now
            }
            length_unknown = !last;
        }
    }
    error_code ec;
    if (down_.head_written()) {
        ec = co_await down_.write_body(out, last);
    } else {
        ec = co_await down_.write_head(res, out, last, length_unknown);
    }
    if (!ec) {
        bytes_sent_ += out.size();
    }
    co_return ec;
}

// The server answered 101 to a WebSocket upgrade: the client gets the 101,
// then bytes flow both ways until either side closes.
net::awaitable<exchange_end> exchange::run_tunnel() {
    auto& res = rp_->get();
    res.set("X-Request-Id", request_id_);
    conn_.arm(phase::response_body);
    if (co_await down_.write_head(res, {}, true, false)) {
        up_.reset();
        conn_.use_upstream(nullptr);
        co_return exchange_end::abort;
    }
    count_status(101);
    w_.counters.tunnels_total.fetch_add(1, std::memory_order_relaxed);
    w_.counters.tunnels_active.fetch_add(1, std::memory_order_relaxed);
    const tunnel_result t = co_await down_.tunnel(up_->socket, up_->buffer);
    w_.counters.tunnels_active.fetch_sub(1, std::memory_order_relaxed);
    bytes_sent_ += t.upstream_to_client;
    bytes_received_ += t.client_to_upstream;
    up_.reset(); // never reused: the server's side of the tunnel is over
    conn_.use_upstream(nullptr);
    co_return exchange_end::tunnel;
}

// A static route: the answer comes from static_files::serve (which opens
// the file safely beneath the root), the bytes from the file in pieces of
// static_piece, each straight into one write to the client.
net::awaitable<exchange_end> exchange::serve_static() {
    auto& req = down_.request();
    const std::string_view target = req.target();
    const auto query = target.find('?');
    static_request sr;
    sr.method = req.method_string();
    sr.path = target.substr(0, query);
    sr.query = query == std::string_view::npos ? std::string_view() : target.substr(query + 1);
    sr.accept_encoding = req[http::field::accept_encoding];
    sr.if_none_match = req[http::field::if_none_match];
    sr.if_modified_since = req[http::field::if_modified_since];
    sr.range = req[http::field::range];
    sr.if_range = req[http::field::if_range];
    const static_root* root = w_.static_roots[static_cast<std::size_t>(route_ - w_.cfg->gw.routes.data())].get();
    if (root == nullptr) {
        co_return co_await reply(http::status::not_found, false); // the root could not be opened
    }
    static_answer a = gateway::serve(*root, sr);
    if (a.status == 503 || (a.status == 404 && a.error != 0 && a.error != ENOENT && a.error != ENOTDIR)) {
        if (log_enabled(log_level::debug)) {
            log(log_level::debug, "static " + std::string(sr.path) + ": " + std::strerror(a.error));
        }
    }
    const auto status = static_cast<http::status>(a.status);
    if (a.status != 200 && a.status != 206 && a.status != 304) {
        auto res = make_error_response(status, down_.version() == 10 ? 10 : 11, w_.hsts_value, w_.draining);
        if (!a.location.empty()) {
            res.set(http::field::location, a.location);
        }
        if (!a.allow.empty()) {
            res.set(http::field::allow, a.allow);
        }
        if (!a.content_range.empty()) {
            res.set(http::field::content_range, a.content_range);
        }
        co_return co_await send(res, false);
    }
    http::response<http::buffer_body> res{status, down_.version() == 10 ? 10u : 11u};
    res.set(http::field::server, "rampart");
    if (!a.etag.empty()) {
        res.set(http::field::etag, a.etag);
    }
    if (!a.last_modified.empty()) {
        res.set(http::field::last_modified, a.last_modified);
    }
    if (!a.cache_control.empty()) {
        res.set(http::field::cache_control, a.cache_control);
    }
    if (a.vary_accept_encoding) {
        res.set(http::field::vary, "Accept-Encoding");
    }
    if (a.status != 304) {
        res.set(http::field::content_type, a.content_type);
        res.set(http::field::accept_ranges, "bytes");
        if (!a.content_encoding.empty()) {
            res.set(http::field::content_encoding, a.content_encoding);
        }
        if (!a.content_range.empty()) {
            res.set(http::field::content_range, a.content_range);
        }
        res.content_length(a.length);
    }
    add_missing_headers(res.base(), w_.cfg->gw.security_headers);
    apply_header_rules(res.base(), route_->response_headers);
    res.set("X-Request-Id", request_id_);
    count_status(a.status);
    conn_.arm(phase::response_body);
    if (!a.file || head_request_) {
        const error_code ec = co_await down_.write_head(res, {}, true, false);
        co_return ec ? exchange_end::abort : exchange_end::done;
    }
    co_return co_await send_file(res, a.file.get(), a.offset, a.length);
}

// The bytes [offset, offset + length) of `fd` as the body of `res`, the head
// with the first piece.
net::awaitable<exchange_end> exchange::send_file(http::response<http::buffer_body>& res, int fd, std::uint64_t offset,
                                                 std::uint64_t length) {
    std::vector<char> piece(static_cast<std::size_t>(std::min<std::uint64_t>(length, static_piece)));
    for (std::uint64_t left = length; left > 0;) {
        const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, piece.size()));
        const ssize_t n = ::pread(fd, piece.data(), want, static_cast<off_t>(offset));
        if (n <= 0) {
            // The file shrank or failed under us: the length is promised, so
            // the connection is cut rather than the body ending short.
            log(log_level::warn,
                std::string("static file: read failed (") + (n < 0 ? std::strerror(errno) : "the file shrank") + ")");
            co_return exchange_end::abort;
        }
        left -= static_cast<std::uint64_t>(n);
        offset += static_cast<std::uint64_t>(n);
        conn_.arm(phase::response_body);
        const net::const_buffer bytes(piece.data(), static_cast<std::size_t>(n));
        error_code ec;
        if (down_.head_written()) {
            ec = co_await down_.write_body(bytes, left == 0);
        } else {
            ec = co_await down_.write_head(res, bytes, left == 0, false);
        }
        if (ec) {
            conn_.take_timeout();
            co_return exchange_end::abort;
        }
        bytes_sent_ += static_cast<std::uint64_t>(n);
    }
    co_return exchange_end::done;
}

net::awaitable<exchange_end> exchange::body_failed(const error_code& ec) {
    const auto status = body_error_status(ec, conn_.take_timeout());
    if (!status) {
        co_return exchange_end::abort;
    }
    if (*status == http::status::payload_too_large) {
        co_return co_await reply(*status, true); // too large is not malformed
    }
    co_return co_await reject(*status);
}

net::awaitable<exchange_end> exchange::refuse(http::status status, bool head_read) {
    head_read_ = head_read;
    co_return co_await reject(status);
}

// A request refused before any server: malformed, too slow. Counts as a
// violation of the client; the connection closes after the answer.
net::awaitable<exchange_end> exchange::reject(http::status status) {
    w_.counters.requests_rejected.fetch_add(1, std::memory_order_relaxed);
    violation();
    co_return co_await reply(status, true);
}

// 503 with the error page, while the site or the route is in maintenance.
net::awaitable<exchange_end> exchange::maintenance() {
    w_.counters.maintenance_answers.fetch_add(1, std::memory_order_relaxed);
    const std::string retry = std::to_string(w_.shared.maintenance_retry_after.load(std::memory_order_relaxed));
    co_return co_await reply(http::status::service_unavailable, false, retry);
}

// The route's allow/deny lists, then its basic_auth. Answers 403, 401 (with
// the challenge) or 503 (too many verifications waiting) and returns how the
// exchange ended; none when the request may go on. Credentials that pass are
// taken out of the request: the app server does not see them.
net::awaitable<std::optional<exchange_end>> exchange::check_access(http::fields& f) {
    const std::size_t index = static_cast<std::size_t>(route_ - w_.cfg->gw.routes.data());
    const route_guard& guard = w_.route_guards[index];
    const client_address& who = forwarded_ ? *forwarded_ : conn_.admitted().address;
    // Behind a trusted proxy whose X-Forwarded-For names no client the
    // gateway can believe (an address with a port, a chain of trusted
    // proxies only), the proxy's own address would be judged: refuse.
    const bool unknown_behind_proxy =
        !forwarded_ && f.count("X-Forwarded-For") != 0 && w_.trusted_proxies.contains(conn_.admitted().address);
    if (unknown_behind_proxy || !guard.admits(who)) {
        w_.counters.access_denied.fetch_add(1, std::memory_order_relaxed);
        log_refused(client_->address, http::status::forbidden, "client address not allowed on this route");
        co_return co_await reply(http::status::forbidden, false);
    }
    if (guard.auth == nullptr) {
        co_return std::nullopt;
    }
    const auto given = f.find(http::field::authorization);
    auto credentials = given == f.end() ? std::nullopt : parse_basic_authorization(given->value());
    credential_checker::verdict v = credential_checker::verdict::wrong;
    if (credentials) {
        v = co_await w_.credentials.check(guard, index, *credentials);
        OPENSSL_cleanse(credentials->password.data(), credentials->password.size());
    }
    if (v == credential_checker::verdict::ok) {
        w_.counters.auth_results[0].fetch_add(1, std::memory_order_relaxed);
        auth_user_ = credentials->user;
        // The header's bytes are wiped before the field goes: the app
        // server never gets them, and they do not linger in freed memory.
        const std::string_view raw = given->value();
        OPENSSL_cleanse(const_cast<char*>(raw.data()), raw.size());
        f.erase(http::field::authorization);
        co_return std::nullopt;
    }
    if (v == credential_checker::verdict::busy) {
        w_.counters.auth_results[2].fetch_add(1, std::memory_order_relaxed);
        co_return co_await reply(http::status::service_unavailable, false, "1");
    }
    if (given != f.end()) {
        // Credentials that do not match (or do not parse) count against the
        // client; a request without any is a browser asking for the prompt.
        w_.counters.auth_results[1].fetch_add(1, std::memory_order_relaxed);
        violation();
        log_refused(client_->address, http::status::unauthorized, "basic authentication failed");
    }
    auto res =
        make_error_response(http::status::unauthorized, down_.version() == 10 ? 10 : 11, w_.hsts_value, w_.draining);
    res.set(http::field::www_authenticate, basic_challenge(guard.auth->realm));
    co_return co_await send(res, false);
}

// A short response made here. `close`: the connection ends after it
// (always when the request could not be read whole).
net::awaitable<exchange_end> exchange::reply(http::status status, bool close, std::string_view retry_after,
                                             std::string_view location) {
    auto res = make_error_response(status, down_.version() == 10 ? 10 : 11, w_.hsts_value, close || w_.draining);
    if (!retry_after.empty()) {
        res.set(http::field::retry_after, retry_after);
    }
    if (!location.empty()) {
        res.set(http::field::location, location);
    }
    co_return co_await send(res, close);
}

// Sends a whole response made here, with the fields every response gets.
net::awaitable<exchange_end> exchange::send(http::response<http::string_body>& res, bool close) {
    count_status(res.result_int());
    if (const config::error_page* page = w_.error_page_for(res.result_int())) {
        res.set(http::field::content_type, page->content_type);
        res.set(http::field::cache_control, "no-store");
        res.body() = page->body;
        res.content_length(page->body.size());
    }
    add_missing_headers(res.base(), w_.cfg->gw.security_headers);
    if (head_request_) {
        // HEAD: the length the body would have, and no body (bytes after
        // the head would be read as the next response).
        const auto length = res.body().size();
        res.body().clear();
        res.content_length(length);
    }
    res.set("X-Request-Id", request_id());
    conn_.arm(phase::response_body);
    if (co_await down_.write_response(res, close)) {
        conn_.take_timeout();
        co_return exchange_end::abort;
    }
    bytes_sent_ = res.body().size();
    co_return exchange_end::done;
}

// The client's request token bucket for this pool (shared by all workers).
bool exchange::within_rate(std::size_t pool, const config::rate& r) {
    const mono_ns now = mono_now();
    client_slot* bucket = find_client(w_.shared, forwarded_ ? *forwarded_ : conn_.admitted().address,
                                      static_cast<std::uint32_t>(pool), now);
    if (bucket == nullptr || take_token(*bucket, r.per_second(), r.burst, now)) {
        return true;
    }
    w_.pools[pool].shared().rate_limited.fetch_add(1, std::memory_order_relaxed);
    return false;
}

// Passive outlier detection (server_health::on_attempt_failure): all
// workers see an ejection through shared memory.
void exchange::record_failure(server_health& s, std::size_t server, const config::pool& pc) {
    const auto e = s.on_attempt_failure(pc.outlier, mono_now());
    if (e.ejected) {
        log(log_level::warn, "upstream " + w_.cfg->servers[server].name + " ejected for " +
                                 std::to_string(e.length / 1'000'000) + " ms after " + std::to_string(e.failures) +
                                 " consecutive failures");
    }
}

void exchange::count_status(unsigned status) {
    status_ = status;
    const unsigned cls = status / 100;
    if (cls >= 1 && cls <= 5) {
        w_.counters.responses_by_class[cls].fetch_add(1, std::memory_order_relaxed);
    }
}

/// The request's id; one is made up for a request whose head could not be read.
const std::string& exchange::request_id() {
    if (request_id_.empty()) {
        request_id_ = w_.request_ids.next();
    }
    return request_id_;
}

// One access log line per request that got an answer or whose head was read
// (499 when the client left before any answer, as nginx logs it). Nothing
// for a connection that closed or timed out between requests.
void exchange::finish(const http::request_header<>& h) {
    if (status_ == 0 && !head_read_) {
        return;
    }
    w_.counters.request_latency.observe(clock::now() - start_);
    if (upstream_time_) {
        w_.counters.upstream_latency.observe(*upstream_time_);
    }
    if (w_.requests_log == nullptr) {
        return;
    }
    access_record r;
    r.time = wall_;
    r.client = client_->address;
    r.method = h.method_string();
    r.host = h[http::field::host];
    r.path = h.target();
    r.referer = h[http::field::referer];
    r.user_agent = h[http::field::user_agent];
    r.status = status_ != 0 ? status_ : 499;
    r.bytes_sent = bytes_sent_;
    r.bytes_received = bytes_received_;
    r.request_time = clock::now() - start_;
    r.upstream = upstream_ ? std::string_view(w_.cfg->servers[*upstream_].name) : std::string_view();
    r.upstream_time = upstream_time_;
    r.protocol = down_.version() == 20 ? "h2" : down_.version() == 10 ? "http/1.0" : "http/1.1";
    r.tls_version = facts_.tls_version;
    r.cipher = facts_.cipher;
    r.resumed = facts_.resumed;
    r.request_id = request_id();
    r.retries = retries_;
    r.user = auth_user_;
    w_.requests_log->write(r);
}

} // namespace rampart::gateway
