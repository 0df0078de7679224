#include "gateway/control/abuse.hpp"
#include "gateway/shared_state.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

using namespace rampart;
using gateway::client_address;
using gateway::mono_ns;

namespace {

constexpr mono_ns ms = 1'000'000;
constexpr mono_ns sec = 1000 * ms;

config::network net(const std::string& text) {
    auto n = config::parse_network(text);
    REQUIRE(n);
    return *n;
}

config::snapshot_ptr abuse_config(unsigned threshold, std::vector<std::string> allow) {
    auto s = std::make_shared<config::snapshot>();
    s->gw.abuse_settings.threshold = threshold;
    s->gw.abuse_settings.window = std::chrono::seconds(10);
    s->gw.abuse_settings.block_for = std::chrono::seconds(60);
    for (const auto& a : allow) {
        s->gw.abuse_settings.allow.push_back(net(a));
    }
    config::firewall fw;
    fw.admin_networks.push_back(net("192.0.2.0/24"));
    s->fw = fw;
    return s;
}

} // namespace

TEST_CASE("client addresses: v4 as v4-mapped, text round trip, networks, loopback", "[unit][gateway][shared]") {
    const auto a = client_address::parse("203.0.113.7");
    CHECK(a.to_string() == "203.0.113.7");
    CHECK(client_address::parse("2001:db8::42").to_string() == "2001:db8::42");
    CHECK(client_address::parse("::ffff:203.0.113.7").to_string() == "203.0.113.7");
    CHECK(gateway::network_set({net("203.0.113.0/24")}).contains(a));
    CHECK_FALSE(gateway::network_set({net("203.0.112.0/24")}).contains(a));
    CHECK(gateway::network_set({net("0.0.0.0/0")}).contains(a));
    CHECK_FALSE(gateway::network_set({net("203.0.113.0/24")}).contains(client_address::parse("2001:db8::42")));
    CHECK(gateway::network_set({net("2001:db8::/32")}).contains(client_address::parse("2001:db8::42")));
    CHECK_FALSE(gateway::network_set({net("2001:db8::/32")}).contains(client_address::parse("2001:db9::42")));
    CHECK(gateway::network_set({net("2001:db8::/64")}).contains(client_address::parse("2001:db8:0:0:8000::1")));
    CHECK_FALSE(gateway::network_set({net("2001:db8::/64")}).contains(client_address::parse("2001:db8:0:1::1")));
    CHECK(client_address::parse("127.0.0.2").is_loopback());
    CHECK(client_address::parse("::1").is_loopback());
    CHECK_FALSE(a.is_loopback());
    CHECK(client_address::parse("not an address").hi == 0);
}

TEST_CASE("the client table finds the same slot again and keeps scopes apart", "[unit][gateway][shared]") {
    auto block = std::make_unique<gateway::shared_block>();
    const auto a = client_address::parse("203.0.113.7");
    const auto b = client_address::parse("203.0.113.8");
    auto* conn_a = gateway::find_client(*block, a, gateway::scope_connections, 1);
    auto* conn_b = gateway::find_client(*block, b, gateway::scope_connections, 1);
    auto* pool_a = gateway::find_client(*block, a, 0, 1);
    REQUIRE(conn_a != nullptr);
    REQUIRE(conn_b != nullptr);
    REQUIRE(pool_a != nullptr);
    CHECK(conn_a != conn_b);
    CHECK(conn_a != pool_a);
    CHECK(gateway::find_client(*block, a, gateway::scope_connections, 2) == conn_a);
    CHECK(client_address{conn_a->addr_hi.load(), conn_a->addr_lo.load()}.to_string() == "203.0.113.7");
    CHECK(conn_a->last_seen.load() == 2);
}

TEST_CASE("token bucket: burst, refill at the rate, never above the burst", "[unit][gateway][shared]") {
    gateway::client_slot slot;
    const mono_ns t0 = 5 * sec;
    int taken = 0;
    for (int i = 0; i < 10; ++i) {
        taken += gateway::take_token(slot, 5.0, 5, t0) ? 1 : 0;
    }
    CHECK(taken == 5);
    CHECK_FALSE(gateway::take_token(slot, 5.0, 5, t0 + 100 * ms)); // half a token
    CHECK(gateway::take_token(slot, 5.0, 5, t0 + 200 * ms));       // one token after 200 ms
    CHECK_FALSE(gateway::take_token(slot, 5.0, 5, t0 + 200 * ms));
    taken = 0;
    for (int i = 0; i < 10; ++i) {
        taken += gateway::take_token(slot, 5.0, 5, t0 + 100 * sec) ? 1 : 0; // long idle: a full burst, no more
    }
    CHECK(taken == 5);
    // A slow rate refills even when denied requests keep coming.
    gateway::client_slot slow;
    CHECK(gateway::take_token(slow, 1.0 / 60, 1, t0));
    for (mono_ns t = t0; t < t0 + 59 * sec; t += sec) {
        CHECK_FALSE(gateway::take_token(slow, 1.0 / 60, 1, t));
    }
    CHECK(gateway::take_token(slow, 1.0 / 60, 1, t0 + 61 * sec));
}

