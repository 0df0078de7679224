// config::load as a whole: a full file lands field by field, defaults, unknown
// and duplicate keys, YAML and type errors, error order and their limit, summary.

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

TEST_CASE("a full file lands in every field", "[unit][config]") {
    const std::string text = R"(site: www.foobar.com
servers:
  gw1: { address: 192.0.2.11, role: gateway }
  app1: { address: 192.0.2.21, role: app, port: 8081, weight: 2 }
  app2: { address: "2001:db8:0:0::22", role: app, port: 8082 }
  db1: { address: 192.0.2.31, role: db-primary, port: 5432 }
  db2: { address: 192.0.2.32, role: db-replica }
gateway:
  listen: { https: "[::]:8443", http: "0.0.0.0:8080", admin: "[::1]:9100" }
  workers: 8
  user: ""
  tls:
    certificates:
      - { cert: certs/ecdsa.pem, key: certs/ecdsa.key }
      - { cert: /abs/rsa.pem, key: ../keys/rsa.key }
    session_tickets: off
    ticket_rotation: 90m
  hsts: { enabled: yes, max_age: 7d, include_subdomains: false, preload: true }
  pools:
    app:
      balance: weighted_round_robin
      servers: [app1, { server: app2, weight: 5 }]
    db:
      balance: least_connections
      servers:
        - db1
  default_pool: app
  timeouts: { handshake: 1s, header: 2s, body: 3s, idle: 4s, upstream_connect: 500ms, upstream_response: 6m, drain: 1h }
  limits: { header_bytes: 8KiB, header_count: 50, body_bytes: 1GB, upstream_idle_per_server: 0 }
)";
    const auto s = load_ok(text, "/etc/rampart/rampart.yaml");

    CHECK(s->source_file == "/etc/rampart/rampart.yaml");
    CHECK(s->site == "www.foobar.com");

    REQUIRE(s->servers.size() == 5);
    CHECK(s->servers[0].name == "gw1");
    CHECK(s->servers[0].server_role == cfg::role::gateway);
    CHECK_FALSE(s->servers[0].port);
    CHECK(s->servers[0].weight == 1);
    CHECK(s->servers[1].name == "app1");
    CHECK(s->servers[1].address == "192.0.2.21");
    CHECK(s->servers[1].port == 8081);
    CHECK(s->servers[1].weight == 2);
    CHECK(s->servers[2].address == "2001:db8::22"); // stored in canonical form
    CHECK(s->servers[3].server_role == cfg::role::db_primary);
    CHECK(s->servers[4].server_role == cfg::role::db_replica);

    const cfg::gateway& gw = s->gw;
    REQUIRE(gw.listen.https);
    CHECK(gw.listen.https->host == "::");
    CHECK(gw.listen.https->port == 8443);
    REQUIRE(gw.listen.http);
    CHECK(gw.listen.http->to_string() == "0.0.0.0:8080");
    REQUIRE(gw.listen.admin);
    CHECK(gw.listen.admin->to_string() == "[::1]:9100");
    CHECK(gw.workers == 8);
    CHECK(s->effective_workers() == 8);
    CHECK(gw.user.empty());

    REQUIRE(gw.tls_settings.certificates.size() == 2);
    CHECK(gw.tls_settings.certificates[0].cert_file == "/etc/rampart/certs/ecdsa.pem");
    CHECK(gw.tls_settings.certificates[0].key_file == "/etc/rampart/certs/ecdsa.key");
    CHECK(gw.tls_settings.certificates[1].cert_file == "/abs/rsa.pem");
    CHECK(gw.tls_settings.certificates[1].key_file == "/etc/keys/rsa.key");
    CHECK_FALSE(gw.tls_settings.session_tickets);
    CHECK(gw.tls_settings.ticket_rotation == 90min);

    CHECK(gw.hsts_settings.enabled);
    CHECK(gw.hsts_settings.max_age == std::chrono::seconds(7 * 86400));
    CHECK_FALSE(gw.hsts_settings.include_subdomains);
    CHECK(gw.hsts_settings.preload);
    CHECK(gw.hsts_settings.header_value() == "max-age=604800; preload");

    REQUIRE(gw.pools.size() == 2);
    const cfg::pool* app = s->find_pool("app");
    REQUIRE(app == &gw.pools[0]);
    CHECK(app->algorithm == cfg::balance::weighted_round_robin);
    REQUIRE(app->members.size() == 2);
    CHECK(app->members[0].name == "app1");
    CHECK(app->members[0].address.to_string() == "192.0.2.21:8081");
    CHECK(app->members[0].weight == 2); // the server's weight
    CHECK(app->members[1].name == "app2");
    CHECK(app->members[1].address.to_string() == "[2001:db8::22]:8082");
    CHECK(app->members[1].weight == 5); // the pool's weight wins
    const cfg::pool* db = s->find_pool("db");
    REQUIRE(db != nullptr);
    CHECK(db->algorithm == cfg::balance::least_connections);
    REQUIRE(db->members.size() == 1);
    CHECK(db->members[0].address.to_string() == "192.0.2.31:5432");
    CHECK(gw.default_pool == "app");
    CHECK(s->find_pool("nope") == nullptr);
    CHECK(s->find_server("db2") == &s->servers[4]);
    CHECK(s->find_server("nope") == nullptr);

    const cfg::timeouts& t = gw.timeouts_settings;
    CHECK(t.handshake == 1s);
    CHECK(t.header == 2s);
    CHECK(t.body == 3s);
    CHECK(t.idle == 4s);
    CHECK(t.upstream_connect == 500ms);
    CHECK(t.upstream_response == 6min);
    CHECK(t.drain == 1h);

    const cfg::limits& l = gw.limits_settings;
    CHECK(l.header_bytes == 8192);
    CHECK(l.header_count == 50);
    CHECK(l.body_bytes == 1'000'000'000);
    CHECK(l.upstream_idle_per_server == 0);
}

