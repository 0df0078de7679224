#pragma once
// A worker: one single-threaded io_context that accepts on its own listening
// sockets and serves connections until SIGTERM/SIGINT tells it to drain. The
// master runs each worker in its own process (DESIGN.md).

#include "certs/certs.hpp"
#include "config/config.hpp"
#include "gateway/net.hpp"
#include "gateway/proxy/access_log.hpp"
#include "gateway/proxy/basic_auth.hpp"
#include "gateway/proxy/connection_base.hpp"
#include "gateway/proxy/http_rules.hpp"
#include "gateway/proxy/router.hpp"
#include "gateway/proxy/static_files.hpp"
#include "gateway/proxy/upstream.hpp"
#include "gateway/proxy/upstream_pool.hpp"
#include "gateway/shared_state.hpp"

#include <boost/asio/posix/stream_descriptor.hpp>
#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

namespace rampart::gateway {

class connection_base;

/// Listening sockets handed to a worker (already bound and listening). A
/// worker may get several per listener: after a reload to fewer workers the
/// new ones serve every socket the old ones did, so no accept queue is left
/// without a reader.
struct worker_sockets {
    std::vector<int> https;
    std::vector<int> http;
    int access_log = -1;   ///< where access log lines go (opened by the master); -1 when off
    int signals = -1;      ///< a signalfd for SIGTERM/SIGINT (the drain); -1: none
    int master_alive = -1; ///< the master's life line: reads EOF once the master is gone; -1: none
};

/// Everything a connection needs from its worker. Lives as long as the
/// worker; connections hold a reference. Used only on the worker's io_context.
struct worker_context {
    /// `counter_slot`: this worker's entry in shared_block::workers.
    worker_context(net::io_context& io, config::snapshot_ptr cfg, SSL_CTX* tls, shared_block& shared,
                   const slot_map& slots, unsigned counter_slot);

    net::io_context& io;
    config::snapshot_ptr cfg;
    SSL_CTX* tls_context = nullptr; ///< owned by certs::server_tls, which outlives the worker
    shared_block& shared;
    worker_counters& counters;
    upstream_cache upstreams;
    std::vector<server_health*> server_states;   ///< per server: its shared slot
    std::vector<tcp::endpoint> server_endpoints; ///< per server
    std::vector<upstream_pool> pools;            ///< per pool of cfg
    std::size_t default_pool = 0;
    router routes; ///< gateway.routes of cfg
    /// Per route of cfg: its static root, opened once (null for other routes).
    std::vector<std::unique_ptr<static_root>> static_roots;
    /// gateway.tls.acme_webroot, opened once (null: off).
    std::unique_ptr<static_root> acme_webroot;
    /// Per route of cfg: its allow, deny and basic_auth, prepared once.
    std::vector<route_guard> route_guards;
    /// gateway.error_pages by status (null: the plain-text body).
    const config::error_page* error_page_for(unsigned status) const {
        for (const auto& p : cfg->gw.error_pages) {
            if (p.status == status) {
                return &p;
            }
        }
        return nullptr;
    }
    std::string hsts_value;      ///< "" when HSTS is off
    network_set trusted_proxies; ///< gateway.trusted_proxies, parsed once
    std::uint16_t https_port = 443;
    bool draining = false;
    std::unordered_set<connection_base*> connections;
    access_log* requests_log = nullptr; ///< null when the access log is off
    request_id_source request_ids;      ///< X-Request-Id for requests without one
    /// basic_auth's hashing thread (started on first use). Declared last,
    /// destroyed first: the thread is joined, and requests waiting on it are
    /// let go, while everything they refer to is still there.
    credential_checker credentials;
};

class worker {
public:
    /// `tls` may be null when there is no https listener. The worker takes
    /// ownership of the socket descriptors.
    worker(config::snapshot_ptr cfg, SSL_CTX* tls, shared_block& shared, const slot_map& slots, unsigned counter_slot,
           worker_sockets sockets);
    ~worker();
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    /// Serves until drained; SIGTERM/SIGINT (read from sockets.signals) or
    /// the master's end (sockets.master_alive) start the drain.
    void run();

private:
    void begin_drain();
    net::awaitable<void> accept_loop(tcp_acceptor& acceptor, bool tls);
    /// Admits and starts an accepted connection (TLS or the port-80 redirect).
    void start(tcp_socket socket, const tcp::endpoint& client, bool tls, bool proxied = false);
    /// gateway.listen.proxy_protocol: reads the PROXY header a trusted
    /// balancer sends first (exactly its bytes, within the handshake
    /// timeout), then start()s the connection as the client it names.
    net::awaitable<void> accept_proxied(tcp_socket socket, tcp::endpoint peer, bool tls);
    bool trusted_proxy(const client_address& a) const;
    std::optional<admission> admit(const tcp::endpoint& peer, bool proxied);
    bool refuse_one(tcp_acceptor& acceptor);
    net::awaitable<void> drain_deadline();
    net::awaitable<void> sweep_upstreams();

    // Declared first, destroyed last: connections hold a pointer to it until
    // the io_context is gone.
    std::unique_ptr<access_log> access_log_;
    // One thread runs this io_context and every socket and timer of the
    // worker lives on it: the reactor needs no per-descriptor locking.
    net::io_context io_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
    worker_context ctx_;
    std::vector<std::unique_ptr<tcp_acceptor>> https_;
    std::vector<std::unique_ptr<tcp_acceptor>> http_;
    std::optional<net::posix::stream_descriptor> signals_;
    std::optional<net::posix::stream_descriptor> master_alive_;
    std::optional<net::steady_timer> sweep_timer_;
    /// A descriptor held in reserve: out of descriptors, the worker gives it
    /// up for a moment to take a waiting connection and close it (refuse_one).
    int reserve_fd_ = -1;
    mono_ns refused_logged_ = 0;         ///< when "out of descriptors" was last logged
    std::uint64_t refused_unlogged_ = 0; ///< refusals since then
};

} // namespace rampart::gateway
