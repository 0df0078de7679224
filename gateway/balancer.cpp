#include "gateway/balancer.hpp"

#include <numeric>

namespace rampart::gateway {

std::vector<std::uint16_t> smooth_schedule(std::span<const unsigned> weights) {
    unsigned g = 0;
    for (unsigned w : weights) {
        g = std::gcd(g, w);
    }
    if (g == 0) {
        return {};
    }
    std::vector<long> effective(weights.size());
    std::vector<long> current(weights.size(), 0);
    long total = 0;
    for (std::size_t i = 0; i < weights.size(); ++i) {
        effective[i] = static_cast<long>(weights[i] / g);
        total += effective[i];
    }
    // nginx's smooth weighted round robin: every step each member gains its
    // weight, the richest is chosen and pays the total. Over `total` steps
    // every member is chosen exactly `weight` times, interleaved.
    std::vector<std::uint16_t> order;
    order.reserve(static_cast<std::size_t>(total));
    for (long step = 0; step < total; ++step) {
        std::size_t best = 0;
        for (std::size_t i = 0; i < weights.size(); ++i) {
            current[i] += effective[i];
            if (current[i] > current[best]) {
                best = i;
            }
        }
        current[best] -= total;
        order.push_back(static_cast<std::uint16_t>(best));
    }
    return order;
}

balancer::balancer(const config::pool& p) : algorithm_(p.algorithm) {
    for (const auto& m : p.members) {
        weights_.push_back(algorithm_ == config::balance::round_robin ? 1U : m.weight);
    }
    schedule_ = smooth_schedule(weights_);
}

std::optional<std::size_t> balancer::pick(std::atomic<std::uint64_t>& position,
                                          std::span<server_state* const> members) const {
    if (members.empty() || schedule_.empty()) {
        return std::nullopt;
    }
    const std::uint64_t start = position.fetch_add(1, std::memory_order_relaxed);
    if (algorithm_ == config::balance::least_connections) {
        // Fewest active requests relative to weight: compare a/wa < b/wb as
        // a*wb < b*wa. Scanning from a rotating start makes ties rotate.
        std::optional<std::size_t> best;
        std::uint64_t best_active = 0;
        for (std::size_t k = 0; k < members.size(); ++k) {
            std::size_t i = (start + k) % members.size();
            if (members[i]->usable.load(std::memory_order_relaxed) == 0) {
                continue;
            }
            std::uint64_t a = members[i]->active.load(std::memory_order_relaxed);
            if (!best || a * weights_[*best] < best_active * weights_[i]) {
                best = i;
                best_active = a;
            }
        }
        return best;
    }
    for (std::size_t k = 0; k < schedule_.size(); ++k) {
        std::size_t i = schedule_[(start + k) % schedule_.size()];
        if (members[i]->usable.load(std::memory_order_relaxed) != 0) {
            return i;
        }
    }
    return std::nullopt;
}

}  // namespace rampart::gateway
