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
#include <string_view>
#include <vector>

namespace rampart::gateway {

/// The smooth weighted round-robin order (as nginx computes it) for `weights`,
/// reduced by their greatest common divisor: each member appears weight/gcd
/// times, spread out rather than in runs. All weights 1 gives 0,1,2,...
std::vector<std::uint16_t> smooth_schedule(std::span<const unsigned> weights);

/// What a request brings to the choice of its server: the key of
/// `balance: hash` (none: the pool's schedule), and the member its sticky
/// cookie names (none: no valid cookie).
struct pick_hint {
    std::optional<std::uint64_t> key;
    std::optional<std::size_t> sticky;
};

class balancer {
public:
    /// Precomputes the schedule of `p`. round_robin ignores weights (every
    /// member once per turn), as the site's original load balancer did.
    explicit balancer(const config::pool& p);

    /// Picks a member for a new request and takes a slot on it (increments
    /// its `active` count; the caller releases it): `position` is the pool's
    /// shared counter, `members[i]` the shared state of member i. Skips
    /// members that are unavailable, excluded (bit i of `excluded`, members
    /// already tried) or full (`max_active` requests in flight; 0 = no
    /// limit). If every member is ejected by outlier detection but otherwise
    /// fine, ejection is ignored (panic routing: a guess beats a 503).
    /// nullopt when nothing is left; `full` then says whether some member was
    /// skipped only because it was full (the request may queue). Never blocks.
    struct choice {
        std::optional<std::size_t> member;
        bool full = false;
    };
    ///
    /// With a hint: the sticky member first, when it can take the request;
    /// then, for balance: hash with a key, rendezvous hashing (each member's
    /// score is a hash of the key and the member's name, scaled by its
    /// weight; the best available member wins). A member that goes away
    /// moves only its own keys, to their next-best member; the others keep
    /// theirs. With hash_balance_factor f > 0 no member takes a request while
    /// it has more than f times its weighted share of the pool's requests in
    /// flight (consistent hashing with bounded loads): the key goes to its
    /// next-best member for that one request.
    choice pick(std::atomic<std::uint64_t>& position, std::span<server_health* const> members, mono_ns now,
                std::uint64_t excluded = 0, std::uint32_t max_active = 0, const pick_hint& hint = {}) const;

    /// Takes runtime weights (server_health::weight, set through the admin
    /// API) into account when `version` moved since the last call: the
    /// schedule is rebuilt then, in this worker only. Cheap otherwise.
    void refresh_weights(std::uint64_t version, std::span<server_health* const> members);

    /// Share of its weight a member gets `since_up` after coming back, with
    /// slow start over `ramp`: from 10% to 100%, linearly.
    static double slow_start_factor(mono_ns since_up, mono_ns ramp);

    config::balance algorithm() const { return algorithm_; }
    const std::vector<std::uint16_t>& schedule() const { return schedule_; }

private:
    config::balance algorithm_;
    std::vector<unsigned> base_weights_; ///< from the configuration
    std::vector<unsigned> weights_;      ///< in force
    std::uint64_t weights_version_ = 0;
    std::vector<std::uint16_t> schedule_;
    mono_ns slow_start_ = 0;
    std::vector<std::uint64_t> member_seeds_; ///< stable_hash of each member's server name
    double hash_factor_ = 0;

    std::optional<std::size_t> scan_hashed(std::uint64_t key, std::span<server_health* const> members, mono_ns now,
                                           std::uint64_t excluded, std::uint32_t max_active, bool ignore_ejection,
                                           bool& full) const;

    std::optional<std::size_t> scan(std::uint64_t start, std::span<server_health* const> members, mono_ns now,
                                    std::uint64_t excluded, std::uint32_t max_active, bool ignore_ejection,
                                    bool& full) const;
    bool admit_slow_start(const server_health& s, std::uint64_t start, mono_ns now) const;
};

} // namespace rampart::gateway
