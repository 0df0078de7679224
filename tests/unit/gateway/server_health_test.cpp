// server_health: a server's state machine, driven with made-up times; no
// sockets, no clock.
#include "gateway/server_health.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

namespace gateway = rampart::gateway;
namespace config = rampart::config;
using gateway::server_health;
using transition = server_health::transition;

namespace {

constexpr gateway::mono_ns ms = 1'000'000;
constexpr gateway::mono_ns s = 1'000 * ms;

config::outlier_detection outlier(unsigned failures, int base_ms, int max_ms) {
    config::outlier_detection o;
    o.consecutive_failures = failures;
    o.base_ejection = std::chrono::milliseconds(base_ms);
    o.max_ejection = std::chrono::milliseconds(max_ms);
    return o;
}

} // namespace

TEST_CASE("server health: fall failures in a row take it down, rise passes bring it up", "[unit][gateway][health]") {
    server_health h;
    CHECK(h.healthy());
    CHECK(h.available(0));
    CHECK(h.last_check() == 0);
    // fall 3: two failures, a pass, two failures: still up.
    CHECK(h.on_check(false, 503, 2, 3, 1 * s) == transition::none);
    CHECK(h.on_check(false, -1, 2, 3, 2 * s) == transition::none);
    CHECK(h.last_check() == -1);
    CHECK(h.on_check(true, 200, 2, 3, 3 * s) == transition::none);
    CHECK(h.on_check(false, 503, 2, 3, 4 * s) == transition::none);
    CHECK(h.on_check(false, 503, 2, 3, 5 * s) == transition::none);
    CHECK(h.healthy());
    CHECK(h.on_check(false, 503, 2, 3, 6 * s) == transition::down);
    CHECK_FALSE(h.healthy());
    CHECK_FALSE(h.available(6 * s));
    CHECK_FALSE(h.available(6 * s, true)); // an ejection can be ignored, health never
    CHECK(h.on_check(false, 503, 2, 3, 7 * s) == transition::none);
    // rise 2: a pass, a failure, then two passes.
    CHECK(h.on_check(true, 200, 2, 3, 8 * s) == transition::none);
    CHECK(h.on_check(false, 503, 2, 3, 9 * s) == transition::none);
    CHECK(h.on_check(true, 200, 2, 3, 10 * s) == transition::none);
    CHECK(h.on_check(true, 200, 2, 3, 11 * s) == transition::up);
    CHECK(h.healthy());
    CHECK(h.up_since() == 11 * s); // slow start from here
    CHECK(h.on_check(true, 200, 2, 3, 12 * s) == transition::none);
    CHECK(h.last_check() == 200);
    CHECK(h.checks_passed() == 5);
    CHECK(h.checks_failed() == 7);
}

TEST_CASE("server health: consecutive failures eject it, for longer each time, at most max",
          "[unit][gateway][health]") {
    server_health h;
    const auto o = outlier(3, 100, 350);
    gateway::mono_ns now = 1 * s;
    CHECK_FALSE(h.on_attempt_failure(o, now).ejected);
    CHECK_FALSE(h.on_attempt_failure(o, now).ejected);
    h.on_attempt_success(o, now); // the run ends
    CHECK_FALSE(h.on_attempt_failure(o, now).ejected);
    CHECK_FALSE(h.on_attempt_failure(o, now).ejected);
    auto e = h.on_attempt_failure(o, now);
    CHECK(e.ejected);
    CHECK(e.length == 100 * ms);
    CHECK(e.failures == 3);
    CHECK(h.ejected(now));
    CHECK(h.ejected_until() == now + 100 * ms);
    CHECK(h.up_since() == now + 100 * ms); // slow start once it ends
    CHECK_FALSE(h.available(now));
    CHECK(h.available(now, true)); // panic routing may still use it
    // Failures while ejected do not eject it again.
    for (int i = 0; i < 5; ++i) {
        CHECK_FALSE(h.on_attempt_failure(o, now + 50 * ms).ejected);
    }
    CHECK(h.available(now + 100 * ms));
    // The back-off doubles: 200 ms, then 350 (max), then 350.
    now += 200 * ms;
    e = h.on_attempt_failure(o, now); // the failures during the ejection count towards the next one
    CHECK(e.ejected);
    CHECK(e.length == 200 * ms);
    now += 300 * ms;
    for (int i = 0; i < 2; ++i) {
        h.on_attempt_failure(o, now);
    }
    e = h.on_attempt_failure(o, now);
    CHECK(e.length == 350 * ms);
    now += 400 * ms;
    for (int i = 0; i < 2; ++i) {
        h.on_attempt_failure(o, now);
    }
    CHECK(h.on_attempt_failure(o, now).length == 350 * ms);
    CHECK(h.ejections() == 4);
    CHECK(h.failures() == 17);
    // Clean for max_ejection after the last ejection: the back-off starts again from the base.
    now = h.ejected_until() + 351 * ms;
    h.on_attempt_success(o, now);
    for (int i = 0; i < 2; ++i) {
        h.on_attempt_failure(o, now);
    }
    CHECK(h.on_attempt_failure(o, now).length == 100 * ms);
}

