#include "gateway/control/abuse.hpp"
#include "gateway/shared_state.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
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

namespace {

using gateway::acme_alpn_source;
using gateway::acme_answers;
using http_answers = std::vector<std::pair<std::string, std::string>>;

/// A 43-character token like the ones ACME servers send, distinct per `i`.
std::string acme_token(char set, int i) {
    std::string t = std::string(1, set) + "-token-" + std::to_string(i) + "-";
    t.resize(43, set == 'a' ? 'x' : 'y');
    return t;
}

/// DER-like bytes of `length`, zero bytes included, distinct per `seed`.
std::string der_bytes(std::size_t length, unsigned seed) {
    std::string out(length, '\0');
    for (std::size_t i = 0; i < length; ++i) {
        out[i] = static_cast<char>(i % 7 == 0 ? 0 : (i * 131 + seed * 17) & 0xff);
    }
    return out;
}

std::unique_ptr<acme_answers> fresh_answers() {
    return std::make_unique<acme_answers>(); // ~50 KiB: not on the stack
}

} // namespace

TEST_CASE("acme answers: published http-01 tokens are found, others are not", "[unit][gateway][shared][acme]") {
    const auto a = fresh_answers();
    CHECK_FALSE(gateway::find_acme_http(*a, acme_token('a', 0)));

    const std::string thumb(43, 'T');
    const http_answers published{{acme_token('a', 0), acme_token('a', 0) + "." + thumb},
                                 {acme_token('a', 1), acme_token('a', 1) + "." + thumb}};
    CHECK(gateway::publish_acme_answers(*a, published, {}));
    for (const auto& [token, ka] : published) {
        INFO(token);
        CHECK(gateway::find_acme_http(*a, token) == ka);
    }
    CHECK_FALSE(gateway::find_acme_http(*a, acme_token('a', 2)));
    CHECK_FALSE(gateway::find_acme_http(*a, acme_token('a', 0).substr(0, 20))); // a prefix is not the token
    CHECK_FALSE(gateway::find_acme_http(*a, acme_token('a', 0) + "x"));
    CHECK_FALSE(gateway::find_acme_http(*a, ""));
    CHECK_FALSE(gateway::find_acme_http(*a, std::string(300, 'x')));

    // Republishing replaces: the new set only.
    const http_answers next{{acme_token('b', 7), acme_token('b', 7) + "." + thumb}};
    CHECK(gateway::publish_acme_answers(*a, next, {}));
    CHECK(gateway::find_acme_http(*a, acme_token('b', 7)) == next[0].second);
    CHECK_FALSE(gateway::find_acme_http(*a, acme_token('a', 0)));
    CHECK_FALSE(gateway::find_acme_http(*a, acme_token('a', 1)));

    // Nothing published: nothing found.
    CHECK(gateway::publish_acme_answers(*a, {}, {}));
    CHECK_FALSE(gateway::find_acme_http(*a, acme_token('b', 7)));
    CHECK(a->seq.load() % 2 == 0); // no writer left it mid-write
}

TEST_CASE("acme answers: an http-01 entry larger than its field is dropped", "[unit][gateway][shared][acme]") {
    const auto a = fresh_answers();
    const std::size_t token_room = sizeof a->http[0].token - 1; // NUL-terminated
    const std::size_t answer_room = sizeof a->http[0].key_authorization - 1;
    const std::string longest_token(token_room, 't');
    const std::string longest_answer(answer_room, 'k');
    CHECK(gateway::publish_acme_answers(*a, {{longest_token, longest_answer}}, {}));
    CHECK(gateway::find_acme_http(*a, longest_token) == longest_answer);

    const std::string too_long_token(token_room + 1, 'u');
    const std::string ok_token = acme_token('a', 3);
    CHECK_FALSE(gateway::publish_acme_answers(*a,
                                              {{too_long_token, "answer"},
                                               {ok_token, ok_token + ".thumb"},
                                               {acme_token('a', 4), std::string(answer_room + 1, 'k')}},
                                              {}));
    CHECK_FALSE(gateway::find_acme_http(*a, too_long_token));
    CHECK_FALSE(gateway::find_acme_http(*a, too_long_token.substr(0, token_room)));
    CHECK_FALSE(gateway::find_acme_http(*a, acme_token('a', 4)));
    CHECK_FALSE(gateway::find_acme_http(*a, longest_token));             // the earlier set is gone
    CHECK(gateway::find_acme_http(*a, ok_token) == ok_token + ".thumb"); // the rest is published
}