TEST_CASE("abuse guard blocks over the threshold, never the allow lists, and forgets what left the window",
          "[unit][gateway][abuse]") {
    auto block = std::make_unique<gateway::shared_block>();
    std::vector<std::string> blocked;
    std::chrono::milliseconds blocked_for{0};
    gateway::abuse_guard guard(abuse_config(5, {"198.51.100.0/24"}), *block,
                               [&](const std::vector<std::string>& a, std::chrono::milliseconds t) {
                                   blocked.insert(blocked.end(), a.begin(), a.end());
                                   blocked_for = t;
                               });
    const mono_ns t0 = 100 * sec;
    auto violate = [&](const char* addr, int n, mono_ns at) {
        for (int i = 0; i < n; ++i) {
            gateway::count_violation(*block, client_address::parse(addr), at);
        }
    };
    guard.sweep(t0);                 // starts the first window
    violate("203.0.113.7", 5, t0);   // at the threshold
    violate("203.0.113.8", 4, t0);   // below
    violate("198.51.100.9", 50, t0); // allow list
    violate("192.0.2.10", 50, t0);   // firewall.admin_networks
    violate("127.0.0.1", 50, t0);    // loopback
    CHECK(guard.sweep(t0 + sec) == std::vector<std::string>{"203.0.113.7"});
    CHECK(blocked == std::vector<std::string>{"203.0.113.7"});
    CHECK(blocked_for == std::chrono::seconds(60));
    CHECK(block->firewall_blocks.load() == 1);
    CHECK(block->abuse_violations.load() == 159);
    // A new window forgets 203.0.113.8's four: four more do not block it.
    guard.sweep(t0 + 11 * sec);
    violate("203.0.113.8", 4, t0 + 11 * sec);
    CHECK(guard.sweep(t0 + 12 * sec).empty());
    violate("203.0.113.8", 1, t0 + 12 * sec);
    CHECK(guard.sweep(t0 + 13 * sec) == std::vector<std::string>{"203.0.113.8"});
}

TEST_CASE("abuse guard: the window slides, so a burst across a boundary is caught and old ones expire",
          "[unit][gateway][abuse]") {
    auto block = std::make_unique<gateway::shared_block>();
    std::vector<std::string> blocked;
    gateway::abuse_guard guard(abuse_config(5, {}), *block, // 5 violations within 10 s
                               [&](const std::vector<std::string>& a, std::chrono::milliseconds) {
                                   blocked.insert(blocked.end(), a.begin(), a.end());
                               });
    const mono_ns t0 = 100 * sec;
    const mono_ns ms = sec / 1000;
    auto violate = [&](const char* addr, int n, mono_ns at) {
        for (int i = 0; i < n; ++i) {
            gateway::count_violation(*block, client_address::parse(addr), at);
        }
    };
    // The master sweeps once a second. Three violations late in one 10 s
    // span and three early in the next: six within 1.5 s, blocked once.
    std::vector<std::string> found;
    for (mono_ns t = t0; t <= t0 + 14 * sec; t += sec) {
        if (t == t0 + 9 * sec) {
            violate("203.0.113.7", 3, t + 500 * ms);
        }
        if (t == t0 + 10 * sec) {
            violate("203.0.113.7", 3, t + 500 * ms);
        }
        const auto now = guard.sweep(t);
        found.insert(found.end(), now.begin(), now.end());
    }
    CHECK(found == std::vector<std::string>{"203.0.113.7"});
    // Four violations every 11 s never make five within 10 s: never blocked,
    // however long it goes on.
    blocked.clear();
    for (mono_ns t = t0 + 20 * sec; t <= t0 + 120 * sec; t += sec) {
        if ((t - t0) % (11 * sec) == 0) {
            violate("203.0.113.8", 4, t);
        }
        guard.sweep(t);
    }
    CHECK(blocked.empty());
    // The history is emptied by a block: the blocked client starts from zero.
    violate("203.0.113.9", 5, t0 + 130 * sec);
    CHECK(guard.sweep(t0 + 131 * sec) == std::vector<std::string>{"203.0.113.9"});
    violate("203.0.113.9", 4, t0 + 131 * sec);
    CHECK(guard.sweep(t0 + 132 * sec).empty());
}

