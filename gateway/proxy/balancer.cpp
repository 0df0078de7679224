#include "gateway/proxy/balancer.hpp"

#include <cmath>
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

balancer::balancer(const config::pool& p)
    : algorithm_(p.algorithm), slow_start_(to_ns(p.slow_start)), hash_factor_(p.hash_balance_factor) {
    for (const auto& m : p.members) {
        weights_.push_back(algorithm_ == config::balance::round_robin ? 1U : m.weight);
        member_seeds_.push_back(stable_hash(m.name));
    }
    base_weights_ = weights_;
    schedule_ = smooth_schedule(weights_);
}

void balancer::refresh_weights(std::uint64_t version, std::span<server_health* const> members) {
    if (version == weights_version_ || algorithm_ == config::balance::round_robin) {
        return;
    }
    weights_version_ = version;
    for (std::size_t i = 0; i < members.size() && i < weights_.size(); ++i) {
        const unsigned w = members[i]->weight();
        weights_[i] = w != 0 ? w : base_weights_[i];
    }
    schedule_ = smooth_schedule(weights_);
}

double balancer::slow_start_factor(mono_ns since_up, mono_ns ramp) {
    if (ramp <= 0 || since_up >= ramp) {
        return 1.0;
    }
    if (since_up <= 0) {
        return 0.1;
    }
    return 0.1 + 0.9 * static_cast<double>(since_up) / static_cast<double>(ramp);
}

// A member in slow start takes a request with probability equal to its
// factor. The draw is a hash of the pool position, so it needs no random
// state and spreads over the schedule instead of clustering.
bool balancer::admit_slow_start(const server_health& s, std::uint64_t start, mono_ns now) const {
    if (slow_start_ == 0) {
        return true;
    }
    const mono_ns up = s.up_since();
    if (up == 0) {
        return true;
    }
    const double f = slow_start_factor(now - up, slow_start_);
    if (f >= 1.0) {
        return true;
    }
    const std::uint64_t draw = (start * 0x9E3779B97F4A7C15ULL) >> 54; // 0..1023
    return static_cast<double>(draw) < f * 1024.0;
}

std::optional<std::size_t> balancer::scan(std::uint64_t start, std::span<server_health* const> members, mono_ns now,
                                          std::uint64_t excluded, std::uint32_t max_active, bool ignore_ejection,
                                          bool& full) const {
    auto eligible = [&](std::size_t i) {
        return (i >= 64 || (excluded >> i & 1U) == 0) && members[i]->available(now, ignore_ejection);
    };
    auto is_full = [&](std::size_t i) { return max_active != 0 && members[i]->active() >= max_active; };
    if (algorithm_ == config::balance::least_connections) {
        // Fewest active requests relative to (slow-start scaled) weight:
        // a/wa < b/wb. Scanning from a rotating start makes ties rotate. A
        // lost race for the last slot of a full member is retried a few times.
        for (int round = 0; round < 4; ++round) {
            std::optional<std::size_t> best;
            double best_load = 0;
            for (std::size_t k = 0; k < members.size(); ++k) {
                std::size_t i = (start + k) % members.size();
                if (!eligible(i)) {
                    continue;
                }
                if (is_full(i)) {
                    full = true;
                    continue;
                }
                double w = static_cast<double>(weights_[i]);
                if (slow_start_ != 0) {
                    const mono_ns up = members[i]->up_since();
                    w *= up == 0 ? 1.0 : slow_start_factor(now - up, slow_start_);
                }
                const double load = static_cast<double>(members[i]->active()) / w;
                if (!best || load < best_load) {
                    best = i;
                    best_load = load;
                }
            }
            if (!best) {
                return std::nullopt;
            }
            if (members[*best]->try_acquire(max_active)) {
                return best;
            }
            full = true;
        }
        return std::nullopt;
    }
    // Schedule order. A member in slow start that declines is remembered: if
    // nothing else can take the request, it gets it anyway.
    std::optional<std::size_t> declined;
    for (std::size_t k = 0; k < schedule_.size(); ++k) {
        std::size_t i = schedule_[(start + k) % schedule_.size()];
        if (!eligible(i)) {
            continue;
        }
        if (is_full(i)) {
            full = true;
            continue;
        }
        if (!admit_slow_start(*members[i], start + k, now)) {
            declined = declined ? declined : std::optional<std::size_t>(i);
            continue;
        }
        if (members[i]->try_acquire(max_active)) {
            return i;
        }
        full = true;
    }
    if (declined && members[*declined]->try_acquire(max_active)) {
        return declined;
    }
    return std::nullopt;
}