TEST_CASE("acme answers: at most 16 of each kind, the 17th dropped", "[unit][gateway][shared][acme]") {
    const auto a = fresh_answers();
    REQUIRE(gateway::max_acme_challenges == 16);
    http_answers http;
    std::vector<acme_alpn_source> alpn;
    for (int i = 0; i < 17; ++i) {
        http.emplace_back(acme_token('a', i), acme_token('a', i) + ".thumb");
        alpn.push_back(acme_alpn_source{"host" + std::to_string(i) + ".foobar.com",
                                        der_bytes(100 + static_cast<std::size_t>(i), static_cast<unsigned>(i)),
                                        der_bytes(50, static_cast<unsigned>(i) + 100)});
    }
    CHECK_FALSE(gateway::publish_acme_answers(*a, http, {}));
    for (int i = 0; i < 16; ++i) {
        INFO(i);
        CHECK(gateway::find_acme_http(*a, http[static_cast<std::size_t>(i)].first) ==
              http[static_cast<std::size_t>(i)].second);
    }
    CHECK_FALSE(gateway::find_acme_http(*a, http[16].first));

    CHECK_FALSE(gateway::publish_acme_answers(*a, {}, alpn));
    for (int i = 0; i < 16; ++i) {
        INFO(i);
        const auto found = gateway::find_acme_alpn(*a, alpn[static_cast<std::size_t>(i)].name);
        REQUIRE(found);
        CHECK(found->cert_der == alpn[static_cast<std::size_t>(i)].cert_der);
        CHECK(found->key_der == alpn[static_cast<std::size_t>(i)].key_der);
    }
    CHECK_FALSE(gateway::find_acme_alpn(*a, alpn[16].name));
    // The 17th did not overwrite the first slot either.
    CHECK(gateway::find_acme_alpn(*a, alpn[0].name)->cert_der == alpn[0].cert_der);
    CHECK_FALSE(gateway::find_acme_http(*a, http[0].first)); // http was republished empty

    // Exactly 16 fit.
    http.pop_back();
    alpn.pop_back();
    CHECK(gateway::publish_acme_answers(*a, http, alpn));
    CHECK(gateway::find_acme_http(*a, http[15].first) == http[15].second);
    CHECK(gateway::find_acme_alpn(*a, alpn[15].name)->key_der == alpn[15].key_der);
}

TEST_CASE("acme answers: tls-alpn-01 certificates come back byte for byte", "[unit][gateway][shared][acme]") {
    const auto a = fresh_answers();
    CHECK_FALSE(gateway::find_acme_alpn(*a, "www.foobar.com"));
    const std::size_t cert_room = sizeof a->alpn[0].cert_der;
    const std::size_t key_room = sizeof a->alpn[0].key_der;
    const std::size_t name_room = sizeof a->alpn[0].name - 1;
    const std::vector<acme_alpn_source> published{
        {"www.foobar.com", der_bytes(389, 1), der_bytes(121, 2)},
        {"foobar.com", der_bytes(cert_room, 3), der_bytes(key_room, 4)}, // as large as the fields
        {std::string(name_room, 'n'), std::string("\0\0\x30\0", 4), std::string(1, '\0')},
    };
    REQUIRE(published[0].cert_der.find('\0') != std::string::npos);
    CHECK(gateway::publish_acme_answers(*a, {}, published));
    for (const auto& p : published) {
        INFO(p.name.substr(0, 20));
        const auto found = gateway::find_acme_alpn(*a, p.name);
        REQUIRE(found);
        CHECK(found->name == p.name);
        CHECK(found->cert_der.size() == p.cert_der.size());
        CHECK(found->cert_der == p.cert_der);
        CHECK(found->key_der == p.key_der);
    }
    CHECK_FALSE(gateway::find_acme_alpn(*a, "api.foobar.com"));
    CHECK_FALSE(gateway::find_acme_alpn(*a, "www.foobar.co"));
    CHECK_FALSE(gateway::find_acme_alpn(*a, ""));
    CHECK_FALSE(gateway::find_acme_http(*a, "www.foobar.com")); // the kinds are apart

    // Larger than a field: dropped, false, the others still published.
    const std::vector<acme_alpn_source> too_large{
        {"big-cert.foobar.com", der_bytes(cert_room + 1, 5), der_bytes(100, 6)},
        {"big-key.foobar.com", der_bytes(300, 7), der_bytes(key_room + 1, 8)},
        {std::string(name_room + 1, 'm'), der_bytes(300, 9), der_bytes(100, 10)},
        {"fits.foobar.com", der_bytes(300, 11), der_bytes(100, 12)},
    };
    CHECK_FALSE(gateway::publish_acme_answers(*a, {}, too_large));
    CHECK_FALSE(gateway::find_acme_alpn(*a, "big-cert.foobar.com"));
    CHECK_FALSE(gateway::find_acme_alpn(*a, "big-key.foobar.com"));
    CHECK_FALSE(gateway::find_acme_alpn(*a, std::string(name_room + 1, 'm')));
    CHECK_FALSE(gateway::find_acme_alpn(*a, "www.foobar.com"));
    const auto fits = gateway::find_acme_alpn(*a, "fits.foobar.com");
    REQUIRE(fits);
    CHECK(fits->cert_der == too_large[3].cert_der);
    CHECK(fits->key_der == too_large[3].key_der);

    // A shorter certificate after a longer one in the same slot: no tail of the old one.
    CHECK(gateway::publish_acme_answers(*a, {}, {{"www.foobar.com", der_bytes(2000, 13), der_bytes(500, 14)}}));
    CHECK(gateway::publish_acme_answers(*a, {}, {{"www.foobar.com", der_bytes(10, 15), der_bytes(5, 16)}}));
    const auto shorter = gateway::find_acme_alpn(*a, "www.foobar.com");
    REQUIRE(shorter);
    CHECK(shorter->cert_der == der_bytes(10, 15));
    CHECK(shorter->key_der == der_bytes(5, 16));

    CHECK(gateway::publish_acme_answers(*a, {}, {}));
    CHECK_FALSE(gateway::find_acme_alpn(*a, "www.foobar.com"));
}

