// Pools, their members and resilience settings, and routes with static files
// and header rules (check_pools.cpp).

#include "config/config.hpp"
#include "tests/unit/config/config_support.hpp"
#include "tests/unit/support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace rampart::config::test;
using rampart::test::routes_head;

TEST_CASE("pool members must name servers that exist", "[unit][config]") {
    CHECK(only_error(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1, app2] } }
)") == "config.yaml:6:35: gateway.pools.app.servers[1]: unknown server \"app2\", expected a name from servers; "
       "did you mean 'app1'?");
}

TEST_CASE("pool members need a port, once each", "[unit][config]") {
    const std::string servers = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
  db1: { address: 192.0.2.31, role: db-primary }
gateway:
  listen: { http: "127.0.0.1:8080" }
)";
    SECTION("no port") {
        CHECK(only_error(servers + "  pools: { app: { servers: [app1, { server: db1, weight: 2 }] } }\n") ==
              "config.yaml:7:45: gateway.pools.app.servers[1].server: server \"db1\" has no port; pool members need "
              "servers.db1.port");
    }
    SECTION("twice in one pool") {
        CHECK(only_error(servers + "  pools: { app: { servers: [app1, app1] } }\n") ==
              "config.yaml:7:35: gateway.pools.app.servers[1]: server \"app1\" is already a member of pool \"app\" "
              "(gateway.pools.app.servers[0])");
    }
    SECTION("no members") {
        CHECK(only_error(servers + "  pools: { app: { servers: [] } }\n") ==
              "config.yaml:7:28: gateway.pools.app.servers: a pool needs at least one server");
    }
    SECTION("a bad member weight") {
        CHECK(only_error(servers + "  pools: { app: { servers: [{ server: app1, weight: 0 }] } }\n") ==
              "config.yaml:7:53: gateway.pools.app.servers[0].weight: expected a weight from 1 to 256, got \"0\"");
    }
}

TEST_CASE("several pools need a default_pool that exists", "[unit][config]") {
    const std::string two_pools = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
  app2: { address: 192.0.2.22, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools:
    blue: { servers: [app1] }
    green: { servers: [app2] }
)";
    SECTION("missing") {
        CHECK(only_error(two_pools) ==
              "config.yaml:8:5: gateway.default_pool: required when there are several pools; expected one of blue "
              "or green");
    }
    SECTION("naming no pool") {
        CHECK(only_error(two_pools + "  default_pool: gren\n") ==
              "config.yaml:10:17: gateway.default_pool: no pool named \"gren\" in gateway.pools; did you mean "
              "'green'?");
    }
    SECTION("present") {
        CHECK(load_ok(two_pools + "  default_pool: green\n")->gw.default_pool == "green");
    }
}

TEST_CASE("resilience settings: health, outlier, retries, queue, slow start, rate limit, abuse", "[unit][config]") {
    const auto s = load_ok(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools:
    app:
      servers: [app1]
      health: { path: /ready, expect_status: 204, interval: 500ms, timeout: 200ms, rise: 1, fall: 2, host: app.internal }
      outlier: { consecutive_failures: 3, base_ejection: 2s, max_ejection: 1m }
      retries: 2
      max_connections: 100
      queue: { size: 10, timeout: 1500ms }
      slow_start: 30s
      rate_limit: { rate: 600/minute }
  limits: { max_connections: 1000, max_connections_per_client: 20, buffer_body_bytes: 0 }
  abuse: { block: false, threshold: 5, window: 5s, block_for: 1m, allow: [198.51.100.0/24] }
)");
    const auto& p = s->gw.pools.at(0);
    REQUIRE(p.health);
    CHECK(p.health->path == "/ready");
    CHECK(p.health->expect_status == 204);
    CHECK(p.health->interval == 500ms);
    CHECK(p.health->timeout == 200ms);
    CHECK(p.health->rise == 1);
    CHECK(p.health->fall == 2);
    CHECK(p.health->host == "app.internal");
    CHECK(p.outlier.consecutive_failures == 3);
    CHECK(p.outlier.base_ejection == 2s);
    CHECK(p.outlier.max_ejection == 1min);
    CHECK(p.retries == 2);
    CHECK(p.max_connections == 100);
    CHECK(p.queue_size == 10);
    CHECK(p.queue_timeout == 1500ms);
    CHECK(p.slow_start == 30s);
    REQUIRE(p.rate_limit);
    CHECK(p.rate_limit->per_second() == 10.0);
    CHECK(p.rate_limit->burst == 10); // one second's worth by default
    const auto& l = s->gw.limits_settings;
    CHECK(l.max_connections == 1000);
    CHECK(l.max_connections_per_client == 20);
    CHECK(l.buffer_body_bytes == 0);
    const auto& a = s->gw.abuse_settings;
    CHECK_FALSE(a.block);
    CHECK(a.threshold == 5);
    CHECK(a.window == 5s);
    CHECK(a.block_for == 1min);
    REQUIRE(a.allow.size() == 1);
    CHECK(a.allow[0].to_string() == "198.51.100.0/24");

    const auto d = load_ok(minimal);
    const auto& dp = d->gw.pools.at(0);
    CHECK_FALSE(dp.health);
    CHECK(dp.retries == 1);
    CHECK(dp.outlier.consecutive_failures == 5);
    CHECK(dp.max_connections == 0);
    CHECK_FALSE(dp.rate_limit);
    CHECK(d->gw.limits_settings.buffer_body_bytes == 64 * 1024);
    CHECK(d->gw.abuse_settings.block);
}

