// Access control of routes: allow/deny lists and basic_auth with its users
// file (check_pools.cpp, htpasswd.cpp).

#include "config/config.hpp"
#include "config/htpasswd.hpp"
#include "tests/unit/config/config_support.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <variant>

using namespace rampart::config::test;

namespace {

// Hashes made by libcrypt (as rampart passwd makes them) for the password
// "secret", on first use: ctest starts this binary once per test case, and
// bcrypt's cost 12 takes a fifth of a second.
const std::string& yescrypt_hash_of_secret() {
    static const std::string h = cfg::make_password_hash("secret");
    return h;
}
const std::string& bcrypt_hash_of_secret() {
    static const std::string h = cfg::make_password_hash("secret", true);
    return h;
}

std::string first_error(const std::string& text) {
    const auto parsed = cfg::parse_htpasswd(text);
    REQUIRE(std::holds_alternative<cfg::htpasswd_error>(parsed));
    const auto& e = std::get<cfg::htpasswd_error>(parsed);
    return std::to_string(e.line) + ":" + std::to_string(e.column) + ": " + e.what;
}

struct users_file {
    std::filesystem::path dir;
    std::filesystem::path path;
    explicit users_file(const std::string& text, mode_t mode = 0600) {
        char templ[] = "/tmp/rampart-users-XXXXXX";
        REQUIRE(::mkdtemp(templ) != nullptr);
        dir = templ;
        path = dir / "users";
        std::ofstream(path) << text;
        REQUIRE(::chmod(path.c_str(), mode) == 0);
    }
    ~users_file() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
};

std::string with_route(const std::string& route) {
    return minimal + "  routes:\n    - " + route + "\n";
}

} // namespace

TEST_CASE("libcrypt's hashes verify, and only with their password", "[unit][config]") {
    CHECK(yescrypt_hash_of_secret().starts_with("$y$"));
    CHECK(bcrypt_hash_of_secret().starts_with("$2b$12$"));
    CHECK(cfg::verify_password_hash("secret", yescrypt_hash_of_secret()));
    CHECK(cfg::verify_password_hash("secret", bcrypt_hash_of_secret()));
    CHECK_FALSE(cfg::verify_password_hash("Secret", yescrypt_hash_of_secret()));
    CHECK_FALSE(cfg::verify_password_hash("secret ", bcrypt_hash_of_secret()));
    CHECK(cfg::make_password_hash("secret") != yescrypt_hash_of_secret()); // a fresh salt each time
}

TEST_CASE("a users file is name:hash lines of bcrypt or yescrypt", "[unit][config]") {
    const auto parsed = cfg::parse_htpasswd("# admins\n\nalice:" + yescrypt_hash_of_secret() +
                                            "\r\nbob:" + bcrypt_hash_of_secret() + "\n");
    REQUIRE(std::holds_alternative<std::vector<cfg::auth_user>>(parsed));
    const auto& users = std::get<std::vector<cfg::auth_user>>(parsed);
    REQUIRE(users.size() == 2);
    CHECK(users[0].name == "alice");
    CHECK(users[0].hash == yescrypt_hash_of_secret());
    CHECK(users[1].name == "bob");
    CHECK(users[1].hash == bcrypt_hash_of_secret());
}

TEST_CASE("weak, foreign and malformed hashes are refused by name", "[unit][config]") {
    CHECK_THAT(first_error("carol:$apr1$abcdefgh$0123456789abcdefghijkl\n"),
               StartsWith("1:7: user carol: MD5 hashes are not accepted"));
    CHECK_THAT(first_error("# x\ncarol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"),
               StartsWith("2:7: user carol: SHA-1 hashes are not accepted"));
    CHECK_THAT(first_error("carol:$6$salt$abc\n"), StartsWith("1:7: user carol: SHA-crypt hashes are not accepted"));
    CHECK_THAT(first_error("carol:secret\n"),
               StartsWith("1:7: user carol: expected a bcrypt ($2y$, $2b$) or yescrypt"));
    CHECK_THAT(first_error("carol:$2a$10$" + bcrypt_hash_of_secret().substr(7) + "\n"),
               StartsWith("1:7: user carol: old bcrypt variants"));
    CHECK_THAT(first_error("carol:" + bcrypt_hash_of_secret().substr(0, 59) + "\n"),
               StartsWith("1:7: user carol: a bcrypt hash is $2y$"));
    CHECK_THAT(first_error("carol:$2b$03$" + bcrypt_hash_of_secret().substr(7) + "\n"),
               StartsWith("1:7: user carol: a bcrypt hash is $2y$"));
    CHECK_THAT(first_error("carol:$y$j9T$onlysalt\n"), StartsWith("1:7: user carol: a yescrypt hash is $y$"));
}