// Weighted rendezvous hashing: member i scores w_i / -ln(u_i), u_i a hash of
// (key, member) in (0, 1); members are tried from the best score down.
std::optional<std::size_t> balancer::scan_hashed(std::uint64_t key, std::span<server_health* const> members,
                                                 mono_ns now, std::uint64_t excluded, std::uint32_t max_active,
                                                 bool ignore_ejection, bool& full) const {
    const std::size_t n = std::min(members.size(), member_seeds_.size());
    std::vector<std::pair<double, std::size_t>> ranked;
    ranked.reserve(n);
    std::uint64_t total_active = 0;
    double total_weight = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if ((i < 64 && (excluded >> i & 1U) != 0) || !members[i]->available(now, ignore_ejection)) {
            continue;
        }
        const double u = (static_cast<double>(mix64(key ^ member_seeds_[i]) >> 11) + 0.5) / 9007199254740992.0;
        const double w = static_cast<double>(std::max(1U, weights_[i]));
        ranked.emplace_back(w / -std::log(u), i);
        total_active += members[i]->active();
        total_weight += w;
    }
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::optional<std::size_t> over_bound; // the best member skipped only for its load
    for (const auto& [score, i] : ranked) {
        (void)score;
        if (max_active != 0 && members[i]->active() >= max_active) {
            full = true;
            continue;
        }
        if (hash_factor_ > 0) {
            const double share = static_cast<double>(std::max(1U, weights_[i])) / total_weight;
            const double bound = std::ceil(hash_factor_ * static_cast<double>(total_active + 1) * share);
            if (static_cast<double>(members[i]->active()) >= bound) {
                over_bound = over_bound ? over_bound : std::optional<std::size_t>(i);
                continue;
            }
        }
        if (members[i]->try_acquire(max_active)) {
            return i;
        }
        full = true;
    }
    if (over_bound && members[*over_bound]->try_acquire(max_active)) {
        return over_bound;
    }
    return std::nullopt;
}

balancer::choice balancer::pick(std::atomic<std::uint64_t>& position, std::span<server_health* const> members,
                                mono_ns now, std::uint64_t excluded, std::uint32_t max_active,
                                const pick_hint& hint) const {
    choice c;
    if (members.empty() || schedule_.empty()) {
        return c;
    }
    if (hint.sticky && *hint.sticky < members.size() && (*hint.sticky >= 64 || (excluded >> *hint.sticky & 1U) == 0) &&
        members[*hint.sticky]->available(now) && members[*hint.sticky]->try_acquire(max_active)) {
        c.member = *hint.sticky;
        return c;
    }
    if (algorithm_ == config::balance::hash && hint.key) {
        c.member = scan_hashed(*hint.key, members, now, excluded, max_active, false, c.full);
        if (!c.member && !c.full) {
            c.member = scan_hashed(*hint.key, members, now, excluded, max_active, true, c.full);
        }
        return c;
    }
    const std::uint64_t start = position.fetch_add(1, std::memory_order_relaxed);
    c.member = scan(start, members, now, excluded, max_active, false, c.full);
    if (!c.member && !c.full) {
        c.member = scan(start, members, now, excluded, max_active, true, c.full);
    }
    return c;
}

} // namespace rampart::gateway
