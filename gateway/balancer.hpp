#pragma once
// Choosing the upstream server for a request. Sans-I/O: the balancer reads the
// pool's shared position and the servers' shared active counts, and returns a
// member index. No locks: one atomic increment per pick.

#include "config/config.hpp"
#include "gateway/shared_state.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace rampart::gateway {

/// The smooth weighted round-robin order (as nginx computes it) for `weights`,
/// reduced by their greatest common divisor: each member appears weight/gcd
/// times, spread out rather than in runs. All weights 1 gives 0,1,2,...
std::vector<std::uint16_t> smooth_schedule(std::span<const unsigned> weights);

class balancer {
public:
    /// Precomputes the schedule of `p`. round_robin ignores weights (every
    /// member once per turn), as the site's original load balancer did.
    explicit balancer(const config::pool& p);

    /// Picks a member for a new request: `position` is the pool's shared
    /// counter, `members[i]` the shared state of member i. Skips members that
    /// are not usable; nullopt when none is. Never blocks.
    std::optional<std::size_t> pick(std::atomic<std::uint64_t>& position, std::span<server_state* const> members) const;

    config::balance algorithm() const { return algorithm_; }
    const std::vector<std::uint16_t>& schedule() const { return schedule_; }

private:
    config::balance algorithm_;
    std::vector<unsigned> weights_;
    std::vector<std::uint16_t> schedule_;
};

}  // namespace rampart::gateway