TEST_CASE("a minimal file gets every default", "[unit][config]") {
    const auto s = load_ok(minimal);
    const cfg::gateway& gw = s->gw;
    const cfg::gateway defaults;
    CHECK_FALSE(gw.listen.https);
    CHECK_FALSE(gw.listen.admin);
    CHECK(gw.workers == 0);
    CHECK(s->effective_workers() == std::max(1U, std::thread::hardware_concurrency()));
    CHECK(gw.user == "nobody");
    CHECK(gw.seccomp == cfg::seccomp_mode::enforce);
    CHECK(gw.tls_settings.certificates.empty());
    CHECK(gw.tls_settings.session_tickets);
    CHECK(gw.tls_settings.ticket_rotation == 12h);
    CHECK(gw.hsts_settings.enabled);
    CHECK(gw.hsts_settings.header_value() == "max-age=31536000; includeSubDomains");
    CHECK(gw.default_pool == "app"); // the only pool
    REQUIRE(gw.pools.size() == 1);
    CHECK(gw.pools[0].algorithm == cfg::balance::round_robin);
    CHECK(gw.pools[0].members[0].weight == 1);
    CHECK(gw.timeouts_settings.handshake == defaults.timeouts_settings.handshake);
    CHECK(gw.timeouts_settings.idle == 60s);
    CHECK(gw.timeouts_settings.drain == 30s);
    CHECK(gw.limits_settings.header_bytes == 16 * 1024);
    CHECK(gw.limits_settings.header_count == 100);
    CHECK(gw.limits_settings.body_bytes == 10 * 1024 * 1024);
    CHECK(gw.limits_settings.upstream_idle_per_server == 64);
}

TEST_CASE("unknown keys are named, with a hint when one is close", "[unit][config]") {
    SECTION("a typo") {
        CHECK(only_error(minimal + "  timeout: { idle: 5s }\n") ==
              "config.yaml:7:3: gateway.timeout: unknown key, did you mean 'timeouts'?");
    }
    SECTION("a transposition") {
        CHECK(only_error(minimal + "  wokrers: 4\n") ==
              "config.yaml:7:3: gateway.wokrers: unknown key, did you mean 'workers'?");
    }
    SECTION("the wrong case") {
        const auto errors = errors_of("Site: www.foobar.com\n" + minimal.substr(minimal.find('\n') + 1));
        REQUIRE(errors.size() == 2);
        CHECK(errors[0] == "config.yaml:1:1: Site: unknown key, did you mean 'site'?");
        CHECK(errors[1] == "config.yaml:1:1: missing required key 'site' (a DNS name like www.example.com)");
    }
    SECTION("nothing close lists the keys") {
        CHECK(only_error(minimal + "  limits: { bogus: 1 }\n") ==
              "config.yaml:7:13: gateway.limits.bogus: unknown key, expected one of header_bytes, header_count, "
              "body_bytes, upstream_idle_per_server, max_connections, max_connections_per_client, tunnels or "
              "buffer_body_bytes");
    }
    SECTION("inside a server") {
        CHECK(only_error(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, prot: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1] } }
)") == "config.yaml:3:43: servers.app1.prot: unknown key, did you mean 'port'?");
    }
}

TEST_CASE("duplicate keys are refused, not silently resolved", "[unit][config]") {
    SECTION("a setting given twice") {
        CHECK(only_error(minimal + "  listen: { http: \"127.0.0.1:8081\" }\n") ==
              "config.yaml:7:3: gateway.listen: duplicate key, first given at line 5");
    }
    SECTION("a server given twice") {
        CHECK(only_error(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
  app1: { address: 192.0.2.22, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1] } }
)") == "config.yaml:4:3: servers.app1: duplicate key, first given at line 3");
    }
    SECTION("in a flow map") {
        CHECK(only_error(minimal + "  timeouts: { idle: 5s, idle: 6s }\n") ==
              "config.yaml:7:25: gateway.timeouts.idle: duplicate key, first given at line 7");
    }
}