TEST_CASE("acme answers: a reader racing the publisher sees one set or the other, never a mix",
          "[unit][gateway][shared][acme]") {
    const auto a = fresh_answers();
    // Two sets of the same shape: tokens of different lengths in the same
    // slots, answers that differ in every byte, one token in both (in
    // different slots), and certificates of different sizes per set.
    struct set {
        http_answers http;
        std::vector<acme_alpn_source> alpn;
    };
    const auto make_set = [](char which) {
        set s;
        const std::string thumb(43, which == 'a' ? 'A' : 'B');
        if (which == 'b') {
            s.http.emplace_back("shared-token-0123456789", "shared-token-0123456789." + thumb);
        }
        for (int i = 0; i < 8; ++i) {
            std::string token = acme_token(which, i);
            token.resize(which == 'a' ? 43 : 60, which == 'a' ? 'x' : 'y');
            s.http.emplace_back(token, token + "." + thumb);
        }
        if (which == 'a') {
            s.http.emplace_back("shared-token-0123456789", "shared-token-0123456789." + thumb);
        }
        for (int i = 0; i < 4; ++i) {
            const std::string name = "host" + std::to_string(i) + ".foobar.com";
            const bool a_set = which == 'a';
            s.alpn.push_back(acme_alpn_source{name, der_bytes(a_set ? 300 : 900, a_set ? 1 : 2),
                                              der_bytes(a_set ? 100 : 120, a_set ? 3 : 4)});
        }
        return s;
    };
    const set sets[2] = {make_set('a'), make_set('b')};
    std::vector<std::string> tokens;
    for (const auto& s : sets) {
        for (const auto& h : s.http) {
            tokens.push_back(h.first);
        }
    }
    tokens.push_back(acme_token('c', 0)); // in neither set
    const auto expected_answers = [&](const std::string& token) {
        std::vector<std::string> out;
        for (const auto& s : sets) {
            for (const auto& h : s.http) {
                if (h.first == token) {
                    out.push_back(h.second);
                }
            }
        }
        return out;
    };

    REQUIRE(gateway::publish_acme_answers(*a, sets[0].http, sets[0].alpn));
    std::atomic<bool> done{false};
    std::atomic<bool> publish_failed{false};
    std::thread writer([&] {
        for (int i = 0; i < 20000; ++i) {
            const set& s = sets[i % 2];
            if (!gateway::publish_acme_answers(*a, s.http, s.alpn)) {
                publish_failed = true;
            }
            if (i % 64 == 0) {
                std::this_thread::yield(); // some quiet moments for the reader to succeed in
            }
        }
        done = true;
    });

    std::size_t found = 0;
    std::size_t mixed = 0;
    std::size_t lookups = 0;
    std::string first_mix;
    for (std::size_t i = 0; i < 2'000'000 && !done.load(); ++i) {
        ++lookups;
        if (i % 4 == 3) {
            const std::string name = "host" + std::to_string(i % 16 / 4) + ".foobar.com";
            if (const auto cert = gateway::find_acme_alpn(*a, name)) {
                ++found;
                const bool one_set =
                    (cert->cert_der == sets[0].alpn[0].cert_der && cert->key_der == sets[0].alpn[0].key_der) ||
                    (cert->cert_der == sets[1].alpn[0].cert_der && cert->key_der == sets[1].alpn[0].key_der);
                if (!one_set || cert->name != name) {
                    ++mixed;
                }
            }
            continue;
        }
        const std::string& token = tokens[i % tokens.size()];
        if (const auto answer = gateway::find_acme_http(*a, token)) {
            ++found;
            const auto expected = expected_answers(token);
            if (std::find(expected.begin(), expected.end(), *answer) == expected.end()) {
                ++mixed;
                if (first_mix.empty()) {
                    first_mix = token + " -> " + *answer;
                }
            }
        }
    }
    writer.join();
    INFO("lookups " << lookups << ", found " << found << ", first mix: " << first_mix);
    CHECK_FALSE(publish_failed.load());
    CHECK(mixed == 0);
    CHECK(found > 0);
    CHECK(a->seq.load() == 2 * 20001);

    // Quiet again: the last set published (the 20,000th, index 19999: set b) is whole.
    for (const auto& [token, answer] : sets[1].http) {
        CHECK(gateway::find_acme_http(*a, token) == answer);
    }
    for (const auto& h : sets[0].http) {
        if (h.first != "shared-token-0123456789") {
            CHECK_FALSE(gateway::find_acme_http(*a, h.first));
        }
    }
    CHECK(gateway::find_acme_alpn(*a, "host2.foobar.com")->cert_der == sets[1].alpn[2].cert_der);
    CHECK_FALSE(gateway::find_acme_http(*a, acme_token('c', 0)));
}
