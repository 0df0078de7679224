#include "gateway/proxy/upstream_pool.hpp"

#include "gateway/proxy/exchange_host.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace rampart::gateway {

using clock = std::chrono::steady_clock;

upstream_pool::upstream_pool(const config::pool& cfg, pool_state& shared, const std::vector<server_health*>& servers,
                             const std::atomic<std::uint64_t>& weights_version)
    : cfg_(&cfg), shared_(&shared), weights_version_(&weights_version), balancer_(cfg) {
    for (const auto& m : cfg.members) {
        members_.push_back(servers[m.server]);
        servers_.push_back(m.server);
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx",
                      static_cast<unsigned long long>(stable_hash("rampart-sticky:" + cfg.name + ":" + m.name)));
        sticky_values_.emplace_back(hex);
    }
}

upstream_pool::slot::~slot() {
    pool_->members_[member_]->release();
    if (!pool_->waiters_.empty()) {
        pool_->waiters_.front()->cancel();
    }
}

balancer::choice upstream_pool::pick_now(std::uint64_t tried, const pick_hint& hint) {
    balancer_.refresh_weights(weights_version_->load(std::memory_order_relaxed), members_);
    return balancer_.pick(shared_->next, members_, mono_now(), tried, cfg_->max_connections, hint);
}

std::optional<std::size_t> upstream_pool::sticky_member(std::string_view value) const {
    for (std::size_t i = 0; i < sticky_values_.size(); ++i) {
        if (sticky_values_[i] == value) {
            return i;
        }
    }
    return std::nullopt;
}

net::awaitable<std::optional<std::size_t>> upstream_pool::wait_in_queue(std::uint64_t tried, exchange_host& c,
                                                                        bool draining, pick_hint hint) {
    if (cfg_->queue_size == 0 || draining) {
        co_return std::nullopt;
    }
    if (shared_->queued.fetch_add(1, std::memory_order_relaxed) >= cfg_->queue_size) {
        shared_->queued.fetch_sub(1, std::memory_order_relaxed);
        co_return std::nullopt;
    }
    auto ex = co_await net::this_coro::executor;
    net::steady_timer wake(ex);
    waiters_.push_back(&wake);
    c.queue_budget(cfg_->queue_timeout + std::chrono::seconds(1));
    c.arm(phase::queue);
    const auto end = clock::now() + cfg_->queue_timeout;
    std::optional<std::size_t> got;
    // Woken at once by a slot freed in this worker; slots freed by other
    // workers are noticed by polling every few milliseconds.
    while (!c.closing() && clock::now() < end) {
        wake.expires_after(std::min<clock::duration>(std::chrono::milliseconds(5), end - clock::now()));
        co_await wake.async_wait(use_tuple);
        const auto choice = balancer_.pick(shared_->next, members_, mono_now(), tried, cfg_->max_connections, hint);
        if (choice.member || !choice.full) {
            got = choice.member;
            break;
        }
    }
    std::erase(waiters_, &wake);
    shared_->queued.fetch_sub(1, std::memory_order_relaxed);
    if (!got && clock::now() >= end) {
        shared_->queue_timeouts.fetch_add(1, std::memory_order_relaxed);
    }
    co_return got;
}

} // namespace rampart::gateway