TEST_CASE("abuse guard counts a refused block and keeps going", "[unit][gateway][abuse]") {
    auto block = std::make_unique<gateway::shared_block>();
    gateway::abuse_guard guard(abuse_config(2, {}), *block,
                               [](const std::vector<std::string>&, std::chrono::milliseconds) {
                                   throw std::runtime_error("no table inet rampart");
                               });
    gateway::count_violation(*block, client_address::parse("203.0.113.7"), 1);
    gateway::count_violation(*block, client_address::parse("203.0.113.7"), 1);
    CHECK(guard.sweep(sec) == std::vector<std::string>{"203.0.113.7"});
    CHECK(block->firewall_block_errors.load() == 1);
    CHECK(block->firewall_blocks.load() == 0);
}

TEST_CASE("abuse guard: a client behind a trusted proxy is blocked at layer 7, the proxy never",
          "[unit][gateway][abuse]") {
    auto block = std::make_unique<gateway::shared_block>();
    std::vector<std::string> in_firewall;
    auto cfg = std::make_shared<config::snapshot>(*abuse_config(3, {}));
    cfg->gw.trusted_proxies.push_back(net("203.0.113.50/32"));
    cfg->gw.abuse_settings.block_for = std::chrono::hours(1); // longer than a slot's ten idle minutes
    gateway::abuse_guard guard(cfg, *block, [&](const std::vector<std::string>& a, std::chrono::milliseconds) {
        in_firewall.insert(in_firewall.end(), a.begin(), a.end());
    });
    const mono_ns t0 = 100 * sec;
    guard.sweep(t0);
    // A client whose address came in a PROXY header (the worker marks its slot).
    auto* behind = gateway::find_client(*block, client_address::parse("198.51.100.77"), gateway::scope_connections, t0);
    REQUIRE(behind != nullptr);
    behind->via_proxy.store(1);
    for (int i = 0; i < 3; ++i) {
        gateway::count_violation(*block, client_address::parse("198.51.100.77"), t0);
        gateway::count_violation(*block, client_address::parse("203.0.113.50"), t0); // the proxy itself
        gateway::count_violation(*block, client_address::parse("203.0.113.9"), t0);  // a direct client
    }
    CHECK(guard.sweep(t0 + sec) == std::vector<std::string>{"203.0.113.9", "198.51.100.77"});
    CHECK(in_firewall == std::vector<std::string>{"203.0.113.9"}); // never the proxy, never who is behind it
    CHECK(block->l7_blocks.load() == 1);
    CHECK(block->firewall_blocks.load() == 1);
    CHECK(behind->blocked_until.load() == t0 + sec + 3600 * sec);
    // The slot is kept while blocked, however idle, and cleaned when freed.
    guard.sweep(t0 + 50 * 60 * sec);
    CHECK(behind->key.load() != 0);
    CHECK(behind->blocked_until.load() == t0 + sec + 3600 * sec);
    guard.sweep(t0 + 62 * 60 * sec);
    CHECK(behind->key.load() == 0); // freed once the block ended (and it was idle)
    CHECK(behind->blocked_until.load() == 0);
    CHECK(behind->via_proxy.load() == 0);
}

TEST_CASE("a network set: prefixes of both families, IPv4 as v4-mapped", "[unit][gateway][shared]") {
    const std::vector<config::network> nets = {net("203.0.113.0/24"), net("2001:db8::/32"), net("192.0.2.7"),
                                               net("0.0.0.0/0")};
    const gateway::network_set set(nets);
    CHECK_FALSE(set.empty());
    CHECK(gateway::network_set().empty());
    struct probe {
        const char* address;
        bool inside;
    };
    for (const auto& [a, inside] :
         {probe{"203.0.113.9", true}, probe{"203.0.112.9", true}, // 0.0.0.0/0
          probe{"2001:db8::1", true}, probe{"2001:db9::1", false}, probe{"192.0.2.7", true},
          probe{"::ffff:198.51.100.1", true}, probe{"::1", false}, probe{"2001:db8:ffff::", true}}) {
        INFO(a);
        CHECK(set.contains(client_address::parse(a)) == inside);
    }
    const gateway::network_set some({net("203.0.113.0/24"), net("192.0.2.7")});
    CHECK(some.contains(client_address::parse("192.0.2.7")));
    CHECK_FALSE(some.contains(client_address::parse("192.0.2.8")));
    CHECK_FALSE(some.contains(client_address::parse("::ffff:c000:208")));
    // 0.0.0.0/0 is every IPv4 address and no IPv6 one.
    const gateway::network_set v4_all({net("0.0.0.0/0")});
    CHECK(v4_all.contains(client_address::parse("198.51.100.1")));
    CHECK_FALSE(v4_all.contains(client_address::parse("2001:db8::1")));
    CHECK_FALSE(gateway::network_set({net("2001:db8::/32")}).contains(client_address::parse("203.0.113.9")));
}