TEST_CASE("resilience settings are checked with their positions", "[unit][config]") {
    const std::string head = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools:
    app:
      servers: [app1]
)";
    CHECK(only_error(head + "      health: { interval: 1s, timeout: 2s }\n") ==
          "config.yaml:9:40: gateway.pools.app.health.timeout: must not be longer than the interval (1s)");
    CHECK(only_error(head + "      health: { rise: 0 }\n") ==
          "config.yaml:9:23: gateway.pools.app.health.rise: expected an integer from 1 to 100, got \"0\"");
    CHECK(only_error(head + "      health: { path: health }\n") ==
          "config.yaml:9:23: gateway.pools.app.health.path: expected a path starting with / without spaces or "
          "control characters, got \"health\"");
    CHECK(only_error(head + "      outlier: { base_ejection: 1m, max_ejection: 10s }\n") ==
          "config.yaml:9:51: gateway.pools.app.outlier.max_ejection: must not be shorter than base_ejection (1m)");
    CHECK(only_error(head + "      retries: 4\n") ==
          "config.yaml:9:16: gateway.pools.app.retries: expected an integer from 0 to 3, got \"4\"");
    CHECK(only_error(head + "      rate_limit: { rate: 10/fortnight }\n") ==
          "config.yaml:9:27: gateway.pools.app.rate_limit.rate: expected a rate like 50/second, 600/minute or "
          "1000/hour, got \"10/fortnight\"");
    CHECK(only_error(head + "  abuse: { blok: true }\n") ==
          "config.yaml:9:12: gateway.abuse.blok: unknown key, did you mean 'block'?");
}

TEST_CASE("routes: read in order, with their actions resolved", "[unit][config]") {
    const auto s =
        load_ok(routes_head + R"(    - { host: FooBar.com, redirect: { to: "https://www.foobar.com/", status: 308 } }
    - { host: "*.foobar.com", path: /api/, methods: [GET, HEAD], pool: api }
    - { path: /, pool: app }
)");
    const auto& r = s->gw.routes;
    REQUIRE(r.size() == 3);
    CHECK(r[0].host == "foobar.com");
    CHECK(r[0].path == "/");
    REQUIRE(r[0].redirect);
    CHECK(r[0].redirect->to == "https://www.foobar.com"); // the trailing slash: the request's path brings one
    CHECK(r[0].redirect->status == 308);
    CHECK(r[1].host == "*.foobar.com");
    CHECK(r[1].methods == std::vector<std::string>{"GET", "HEAD"});
    CHECK(r[1].pool == "api");
    CHECK(r[1].pool_index == 1);
    CHECK(r[2].host.empty());
    CHECK(r[2].pool_index == 0);
    CHECK(r[1].where.line == 11);
    CHECK(cfg::route_warnings(*s).empty());
    CHECK(cfg::routed_pools(*s) == std::vector<std::size_t>{1, 0});
    CHECK_THAT(cfg::summary(*s), Contains("routes     1. foobar.com/ -> redirect 308 https://www.foobar.com\n"
                                          "           2. *.foobar.com/api/ GET,HEAD -> pool api\n"
                                          "           3. */ -> pool app\n"));
    // Without routes, default_pool is the one pool requests reach.
    const auto plain = load_ok(routes_head.substr(0, routes_head.find("  routes:")));
    CHECK(plain->gw.routes.empty());
    CHECK(cfg::routed_pools(*plain) == std::vector<std::size_t>{0});
}

