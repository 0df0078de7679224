#pragma once
// State shared by the master and every worker process: one anonymous
// MAP_SHARED mapping made by the master before it forks. Fixed-size structs of
// plain atomics, no pointers inside (DESIGN.md). Workers write their own
// counters and the per-server active counts; the master sums for /metrics.

#include "config/config.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace rampart::gateway {

/// Per upstream server, indexed like snapshot::servers.
struct alignas(64) server_state {
    std::atomic<std::uint32_t> active{0};     ///< requests in flight to this server, all workers
    std::atomic<std::uint8_t> usable{1};      ///< 0 = take no new requests (health checks, drain)
    std::atomic<std::uint64_t> requests{0};   ///< requests sent
    std::atomic<std::uint64_t> failures{0};   ///< connect/read/write failures
};

/// Per upstream pool, indexed like gateway::pools.
struct alignas(64) pool_state {
    std::atomic<std::uint64_t> next{0};  ///< position in the balancing schedule, shared so rotation is exact across workers
};

/// Per worker process; only that worker writes it.
struct alignas(64) worker_counters {
    std::atomic<std::uint64_t> connections_total{0};
    std::atomic<std::uint64_t> connections_active{0};
    std::atomic<std::uint64_t> handshakes_full{0};
    std::atomic<std::uint64_t> handshakes_resumed{0};
    std::atomic<std::uint64_t> handshake_failures{0};
    std::atomic<std::uint64_t> requests_total{0};
    std::atomic<std::uint64_t> responses_by_class[6]{};  ///< index = status / 100 (0 unused)
};

constexpr std::size_t max_servers = 1024;
constexpr std::size_t max_pools = 64;
constexpr std::size_t max_workers = 256;

struct shared_block {
    server_state servers[max_servers];
    pool_state pools[max_pools];
    worker_counters workers[max_workers];
};

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

}  // namespace rampart::gateway
