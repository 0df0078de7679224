#pragma once
// State shared by the master and every worker process: one anonymous
// MAP_SHARED mapping made by the master before it forks. Fixed-size structs of
// plain atomics, no pointers inside (DESIGN.md). Workers write their own
// counters, the per-server active counts and the passive outlier state; the
// master writes the health-check results and sums for /metrics.

#include "config/config.hpp"
#include "gateway/server_health.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rampart::gateway {

/// Per upstream pool, indexed like gateway::pools.
struct alignas(64) pool_state {
    std::atomic<std::uint64_t> next{0};   ///< position in the balancing schedule, shared so rotation is exact
    std::atomic<std::uint32_t> queued{0}; ///< requests waiting for a server slot, all workers
    std::atomic<std::uint64_t> queue_timeouts{0};
    std::atomic<std::uint64_t> rate_limited{0};
};

/// Upper bounds of the latency histograms' buckets, in microseconds (1 ms to
/// 10 s; a last bucket takes the rest).
constexpr std::uint64_t latency_bounds_us[] = {1'000,   2'500,   5'000,   10'000,    25'000,    50'000,
                                               100'000, 250'000, 500'000, 1'000'000, 2'500'000, 10'000'000};
constexpr std::size_t latency_buckets = std::size(latency_bounds_us);

/// A Prometheus histogram kept by one worker: per-bucket counts (not
/// cumulative; the renderer sums), the sum in microseconds.
struct latency_histogram {
    std::atomic<std::uint64_t> buckets[latency_buckets + 1]{};
    std::atomic<std::uint64_t> sum_us{0};

    void observe(std::chrono::nanoseconds d) {
        const auto us = static_cast<std::uint64_t>(std::max<std::int64_t>(0, d.count() / 1000));
        std::size_t i = 0;
        while (i < latency_buckets && us > latency_bounds_us[i]) {
            ++i;
        }
        buckets[i].fetch_add(1, std::memory_order_relaxed);
        sum_us.fetch_add(us, std::memory_order_relaxed);
    }
};

/// Kinds of HTTP/2 abuse counted (gateway/proxy/h2_connection.hpp, h2_abuse).
constexpr std::size_t h2_abuse_counters = 10;

/// Per worker process; only that worker writes it.
struct alignas(64) worker_counters {
    latency_histogram request_latency;  ///< first request byte to last response byte
    latency_histogram upstream_latency; ///< connect (or reuse) to the upstream response header
    std::atomic<std::uint64_t> connections_total{0};
    std::atomic<std::uint64_t> connections_active{0};
    std::atomic<std::uint64_t> connections_refused_client{0};      ///< over limits.max_connections_per_client
    std::atomic<std::uint64_t> connections_refused_total{0};       ///< over limits.max_connections
    std::atomic<std::uint64_t> connections_refused_descriptors{0}; ///< the worker was out of descriptors
    std::atomic<std::uint64_t> handshakes_full{0};
    std::atomic<std::uint64_t> handshakes_resumed{0};
    std::atomic<std::uint64_t> handshake_failures{0};
    std::atomic<std::uint64_t> handshake_failures_by[3]{}; ///< timeout, closed by the client, TLS error
    std::atomic<std::uint64_t> handshakes_tls12{0};
    std::atomic<std::uint64_t> handshakes_tls13{0};
    std::atomic<std::uint64_t> bytes_in{0};  ///< from clients, on the wire (TLS records)
    std::atomic<std::uint64_t> bytes_out{0}; ///< to clients, on the wire
    std::atomic<std::uint64_t> requests_total{0};
    std::atomic<std::uint64_t> requests_rejected{0};    ///< malformed or refused before any backend
    std::atomic<std::uint64_t> responses_by_class[6]{}; ///< index = status / 100 (0 unused)
    std::atomic<std::uint64_t> access_log_dropped{0};   ///< access log lines dropped (ring full, write failed)
    std::atomic<std::uint64_t> tunnels_total{0};        ///< upgraded connections (WebSocket) opened
    std::atomic<std::uint64_t> tunnels_active{0};
    std::atomic<std::uint64_t> tunnels_refused{0};      ///< upgrades answered 503: limits.tunnels reached
    std::atomic<std::uint64_t> h2_connections_total{0}; ///< connections that chose h2 in ALPN
    std::atomic<std::uint64_t> h2_connections_active{0};
    std::atomic<std::uint64_t> h2_streams_total{0};           ///< request streams opened
    std::atomic<std::uint64_t> h2_requests_total{0};          ///< of requests_total, those over h2
    std::atomic<std::uint64_t> h2_abuse[h2_abuse_counters]{}; ///< connections closed for abuse, by h2_abuse kind
    std::atomic<std::uint64_t> h2_idle_releases{0};           ///< idle h2 connections' pages handed back to the kernel
    std::atomic<std::uint64_t> proxy_headers{0};              ///< PROXY headers that named a client
    std::atomic<std::uint64_t> proxy_header_errors{0};      ///< connections closed for a missing or broken PROXY header
    std::atomic<std::uint64_t> proxy_refused{0};            ///< connections refused: PROXY listener, peer not trusted
    std::atomic<std::uint64_t> requests_blocked{0};         ///< 403s to clients blocked at layer 7
    std::atomic<std::uint64_t> access_denied{0};            ///< 403s from a route's allow/deny lists
    std::atomic<std::uint64_t> auth_results[3]{};           ///< basic_auth: passed, failed, busy (503)
    std::atomic<std::uint64_t> maintenance_answers{0};      ///< 503s while the site or a route is in maintenance
    std::atomic<std::uint64_t> acme_challenges_answered{0}; ///< http-01 and tls-alpn-01 validations answered
    std::atomic<std::uint64_t> compressed_responses{0};     ///< responses sent gzip- or brotli-encoded
    std::atomic<std::uint64_t> compression_bytes_in{0};     ///< their bytes before ...
    std::atomic<std::uint64_t> compression_bytes_out{0};    ///< ... and after encoding
};

/// One client address in the shared client table: open connections, a
/// request token bucket per pool is a separate slot (keyed with the pool).
struct client_slot {
    std::atomic<std::uint64_t> key{0};     ///< hash of (address, scope) | 1; 0 = free
    std::atomic<std::uint64_t> addr_hi{0}; ///< the address (IPv6 or v4-mapped), for the blocklist
    std::atomic<std::uint64_t> addr_lo{0};
    std::atomic<std::uint32_t> connections{0};
    std::atomic<std::uint32_t> violations{0}; ///< since the master last looked
    std::atomic<std::uint64_t> bucket{0};     ///< token bucket: ms stamp << 32 | milli-tokens; 0 = full
    std::atomic<mono_ns> last_seen{0};
    /// Blocked at layer 7 until then (403 to every request): a client behind
    /// a trusted proxy, whose packets the firewall cannot tell apart.
    std::atomic<mono_ns> blocked_until{0};
    std::atomic<std::uint32_t> via_proxy{0}; ///< 1: its address came from a PROXY header
};

constexpr std::size_t max_servers = 1024;
constexpr std::size_t max_pools = 64;
constexpr std::size_t max_workers = 256;
constexpr std::size_t client_slots = 1 << 16; ///< power of two
constexpr std::size_t client_probe = 16;      ///< slots tried per lookup

/// A name owning a server or pool slot; written by the master only, before it
/// forks the workers that use the slot.
struct slot_name {
    char text[64] = {};
};

/// Routes that can be in maintenance at once.
constexpr std::size_t max_maintenance_routes = 64;

/// splitmix64's finalizer: every bit of `x` moves every bit of the result.
std::uint64_t mix64(std::uint64_t x);

/// A 64-bit hash of `text` that is the same in every worker, build and node
/// (FNV-1a, then mix64): what `balance: hash`, the sticky cookie's values and
/// the maintenance list's route keys are made of.
std::uint64_t stable_hash(std::string_view text);

/// A route name's key in the maintenance list (never 0: 0 is "no name").
inline std::uint64_t route_name_key(std::string_view name) {
    return stable_hash(name) | 1;
}

/// ACME challenge answers the master publishes while an order is validated
/// (gateway/control/acme.cpp): http-01 key authorizations by token for the
/// port-80 listener, tls-alpn-01 validation certificates by name for the
/// https listener. Written under a sequence lock: the master bumps `seq` to
/// odd, writes, bumps it to even; a reader copies, then retries when `seq`
/// moved (never waiting on the master).
constexpr std::size_t max_acme_challenges = 16;
struct acme_http_answer {
    char token[129];             ///< NUL-terminated; empty: a free entry
    char key_authorization[200]; ///< token "." thumbprint
};
struct acme_alpn_answer {
    char name[254];
    std::uint16_t cert_length;
    std::uint16_t key_length;
    unsigned char cert_der[2048];
    unsigned char key_der[512];
};
struct acme_answers {
    std::atomic<std::uint64_t> seq{0};
    acme_http_answer http[max_acme_challenges];
    acme_alpn_answer alpn[max_acme_challenges];
};

/// What the master publishes: http-01 (token, key authorization) and
/// tls-alpn-01 (name, DER certificate, DER key). Entries beyond
/// max_acme_challenges or larger than their fields are dropped (false).
struct acme_alpn_source {
    std::string name;
    std::string cert_der;
    std::string key_der;
};
bool publish_acme_answers(acme_answers& a, const std::vector<std::pair<std::string, std::string>>& http,
                          const std::vector<acme_alpn_source>& alpn);
/// The key authorization for `token`, if the master published one.
std::optional<std::string> find_acme_http(const acme_answers& a, std::string_view token);
/// The validation certificate and key for `name`, if published.
std::optional<acme_alpn_source> find_acme_alpn(const acme_answers& a, std::string_view name);

struct shared_block {
    server_health servers[max_servers]; ///< indexed like snapshot::servers
    slot_name server_names[max_servers];
    slot_name pool_names[max_pools];
    pool_state pools[max_pools];
    worker_counters workers[max_workers];
    std::atomic<std::uint32_t> connections_open{0}; ///< client connections, all workers
    std::atomic<std::uint32_t> tunnels_open{0};     ///< upgraded connections, all workers (limits.tunnels)
    std::atomic<std::uint64_t> weights_version{0};  ///< bumped by each runtime weight change
    std::atomic<std::uint64_t> abuse_violations{0};
    std::atomic<std::uint64_t> firewall_blocks{0}; ///< addresses pushed to the blocklist (master)
    std::atomic<std::uint64_t> firewall_block_errors{0};
    std::atomic<std::uint64_t> l7_blocks{0};           ///< clients behind a trusted proxy blocked at layer 7 (master)
    std::atomic<std::uint64_t> client_table_full{0};   ///< lookups that found no slot
    std::atomic<std::uint32_t> access_log_mid_line{0}; ///< the access log file ends inside a line (access_log.hpp)
    /// Maintenance (POST /api/maintenance, the master writes, workers read
    /// per request): the whole site, the routes by their name's key (the
    /// first maintenance_route_count entries), and the Retry-After to send.
    std::atomic<std::uint32_t> maintenance_site{0};
    std::atomic<std::uint32_t> maintenance_route_count{0};
    std::atomic<std::uint64_t> maintenance_routes[max_maintenance_routes]{};
    std::atomic<std::uint32_t> maintenance_retry_after{0};
    client_slot clients[client_slots];
    acme_answers acme;
};

/// Whether the route whose name has `key` (route_name_key; 0: an unnamed
/// route) is in maintenance. One load when none is.
inline bool in_maintenance(const shared_block& b, std::uint64_t key) {
    const std::uint32_t n = b.maintenance_route_count.load(std::memory_order_acquire);
    if (n == 0 || key == 0) {
        return false;
    }
    for (std::uint32_t i = 0; i < n && i < max_maintenance_routes; ++i) {
        if (b.maintenance_routes[i].load(std::memory_order_relaxed) == key) {
            return true;
        }
    }
    return false;
}

/// Where a configuration's servers and pools live in the shared block. Slots
/// are owned by name and outlive configurations: after a reload a server
/// keeps its health, drain and ejection state and its counters, while
/// workers of the previous configuration, still draining, keep writing to
/// the same slots.
struct slot_map {
    std::vector<std::size_t> servers; ///< per snapshot::servers index
    std::vector<std::size_t> pools;   ///< per gateway::pools index
};

/// Finds or claims the slots of `cfg`'s servers and pools, by name. Master
/// only. Throws std::invalid_argument when the block has no free slot left.
slot_map assign_slots(shared_block& b, const config::snapshot& cfg);

/// A client address as 16 bytes (IPv4 as v4-mapped IPv6).
struct client_address {
    std::uint64_t hi = 0;
    std::uint64_t lo = 0;
    /// Parses "192.0.2.7" or "2001:db8::1"; nullopt-like zero address on failure.
    static client_address parse(const std::string& text);
    static client_address from_bytes(const unsigned char (&bytes)[16]);
    std::string to_string() const;
    bool is_loopback() const;
};

/// Networks parsed once (the configuration keeps them as text), for the
/// membership tests of the request and accept paths: trusted proxies, the
/// abuse allow list.
class network_set {
public:
    network_set() = default;
    explicit network_set(const std::vector<config::network>& networks);
    bool contains(const client_address& a) const;
    bool empty() const { return entries_.empty(); }

private:
    struct entry {
        std::uint64_t hi, lo;           ///< the network's address, masked
        std::uint64_t mask_hi, mask_lo; ///< its prefix (IPv4 as v4-mapped /96+n)
    };
    std::vector<entry> entries_;
};

/// Scope of a client slot: connections, or the rate limit of pool N.
constexpr std::uint32_t scope_connections = 0xffffffffU;

/// Finds or claims the slot of (address, scope); null when the probe range
/// is full (the caller then applies no per-client limit and counts it).
client_slot* find_client(shared_block& b, const client_address& a, std::uint32_t scope, mono_ns now);

/// Token bucket (`rate` tokens per second, at most `burst`): takes one token.
/// Lock-free across processes (one CAS loop). Returns false when empty.
bool take_token(client_slot& s, double rate, std::uint64_t burst, mono_ns now);

/// Records a violation (rate limit, malformed request, failed handshake,
/// connection cap) against the client's connection slot.
void count_violation(shared_block& b, const client_address& a, mono_ns now);

/// Owns the mapping. Created by the master before fork; the children inherit
/// the same physical pages.
class shared_region {
public:
    /// Maps a zeroed block. Throws std::system_error when mmap fails.
    shared_region();
    ~shared_region();
    shared_region(const shared_region&) = delete;
    shared_region& operator=(const shared_region&) = delete;

    shared_block& block() { return *block_; }

private:
    shared_block* block_;
};

/// Throws std::invalid_argument when `s` has more servers, pools or workers
/// than the fixed-size block holds.
void check_fits(const config::snapshot& s);

} // namespace rampart::gateway
