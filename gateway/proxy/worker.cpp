#include "gateway/proxy/worker.hpp"

#include "gateway/log.hpp"
#include "gateway/proxy/client_connection.hpp"
#include "gateway/proxy/proxy_protocol.hpp"

#include <boost/asio/posix/stream_descriptor.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <span>
#include <vector>

namespace rampart::gateway {
namespace {

/// The peer's address as the client table keys it (IPv4 as v4-mapped).
client_address address_of(const tcp::endpoint& peer) {
    const auto address = peer.address();
    const auto v6 = address.is_v6() ? address.to_v6() : net::ip::make_address_v6(net::ip::v4_mapped, address.to_v4());
    const auto bytes = v6.to_bytes();
    unsigned char raw[16];
    std::copy(bytes.begin(), bytes.end(), raw);
    return client_address::from_bytes(raw);
}

/// How long an idle upstream keep-alive connection is kept. Below the usual
/// backend keep-alive timeouts (nginx 75 s, Apache 5 s is the outlier the
/// peek in upstream_cache::take covers).
constexpr std::chrono::seconds upstream_idle_time{30};

} // namespace

worker_context::worker_context(net::io_context& io_, config::snapshot_ptr cfg_, SSL_CTX* tls_ctx, shared_block& shared_,
                               const slot_map& slots, unsigned counter_slot)
    : io(io_), cfg(std::move(cfg_)), tls_context(tls_ctx), shared(shared_), counters(shared_.workers[counter_slot]),
      upstreams(cfg->servers.size(), cfg->gw.limits_settings.upstream_idle_per_server, upstream_idle_time),
      routes(cfg->gw), trusted_proxies(cfg->gw.trusted_proxies), request_ids(random_seed()), credentials(io_) {
    for (std::size_t si : slots.servers) {
        server_states.push_back(&shared.servers[si]);
    }
    for (const auto& s : cfg->servers) {
        error_code ec;
        auto address = net::ip::make_address(s.address, ec);
        server_endpoints.emplace_back(address, s.port.value_or(0));
    }
    for (std::size_t pi = 0; pi < cfg->gw.pools.size(); ++pi) {
        const auto& p = cfg->gw.pools[pi];
        pools.emplace_back(p, shared.pools[slots.pools[pi]], server_states, shared.weights_version);
        for (const auto& m : p.members) {
            // The pool member's own address wins over the server entry's.
            error_code ec;
            server_endpoints[m.server] = tcp::endpoint(net::ip::make_address(m.address.host, ec), m.address.port);
        }
        if (p.name == cfg->gw.default_pool) {
            default_pool = pi;
        }
    }
    for (const auto& r : cfg->gw.routes) {
        // Opened once per worker, before any request. A root that cannot be
        // opened (`rampart check` warns) answers 404 until a reload finds it.
        std::unique_ptr<static_root> root;
        if (r.files) {
            try {
                root = std::make_unique<static_root>(*r.files, r.path);
            } catch (const std::exception& e) {
                log(log_level::error,
                    std::string("static route ") + r.path + ": " + e.what() + "; its requests get 404");
            }
        }
        static_roots.push_back(std::move(root));
        route_guards.emplace_back(r.access);
        route_guards.back().name_key = r.name.empty() ? 0 : route_name_key(r.name);
    }
    if (const auto& webroot = cfg->gw.tls_settings.acme_webroot; !webroot.empty()) {
        // The webroot itself (certbot makes .well-known/acme-challenge in it
        // when it runs); only /.well-known/acme-challenge/TOKEN reaches it,
        // hence `hidden` for the ".well-known" segment.
        config::route_static files;
        files.root = webroot;
        files.index.clear();
        files.hidden = true;
        files.precompressed = false;
        try {
            acme_webroot = std::make_unique<static_root>(files, "/");
        } catch (const std::exception& e) {
            log(log_level::error, std::string("gateway.tls.acme_webroot: ") + e.what() +
                                      "; challenge requests are redirected like any other until a reload finds it");
        }
    }
    if (cfg->gw.hsts_settings.enabled) {
        hsts_value = cfg->gw.hsts_settings.header_value();
    }
    if (cfg->gw.listen.https) {
        https_port = cfg->gw.listen.https->port;
    }
}

worker::worker(config::snapshot_ptr cfg, SSL_CTX* tls, shared_block& shared, const slot_map& slots,
               unsigned counter_slot, worker_sockets sockets)
    : ctx_(io_, std::move(cfg), tls, shared, slots, counter_slot) {
    // tls-alpn-01: validation certificates come from this process's shared
    // block (one worker per process, so one block). Without that challenge
    // configured there is none to serve, and a handshake never looks.
    static shared_block* acme_block = nullptr;
    acme_block = &shared;
    const auto& acme = ctx_.cfg->gw.tls_settings.acme_settings;
    certs::acme_alpn_lookup lookup = [](const std::string& name, std::string& cert_der, std::string& key_der) {
        auto found = find_acme_alpn(acme_block->acme, name);
        if (!found) {
            return false;
        }
        cert_der = std::move(found->cert_der);
        key_der = std::move(found->key_der);
        return true;
    };
    certs::set_acme_alpn_lookup(acme && acme->challenge == "tls-alpn-01" ? lookup : nullptr);
    if (sockets.access_log >= 0) {
        access_log_ = std::make_unique<access_log>(sockets.access_log, ctx_.cfg->gw.access_log_settings.buffer_bytes,
                                                   ctx_.counters.access_log_dropped, &ctx_.shared.access_log_mid_line,
                                                   &ctx_.cfg->gw.access_log_settings);
        ctx_.requests_log = access_log_.get();
    }
    auto adopt_socket = [this](int fd) {
        auto a = std::make_unique<tcp_acceptor>(io_);
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
        a->assign(ss.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd);
        return a;
    };
    for (int fd : sockets.https) {
        https_.push_back(adopt_socket(fd));
    }
    for (int fd : sockets.http) {
        http_.push_back(adopt_socket(fd));
    }
    if (sockets.signals >= 0) {
        signals_.emplace(io_, sockets.signals);
    }
    if (sockets.master_alive >= 0) {
        master_alive_.emplace(io_, sockets.master_alive);
    }
    reserve_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

worker::~worker() {
    if (reserve_fd_ >= 0) {
        ::close(reserve_fd_);
    }
}

void worker::run() {
    for (auto& a : https_) {
        net::co_spawn(io_, accept_loop(*a, true), log_failure{"accept loop failed: "});
    }
    for (auto& a : http_) {
        net::co_spawn(io_, accept_loop(*a, false), log_failure{"accept loop failed: "});
    }
    net::co_spawn(io_, sweep_upstreams(), log_failure{"upstream sweep failed: "});
    if (signals_) {
        signals_->async_wait(net::posix::stream_descriptor::wait_read, [this](const error_code& ec) {
            if (!ec) {
                begin_drain();
            }
        });
    }
    if (master_alive_) {
        // Nothing is ever written: readable means EOF, the master is gone
        // (killed, crashed). Its workers must not outlive it holding the
        // listening sockets: they drain as on SIGTERM.
        master_alive_->async_wait(net::posix::stream_descriptor::wait_read, [this](const error_code& ec) {
            if (!ec) {
                log(log_level::warn, "worker: the master is gone; draining");
                begin_drain();
            }
        });
    }
    if (access_log_) {
        access_log_->start(); // in the worker process, after the fork
    }
    io_.run();
    if (access_log_) {
        access_log_->stop(); // every connection has ended: write out the last lines
    }
}

// Drain: stop accepting, close idle connections, let requests in flight
// finish (their responses say Connection: close), and after the drain
// deadline abort what is left. run() returns when the last connection ends.
void worker::begin_drain() {
    if (ctx_.draining) {
        return;
    }
    ctx_.draining = true;
    error_code ec;
    if (signals_) {
        signals_->cancel(ec);
    }
    if (master_alive_) {
        master_alive_->cancel(ec);
    }
    if (sweep_timer_) {
        sweep_timer_->cancel();
    }
    for (auto& a : https_) {
        a->close(ec);
    }
    for (auto& a : http_) {
        a->close(ec);
    }
    ctx_.upstreams.clear();
    std::vector<connection_base*> live(ctx_.connections.begin(), ctx_.connections.end());
    for (auto* s : live) {
        s->drain();
    }
    net::co_spawn(io_, drain_deadline(), log_failure{"drain deadline failed: "});
}

net::awaitable<void> worker::drain_deadline() {
    if (ctx_.connections.empty()) {
        co_return;
    }
    // Checked in short steps so the worker exits as soon as the last connection
    // is gone, instead of sleeping out the whole deadline.
    net::steady_timer timer(io_);
    const auto end = std::chrono::steady_clock::now() + ctx_.cfg->gw.timeouts_settings.drain;
    while (!ctx_.connections.empty() && std::chrono::steady_clock::now() < end) {
        timer.expires_after(std::chrono::milliseconds(50));
        co_await timer.async_wait(use_tuple);
    }
    std::vector<connection_base*> live(ctx_.connections.begin(), ctx_.connections.end());
    if (!live.empty()) {
        log(log_level::warn, "drain deadline passed: closing " + std::to_string(live.size()) + " connections");
    }
    for (auto* s : live) {
        s->terminate();
    }
    ctx_.upstreams.clear();
}

// Every few seconds, closes pooled upstream connections the backends have
// closed or that expired. Ends with the drain (which closes the rest).
net::awaitable<void> worker::sweep_upstreams() {
    sweep_timer_.emplace(io_);
    while (!ctx_.draining) {
        sweep_timer_->expires_after(std::chrono::seconds(5));
        auto [ec] = co_await sweep_timer_->async_wait(use_tuple);
        if (ec || ctx_.draining) {
            co_return;
        }
        ctx_.upstreams.sweep();
    }
}

// The connection caps: overall and per client address, checked before any
// TLS work is paid for. A refused connection is closed at once; one over the
// per-client cap also counts as a violation (a slowloris flood from one
// source ends in the blocklist).
std::optional<admission> worker::admit(const tcp::endpoint& peer, bool proxied) {
    const auto& limits = ctx_.cfg->gw.limits_settings;
    admission a;
    a.address = address_of(peer);
    if (limits.max_connections != 0 &&
        ctx_.shared.connections_open.load(std::memory_order_relaxed) >= limits.max_connections) {
        ctx_.counters.connections_refused_total.fetch_add(1, std::memory_order_relaxed);
        return std::nullopt;
    }
    const mono_ns now = mono_now();
    a.slot = find_client(ctx_.shared, a.address, scope_connections, now);
    if (a.slot != nullptr && proxied) {
        // The master then blocks it at layer 7, not in the firewall.
        a.slot->via_proxy.store(1, std::memory_order_relaxed);
    }
    // A trusted proxy carries many clients' connections: the per-client cap
    // is not its to meet (its clients', named by a PROXY header, are).
    if (a.slot != nullptr && limits.max_connections_per_client != 0 &&
        a.slot->connections.load(std::memory_order_relaxed) >= limits.max_connections_per_client &&
        (proxied || !trusted_proxy(a.address))) {
        ctx_.counters.connections_refused_client.fetch_add(1, std::memory_order_relaxed);
        a.slot->violations.fetch_add(1, std::memory_order_relaxed);
        ctx_.shared.abuse_violations.fetch_add(1, std::memory_order_relaxed);
        return std::nullopt;
    }
    return a;
}

// Out of descriptors, a connection stays in the listen queue: its client
// waits for a handshake that never comes and the listener stays readable, so
// the loop would spin. The reserve descriptor is closed for a moment to take
// that connection and close it at once (the client sees the refusal now and
// may go elsewhere), then taken back. Logged once per 10 s with the count.
bool worker::refuse_one(tcp_acceptor& acceptor) {
    if (reserve_fd_ < 0) {
        reserve_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        return false;
    }
    ::close(reserve_fd_);
    const int fd = ::accept4(acceptor.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
        ::close(fd);
        ctx_.counters.connections_refused_descriptors.fetch_add(1, std::memory_order_relaxed);
        ++refused_unlogged_;
    }
    reserve_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const mono_ns now = mono_now();
    if (refused_unlogged_ != 0 && now - refused_logged_ >= 10'000'000'000LL) {
        log(log_level::warn, "out of descriptors: refused " + std::to_string(refused_unlogged_) +
                                 " connection(s) at accept (see RLIMIT_NOFILE)");
        refused_logged_ = now;
        refused_unlogged_ = 0;
    }
    return fd >= 0;
}

net::awaitable<void> worker::accept_loop(tcp_acceptor& acceptor, bool tls) {
    net::steady_timer backoff(io_);
    while (!ctx_.draining) {
        // The peer's address comes with accept() itself: no getpeername().
        tcp::endpoint peer;
        auto [ec, socket] = co_await acceptor.async_accept(peer);
        if (ec) {
            if (ctx_.draining || ec == net::error::operation_aborted) {
                co_return;
            }
            if ((ec == net::error::no_descriptors || ec == std::errc::too_many_files_open_in_system) &&
                refuse_one(acceptor)) {
                continue;
            }
            // Out of memory, or the reserve is gone: back off instead of spinning.
            log(log_level::warn, "accept failed: " + ec.message());
            backoff.expires_after(std::chrono::milliseconds(100));
            co_await backoff.async_wait(use_tuple);
            continue;
        }
        if (ctx_.cfg->gw.listen.proxy_protocol) {
            if (!trusted_proxy(address_of(peer))) {
                // Only a trusted balancer may say whose connection it is.
                ctx_.counters.proxy_refused.fetch_add(1, std::memory_order_relaxed);
                error_code ignored;
                socket.close(ignored);
                continue;
            }
            net::co_spawn(io_, accept_proxied(tcp_socket(std::move(socket)), peer, tls),
                          log_failure{"PROXY header read failed: "});
            continue;
        }
        start(tcp_socket(std::move(socket)), peer, tls);
    }
}

void worker::start(tcp_socket socket, const tcp::endpoint& client, bool tls, bool proxied) {
    auto admitted = admit(client, proxied);
    error_code ignored;
    if (!admitted) {
        socket.close(ignored);
        return;
    }
    socket.set_option(tcp::no_delay(true), ignored);
    // Setting up a connection can fail only for want of memory or
    // descriptors: that connection is dropped, the worker goes on.
    try {
        if (tls) {
            start_tls_connection(ctx_, std::move(socket), *admitted);
        } else {
            start_redirect_connection(ctx_, std::move(socket), *admitted);
        }
    } catch (const std::exception& e) {
        log(log_level::warn, std::string("cannot start a connection: ") + e.what());
    }
}

bool worker::trusted_proxy(const client_address& a) const {
    return ctx_.trusted_proxies.contains(a);
}

// The PROXY header is read without reading past it: what follows is the
// client's (a TLS ClientHello). The bytes are looked at with MSG_PEEK; while
// the header is incomplete, every byte seen belongs to it and is taken, so
// the next wait is for new bytes; once it is complete, exactly the rest of
// it is taken.
namespace {

/// What accept_proxied() reads the header into (off the coroutine frame).
struct proxy_header_read {
    unsigned char bytes[proxy_protocol::max_header];
    std::size_t have = 0;
    proxy_protocol::result result;
    const char* failure = nullptr;

    /// One look at the socket after it became readable: false when done
    /// (a whole header, or `failure` set).
    bool step(int fd) {
        const ssize_t n = ::recv(fd, bytes + have, sizeof bytes - have, MSG_PEEK);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                return true;
            }
            failure = "the connection closed before its PROXY header ended";
            return false;
        }
        result = proxy_protocol::parse(std::span<const unsigned char>(bytes, have + static_cast<std::size_t>(n)));
        if (result.what == proxy_protocol::outcome::invalid) {
            failure = result.error.data();
            return false;
        }
        const bool whole = result.what == proxy_protocol::outcome::header;
        const std::size_t take = whole ? result.length - have : static_cast<std::size_t>(n);
        if (::recv(fd, bytes + have, take, 0) != static_cast<ssize_t>(take)) {
            failure = "the PROXY header could not be read";
            return false;
        }
        have += take;
        if (!whole && have == sizeof bytes) {
            failure = "a PROXY header longer than its limit";
            return false;
        }
        return !whole;
    }
};

} // namespace

