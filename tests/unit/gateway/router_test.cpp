// Routes: path normalisation, traversal attempts, and the matching matrix.
#include "gateway/proxy/router.hpp"

#include "tests/unit/support.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace gateway = rampart::gateway;
namespace config = rampart::config;
using gateway::normalise_path;
using gateway::router;

TEST_CASE("routes: paths in normal form", "[unit][gateway][router]") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"/", "/"},
        {"/a/b", "/a/b"},
        {"/a/b/", "/a/b/"},
        {"/a/./b", "/a/b"},
        {"/a/b/..", "/a/"},
        {"/a/b/../c", "/a/c"},
        {"/a/./", "/a/"},
        {"/.", "/"},
        {"/a/..", "/"},
        {"/%7Euser/%41%62%2d%2E%5f", "/~user/Ab-._"}, // unreserved: decoded
        {"/a%20b/%c3%a9", "/a%20b/%C3%A9"},           // the rest: kept, hex upper-cased
        {"/a%2e%2E/b", "/a../b"},                     // "a.." is a name, not a dot segment
        {"/%2e/x", "/x"},                             // an encoded dot segment is one
        {"/a/%2e%2e/b", "/b"},
        {"/a//b", "/a//b"}, // empty segments are kept
        {"/a/b;p=1", "/a/b;p=1"},
    };
    for (const auto& [in, out] : cases) {
        INFO(in);
        const auto got = normalise_path(in);
        REQUIRE(got);
        CHECK(*got == out);
    }
}

TEST_CASE("routes: traversal and smuggling in every encoding are refused", "[unit][gateway][router]") {
    const std::vector<std::string> refused = {
        "/..",
        "/../etc/passwd",
        "/a/../../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/%2E%2E/x",
        "/.%2e/x",
        "/%2e./x",
        "/a/%2e%2e/%2e%2e/x",
        "/a%2fb",
        "/a%2F..%2Fb",
        "/%2f",
        "/a%5cb",
        "/a%5C..%5Cb",
        "/a\\b",
        "/..\\x",
        "/a%00b",
        "/a%00",
        "/a%0ab",
        "/a%0d%0ab",
        "/a%7f",
        "/a%",
        "/a%2",
        "/a%zz",
        "/a%g0",
        "relative/path",
        "",
        "/a\x01",
    };
    CHECK(refused.size() >= 20);
    for (const auto& in : refused) {
        INFO(in);
        CHECK_FALSE(normalise_path(in));
    }
}

TEST_CASE("routes: the Host header's name", "[unit][gateway][router]") {
    CHECK(gateway::host_name("WWW.FooBar.com") == "WWW.FooBar.com"); // the case is the matcher's business
    CHECK(router::host_matches("www.foobar.com", "WWW.FooBar.COM"));
    CHECK(router::host_matches("*.foobar.com", "CDN.FOOBAR.COM"));
    CHECK_FALSE(router::host_matches("www.foobar.com", "www.foobar.co"));
    CHECK(gateway::host_name("www.foobar.com:8443") == "www.foobar.com");
    CHECK(gateway::host_name("www.foobar.com.") == "www.foobar.com");
    CHECK(gateway::host_name("[2001:db8::1]:443") == "[2001:db8::1]");
    CHECK(gateway::host_name("") == "");
}

TEST_CASE("routes: host, path and method matching, first match wins", "[unit][gateway][router]") {
    const auto cfg = rampart::test::load_text(rampart::test::routes_head +
                                              R"(    - { host: foobar.com, redirect: { to: "https://www.foobar.com" } }
    - { host: www.foobar.com, path: /api/, methods: [GET, POST], pool: api }
    - { host: "*.foobar.com", path: /static, pool: api }
    - { host: www.foobar.com, pool: app }
)");
    router r(cfg->gw);
    REQUIRE_FALSE(r.empty());
    const auto& routes = cfg->gw.routes;
    auto which = [&](std::string_view host, std::string_view path, std::string_view method = "GET") -> int {
        const auto* m = r.match(host, path, method);
        return m == nullptr ? -1 : static_cast<int>(m - routes.data());
    };
    CHECK(which("foobar.com", "/anything") == 0);
    CHECK(which("www.foobar.com", "/api/users") == 1);
    CHECK(which("www.foobar.com", "/api/") == 1);
    CHECK(which("www.foobar.com", "/api") == 3); // "/api/" needs the slash
    CHECK(which("www.foobar.com", "/apix") == 3);
    CHECK(which("www.foobar.com", "/api/x", "DELETE") == 3); // not one of its methods
    CHECK(which("www.foobar.com", "/static") == 2);          // *.foobar.com covers www
    CHECK(which("www.foobar.com", "/static/a.css") == 2);
    CHECK(which("www.foobar.com", "/staticx") == 3); // segment-aware
    CHECK(which("cdn.foobar.com", "/static/a.css") == 2);
    CHECK(which("a.b.foobar.com", "/static/a.css") == 2);
    CHECK(which("cdn.foobar.com", "/other") == -1); // no route: 404
    CHECK(which("foobar.com.evil.example", "/") == -1);
    CHECK(which("evilfoobar.com", "/static/x") == -1); // *.foobar.com is not a suffix match on the name
    CHECK(routes[0].redirect->to == "https://www.foobar.com");
    CHECK(routes[0].redirect->status == 301);
    CHECK(routes[1].pool_index == 1);
    CHECK(routes[3].pool_index == 0);
    CHECK(rampart::config::routed_pools(*cfg) == std::vector<std::size_t>{1, 0});
    CHECK(rampart::config::route_warnings(*cfg).empty());
}

TEST_CASE("routes: the no-copy check agrees with the normal form", "[unit][gateway][router]") {
    for (const std::string p : {"/", "/a/b", "/a/b/", "/a.b/c..d/.e", "/...", "/a/...", "/a//b", "/~x;y=1"}) {
        INFO(p);
        CHECK(gateway::is_normal_path(p));
        CHECK(normalise_path(p) == p);
    }
    for (const std::string p : {"/.", "/./a", "/a/.", "/a/..", "/a/../b", "/%41", "/a\\b", "", "a", "/a\x01"}) {
        INFO(p);
        CHECK_FALSE(gateway::is_normal_path(p));
    }
}
