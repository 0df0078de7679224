#pragma once
// One pool of app servers as a worker sees it, built once per configuration:
// its balancer, its members (their shared health and their index among the
// configuration's servers), the pool's shared counters, and the queue of this
// worker's requests waiting for a server slot.

#include "config/config.hpp"
#include "gateway/net.hpp"
#include "gateway/proxy/balancer.hpp"
#include "gateway/server_health.hpp"
#include "gateway/shared_state.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rampart::gateway {

class exchange_host;

class upstream_pool {
public:
    /// `servers`: the shared slot of each of the configuration's servers.
    upstream_pool(const config::pool& cfg, pool_state& shared, const std::vector<server_health*>& servers,
                  const std::atomic<std::uint64_t>& weights_version);
    upstream_pool(upstream_pool&&) = default;
    upstream_pool(const upstream_pool&) = delete;
    upstream_pool& operator=(const upstream_pool&) = delete;

    /// A request's hold on a member's slot (its `active` count), released
    /// when the request is done with that server; the release wakes this
    /// worker's first queued request at once.
    class slot {
    public:
        slot(upstream_pool& pool, std::size_t member) : pool_(&pool), member_(member) {}
        ~slot();
        slot(const slot&) = delete;
        slot& operator=(const slot&) = delete;

    private:
        upstream_pool* pool_;
        std::size_t member_;
    };

    /// A member not in `tried` (bit i: member i), its slot taken, without
    /// waiting; `full` when only full members were skipped (the request may
    /// queue). Never blocks: the common case needs no coroutine frame.
    balancer::choice pick_now(std::uint64_t tried, const pick_hint& hint = {});
    /// Every candidate was full: waits in the pool's bounded queue, up to
    /// queue_timeout, for a member's slot (taken on return). nullopt: the
    /// queue is full, the wait timed out, or the worker drains.
    net::awaitable<std::optional<std::size_t>> wait_in_queue(std::uint64_t tried, exchange_host& c, bool draining,
                                                             pick_hint hint = {});
    /// Sticky sessions: the member a cookie value names (none: not a value of
    /// this pool), and the value that names `member`.
    std::optional<std::size_t> sticky_member(std::string_view value) const;
    const std::string& sticky_value(std::size_t member) const { return sticky_values_[member]; }

    const config::pool& config() const { return *cfg_; }
    pool_state& shared() { return *shared_; }
    std::size_t server_of(std::size_t member) const { return servers_[member]; }
    server_health& health(std::size_t member) { return *members_[member]; }
    std::size_t size() const { return members_.size(); }

private:
    const config::pool* cfg_;
    pool_state* shared_;
    const std::atomic<std::uint64_t>* weights_version_;
    balancer balancer_;
    std::vector<server_health*> members_; ///< shared state of each member
    std::vector<std::size_t> servers_;    ///< each member's index in snapshot::servers
    /// Each member's sticky cookie value: 16 hex digits of a stable hash of
    /// the pool's and the server's names (the same in every worker and on
    /// both nodes of a pair; the server's name does not show).
    std::vector<std::string> sticky_values_;
    /// Timers of requests of this worker waiting in the queue; a slot freed
    /// here wakes the first at once (other workers' frees are seen by polling).
    std::deque<net::steady_timer*> waiters_;
};

} // namespace rampart::gateway
