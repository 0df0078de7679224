// Basic authentication and the allow/deny lists of routes (basic_auth.cpp):
// the header's parsing, the challenge, the guards, and the hashing thread on
// a real io_context with real libcrypt hashes.

#include "config/htpasswd.hpp"
#include "gateway/proxy/basic_auth.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace rampart::gateway;
namespace cfg = rampart::config;

namespace {

std::optional<basic_credentials> parse(std::string_view v) {
    return parse_basic_authorization(v);
}

cfg::network network(const std::string& text) {
    auto n = cfg::parse_network(text);
    REQUIRE(n);
    return *n;
}

cfg::route_access access_with_users() {
    cfg::route_access a;
    cfg::basic_auth auth;
    auth.realm = "r";
    auth.users = {{"alice", cfg::make_password_hash("alice's secret")}, {"bob", cfg::make_password_hash("b")}};
    a.auth = auth;
    return a;
}

// Runs one check to its end on `io`.
credential_checker::verdict run_check(net::io_context& io, credential_checker& c, const route_guard& g,
                                      const basic_credentials& who) {
    std::optional<credential_checker::verdict> v;
    net::co_spawn(
        io, [&]() -> net::awaitable<void> { v = co_await c.check(g, 0, who); }, net::detached);
    io.restart();
    for (int i = 0; i < 1000 && !v; ++i) { // bounded: each run_one waits for the thread's answer
        io.run_one_for(std::chrono::seconds(10));
    }
    REQUIRE(v);
    return *v;
}

} // namespace

TEST_CASE("Authorization: Basic parses as RFC 7617 says", "[unit][gateway]") {
    auto c = parse("Basic YWxpY2U6b3BlbiBzZXNhbWU="); // alice:open sesame
    REQUIRE(c);
    CHECK(c->user == "alice");
    CHECK(c->password == "open sesame");
    c = parse("bAsIc   Ym9iOmE6Yjpj"); // any case, several spaces; bob:a:b:c (the first ':' splits)
    REQUIRE(c);
    CHECK(c->user == "bob");
    CHECK(c->password == "a:b:c");
    c = parse("Basic dTo="); // u: (an empty password is a password)
    REQUIRE(c);
    CHECK(c->user == "u");
    CHECK(c->password.empty());
    CHECK_FALSE(parse(""));
    CHECK_FALSE(parse("Bearer YWxpY2U6eA=="));
    CHECK_FALSE(parse("BasicYWxpY2U6eA=="));  // no space
    CHECK_FALSE(parse("Basic YWxpY2U6eA"));   // no padding
    CHECK_FALSE(parse("Basic YWxpY2U6eA=*")); // not the alphabet
    CHECK_FALSE(parse("Basic YW=pY2U6eA==")); // padding inside
    CHECK_FALSE(parse("Basic YWxpY2U="));     // alice, no ':'
    CHECK_FALSE(parse("Basic YWxpY2U6eAp5")); // alice:x\ny (a control character)
    CHECK_FALSE(parse("Basic " + std::string(5000, 'A')));
}

TEST_CASE("the challenge names the realm and UTF-8", "[unit][gateway]") {
    CHECK(basic_challenge("Site admin") == "Basic realm=\"Site admin\", charset=\"UTF-8\"");
}

TEST_CASE("deny is checked before allow; an empty allow lets anyone in", "[unit][gateway]") {
    cfg::route_access a;
    a.allow = {network("192.0.2.0/24"), network("2001:db8::/32")};
    a.deny = {network("192.0.2.66/32")};
    const route_guard g(a);
    CHECK(g.admits(client_address::parse("192.0.2.7")));
    CHECK(g.admits(client_address::parse("2001:db8::7")));
    CHECK_FALSE(g.admits(client_address::parse("192.0.2.66")));
    CHECK_FALSE(g.admits(client_address::parse("198.51.100.1")));
    cfg::route_access deny_only;
    deny_only.deny = {network("192.0.2.66/32")};
    const route_guard d(deny_only);
    CHECK(d.admits(client_address::parse("198.51.100.1")));
    CHECK_FALSE(d.admits(client_address::parse("192.0.2.66")));
    CHECK(d.auth == nullptr);
}

TEST_CASE("users are found by name, and only by their whole name", "[unit][gateway]") {
    const auto a = access_with_users();
    const route_guard g(a);
    CHECK(g.find_user("alice") == std::optional<std::size_t>(0));
    CHECK(g.find_user("bob") == std::optional<std::size_t>(1));
    CHECK_FALSE(g.find_user("alic"));
    CHECK_FALSE(g.find_user("alicex"));
    CHECK_FALSE(g.find_user(""));
}

TEST_CASE("the hashing thread verifies, remembers successes only, and says busy when full", "[unit][gateway]") {
    const auto a = access_with_users();
    const route_guard g(a);
    net::io_context io;
    credential_checker c(io);
    CHECK(run_check(io, c, g, {"alice", "alice's secret"}) == credential_checker::verdict::ok);
    CHECK(c.hashed() == 1);
    CHECK(run_check(io, c, g, {"alice", "alice's secret"}) == credential_checker::verdict::ok);
    CHECK(c.hashed() == 1); // answered from memory
    CHECK(run_check(io, c, g, {"alice", "wrong"}) == credential_checker::verdict::wrong);
    CHECK(run_check(io, c, g, {"alice", "wrong"}) == credential_checker::verdict::wrong);
    CHECK(c.hashed() == 3); // failures are hashed every time
    CHECK(run_check(io, c, g, {"bob", "alice's secret"}) == credential_checker::verdict::wrong);
    CHECK(run_check(io, c, g, {"mallory", "alice's secret"}) == credential_checker::verdict::wrong);
    CHECK(c.hashed() == 5); // an unknown user is hashed too

    // More waiting verifications than max_pending: the rest are busy at once.
    std::vector<credential_checker::verdict> got;
    const std::size_t n = credential_checker::max_pending + 8;
    for (std::size_t i = 0; i < n; ++i) {
        net::co_spawn(
            io,
            [&, i]() -> net::awaitable<void> {
                const basic_credentials guess{"bob", std::to_string(i)};
                got.push_back(co_await c.check(g, 0, guess));
            },
            net::detached);
    }
    io.restart();
    for (int i = 0; i < 10000 && got.size() < n; ++i) {
        io.run_one_for(std::chrono::seconds(10));
    }
    REQUIRE(got.size() == n);
    CHECK(std::count(got.begin(), got.end(), credential_checker::verdict::busy) == 8);
    CHECK(std::count(got.begin(), got.end(), credential_checker::verdict::wrong) ==
          static_cast<long>(credential_checker::max_pending));
}
