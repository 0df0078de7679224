#include "gateway/proxy/balancer.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <vector>

using namespace rampart;
using gateway::balancer;
using gateway::server_health;

namespace {

config::pool make_pool(config::balance algo, std::vector<unsigned> weights) {
    config::pool p;
    p.name = "app";
    p.algorithm = algo;
    for (std::size_t i = 0; i < weights.size(); ++i) {
        config::pool_member m;
        m.name = "s" + std::to_string(i);
        m.address = {"127.0.0.1", static_cast<std::uint16_t>(8000 + i)};
        m.weight = weights[i];
        p.members.push_back(m);
    }
    return p;
}

/// Shared-state stand-ins: the same structs the workers map from shared memory.
// The state is set the way the gateway sets it: through server_health's methods.
void mark_down(server_health& s) {
    s.on_check(false, 503, 1, 1, 0);
}
void hold(server_health& s, int n) {
    for (int i = 0; i < n; ++i) {
        REQUIRE(s.try_acquire(0));
    }
}
constexpr gateway::mono_ns ms = 1'000'000;
/// Ejected from t=0 until t=1 ms.
void eject(server_health& s) {
    config::outlier_detection o;
    o.consecutive_failures = 1;
    o.base_ejection = std::chrono::milliseconds(1);
    REQUIRE(s.on_attempt_failure(o, 0).ejected);
}

struct fixture {
    explicit fixture(std::size_t n) : states(n) {
        for (auto& s : states) {
            ptrs.push_back(&s);
        }
    }
    std::vector<server_health> states;
    std::vector<server_health*> ptrs;
    gateway::pool_state pool;

    /// Picks like a request that finishes at once: the slot is released.
    std::optional<std::size_t> pick(const balancer& b, gateway::mono_ns now = 1, std::uint64_t excluded = 0) {
        auto c = b.pick(pool.next, ptrs, now, excluded);
        if (c.member) {
            states[*c.member].release();
        }
        return c.member;
    }
};

} // namespace

TEST_CASE("round robin visits members in exact order", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::round_robin, {5, 1, 1})); // weights ignored
    fixture f(3);
    std::vector<std::size_t> picks;
    for (int i = 0; i < 9; ++i) {
        picks.push_back(*f.pick(b));
    }
    CHECK(picks == std::vector<std::size_t>{0, 1, 2, 0, 1, 2, 0, 1, 2});
}

TEST_CASE("round robin skips unavailable members", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::round_robin, {1, 1, 1}));
    fixture f(3);
    mark_down(f.states[1]);
    for (int i = 0; i < 6; ++i) {
        CHECK(*f.pick(b) != 1);
    }
    f.states[0].drain();
    mark_down(f.states[2]);
    CHECK_FALSE(f.pick(b).has_value());
}

TEST_CASE("weighted round robin gives exact shares, interleaved", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::weighted_round_robin, {3, 1}));
    fixture f(2);
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 1000; ++i) {
        ++counts[*f.pick(b)];
    }
    CHECK(counts[0] == 750);
    CHECK(counts[1] == 250);
    // Smooth: weights 5,1,1 give a,a,b,a,c,a,a (nginx's order), not a run of five.
    CHECK(gateway::smooth_schedule(std::vector<unsigned>{5, 1, 1}) == std::vector<std::uint16_t>{0, 0, 1, 0, 2, 0, 0});
}

TEST_CASE("weighted schedule is reduced by the common divisor", "[unit][gateway][balancer]") {
    CHECK(gateway::smooth_schedule(std::vector<unsigned>{200, 100}).size() == 3);
    CHECK(gateway::smooth_schedule(std::vector<unsigned>{256, 255}).size() == 511);
}

TEST_CASE("least connections picks the least loaded, relative to weight", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::least_connections, {1, 1, 1}));
    fixture f(3);
    hold(f.states[0], 4);
    hold(f.states[1], 1);
    hold(f.states[2], 3);
    for (int i = 0; i < 5; ++i) {
        CHECK(*f.pick(b) == 1);
    }
    f.states[1].drain();
    CHECK(*f.pick(b) == 2);

    balancer weighted(make_pool(config::balance::least_connections, {4, 1}));
    fixture g(2);
    hold(g.states[0], 3); // 3/4 per unit of weight
    hold(g.states[1], 1); // 1/1
    CHECK(*g.pick(weighted) == 0);
}

TEST_CASE("least connections rotates among ties", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::least_connections, {1, 1}));
    fixture f(2);
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 10; ++i) {
        ++counts[*f.pick(b)];
    }
    CHECK(counts[0] == 5);
    CHECK(counts[1] == 5);
}