TEST_CASE("routes: every mistake at its position", "[unit][config]") {
    CHECK(only_error(routes_head + "    - { path: /api/ }\n") ==
          "config.yaml:10:7: gateway.routes[0]: expected exactly one action: pool (proxy to a pool), redirect or "
          "static (files from a directory)");
    CHECK(only_error(routes_head + "    - { pool: app, redirect: { to: \"https://x.example\" } }\n") ==
          "config.yaml:10:7: gateway.routes[0]: expected exactly one action: pool (proxy to a pool), redirect or "
          "static (files from a directory)");
    CHECK(only_error(routes_head + "    - { pool: apps }\n") ==
          "config.yaml:10:15: gateway.routes[0].pool: no pool named \"apps\" in gateway.pools; did you mean 'app'?");
    CHECK(only_error(routes_head + "    - { path: /a/../b, pool: app }\n") ==
          "config.yaml:10:15: gateway.routes[0].path: expected a path prefix like /static/ (starting with /, no "
          "query, no percent-encoding, no . or .. or empty segment), got \"/a/../b\"");
    CHECK(only_error(routes_head + "    - { path: static, pool: app }\n").find("got \"static\"") != std::string::npos);
    CHECK(only_error(routes_head + "    - { path: /a%2Fb, pool: app }\n").find("got \"/a%2Fb\"") != std::string::npos);
    CHECK(only_error(routes_head + "    - { host: \"www.foobar.com:443\", pool: app }\n") ==
          "config.yaml:10:15: gateway.routes[0].host: expected a host name like www.example.com or *.example.com "
          "(no port), got \"www.foobar.com:443\"");
    CHECK(only_error(routes_head + "    - { methods: [get], pool: app }\n") ==
          "config.yaml:10:19: gateway.routes[0].methods[0]: expected a method in upper case like GET, got \"get\"");
    CHECK(only_error(routes_head + "    - { redirect: { to: \"ftp://x.example\" } }\n")
              .find("gateway.routes[0].redirect.to: expected an http or https URL") != std::string::npos);
    CHECK(only_error(routes_head + "    - { redirect: { to: \"https://x.example/?a=1\" } }\n")
              .find("gateway.routes[0].redirect.to: expected an http or https URL") != std::string::npos);
    CHECK(only_error(routes_head + "    - { redirect: { to: \"https://x.example\", status: 305 } }\n") ==
          "config.yaml:10:54: gateway.routes[0].redirect.status: expected 301, 302, 303, 307 or 308, got \"305\"");
    CHECK(only_error(routes_head + "    - { pool: app, hosts: x }\n") ==
          "config.yaml:10:20: gateway.routes[0].hosts: unknown key, did you mean 'host'?");
}

TEST_CASE("routes: a route an earlier one shadows is a warning", "[unit][config]") {
    const auto s = load_ok(routes_head + R"(    - { path: /api/, pool: api }
    - { host: www.foobar.com, path: /api/v2/, methods: [GET], pool: app }
    - { host: "*.foobar.com", path: /static, pool: api }
    - { host: cdn.foobar.com, path: /static/img/, pool: app }
    - { host: foobar.com, path: /static/, pool: app }
    - { path: /, methods: [GET], pool: app }
    - { path: /x, methods: [GET, POST], pool: app }
)");
    const auto w = cfg::route_warnings(*s);
    REQUIRE(w.size() == 2);
    CHECK(w[0].to_string() == "config.yaml:11:7: gateway.routes[1]: can never match: gateway.routes[0] (line 10) "
                              "matches every request it would");
    CHECK(w[1].to_string() == "config.yaml:13:7: gateway.routes[3]: can never match: gateway.routes[2] (line 12) "
                              "matches every request it would");
}