TEST_CASE("users file lines: names, colons, duplicates, emptiness", "[unit][config]") {
    CHECK(first_error("alice " + yescrypt_hash_of_secret() + "\n") == "1:1: expected name:hash");
    CHECK(first_error(":" + yescrypt_hash_of_secret() + "\n") ==
          "1:1: expected a user name of 1 to 255 characters before ':'");
    CHECK(first_error("al ice:" + yescrypt_hash_of_secret() + "\n") ==
          "1:3: a user name is printable ASCII without spaces");
    CHECK(first_error("alice:" + yescrypt_hash_of_secret() + "\nalice:" + bcrypt_hash_of_secret() + "\n") ==
          "2:1: user alice appears twice");
    CHECK(first_error("# nobody yet\n") == "1:1: no user in the file");
    CHECK(first_error("") == "1:1: no user in the file");
}

TEST_CASE("routes take allow, deny and basic_auth", "[unit][config]") {
    const users_file users("alice:" + yescrypt_hash_of_secret() + "\n");
    const auto s = load_ok(with_route("{ path: /admin, pool: app, allow: [192.0.2.0/24, 2001:db8::/32], deny: "
                                      "[192.0.2.66], basic_auth: { realm: \"Site admin\", users: " +
                                      users.path.string() + " } }"));
    const auto& a = s->gw.routes.at(0).access;
    REQUIRE(a.allow.size() == 2);
    CHECK(a.allow[1].to_string() == "2001:db8::/32");
    REQUIRE(a.deny.size() == 1);
    CHECK(a.deny[0].to_string() == "192.0.2.66/32");
    REQUIRE(a.auth);
    CHECK(a.auth->realm == "Site admin");
    CHECK(a.auth->users_file == users.path.string());
    REQUIRE(a.auth->users.size() == 1);
    CHECK(a.auth->users[0].hash == yescrypt_hash_of_secret());
    CHECK_THAT(cfg::summary(*s), Contains("deny 192.0.2.66/32, allow 192.0.2.0/24,2001:db8::/32, basic auth \"Site "
                                          "admin\" (1 users from " +
                                          users.path.string() + ")"));
}

TEST_CASE("basic_auth errors name the route's line or the users file's", "[unit][config]") {
    const users_file good("alice:" + yescrypt_hash_of_secret() + "\n");
    SECTION("no realm") {
        CHECK(only_error(with_route("{ path: /, pool: app, basic_auth: { users: " + good.path.string() + " } }")) ==
              "config.yaml:8:41: gateway.routes[0].basic_auth: missing required key 'realm' (a realm like "
              "\"Administration\")");
    }
    SECTION("a realm with a quote") {
        CHECK_THAT(only_error(with_route(
                       "{ path: /, pool: app, basic_auth: { realm: 'a\"b', users: " + good.path.string() + " } }")),
                   StartsWith("config.yaml:8:50: gateway.routes[0].basic_auth.realm: expected a realm of 1 to 100"));
    }
    SECTION("a users file others can read") {
        const users_file open("alice:" + yescrypt_hash_of_secret() + "\n", 0644);
        CHECK(only_error(
                  with_route("{ path: /, pool: app, basic_auth: { realm: x, users: " + open.path.string() + " } }")) ==
              "config.yaml:8:60: gateway.routes[0].basic_auth.users: the users file " + open.path.string() +
                  " is readable by others or writable by group or others; run: chmod 640 " + open.path.string());
    }
    SECTION("a weak hash: the users file's line and column") {
        const users_file weak("alice:" + yescrypt_hash_of_secret() + "\ncarol:$apr1$abcdefgh$0123456789abcdefghijkl\n");
        CHECK_THAT(only_error(with_route("{ path: /, pool: app, basic_auth: { realm: x, users: " + weak.path.string() +
                                         " } }")),
                   StartsWith(weak.path.string() + ":2:7: user carol: MD5 hashes are not accepted"));
    }
    SECTION("a missing file") {
        CHECK(only_error(with_route("{ path: /, pool: app, basic_auth: { realm: x, users: /nonexistent/users } }")) ==
              "config.yaml:8:60: gateway.routes[0].basic_auth.users: cannot read the users file /nonexistent/users: "
              "No such file or directory");
    }
    SECTION("a bad network") {
        CHECK_THAT(only_error(with_route("{ path: /, pool: app, allow: [192.0.2.0/33] }")),
                   StartsWith("config.yaml:8:37: gateway.routes[0].allow[0]: expected"));
    }
}