TEST_CASE("server health: passing checks end an ejection; consecutive_failures 0 never ejects",
          "[unit][gateway][health]") {
    server_health h;
    const auto o = outlier(1, 10'000, 60'000);
    CHECK(h.on_attempt_failure(o, 1 * s).ejected);
    CHECK(h.on_check(false, 503, 2, 1, 2 * s) == transition::down);
    CHECK(h.on_check(true, 200, 2, 1, 3 * s) == transition::none);
    CHECK(h.on_check(true, 200, 2, 1, 4 * s) == transition::up);
    CHECK_FALSE(h.ejected(4 * s));
    CHECK(h.available(4 * s));
    // The back-off was reset: the next ejection is the base again.
    CHECK(h.on_attempt_failure(o, 5 * s).length == 10 * s);

    server_health never;
    const auto off = outlier(0, 10'000, 60'000);
    for (int i = 0; i < 100; ++i) {
        CHECK_FALSE(never.on_attempt_failure(off, 1 * s).ejected);
    }
    CHECK(never.failures() == 100);
    CHECK(never.available(1 * s));
}

TEST_CASE("server health: of many workers crossing the threshold at once, one ejects", "[unit][gateway][health]") {
    server_health h;
    const auto o = outlier(5, 60'000, 60'000);
    std::atomic<int> ejected{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 1000; ++i) {
                ejected += h.on_attempt_failure(o, 1 * s).ejected ? 1 : 0;
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(ejected == 1);
    CHECK(h.ejections() == 1);
    CHECK(h.failures() == 4000);
}

TEST_CASE("server health: drain, enable through slow start, weight, requests in flight", "[unit][gateway][health]") {
    server_health h;
    h.enable(1 * s); // not drained: nothing changes
    CHECK(h.up_since() == 0);
    h.drain();
    CHECK(h.drained());
    CHECK_FALSE(h.available(2 * s));
    CHECK_FALSE(h.available(2 * s, true));
    h.enable(3 * s);
    CHECK_FALSE(h.drained());
    CHECK(h.available(3 * s));
    CHECK(h.up_since() == 3 * s);

    CHECK(h.weight() == 0);
    h.set_weight(7);
    CHECK(h.weight() == 7);
    h.set_weight(0);
    CHECK(h.weight() == 0);

    CHECK(h.try_acquire(2));
    CHECK(h.try_acquire(2));
    CHECK_FALSE(h.try_acquire(2));
    CHECK(h.active() == 2);
    CHECK(h.try_acquire(0)); // no limit
    CHECK(h.active() == 3);
    h.release();
    h.release();
    CHECK(h.try_acquire(2));

    h.count_request();
    h.count_retry();
    h.count_response(2);
    h.count_response(5);
    h.count_response(5);
    h.count_response(9); // out of range: not counted as any class
    CHECK(h.requests() == 1);
    CHECK(h.retries() == 1);
    CHECK(h.responses(2) == 1);
    CHECK(h.responses(5) == 2);
    CHECK(h.responses(3) == 0);
}