TEST_CASE("routes: header rules, and the fields a route may not touch", "[unit][config]") {
    const auto s = load_ok(routes_head + R"(    - path: /api/
      pool: api
      headers:
        request: { set: { X-Api: "1", X-Tenant: "a b" }, remove: [Cookie] }
        response: { remove: [Server, X-Powered-By] }
)");
    const auto& r = s->gw.routes.at(0);
    CHECK(r.request_headers.set ==
          std::vector<std::pair<std::string, std::string>>{{"X-Api", "1"}, {"X-Tenant", "a b"}});
    CHECK(r.request_headers.remove == std::vector<std::string>{"Cookie"});
    CHECK(r.response_headers.set.empty());
    CHECK(r.response_headers.remove == std::vector<std::string>{"Server", "X-Powered-By"});

    CHECK(only_error(routes_head + "    - { pool: api, headers: { request: { remove: [Content-Length] } } }\n") ==
          "config.yaml:10:51: gateway.routes[0].headers.request.remove[0]: Content-Length is the gateway's own "
          "(framing, hop-by-hop, or what it vouches for); a route cannot change it");
    CHECK(only_error(routes_head + "    - { pool: api, headers: { request: { set: { X-Forwarded-For: 1.2.3.4 } } } }\n")
              .find("X-Forwarded-For is the gateway's own") != std::string::npos);
    CHECK(only_error(routes_head + "    - { pool: api, headers: { response: { set: { \"Bad Name\": x } } } }\n")
              .find("expected a header name") != std::string::npos);
    CHECK(only_error(routes_head + "    - { pool: api, headers: { response: { set: { X-A: \"a\\nb\" } } } }\n")
              .find("a header value cannot hold control characters") != std::string::npos);
    CHECK(only_error(routes_head + "    - { redirect: { to: \"https://x.example\" }, headers: { response: {} } }\n")
              .find("a redirect route has none") != std::string::npos);
}