TEST_CASE("route names are optional, lower-case and unique", "[unit][config]") {
    const auto s =
        load_ok(minimal + "  routes:\n    - { name: admin, path: /admin, pool: app }\n    - { path: /, pool: app }\n");
    CHECK(s->gw.routes.at(0).name == "admin");
    CHECK(s->gw.routes.at(1).name.empty());
    CHECK_THAT(cfg::summary(*s), Contains("1. admin: */admin -> pool app"));
    CHECK_THAT(only_error(with_route("{ name: Admin, path: /, pool: app }")),
               StartsWith("config.yaml:8:15: gateway.routes[0].name: expected a route name of 1 to 64 lower-case"));
    CHECK(only_error(minimal +
                     "  routes:\n    - { name: a, path: /x, pool: app }\n    - { name: a, path: /, pool: app }\n") ==
          "config.yaml:9:7: gateway.routes[1]: route name \"a\" is already taken by the route at line 8");
}

TEST_CASE("error pages are read with the file, typed by their extension", "[unit][config]") {
    const users_file html("<h1>back soon</h1>\n"); // any small private file will do as a page
    const auto page = html.dir / "503.html";
    std::filesystem::rename(html.path, page);
    {
        std::ofstream(html.dir / "429.json") << "{\"error\":\"slow down\"}";
        std::ofstream(html.dir / "502.png") << "png";
    }
    const auto s = load_ok(minimal + "  error_pages: { 503: " + page.string() +
                           ", 429: " + (html.dir / "429.json").string() + " }\n");
    const auto& pages = s->gw.error_pages;
    REQUIRE(pages.size() == 2);
    CHECK(pages[0].status == 429); // sorted by status
    CHECK(pages[0].content_type == "application/json");
    CHECK(pages[0].body == "{\"error\":\"slow down\"}");
    CHECK(pages[1].status == 503);
    CHECK(pages[1].content_type == "text/html; charset=utf-8");
    CHECK(pages[1].body == "<h1>back soon</h1>\n");
    CHECK_THAT(cfg::summary(*s),
               Contains("errors     429 " + (html.dir / "429.json").string() + ", 503 " + page.string()));

    CHECK_THAT(only_error(minimal + "  error_pages: { 503: " + (html.dir / "502.png").string() + " }\n"),
               StartsWith("config.yaml:7:23: gateway.error_pages.503: expected a .html, .json or .txt file"));
    CHECK_THAT(only_error(minimal + "  error_pages: { 302: " + page.string() + " }\n"),
               StartsWith("config.yaml:7:18: gateway.error_pages.302: expected a status from 400 to 599"));
    CHECK_THAT(only_error(minimal + "  error_pages: { 503: " + (html.dir / "none.html").string() + " }\n"),
               StartsWith("config.yaml:7:23: gateway.error_pages.503: cannot read the error page"));
    { std::ofstream(html.dir / "big.html") << std::string(64 * 1024 + 1, 'x'); }
    CHECK_THAT(only_error(minimal + "  error_pages: { 503: " + (html.dir / "big.html").string() + " }\n"),
               Contains("is 65537 bytes; at most 64KiB"));
}