net::awaitable<void> worker::accept_proxied(tcp_socket socket, tcp::endpoint peer, bool tls) {
    auto read = std::make_unique<proxy_header_read>();
    auto alive = std::make_shared<bool>(true);
    net::steady_timer deadline(io_);
    deadline.expires_after(ctx_.cfg->gw.timeouts_settings.handshake);
    deadline.async_wait([alive, &socket](const error_code& ec) {
        if (!ec && *alive) {
            error_code ignored;
            socket.cancel(ignored);
        }
    });
    bool more = true;
    for (int round = 0; round < 64 && more; ++round) {
        auto [ec] = co_await socket.async_wait(tcp::socket::wait_read);
        if (ec) {
            read->failure = ec == net::error::operation_aborted ? "no whole PROXY header within the handshake timeout"
                                                                : "the connection failed before its PROXY header";
            break;
        }
        more = read->step(socket.native_handle());
    }
    *alive = false;
    deadline.cancel();
    const proxy_protocol::result& r = read->result;
    if (read->failure == nullptr && r.what != proxy_protocol::outcome::header) {
        read->failure = "a PROXY header sent in too many pieces";
    }
    if (read->failure != nullptr) {
        ctx_.counters.proxy_header_errors.fetch_add(1, std::memory_order_relaxed);
        log(log_level::debug, "connection from " + peer.address().to_string() + " refused: " + read->failure);
        error_code ignored;
        socket.close(ignored);
        co_return;
    }
    tcp::endpoint client = peer;
    if (!r.local) {
        client = tcp::endpoint(net::ip::make_address(r.source.to_string()), r.source_port);
        ctx_.counters.proxy_headers.fetch_add(1, std::memory_order_relaxed);
    }
    start(std::move(socket), client, tls, !r.local);
}

} // namespace rampart::gateway