TEST_CASE("YAML syntax errors carry the parser's position", "[unit][config]") {
    CHECK_THAT(only_error("site: www.foobar.com\nservers: [app1, app2\n"),
               StartsWith("config.yaml:3:1: YAML syntax error: end of sequence flow not found"));
    CHECK_THAT(only_error("site: a: b\n"), StartsWith("config.yaml:1:8: YAML syntax error: "));
    CHECK_THAT(only_error("site: " + std::string(5000, '[') + std::string(5000, ']') + "\n"),
               StartsWith("config.yaml:1:") && Contains(": YAML nested too deeply"));
    CHECK(only_error(minimal + "---\nsite: other\n") ==
          "config.yaml:7:1: expected one YAML document, found a second one here");
    // yaml-cpp 0.7 alone would loop forever on these.
    CHECK(only_error(",site: www.foobar.com\n") == "config.yaml:1:1: YAML syntax error: unexpected \",\"");
    CHECK(only_error("--- &a\n  , x\n") == "config.yaml:2:3: YAML syntax error: unexpected \",\"");
    CHECK(only_error(minimal + "---\n,\n") == "config.yaml:7:1: expected one YAML document, found a second one here");
}

TEST_CASE("a value of the wrong type is named", "[unit][config]") {
    // The pool's reference to app1 is not blamed too: the servers section is what is wrong.
    CHECK(only_error("site: www.foobar.com\nservers: app1\n" + minimal.substr(minimal.find("gateway:"))) ==
          "config.yaml:2:10: servers: expected a map of server name to address, role and port, got \"app1\"");
    CHECK(only_error(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: [ "127.0.0.1:8080" ]
  pools: { app: { servers: [app1] } }
)") == "config.yaml:5:11: gateway.listen: expected a map with https, http and admin endpoints, got a list");
    CHECK(only_error(minimal + "  workers: { count: 2 }\n") ==
          "config.yaml:7:12: gateway.workers: expected auto or a number of workers from 1 to 256, got a map");
    CHECK(only_error(minimal + "  workers: 300\n") ==
          "config.yaml:7:12: gateway.workers: expected auto or a number of workers from 1 to 256, got \"300\"");
    CHECK(only_error(minimal + "  hsts: { enabled: maybe }\n") ==
          "config.yaml:7:20: gateway.hsts.enabled: expected true or false, got \"maybe\"");
    CHECK(only_error(minimal + "  hsts: maybe\n") ==
          "config.yaml:7:9: gateway.hsts: expected a map of hsts settings, or on/off, got \"maybe\"");
    CHECK(only_error("- site\n") == "config.yaml:1:1: expected a map with site, servers and gateway, got a list");
    CHECK(only_error("# nothing but a comment\n") ==
          "config.yaml:1:1: the file is empty; expected a map with site, servers and gateway");
}

TEST_CASE("a file that cannot be read", "[unit][config]") {
    const auto missing = cfg::load("/nonexistent/rampart/config.yaml");
    REQUIRE_FALSE(missing);
    REQUIRE(missing.errors.size() == 1);
    CHECK(missing.errors[0].to_string() ==
          "/nonexistent/rampart/config.yaml:1:1: cannot read file: No such file or directory");

    const auto directory = cfg::load(std::filesystem::temp_directory_path().string());
    REQUIRE_FALSE(directory);
    CHECK_THAT(directory.errors.at(0).to_string(), Contains(":1:1: cannot read file: Is a directory"));
}

TEST_CASE("every error in the file is reported, in file order", "[unit][config]") {
    const std::string text = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.300, role: app, port: 8080 }
  app2: { address: 192.0.2.22, role: ap, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1, app2, app3] } }
  limits: { header_count: 5000 }
  timeouts: { idle: forever }
)";
    const auto errors = errors_of(text);
    REQUIRE(errors.size() == 5);
    CHECK_THAT(errors[0], StartsWith("config.yaml:3:20: servers.app1.address:"));
    CHECK_THAT(errors[1], StartsWith("config.yaml:4:38: servers.app2.role:") && Contains("did you mean 'app'?"));
    // app1 and app2 are not blamed again in the pool: only the unknown app3 is.
    CHECK_THAT(errors[2], StartsWith("config.yaml:7:41: gateway.pools.app.servers[2]: unknown server \"app3\""));
    CHECK_THAT(errors[3], StartsWith("config.yaml:8:27: gateway.limits.header_count:"));
    CHECK_THAT(errors[4], StartsWith("config.yaml:9:21: gateway.timeouts.idle:"));
}