TEST_CASE("pools: hash keys, the balance factor and sticky cookies", "[unit][config]") {
    const std::string pools = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
  app2: { address: 192.0.2.22, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  default_pool: a
  pools:
)";
    const auto s = load_ok(pools + R"(    a: { servers: [app1, app2], hash: { header: X-User }, hash_balance_factor: 2 }
    b: { servers: [app1, app2], balance: hash }
    c: { servers: [app1, app2], hash: uri, sticky: { cookie: srv, ttl: 0 } }
    d: { servers: [app1, app2], sticky: { cookie: srv } }
)");
    const auto& a = s->gw.pools.at(0);
    CHECK(a.algorithm == cfg::balance::hash); // a key alone implies hash
    CHECK(a.hash.what == cfg::hash_key::kind::header);
    CHECK(a.hash.name == "x-user");
    CHECK(a.hash_balance_factor == 2.0);
    CHECK(s->gw.pools.at(1).hash.what == cfg::hash_key::kind::source); // the default key
    CHECK(s->gw.pools.at(1).hash_balance_factor == 1.25);
    REQUIRE(s->gw.pools.at(2).sticky_cookie);
    CHECK(s->gw.pools.at(2).sticky_cookie->ttl == cfg::duration{0});
    REQUIRE(s->gw.pools.at(3).sticky_cookie);
    CHECK(s->gw.pools.at(3).sticky_cookie->cookie == "srv");
    CHECK(s->gw.pools.at(3).sticky_cookie->ttl == std::chrono::hours(1));
    CHECK_THAT(cfg::summary(*s), Contains("pool       a (hash header x-user, default)"));
    CHECK_THAT(cfg::summary(*s), Contains("pool       c (hash uri, sticky cookie srv)"));

    CHECK(only_error(pools + "    a: { servers: [app1], balance: round_robin, hash: source }\n") ==
          "config.yaml:9:55: gateway.pools.a.hash: a hash key needs balance: hash (or no balance at all)");
    CHECK(only_error(pools + "    a: { servers: [app1], hash: client }\n") ==
          "config.yaml:9:33: gateway.pools.a.hash: expected source, uri, { header: NAME } or { cookie: NAME }, got "
          "\"client\"");
    CHECK_THAT(only_error(pools + "    a: { servers: [app1], hash: { header: \"X User\" } }\n"),
               StartsWith("config.yaml:9:43: gateway.pools.a.hash.header: expected a header name"));
    CHECK(only_error(pools + "    a: { servers: [app1], hash: source, hash_balance_factor: 0.5 }\n") ==
          "config.yaml:9:62: gateway.pools.a.hash_balance_factor: expected 0 (unbounded) or a factor from 1.0 to 10, "
          "got \"0.5\"");
    CHECK(only_error(pools + "    a: { servers: [app1], hash_balance_factor: 2 }\n") ==
          "config.yaml:9:48: gateway.pools.a.hash_balance_factor: hash_balance_factor applies to balance: hash");
    CHECK_THAT(only_error(pools + "    a: { servers: [app1], sticky: { cookie: \"a b\" } }\n"),
               StartsWith("config.yaml:9:45: gateway.pools.a.sticky.cookie: expected a cookie name"));
}

TEST_CASE("compression: on, the map, and routes that say otherwise", "[unit][config]") {
    const auto off = load_ok(minimal);
    CHECK_FALSE(off->gw.compression_settings.enabled);
    const auto on = load_ok(minimal + "  compression: on\n");
    const auto& d = on->gw.compression_settings;
    CHECK(d.enabled);
    CHECK(d.codings == std::vector<std::string>{"br", "gzip"});
    CHECK(d.gzip_level == 6);
    CHECK(d.brotli_quality == 4);
    CHECK(d.min_size == 1024);
    CHECK_FALSE(d.with_cookies);
    CHECK(std::find(d.types.begin(), d.types.end(), "text/html") != d.types.end());
    CHECK(std::find(d.types.begin(), d.types.end(), "text/event-stream") == d.types.end());
    CHECK_THAT(cfg::summary(*on), Contains("compress   br, gzip (gzip 6, brotli 4), from 1KiB, 15 types"));

    const auto map = load_ok(minimal + "  compression: { codings: [gzip], gzip_level: 9, brotli_quality: 11, "
                                       "min_size: 0, types: [Text/HTML, application/x-custom], with_cookies: true }\n"
                                       "  routes:\n    - { path: /api/, pool: app, compress: false }\n"
                                       "    - { path: /, pool: app }\n");
    const auto& m = map->gw.compression_settings;
    CHECK(m.enabled);
    CHECK(m.codings == std::vector<std::string>{"gzip"});
    CHECK(m.gzip_level == 9);
    CHECK(m.min_size == 0);
    CHECK(m.types == std::vector<std::string>{"text/html", "application/x-custom"});
    CHECK(m.with_cookies);
    CHECK(map->gw.routes.at(0).compress == std::optional<bool>(false));
    CHECK_FALSE(map->gw.routes.at(1).compress);

    CHECK(only_error(minimal + "  compression: { codings: [zstd] }\n") ==
          "config.yaml:7:28: gateway.compression.codings[0]: expected br or gzip, got \"zstd\"");
    CHECK_THAT(only_error(minimal + "  compression: { gzip_level: 10 }\n"),
               StartsWith("config.yaml:7:30: gateway.compression.gzip_level: expected"));
    CHECK(only_error(minimal + "  compression: { types: [\"text/html; charset=utf-8\"] }\n") ==
          "config.yaml:7:26: gateway.compression.types[0]: expected a media type like text/html (no parameters), got "
          "\"text/html; charset=utf-8\"");
    CHECK(only_error(with_route("{ path: /, redirect: { to: \"https://a.example\" }, compress: true }")) ==
          "config.yaml:8:67: gateway.routes[0].compress: a redirect route has no body to compress");
}