TEST_CASE("ejected members are skipped until their time, unless all are", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::round_robin, {1, 1}));
    fixture f(2);
    eject(f.states[0]);
    for (int i = 0; i < 4; ++i) {
        CHECK(*f.pick(b, ms / 2) == 1);
    }
    CHECK(f.pick(b, ms).has_value()); // ejection over at t=1 ms
    std::map<std::size_t, int> after;
    for (int i = 0; i < 4; ++i) {
        ++after[*f.pick(b, 3 * ms / 2)];
    }
    CHECK(after[0] == 2);
    // Every member ejected: panic routing still serves (ejection is a guess).
    eject(f.states[1]);
    CHECK(f.pick(b, ms / 2).has_value());
    // But health and drain are never overridden.
    mark_down(f.states[0]);
    f.states[1].drain();
    CHECK_FALSE(f.pick(b, 50).has_value());
}

TEST_CASE("members already tried are excluded", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::round_robin, {1, 1, 1}));
    fixture f(3);
    for (int i = 0; i < 6; ++i) {
        CHECK(*f.pick(b, 1, 0b101) == 1);
    }
    CHECK_FALSE(f.pick(b, 1, 0b111).has_value());
    balancer lc(make_pool(config::balance::least_connections, {1, 1}));
    fixture g(2);
    hold(g.states[1], 9);
    CHECK(*g.pick(lc, 1, 0b01) == 1);
}

TEST_CASE("max connections per server: full members are skipped, then the pool is full", "[unit][gateway][balancer]") {
    for (auto algo : {config::balance::round_robin, config::balance::least_connections}) {
        balancer b(make_pool(algo, {1, 1}));
        fixture f(2);
        std::vector<std::size_t> held;
        for (int i = 0; i < 4; ++i) {
            auto c = b.pick(f.pool.next, f.ptrs, 1, 0, 2);
            REQUIRE(c.member);
            held.push_back(*c.member);
        }
        CHECK(f.states[0].active() == 2);
        CHECK(f.states[1].active() == 2);
        auto c = b.pick(f.pool.next, f.ptrs, 1, 0, 2);
        CHECK_FALSE(c.member);
        CHECK(c.full);
        f.states[1].release(); // one finishes
        c = b.pick(f.pool.next, f.ptrs, 1, 0, 2);
        REQUIRE(c.member);
        CHECK(*c.member == 1);
    }
}

TEST_CASE("slow start ramps a returning member's share up", "[unit][gateway][balancer]") {
    auto p = make_pool(config::balance::round_robin, {1, 1});
    p.slow_start = std::chrono::seconds(10);
    balancer b(p);
    fixture f(2);
    const gateway::mono_ns s = 1'000'000'000;
    mark_down(f.states[0]);
    f.states[0].on_check(true, 200, 1, 1, 100 * s); // member 0 just came back at t=100 s
    auto share = [&](gateway::mono_ns now) {
        int zero = 0;
        for (int i = 0; i < 2000; ++i) {
            zero += *f.pick(b, now) == 0 ? 1 : 0;
        }
        return zero / 2000.0;
    };
    const double at_start = share(100 * s);
    const double halfway = share(105 * s);
    const double done = share(111 * s);
    CHECK(at_start < 0.12); // ~10% of its 50%
    CHECK(halfway > at_start);
    CHECK(halfway < done);
    CHECK(done == Approx(0.5).margin(0.01));
    CHECK(balancer::slow_start_factor(0, 10 * s) == Approx(0.1));
    CHECK(balancer::slow_start_factor(5 * s, 10 * s) == Approx(0.55));
    CHECK(balancer::slow_start_factor(20 * s, 10 * s) == 1.0);
}

TEST_CASE("runtime weights rebuild the schedule when their version moves", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::weighted_round_robin, {1, 1}));
    fixture f(2);
    auto shares = [&] {
        std::map<std::size_t, int> counts;
        for (int i = 0; i < 400; ++i) {
            ++counts[*f.pick(b)];
        }
        return counts;
    };
    auto even = shares();
    CHECK(even[0] == 200);
    f.states[0].set_weight(3);
    auto unchanged = shares(); // same version: the schedule stays
    CHECK(unchanged[0] == 200);
    b.refresh_weights(1, f.ptrs);
    auto weighted = shares();
    CHECK(weighted[0] == 300);
    f.states[0].set_weight(0); // back to the configured weight
    b.refresh_weights(2, f.ptrs);
    CHECK(shares()[0] == 200);
    // Round robin ignores weights, as configured ones.
    balancer rr(make_pool(config::balance::round_robin, {1, 1}));
    f.states[0].set_weight(5);
    rr.refresh_weights(3, f.ptrs);
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 10; ++i) {
        ++counts[*f.pick(rr)];
    }
    CHECK(counts[0] == 5);
}