namespace {

// A directory for static roots, removed when the test ends however it ends.
struct temp_dir {
    std::filesystem::path path;
    explicit temp_dir(const std::string& tag)
        : path(std::filesystem::temp_directory_path() / (tag + "-" + std::to_string(::getpid()))) {
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
};

} // namespace

TEST_CASE("routes: a static route serves a directory", "[unit][config]") {
    const temp_dir dir("rampart-config-static");
    const std::string root = dir.path.string();
    const auto s = load_ok(routes_head + "    - { host: www.foobar.com, path: /static/, static: { root: \"" + root +
                           "/\", index: default.htm, cache_control: \"public, max-age=3600\", types: { WebManifest: "
                           "application/manifest+json, txt: \"text/plain; charset=utf-8\" }, hidden: true, "
                           "precompressed: off }, headers: { response: { set: { X-Static: \"1\" } } } }\n"
                           "    - { path: /assets, static: { root: \"" +
                           root +
                           "\" } }\n"
                           "    - { path: /, pool: app }\n");
    const auto& r = s->gw.routes;
    REQUIRE(r.size() == 3);
    REQUIRE(r[0].files);
    CHECK_FALSE(r[0].redirect);
    CHECK(r[0].pool.empty());
    CHECK(r[0].files->root == root); // the trailing '/' dropped
    CHECK(r[0].files->index == "default.htm");
    CHECK(r[0].files->cache_control == "public, max-age=3600");
    CHECK(r[0].files->types == std::vector<std::pair<std::string, std::string>>{
                                   {"webmanifest", "application/manifest+json"}, {"txt", "text/plain; charset=utf-8"}});
    CHECK(r[0].files->hidden);
    CHECK_FALSE(r[0].files->precompressed);
    CHECK(r[0].response_headers.set == std::vector<std::pair<std::string, std::string>>{{"X-Static", "1"}});
    // The defaults.
    REQUIRE(r[1].files);
    CHECK(r[1].files->index == "index.html");
    CHECK(r[1].files->cache_control.empty());
    CHECK(r[1].files->types.empty());
    CHECK_FALSE(r[1].files->hidden);
    CHECK(r[1].files->precompressed);
    // A static route reaches no pool.
    CHECK(cfg::routed_pools(*s) == std::vector<std::size_t>{0});
    CHECK_THAT(cfg::summary(*s), Contains("routes     1. www.foobar.com/static/ -> static " + root +
                                          "\n"
                                          "           2. */assets -> static " +
                                          root +
                                          "\n"
                                          "           3. */ -> pool app\n"));
    CHECK(cfg::route_warnings(*s).empty());
    // Only static routes: no pool is routed, and `index: ""` turns index files off.
    const auto only = load_ok(routes_head + "    - { static: { index: \"\", root: \"" + root + "\" } }\n");
    CHECK(cfg::routed_pools(*only).empty());
    CHECK(only->gw.routes.at(0).files->index.empty());
}

TEST_CASE("routes: every mistake of a static route at its position", "[unit][config]") {
    const temp_dir dir("rampart-config-static-errors");
    const std::string root = dir.path.string();
    { std::ofstream(dir.path / "file") << "x"; }
    const std::string one_action =
        "gateway.routes[0]: expected exactly one action: pool (proxy to a pool), redirect or static (files from a "
        "directory)";
    CHECK(only_error(routes_head + "    - { path: /s/, pool: app, static: { root: \"" + root + "\" } }\n") ==
          "config.yaml:10:7: " + one_action);
    CHECK(only_error(routes_head + "    - { redirect: { to: \"https://x.example\" }, static: { root: / } }\n") ==
          "config.yaml:10:7: " + one_action);
    CHECK(only_error(routes_head + "    - { static: { index: x.html } }\n") ==
          "config.yaml:10:17: gateway.routes[0].static: missing required key 'root' (the absolute path of the "
          "directory to serve)");
    CHECK(only_error(routes_head + "    - { static: /srv/www }\n") ==
          "config.yaml:10:17: gateway.routes[0].static: expected a map with root, index, cache_control, types, hidden "
          "and precompressed, got \"/srv/www\"");
    CHECK(only_error(routes_head + "    - { static: { root: srv/www } }\n") ==
          "config.yaml:10:25: gateway.routes[0].static.root: expected an absolute directory path like "
          "/srv/www/static, got \"srv/www\"");
    {
        // A root that does not exist (yet) is a warning: it may be deployed later.
        const auto s = load_ok(routes_head + "    - { static: { root: /nonexistent/rampart-static } }\n");
        const auto w = cfg::route_warnings(*s);
        REQUIRE(w.size() == 1);
        CHECK(w[0].to_string() == "config.yaml:10:7: gateway.routes[0]: static root /nonexistent/rampart-static: No "
                                  "such file or directory; its requests get 404 until it exists and the gateway "
                                  "reloads");
    }
    CHECK(only_error(routes_head + "    - { static: { root: \"" + root + "/file\" } }\n") ==
          "config.yaml:10:25: gateway.routes[0].static.root: " + root +
              "/file is not a directory; a static root "
              "must be one");
    CHECK(only_error(routes_head + "    - { static: { index: a/index.html, root: \"" + root + "\" } }\n") ==
          "config.yaml:10:26: gateway.routes[0].static.index: expected a file name like index.html (no '/'), or \"\" "
          "for none, got \"a/index.html\"");
    CHECK(only_error(routes_head + "    - { static: { index: \"..\", root: \"" + root + "\" } }\n")
              .find("static.index: expected a file name") != std::string::npos);
    CHECK(only_error(routes_head + "    - { static: { types: { .js: text/javascript }, root: \"" + root + "\" } }\n") ==
          "config.yaml:10:28: gateway.routes[0].static.types..js: expected a file extension without the dot, like "
          "webmanifest (letters, digits, '_', '-' and '+'), got \".js\"");
    CHECK(only_error(routes_head + "    - { static: { types: { js: text javascript }, root: \"" + root + "\" } }\n") ==
          "config.yaml:10:32: gateway.routes[0].static.types.js: expected a media type like "
          "application/manifest+json or \"text/plain; charset=utf-8\", got \"text javascript\"");
    CHECK(only_error(routes_head + "    - { static: { types: { js: a/b/c }, root: \"" + root + "\" } }\n")
              .find("static.types.js: expected a media type") != std::string::npos);
    CHECK(only_error(routes_head + "    - { static: { types: { JS: a/b, js: a/c }, root: \"" + root + "\" } }\n") ==
          "config.yaml:10:37: gateway.routes[0].static.types.js: the extension js is already given at line 10 "
          "(extensions are compared in lower case)");
    CHECK(only_error(routes_head + "    - { static: { hidden: maybe, root: \"" + root + "\" } }\n") ==
          "config.yaml:10:27: gateway.routes[0].static.hidden: expected true or false, got \"maybe\"");
    CHECK(only_error(routes_head + "    - { static: { cache_control: \"a\\nb\", root: \"" + root + "\" } }\n") ==
          "config.yaml:10:34: gateway.routes[0].static.cache_control: a header value cannot hold control characters "
          "(CR, LF, NUL)");
    CHECK(only_error(routes_head + "    - { static: { gzip: on, root: \"" + root + "\" } }\n") ==
          "config.yaml:10:19: gateway.routes[0].static.gzip: unknown key, expected one of root, index, "
          "cache_control, types, hidden or precompressed");
    // A static route answers by itself: response rules apply, request rules would reach no one.
    CHECK(only_error(routes_head + "    - { headers: { request: { remove: [Cookie] } }, static: { root: \"" + root +
                     "\" } }\n") ==
          "config.yaml:10:29: gateway.routes[0].headers.request: a static route sends no request to a pool; only "
          "headers.response applies to it");
    CHECK(only_error(routes_head + "    - { headers: { response: { remove: [Content-Length] } }, static: { root: \"" +
                     root + "\" } }\n")
              .find("Content-Length is the gateway's own") != std::string::npos);
}
