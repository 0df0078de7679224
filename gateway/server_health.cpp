#include "gateway/server_health.hpp"

#include <algorithm>

namespace rampart::gateway {

server_health::transition server_health::on_check(bool passed, int status, unsigned rise, unsigned fall, mono_ns now) {
    last_check_.store(status, std::memory_order_relaxed);
    // In-a-row counts, saturating: only the master's checker writes them.
    const auto bump = [](std::atomic<std::uint32_t>& n) {
        const std::uint32_t v = n.load(std::memory_order_relaxed);
        n.store(v == UINT32_MAX ? v : v + 1, std::memory_order_relaxed);
        return v == UINT32_MAX ? v : v + 1;
    };
    if (passed) {
        checks_passed_.fetch_add(1, std::memory_order_relaxed);
        check_fails_.store(0, std::memory_order_relaxed);
        const std::uint32_t passes = bump(check_passes_);
        if (!healthy() && passes >= rise) {
            ejected_until_.store(0, std::memory_order_relaxed);
            up_since_.store(now, std::memory_order_relaxed);
            ejection_streak_.store(0, std::memory_order_relaxed);
            consecutive_failures_.store(0, std::memory_order_relaxed);
            healthy_.store(1, std::memory_order_relaxed);
            return transition::up;
        }
        return transition::none;
    }
    checks_failed_.fetch_add(1, std::memory_order_relaxed);
    check_passes_.store(0, std::memory_order_relaxed);
    const std::uint32_t fails = bump(check_fails_);
    if (healthy() && fails >= fall) {
        healthy_.store(0, std::memory_order_relaxed);
        return transition::down;
    }
    return transition::none;
}

server_health::ejection server_health::on_attempt_failure(const config::outlier_detection& o, mono_ns now) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    const std::uint32_t n = consecutive_failures_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (o.consecutive_failures == 0 || n < o.consecutive_failures) {
        return {};
    }
    mono_ns until = ejected_until_.load(std::memory_order_relaxed);
    if (until > now) {
        return {};
    }
    const std::uint32_t streak = std::min<std::uint32_t>(ejection_streak_.load(std::memory_order_relaxed), 20);
    const mono_ns length = std::min(to_ns(o.base_ejection) << streak, to_ns(o.max_ejection));
    if (!ejected_until_.compare_exchange_strong(until, now + length, std::memory_order_relaxed)) {
        return {}; // another attempt, in any worker, ejected it just now
    }
    ejection_streak_.fetch_add(1, std::memory_order_relaxed);
    up_since_.store(now + length, std::memory_order_relaxed); // slow start once the ejection ends
    consecutive_failures_.store(0, std::memory_order_relaxed);
    ejections_.fetch_add(1, std::memory_order_relaxed);
    return {true, length, n};
}

void server_health::on_attempt_success(const config::outlier_detection& o, mono_ns now) {
    if (consecutive_failures_.load(std::memory_order_relaxed) != 0) {
        consecutive_failures_.store(0, std::memory_order_relaxed);
    }
    if (ejection_streak_.load(std::memory_order_relaxed) != 0 && now > ejected_until() + to_ns(o.max_ejection)) {
        ejection_streak_.store(0, std::memory_order_relaxed);
    }
}

void server_health::enable(mono_ns now) {
    if (drained()) {
        up_since_.store(now, std::memory_order_relaxed); // slow start after maintenance
    }
    drained_.store(0, std::memory_order_relaxed);
}

bool server_health::try_acquire(std::uint32_t max_active) {
    if (max_active == 0) {
        active_.fetch_add(1, std::memory_order_relaxed);
        return true;
    }
    std::uint32_t a = active_.load(std::memory_order_relaxed);
    while (a < max_active) {
        if (active_.compare_exchange_weak(a, a + 1, std::memory_order_relaxed)) {
            return true;
        }
    }
    return false;
}

} // namespace rampart::gateway
