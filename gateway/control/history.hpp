#pragma once
// The last 15 minutes of the gateway at 2 s resolution, for the status
// page's charts (GET /api/history): requests by status class, p50/p99
// latency, open connections, TLS handshakes, per-server requests and
// failures, and the VRRP state changes as marks on the time axis.
//
// The master samples the shared counters every 2 s and keeps what changed
// since the last sample in fixed-size rings. Nothing grows with time: the
// rings are sized when made (a server's ring when the server first appears,
// so memory follows the configuration, never the uptime).

#include "gateway/shared_state.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rampart::gateway {

constexpr std::chrono::seconds history_step{2};
constexpr std::size_t history_capacity = 450; ///< 15 minutes of 2 s steps
constexpr std::size_t history_marks = 32;     ///< VRRP state changes kept

/// Cumulative counters read at one instant (sums over every worker slot).
struct history_totals {
    std::uint64_t responses[6] = {}; ///< index = status / 100
    std::uint64_t latency[latency_buckets + 1] = {};
    std::uint64_t handshakes_full = 0;
    std::uint64_t handshakes_resumed = 0;
    std::uint64_t handshake_failures = 0;
    std::uint64_t connections_open = 0;
    struct server {
        std::size_t slot = 0; ///< its entry in shared_block::servers
        std::uint64_t requests = 0;
        std::uint64_t failures = 0;
    };
    std::vector<server> servers;
    bool vrrp = false; ///< the node is one of an HA pair
    std::string vrrp_state;
    std::uint64_t vrrp_transitions = 0;
};

/// A latency quantile from one interval's (non-cumulative) bucket counts,
/// interpolated inside its bucket as Prometheus' histogram_quantile() does;
/// the last bucket (over 10 s) answers its lower bound. -1 when no request.
std::int64_t latency_quantile_us(const std::uint64_t (&buckets)[latency_buckets + 1], double q);

class metrics_history {
public:
    explicit metrics_history(std::size_t capacity = history_capacity);

    /// Adds the interval that ends at `t` (the first call only sets the
    /// baseline). Counters that went down (cannot happen: worker slots keep
    /// their sums) count as no change.
    void add(const history_totals& now, std::chrono::system_clock::time_point t);

    /// One named server to put into json(): its slot in the shared block.
    struct named_slot {
        std::string_view name;
        std::size_t slot;
    };

    /// GET /api/history: series as columns, oldest first, with the time of
    /// each point (unix ms). Per interval: response counts by class, p50 and
    /// p99 in µs (null without requests), open connections at its end,
    /// handshakes; per server (`servers`, in that order) requests and
    /// failures; the VRRP marks inside the window.
    std::string json(const std::vector<named_slot>& servers) const;

    std::size_t size() const { return count_; }
    std::size_t capacity() const { return points_.size(); }
    /// Bytes held by the rings (what the README states), not counting this object.
    std::size_t memory_bytes() const;

private:
    struct point {
        std::int64_t t_ms = 0;
        std::uint32_t responses[5] = {}; ///< 1xx .. 5xx
        std::int32_t p50_us = -1;
        std::int32_t p99_us = -1;
        std::uint32_t connections = 0;
        std::uint32_t handshakes[3] = {}; ///< full, resumed, failed
    };
    struct server_point {
        std::uint32_t requests = 0;
        std::uint32_t failures = 0;
    };
    struct server_ring {
        std::vector<server_point> points; ///< aligned with points_
        std::uint64_t last_requests = 0;
        std::uint64_t last_failures = 0;
        bool seen = false;
    };
    struct mark {
        std::int64_t t_ms = 0;
        char state[8] = {};
    };

    /// Index in the rings of the i-th point, oldest first.
    std::size_t at(std::size_t i) const { return (head_ + points_.size() - count_ + i) % points_.size(); }

    std::vector<point> points_;
    std::size_t head_ = 0; ///< where the next point goes
    std::size_t count_ = 0;
    std::vector<server_ring> servers_; ///< by slot, sized when a slot first appears
    std::array<mark, history_marks> marks_{};
    std::size_t marks_head_ = 0;
    std::size_t marks_count_ = 0;
    history_totals last_;
    bool have_last_ = false;
};

} // namespace rampart::gateway