TEST_CASE("a file full of mistakes stops listing them at 100", "[unit][config]") {
    std::string text = "site: www.foobar.com\nservers:\n";
    for (int i = 0; i < 150; ++i) {
        text += "  s" + std::to_string(i) + ": { address: nowhere, role: app }\n";
    }
    const auto errors = errors_of(text);
    REQUIRE(errors.size() == 101);
    CHECK_THAT(errors[0], StartsWith("config.yaml:3:18: servers.s0.address: expected a literal"));
    CHECK(errors[100] ==
          "config.yaml:1:1: stopped after 100 errors (151 in all)"); // 150 addresses and the missing gateway
}

TEST_CASE("names of enumerations and errors", "[unit][config]") {
    CHECK(std::string(cfg::to_string(cfg::role::db_primary)) == "db-primary");
    CHECK(std::string(cfg::to_string(cfg::role::gateway)) == "gateway");
    CHECK(std::string(cfg::to_string(cfg::balance::least_connections)) == "least_connections");
    CHECK(std::string(cfg::to_string(cfg::seccomp_mode::log)) == "log");
    CHECK(cfg::error{{"f.yaml", 3, 14}, "x: bad"}.to_string() == "f.yaml:3:14: x: bad");
    cfg::hsts h;
    h.max_age = std::chrono::seconds(60);
    h.include_subdomains = false;
    CHECK(h.header_value() == "max-age=60");
}

TEST_CASE("summary shows the whole deployment", "[unit][config]") {
    const auto s = load_ok(minimal + "  workers: 3\n  tls: { certificates: [ { cert: /c.pem, key: /c.key } ] }\n");
    const std::string text = cfg::summary(*s);
    CHECK_THAT(text, Contains("www.foobar.com"));
    CHECK_THAT(text, Contains("http 127.0.0.1:8080"));
    CHECK_THAT(text, Contains("workers    3, user nobody, seccomp enforce"));
    CHECK_THAT(text, Contains("/c.pem + /c.key (default)"));
    CHECK_THAT(text, Contains("max-age=31536000; includeSubDomains"));
    CHECK_THAT(text, Contains("app (round_robin, default)"));
    CHECK_THAT(text, Contains("app1  192.0.2.21:8080  weight 1"));
    CHECK_THAT(text, Contains("idle 1m"));
    CHECK_THAT(text, Contains("header_bytes 16KiB"));
    CHECK_THAT(text, Contains("body_bytes 10MiB"));
}

TEST_CASE("the foobar.com example loads", "[unit][config]") {
    const char* source = std::getenv("RAMPART_SOURCE_DIR");
    REQUIRE(source != nullptr);
    const auto result = cfg::load(std::string(source) + "/config/examples/foobar.yaml");
    for (const auto& e : result.errors) {
        UNSCOPED_INFO(e.to_string());
    }
    REQUIRE(result);
    const cfg::snapshot& s = *result.config;
    CHECK(s.site == "www.foobar.com");
    CHECK(s.servers.size() == 6);
    CHECK(s.find_server("db2")->server_role == cfg::role::db_replica);
    CHECK(s.gw.listen.https->to_string() == "[::]:443");
    CHECK(s.gw.listen.http->to_string() == "[::]:80");
    CHECK(s.gw.listen.admin->to_string() == "127.0.0.1:9100");
    REQUIRE(s.gw.routes.size() == 3); // foobar.com -> www.foobar.com, /static/ files, everything else to app
    CHECK(s.gw.routes[0].host == "foobar.com");
    CHECK(s.gw.routes[0].redirect->to == "https://www.foobar.com");
    CHECK(s.gw.routes[1].files->root == "/srv/foobar/static");
    CHECK(s.gw.routes[2].pool == "app");
    for (const auto& w : cfg::route_warnings(s)) {
        // Only where this machine has no /srv/foobar/static: no route is shadowed.
        CHECK(w.to_string().find("static root /srv/foobar/static: ") != std::string::npos);
    }
    REQUIRE(s.gw.tls_settings.certificates.size() == 2);
    CHECK(s.gw.tls_settings.certificates[1].key_file == "/etc/rampart/rsa.key");
    const cfg::pool* app = s.find_pool("app");
    REQUIRE(app != nullptr);
    REQUIRE(app->members.size() == 2);
    CHECK(app->members[1].address.to_string() == "192.0.2.22:8080");
    CHECK_THAT(cfg::summary(s), Contains("servers    6 (2 gateway, 2 app, 1 db-primary, 1 db-replica)"));
    CHECK(s.gw.access_log_settings.enabled);
    CHECK(s.gw.access_log_settings.path == "/var/log/rampart/access.log");
    CHECK(s.gw.error_log_level == cfg::log_level::info);
}