namespace {

std::optional<std::size_t> pick_key(fixture& f, const balancer& b, std::uint64_t key, gateway::mono_ns now = 1) {
    gateway::pick_hint hint;
    hint.key = key;
    auto c = b.pick(f.pool.next, f.ptrs, now, 0, 0, hint);
    if (c.member) {
        f.states[*c.member].release();
    }
    return c.member;
}

} // namespace

TEST_CASE("hash: a key always gets the same member, and keys spread by weight", "[unit][balancer]") {
    fixture f(3);
    const balancer b(make_pool(config::balance::hash, {1, 1, 2}));
    std::map<std::size_t, int> counts;
    for (int k = 0; k < 20000; ++k) {
        const auto key = gateway::stable_hash("client-" + std::to_string(k));
        const auto m = pick_key(f, b, key);
        REQUIRE(m);
        CHECK(pick_key(f, b, key) == m);
        ++counts[*m];
    }
    // 1:1:2 of 20,000: 5,000, 5,000, 10,000, within a few percent.
    CHECK(counts[0] > 4500);
    CHECK(counts[0] < 5500);
    CHECK(counts[1] > 4500);
    CHECK(counts[1] < 5500);
    CHECK(counts[2] > 9000);
    CHECK(counts[2] < 11000);
}

TEST_CASE("hash: a member going away moves only its own keys", "[unit][balancer]") {
    fixture f(3);
    const balancer b(make_pool(config::balance::hash, {1, 1, 1}));
    std::vector<std::size_t> before;
    for (int k = 0; k < 3000; ++k) {
        before.push_back(*pick_key(f, b, gateway::stable_hash("k" + std::to_string(k))));
    }
    mark_down(f.states[1]);
    int moved = 0;
    int had = 0;
    for (int k = 0; k < 3000; ++k) {
        const auto now = *pick_key(f, b, gateway::stable_hash("k" + std::to_string(k)));
        had += before[static_cast<std::size_t>(k)] == 1 ? 1 : 0;
        if (now != before[static_cast<std::size_t>(k)]) {
            ++moved;
            CHECK(before[static_cast<std::size_t>(k)] == 1); // only member 1's keys move
        }
        CHECK(now != 1);
    }
    CHECK(moved == had);
    CHECK(had > 800); // about a third
    CHECK(had < 1200);
}

TEST_CASE("hash: bounded load sends a key to its next member while its own is over the bound", "[unit][balancer]") {
    fixture f(3);
    auto p = make_pool(config::balance::hash, {1, 1, 1});
    p.hash_balance_factor = 1.25;
    const balancer b(p);
    const auto key = gateway::stable_hash("hot key");
    const auto home = *pick_key(f, b, key);
    // Its home member has 4 requests in flight, the others none: the bound is
    // ceil(1.25 * 5 / 3) = 3, so this request goes elsewhere ...
    hold(f.states[home], 4);
    const auto elsewhere = pick_key(f, b, key);
    REQUIRE(elsewhere);
    CHECK(*elsewhere != home);
    // ... and comes home again once the load is gone.
    for (int i = 0; i < 4; ++i) {
        f.states[home].release();
    }
    CHECK(pick_key(f, b, key) == home);
    // Unbounded (factor 0): it stays home under any load.
    p.hash_balance_factor = 0;
    const balancer unbounded(p);
    hold(f.states[home], 4);
    CHECK(pick_key(f, unbounded, key) == home);
}

TEST_CASE("hash: without a key, the schedule; a sticky member first when it can serve", "[unit][balancer]") {
    fixture f(3);
    const balancer b(make_pool(config::balance::hash, {1, 1, 1}));
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 6; ++i) {
        ++counts[*f.pick(b)];
    }
    CHECK(counts.size() == 3);
    gateway::pick_hint hint;
    hint.sticky = 2;
    hint.key = gateway::stable_hash("whatever");
    for (int i = 0; i < 5; ++i) {
        auto c = b.pick(f.pool.next, f.ptrs, 1, 0, 0, hint);
        REQUIRE(c.member == std::optional<std::size_t>(2));
        f.states[2].release();
    }
    mark_down(f.states[2]);
    auto c = b.pick(f.pool.next, f.ptrs, 1, 0, 0, hint);
    REQUIRE(c.member);
    CHECK(*c.member != 2);
}
