#include "gateway/balancer.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <vector>

using namespace rampart;
using gateway::balancer;
using gateway::server_state;

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
struct fixture {
    explicit fixture(std::size_t n) : states(n) {
        for (auto& s : states) {
            ptrs.push_back(&s);
        }
    }
    std::vector<server_state> states;
    std::vector<server_state*> ptrs;
    gateway::pool_state pool;
};

}  // namespace

TEST_CASE("round robin visits members in exact order", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::round_robin, {5, 1, 1}));  // weights ignored
    fixture f(3);
    std::vector<std::size_t> picks;
    for (int i = 0; i < 9; ++i) {
        picks.push_back(*b.pick(f.pool.next, f.ptrs));
    }
    CHECK(picks == std::vector<std::size_t>{0, 1, 2, 0, 1, 2, 0, 1, 2});
}

TEST_CASE("round robin skips unusable members", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::round_robin, {1, 1, 1}));
    fixture f(3);
    f.states[1].usable = 0;
    for (int i = 0; i < 6; ++i) {
        CHECK(*b.pick(f.pool.next, f.ptrs) != 1);
    }
    f.states[0].usable = 0;
    f.states[2].usable = 0;
    CHECK_FALSE(b.pick(f.pool.next, f.ptrs).has_value());
}

TEST_CASE("weighted round robin gives exact shares, interleaved", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::weighted_round_robin, {3, 1}));
    fixture f(2);
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 1000; ++i) {
        ++counts[*b.pick(f.pool.next, f.ptrs)];
    }
    CHECK(counts[0] == 750);
    CHECK(counts[1] == 250);
    // Smooth: weights 5,1,1 give a,a,b,a,c,a,a (nginx's order), not a run of five.
    CHECK(gateway::smooth_schedule(std::vector<unsigned>{5, 1, 1}) ==
          std::vector<std::uint16_t>{0, 0, 1, 0, 2, 0, 0});
}

TEST_CASE("weighted schedule is reduced by the common divisor", "[unit][gateway][balancer]") {
    CHECK(gateway::smooth_schedule(std::vector<unsigned>{200, 100}).size() == 3);
    CHECK(gateway::smooth_schedule(std::vector<unsigned>{256, 255}).size() == 511);
}

TEST_CASE("least connections picks the least loaded, relative to weight", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::least_connections, {1, 1, 1}));
    fixture f(3);
    f.states[0].active = 4;
    f.states[1].active = 1;
    f.states[2].active = 3;
    for (int i = 0; i < 5; ++i) {
        CHECK(*b.pick(f.pool.next, f.ptrs) == 1);
    }
    f.states[1].usable = 0;
    CHECK(*b.pick(f.pool.next, f.ptrs) == 2);

    balancer weighted(make_pool(config::balance::least_connections, {4, 1}));
    fixture g(2);
    g.states[0].active = 3;  // 3/4 per unit of weight
    g.states[1].active = 1;  // 1/1
    CHECK(*weighted.pick(g.pool.next, g.ptrs) == 0);
}

TEST_CASE("least connections rotates among ties", "[unit][gateway][balancer]") {
    balancer b(make_pool(config::balance::least_connections, {1, 1}));
    fixture f(2);
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 10; ++i) {
        ++counts[*b.pick(f.pool.next, f.ptrs)];
    }
    CHECK(counts[0] == 5);
    CHECK(counts[1] == 5);
}
