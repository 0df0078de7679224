#pragma once
// One upstream server's state as every process sees it: up or down (active
// health checks, rise/fall), ejected or not (passive outlier detection,
// exponential back-off), slow start after it comes back, drained or not, its
// runtime weight, the requests in flight to it and its counters.
//
// It lives in the shared mapping (shared_state.hpp: plain atomics, no
// pointers) and is changed only through its methods, which decide from what
// happened and the time they are given; no method does I/O or reads a clock.
// The master's health checker calls on_check(), workers call on_attempt_*()
// and try_acquire()/release(), the admin API drain()/enable()/set_weight().
// Its unit tests (tests/unit/gateway/server_health_test.cpp) use no sockets.

#include "config/config.hpp"

#include <atomic>
#include <cstdint>

namespace rampart::gateway {

/// Nanoseconds of std::chrono::steady_clock: CLOCK_MONOTONIC, the same in
/// every process of the machine, so one process may compare another's stamps.
using mono_ns = std::int64_t;
mono_ns mono_now();
constexpr mono_ns to_ns(std::chrono::nanoseconds d) {
    return d.count();
}

class alignas(64) server_health {
public:
    // -- active health checks (the master) ------------------------------------

    enum class transition { none, up, down };

    /// One check's result: `passed`, and the HTTP status (-1: no response).
    /// `rise` passes in a row bring a down server up (and end an ejection:
    /// stronger evidence than the failures behind it; slow start begins),
    /// `fall` failures in a row take an up server down.
    transition on_check(bool passed, int status, unsigned rise, unsigned fall, mono_ns now);

    // -- passive outlier detection (the workers) -------------------------------

    /// What on_attempt_failure() did.
    struct ejection {
        bool ejected = false;
        mono_ns length = 0;         ///< for how long
        std::uint32_t failures = 0; ///< the consecutive failures behind it
    };

    /// A failed attempt (connect/read/write error, timeout, 5xx): counted;
    /// `consecutive_failures` of them in a row eject the server for
    /// base_ejection * 2^streak, at most max_ejection. Of several workers
    /// crossing the threshold at once, one ejects.
    ejection on_attempt_failure(const config::outlier_detection& o, mono_ns now);

    /// A successful attempt: the failure run ends; a server clean for
    /// max_ejection since its last ejection starts its back-off afresh.
    void on_attempt_success(const config::outlier_detection& o, mono_ns now);

    // -- the admin API -----------------------------------------------------------

    /// No new requests; those in flight finish.
    void drain() { drained_.store(1, std::memory_order_relaxed); }
    /// Takes requests again; after a drain, through slow start.
    void enable(mono_ns now);
    /// 1..256, or 0 for the configured weight.
    void set_weight(std::uint16_t w) { weight_.store(w, std::memory_order_relaxed); }

    // -- requests in flight --------------------------------------------------------

    /// Takes a slot unless `max_active` (0: no limit) are in flight.
    bool try_acquire(std::uint32_t max_active);
    void release() { active_.fetch_sub(1, std::memory_order_relaxed); }

    // -- counters --------------------------------------------------------------------

    void count_request() { requests_.fetch_add(1, std::memory_order_relaxed); }
    void count_retry() { retries_.fetch_add(1, std::memory_order_relaxed); }
    void count_response(unsigned status_class) {
        responses_by_class_[status_class < 6 ? status_class : 0].fetch_add(1, std::memory_order_relaxed);
    }

    // -- reading -----------------------------------------------------------------------

    /// Takes new requests: up, not drained, and (unless `ignore_ejection`) not ejected.
    bool available(mono_ns now, bool ignore_ejection = false) const {
        return healthy() && !drained() && (ignore_ejection || !ejected(now));
    }
    bool healthy() const { return healthy_.load(std::memory_order_relaxed) != 0; }
    bool drained() const { return drained_.load(std::memory_order_relaxed) != 0; }
    bool ejected(mono_ns now) const { return ejected_until() > now; }
    mono_ns ejected_until() const { return ejected_until_.load(std::memory_order_relaxed); }
    /// When it last came back (the start of slow start); 0 = long ago.
    mono_ns up_since() const { return up_since_.load(std::memory_order_relaxed); }
    /// The runtime weight; 0 = the configured one.
    std::uint16_t weight() const { return weight_.load(std::memory_order_relaxed); }
    std::uint32_t active() const { return active_.load(std::memory_order_relaxed); }
    std::uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
    std::uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }
    std::uint64_t ejections() const { return ejections_.load(std::memory_order_relaxed); }
    std::uint64_t retries() const { return retries_.load(std::memory_order_relaxed); }
    std::uint64_t checks_passed() const { return checks_passed_.load(std::memory_order_relaxed); }
    std::uint64_t checks_failed() const { return checks_failed_.load(std::memory_order_relaxed); }
    /// HTTP status of the last check; 0 none yet; -1 no response.
    std::int32_t last_check() const { return last_check_.load(std::memory_order_relaxed); }
    std::uint64_t responses(unsigned status_class) const {
        return responses_by_class_[status_class < 6 ? status_class : 0].load(std::memory_order_relaxed);
    }

private:
    std::atomic<std::uint32_t> active_{0};
    std::atomic<std::uint8_t> healthy_{1};
    std::atomic<std::uint8_t> drained_{0};
    std::atomic<std::uint16_t> weight_{0};
    std::atomic<std::uint64_t> responses_by_class_[6]{};
    std::atomic<mono_ns> ejected_until_{0};
    std::atomic<mono_ns> up_since_{0};
    std::atomic<std::uint32_t> consecutive_failures_{0};
    std::atomic<std::uint32_t> ejection_streak_{0}; ///< ejections without a clean period: the back-off exponent
    std::atomic<std::uint32_t> check_passes_{0};    ///< in a row (the master only)
    std::atomic<std::uint32_t> check_fails_{0};     ///< in a row (the master only)
    std::atomic<std::uint64_t> requests_{0};
    std::atomic<std::uint64_t> failures_{0};
    std::atomic<std::uint64_t> ejections_{0};
    std::atomic<std::uint64_t> retries_{0};
    std::atomic<std::uint64_t> checks_passed_{0};
    std::atomic<std::uint64_t> checks_failed_{0};
    std::atomic<std::int32_t> last_check_{0};
};

} // namespace rampart::gateway
