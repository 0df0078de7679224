// config::load: a full file lands field by field, and every class of mistake
// is reported at its exact file:line:column with what was expected.

#include "config/config.hpp"
#include "tests/unit/support.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

namespace cfg = rampart::config;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using namespace std::chrono_literals;

namespace {

// The errors of a file that must not load, as "file:line:column: what".
std::vector<std::string> errors_of(const std::string& text) {
    const auto result = cfg::load_from_string(text, "config.yaml");
    REQUIRE_FALSE(result);
    REQUIRE_FALSE(result.errors.empty());
    std::vector<std::string> out;
    for (const auto& e : result.errors) {
        out.push_back(e.to_string());
    }
    return out;
}

// The one error of a file that has exactly one mistake.
std::string only_error(const std::string& text) {
    const auto errors = errors_of(text);
    INFO(errors.front());
    REQUIRE(errors.size() == 1);
    return errors.front();
}

cfg::snapshot_ptr load_ok(const std::string& text, const std::string& name = "config.yaml") {
    const auto result = cfg::load_from_string(text, name);
    for (const auto& e : result.errors) {
        UNSCOPED_INFO(e.to_string());
    }
    REQUIRE(result);
    REQUIRE(result.errors.empty());
    return result.config;
}

// The smallest valid file; tests that need one mistake start from a copy of
// it, so its line numbers are the ones the expectations below count from.
const std::string minimal = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1] } }
)";

} // namespace

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

TEST_CASE("short forms: hsts off, empty sections, yes/no booleans", "[unit][config]") {
    const auto off = load_ok(minimal + "  hsts: off\n  limits:\n  tls: { session_tickets: no }\n");
    CHECK_FALSE(off->gw.hsts_settings.enabled);
    CHECK(off->gw.limits_settings.header_count == 100);
    CHECK_FALSE(off->gw.tls_settings.session_tickets);

    const auto on = load_ok(minimal + "  hsts: true\n");
    CHECK(on->gw.hsts_settings.enabled);
    CHECK(on->gw.hsts_settings.max_age == std::chrono::seconds(31536000));
}

TEST_CASE("relative certificate paths follow the file, wherever it is", "[unit][config]") {
    const auto dir = std::filesystem::temp_directory_path() / ("rampart-config-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto file = dir / "rampart.yaml";
    {
        std::ofstream out(file);
        out << minimal << "  tls: { certificates: [ { cert: ecdsa.pem, key: ./sub/../ecdsa.key } ] }\n";
    }
    const auto result = cfg::load(file.string());
    std::filesystem::remove_all(dir);
    REQUIRE(result);
    const auto& cert = result.config->gw.tls_settings.certificates.at(0);
    CHECK(cert.cert_file == (dir / "ecdsa.pem").string());
    CHECK(cert.key_file == (dir / "ecdsa.key").string());
    CHECK(result.config->source_file == file.string());
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

TEST_CASE("bad durations", "[unit][config]") {
    SECTION("words instead of a unit") {
        CHECK(only_error(minimal + "  timeouts:\n    idle: 10 sec\n") ==
              "config.yaml:8:11: gateway.timeouts.idle: expected a duration like 250ms, 10s, 5m, 1h or 7d, "
              "got \"10 sec\"");
    }
    SECTION("zero") {
        CHECK_THAT(only_error(minimal + "  timeouts: { drain: 0s }\n"),
                   StartsWith("config.yaml:7:22: gateway.timeouts.drain: expected a duration") &&
                       Contains("got \"0s\""));
    }
    SECTION("no unit") {
        CHECK_THAT(only_error(minimal + "  timeouts: { handshake: 10 }\n"),
                   StartsWith("config.yaml:7:26: gateway.timeouts.handshake: expected a duration"));
    }
    SECTION("an empty value is reported at its key") {
        CHECK(only_error(minimal + "  timeouts:\n    header:\n  workers: 2\n") ==
              "config.yaml:8:5: gateway.timeouts.header: expected a duration like 250ms, 10s, 5m, 1h or 7d, "
              "got nothing");
    }
    SECTION("below a minimum") {
        CHECK(only_error(minimal + "  tls: { ticket_rotation: 30s }\n") ==
              "config.yaml:7:27: gateway.tls.ticket_rotation: expected at least 1m, got \"30s\"");
    }
    SECTION("hsts max_age in whole seconds") {
        CHECK(only_error(minimal + "  hsts: { max_age: 1500ms }\n") ==
              "config.yaml:7:20: gateway.hsts.max_age: expected a whole number of seconds, got \"1500ms\"");
    }
}

TEST_CASE("bad sizes and limits", "[unit][config]") {
    SECTION("an unknown unit") {
        CHECK(only_error(minimal + "  limits: { header_bytes: 16kb }\n") ==
              "config.yaml:7:27: gateway.limits.header_bytes: expected a size like 512, 16KiB, 10MiB or 1GB, "
              "got \"16kb\"");
    }
    SECTION("a number too large for 64 bits") {
        CHECK_THAT(only_error(minimal + "  limits: { body_bytes: 99999999999999999999GiB }\n"),
                   StartsWith("config.yaml:7:25: gateway.limits.body_bytes: expected a size like"));
    }
    SECTION("out of range") {
        CHECK(only_error(minimal + "  limits: { header_bytes: 2MiB }\n") ==
              "config.yaml:7:27: gateway.limits.header_bytes: expected a size from 1KiB to 1MiB, got \"2MiB\"");
        CHECK(only_error(minimal + "  limits: { header_count: 0 }\n") ==
              "config.yaml:7:27: gateway.limits.header_count: expected an integer from 1 to 1000, got \"0\"");
    }
}

TEST_CASE("server addresses must be literal IPs", "[unit][config]") {
    const auto text = [](const std::string& address) {
        return "site: www.foobar.com\nservers:\n  app1: { address: " + address +
               ", role: app, port: 8080 }\ngateway:\n  listen: { http: \"127.0.0.1:8080\" }\n"
               "  pools: { app: { servers: [app1] } }\n";
    };
    CHECK(only_error(text("192.0.2.300")) ==
          "config.yaml:3:20: servers.app1.address: expected a literal IPv4 or IPv6 address like 192.0.2.1 or "
          "2001:db8::1, got \"192.0.2.300\"");
    CHECK_THAT(only_error(text("app1.internal")),
               StartsWith("config.yaml:3:20: servers.app1.address: expected a literal"));
    CHECK_THAT(only_error(text("\"[::1]\"")), StartsWith("config.yaml:3:20: servers.app1.address: expected a literal"));
    CHECK(load_ok(text("\"::1\""))->servers[0].address == "::1");
}

TEST_CASE("bad listener endpoints", "[unit][config]") {
    const auto text = [](const std::string& listen) {
        return "site: www.foobar.com\nservers:\n  app1: { address: 192.0.2.21, role: app, port: 8080 }\n"
               "gateway:\n  listen: { http: \"" +
               listen + "\" }\n  pools: { app: { servers: [app1] } }\n";
    };
    CHECK(only_error(text("127.0.0.1:70000")) ==
          "config.yaml:5:19: gateway.listen.http: expected an address:port like 127.0.0.1:8443 or [::]:443, got "
          "\"127.0.0.1:70000\" (the port must be a number from 1 to 65535)");
    CHECK_THAT(only_error(text("127.0.0.1:0")), Contains("the port must be a number from 1 to 65535"));
    CHECK_THAT(only_error(text("::1:80")),
               StartsWith("config.yaml:5:19: gateway.listen.http: expected an address:port") &&
                   Contains("IPv6 addresses go in brackets"));
    CHECK_THAT(only_error(text("localhost:80")), Contains("literal IPv4 or bracketed IPv6"));
    CHECK_THAT(only_error(text("127.0.0.1")), Contains("missing :port"));
}

TEST_CASE("listeners must not share an address and port", "[unit][config]") {
    const std::string text = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen:
    http: "[::]:8080"
    admin: "127.0.0.1:8080"
  pools: { app: { servers: [app1] } }
)";
    CHECK(only_error(text) == "config.yaml:7:12: gateway.listen.admin: 127.0.0.1:8080 clashes with gateway.listen.http "
                              "([::]:8080); listeners need distinct addresses or ports");

    // One message per listener, even when it clashes with both others; the
    // IPv4 wildcard does not cover an IPv6 address.
    const auto errors = errors_of(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "0.0.0.0:80", https: "[::]:80", admin: "127.0.0.1:80" }
  tls: { certificates: [ { cert: a.pem, key: a.key } ] }
  pools: { app: { servers: [app1] } }
)");
    REQUIRE(errors.size() == 2);
    CHECK_THAT(errors[0],
               StartsWith("config.yaml:5:40: gateway.listen.https: [::]:80 clashes with gateway.listen.http"));
    CHECK_THAT(errors[1],
               StartsWith("config.yaml:5:58: gateway.listen.admin: 127.0.0.1:80 clashes with gateway.listen.http"));
    CHECK(load_ok(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "0.0.0.0:80", admin: "[::1]:80" }
  pools: { app: { servers: [app1] } }
)")
              ->gw.listen.admin->port == 80);
}

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

TEST_CASE("an https listener needs a certificate", "[unit][config]") {
    const std::string text = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { https: "[::]:8443" }
  pools: { app: { servers: [app1] } }
)";
    CHECK(only_error(text) == "config.yaml:5:20: gateway.listen.https: an https listener needs at least one "
                              "certificate in gateway.tls.certificates");
    CHECK_THAT(
        only_error(text + "  tls: { certificates: [ { cert: a.pem, key: \"\" } ] }\n"),
        StartsWith("config.yaml:7:46: gateway.tls.certificates[0].key: expected a file path, got an empty string"));
    // A certificate entry that is itself wrong does not also count as "no certificate".
    CHECK(only_error(text + "  tls: { certificates: [ a.pem ] }\n") ==
          "config.yaml:7:26: gateway.tls.certificates[0]: expected a map with cert and key, got \"a.pem\"");
    CHECK_THAT(only_error(text + "  tls: { certificates: [ { cert: a.pem } ] }\n"),
               StartsWith("config.yaml:7:26: gateway.tls.certificates[0]: missing required key 'key'"));
}

TEST_CASE("enumerations list their values", "[unit][config]") {
    SECTION("a role") {
        CHECK(only_error(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: db_primary, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1] } }
)") == "config.yaml:3:38: servers.app1.role: expected one of gateway, app, db-primary or db-replica, got "
       "\"db_primary\"; did you mean 'db-primary'?");
    }
    SECTION("a missing role") {
        CHECK_THAT(only_error(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1] } }
)"),
                   StartsWith("config.yaml:3:9: servers.app1: missing required key 'role'"));
    }
    SECTION("a balance algorithm") {
        const std::string text = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { balance: random, servers: [app1] } }
)";
        CHECK(only_error(text) == "config.yaml:6:28: gateway.pools.app.balance: expected one of round_robin, "
                                  "weighted_round_robin or least_connections, got \"random\"");
    }
}

TEST_CASE("gateway.seccomp: enforce, log or off", "[unit][config]") {
    CHECK(load_ok(minimal + "  seccomp: enforce\n")->gw.seccomp == cfg::seccomp_mode::enforce);
    CHECK(load_ok(minimal + "  seccomp: log\n")->gw.seccomp == cfg::seccomp_mode::log);
    // "off" is a YAML boolean word; here it is the mode's name.
    CHECK(load_ok(minimal + "  seccomp: off\n")->gw.seccomp == cfg::seccomp_mode::off);
    CHECK(only_error(minimal + "  seccomp: kill\n") ==
          "config.yaml:7:12: gateway.seccomp: expected one of enforce, log or off, got \"kill\"");
    CHECK(only_error(minimal + "  seccomp: logs\n") ==
          "config.yaml:7:12: gateway.seccomp: expected one of enforce, log or off, got \"logs\"; "
          "did you mean 'log'?");
    CHECK_THAT(only_error(minimal + "  seccomp: [log]\n"), StartsWith("config.yaml:7:12: gateway.seccomp: expected"));
    CHECK_THAT(only_error(minimal + "  secomp: log\n"), Contains("did you mean 'seccomp'?"));
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

TEST_CASE("the site must be a DNS name", "[unit][config]") {
    const auto with_site = [](const std::string& site) {
        return "site: " + site + "\n" + minimal.substr(minimal.find('\n') + 1);
    };
    CHECK(only_error(with_site("www..foobar.com")) ==
          "config.yaml:1:7: site: expected a DNS name like www.example.com, got \"www..foobar.com\"");
    CHECK_THAT(only_error(with_site("-www.foobar.com")), StartsWith("config.yaml:1:7: site: expected a DNS name"));
    CHECK_THAT(only_error(with_site("www_foo.com")), StartsWith("config.yaml:1:7: site: expected a DNS name"));
    CHECK_THAT(only_error(with_site(std::string(64, 'a') + ".com")), StartsWith("config.yaml:1:7: site:"));
    CHECK_THAT(only_error(minimal.substr(minimal.find('\n') + 1)),
               StartsWith("config.yaml:1:1: missing required key 'site'"));
    CHECK(load_ok(with_site("localhost"))->site == "localhost");
    CHECK(load_ok(with_site(std::string(63, 'a') + ".example-1.com"))->site.size() == 77);
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

TEST_CASE("parse_duration", "[unit][config]") {
    CHECK(cfg::parse_duration("250ms") == 250ms);
    CHECK(cfg::parse_duration("10s") == 10s);
    CHECK(cfg::parse_duration("5m") == 5min);
    CHECK(cfg::parse_duration("1h") == 1h);
    CHECK(cfg::parse_duration("7d") == std::chrono::hours(7 * 24));
    CHECK(cfg::parse_duration("007s") == 7s);
    for (const char* bad : {"", "s", "0s", "0ms", "10", "10 s", " 10s", "10s ", "-1s", "+1s", "1.5s", "10S", "10sec",
                            "1w", "0x10s", "99999999999999999999999d"}) {
        INFO(bad);
        CHECK_FALSE(cfg::parse_duration(bad));
    }
    // The largest count of days that fits in 64-bit milliseconds, and one more.
    constexpr auto max_days = std::numeric_limits<cfg::duration::rep>::max() / 86'400'000;
    CHECK(cfg::parse_duration(std::to_string(max_days) + "d") == std::chrono::hours(24) * max_days);
    CHECK_FALSE(cfg::parse_duration(std::to_string(max_days + 1) + "d"));
    CHECK(cfg::parse_duration(std::to_string(std::numeric_limits<cfg::duration::rep>::max()) + "ms"));
}

TEST_CASE("parse_size", "[unit][config]") {
    CHECK(cfg::parse_size("512") == 512U);
    CHECK(cfg::parse_size("512B") == 512U);
    CHECK(cfg::parse_size("16KiB") == 16U * 1024);
    CHECK(cfg::parse_size("10MiB") == 10U * 1024 * 1024);
    CHECK(cfg::parse_size("1GiB") == 1ULL << 30);
    CHECK(cfg::parse_size("2KB") == 2000U);
    CHECK(cfg::parse_size("3MB") == 3'000'000U);
    CHECK(cfg::parse_size("4GB") == 4'000'000'000ULL);
    CHECK(cfg::parse_size("18446744073709551615") == std::numeric_limits<std::uint64_t>::max());
    CHECK(cfg::parse_size("17179869183GiB") == 17179869183ULL << 30);
    for (const char* bad : {"", "0", "0KiB", "KiB", "16 KiB", "16kib", "16K", "16TiB", "-1", "1.5MiB",
                            "18446744073709551616", "17179869184GiB", "18446744073709552GB"}) {
        INFO(bad);
        CHECK_FALSE(cfg::parse_size(bad));
    }
}

TEST_CASE("parse_endpoint and endpoint::to_string", "[unit][config]") {
    const auto v4 = cfg::parse_endpoint("1.2.3.4:80");
    REQUIRE(v4);
    CHECK(v4->host == "1.2.3.4");
    CHECK(v4->port == 80);
    CHECK(v4->to_string() == "1.2.3.4:80");

    const auto any6 = cfg::parse_endpoint("[::]:443");
    REQUIRE(any6);
    CHECK(any6->host == "::");
    CHECK(any6->to_string() == "[::]:443");

    const auto long6 = cfg::parse_endpoint("[2001:DB8:0:0:0:0:0:1]:65535");
    REQUIRE(long6);
    CHECK(long6->host == "2001:db8::1");
    CHECK(long6->port == 65535);
    CHECK(long6->to_string() == "[2001:db8::1]:65535");

    for (const char* bad : {"",
                            ":80",
                            "1.2.3.4",
                            "1.2.3.4:",
                            "1.2.3.4:0",
                            "1.2.3.4:65536",
                            "1.2.3.4:-1",
                            "1.2.3.4:+80",
                            "1.2.3.4:8o",
                            "1.2.3.4: 80",
                            "::1:80",
                            "[::1]",
                            "[::1]80",
                            "[1.2.3.4]:80",
                            "[]:80",
                            "localhost:80",
                            "1.2.3:80",
                            "01.2.3.4:80",
                            "[fe80::1%eth0]:80",
                            "1.2.3.4:99999999999999999999"}) {
        INFO(bad);
        CHECK_FALSE(cfg::parse_endpoint(bad));
    }
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

TEST_CASE("access log and log level: defaults, short forms and the map", "[unit][config]") {
    const auto d = load_ok(minimal);
    CHECK_FALSE(d->gw.access_log_settings.enabled);
    CHECK(d->gw.access_log_settings.path == "stdout");
    CHECK(d->gw.access_log_settings.buffer_bytes == 256 * 1024);
    CHECK(d->gw.error_log_level == cfg::log_level::info);
    CHECK_THAT(cfg::summary(*d), Contains("logs       access off, level info"));

    const auto on = load_ok(minimal + "  access_log: on\n  log_level: warn\n");
    CHECK(on->gw.access_log_settings.enabled);
    CHECK(on->gw.access_log_settings.path == "stdout");
    CHECK(on->gw.error_log_level == cfg::log_level::warn);

    const auto out = load_ok(minimal + "  access_log: stdout\n");
    CHECK(out->gw.access_log_settings.enabled);
    CHECK(out->gw.access_log_settings.path == "stdout");

    const auto off = load_ok(minimal + "  access_log: off\n  log_level: debug\n");
    CHECK_FALSE(off->gw.access_log_settings.enabled);
    CHECK(off->gw.error_log_level == cfg::log_level::debug);

    const auto file = load_ok(minimal + "  access_log: /var/log/rampart/access.log\n");
    CHECK(file->gw.access_log_settings.enabled);
    CHECK(file->gw.access_log_settings.path == "/var/log/rampart/access.log");

    const auto map = load_ok(minimal + "  access_log: { path: /var/log/rampart/a.log, buffer: 1MiB }\n"
                                       "  log_level: error\n");
    CHECK(map->gw.access_log_settings.enabled);
    CHECK(map->gw.access_log_settings.path == "/var/log/rampart/a.log");
    CHECK(map->gw.access_log_settings.buffer_bytes == 1024 * 1024);
    CHECK(map->gw.error_log_level == cfg::log_level::error);
    CHECK_THAT(cfg::summary(*map), Contains("logs       access /var/log/rampart/a.log (buffer 1MiB), level error"));

    const auto buffer_only = load_ok(minimal + "  access_log: { buffer: 8KiB }\n");
    CHECK(buffer_only->gw.access_log_settings.enabled);
    CHECK(buffer_only->gw.access_log_settings.path == "stdout");
    CHECK(buffer_only->gw.access_log_settings.buffer_bytes == 8 * 1024);

    const auto empty = load_ok(minimal + "  access_log:\n");
    CHECK(empty->gw.access_log_settings.enabled);
    CHECK(empty->gw.access_log_settings.path == "stdout");
}

TEST_CASE("a relative access log path follows the file", "[unit][config]") {
    const auto dir = std::filesystem::temp_directory_path() / ("rampart-config-alog-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto file = dir / "rampart.yaml";
    {
        std::ofstream out(file);
        out << minimal << "  access_log: { path: logs/../access.log }\n";
    }
    const auto result = cfg::load(file.string());
    std::filesystem::remove_all(dir);
    REQUIRE(result);
    CHECK(result.config->gw.access_log_settings.path == (dir / "access.log").string());
}

TEST_CASE("access log and log level mistakes are named with their positions", "[unit][config]") {
    CHECK(only_error(minimal + "  log_level: verbose\n") ==
          "config.yaml:7:14: gateway.log_level: expected one of debug, info, warn or error, got \"verbose\"");
    CHECK(only_error(minimal + "  log_level: eror\n") ==
          "config.yaml:7:14: gateway.log_level: expected one of debug, info, warn or error, got \"eror\"; "
          "did you mean 'error'?");
    CHECK(only_error(minimal + "  access_log: { path: /a.log, buffer: 1KiB }\n") ==
          "config.yaml:7:39: gateway.access_log.buffer: expected a size from 4KiB to 64MiB, got \"1KiB\"");
    CHECK(only_error(minimal + "  access_log: { path: /a.log, buffer: lots }\n") ==
          "config.yaml:7:39: gateway.access_log.buffer: expected a size like 512, 16KiB, 10MiB or 1GB, got \"lots\"");
    CHECK(only_error(minimal + "  access_log: { file: /a.log }\n") ==
          "config.yaml:7:17: gateway.access_log.file: unknown key, expected one of path or buffer");
    CHECK(only_error(minimal + "  access_log: { path: \"\" }\n") ==
          "config.yaml:7:23: gateway.access_log.path: expected a file path, got an empty string");
    CHECK(only_error(minimal + "  access_log: { path: [a, b] }\n") ==
          "config.yaml:7:23: gateway.access_log.path: expected a file path, got a list");
    CHECK(only_error(minimal + "  access_log: [stdout]\n") ==
          "config.yaml:7:15: gateway.access_log: expected a map with path and buffer, or off, on, stdout or a file "
          "path, got a list");
    CHECK(only_error(minimal + "  acces_log: off\n") ==
          "config.yaml:7:3: gateway.acces_log: unknown key, did you mean 'access_log'?");
}

namespace {

// Two gateways and an app, the pair on 192.0.2.0/24; `ha_tail` adds lines
// under `ha:` (indented two spaces). Line 9 is `ha:`.
const std::string ha_head = R"(site: www.foobar.com
servers:
  gw1: { address: 192.0.2.11, role: gateway }
  gw2: { address: 192.0.2.12, role: gateway }
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1] } }
ha:
)";
const std::string ha_basics = R"(  vip: 192.0.2.10/24
  interface: eth0
  virtual_router_id: 51
  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }
)";

} // namespace

TEST_CASE("ha: the pair with its defaults and every setting", "[unit][config]") {
    const auto defaults = load_ok(ha_head + ha_basics);
    REQUIRE(defaults->ha_pair);
    const cfg::ha& h = *defaults->ha_pair;
    CHECK(h.vip.to_string() == "192.0.2.10/24");
    CHECK_FALSE(h.vip6);
    CHECK(h.interface == "eth0");
    CHECK(h.virtual_router_id == 51);
    REQUIRE(h.nodes.size() == 2);
    CHECK(h.nodes[0].name == "gw1");
    CHECK(h.nodes[0].address == "192.0.2.11");
    CHECK(h.nodes[0].priority == 150);
    CHECK(h.nodes[1].name == "gw2");
    CHECK(h.nodes[1].priority == 100);
    CHECK(h.peer_of("gw1")->name == "gw2");
    CHECK(h.peer_of("gw2")->name == "gw1");
    CHECK(h.peer_of("app1") == nullptr);
    CHECK(h.advert_int == 100ms);
    CHECK(h.unicast);
    CHECK_FALSE(h.preempt);
    CHECK(h.health.interval == 100ms);
    CHECK(h.health.require_backend);
    CHECK(h.health.weight == 0);
    CHECK(h.state_dir == "/run/rampart/ha");
    CHECK(h.ticket_secret_file.empty());
    CHECK_THAT(cfg::summary(*defaults), Contains("vip 192.0.2.10/24 on eth0, vrid 51, gw1 priority 150, gw2 priority "
                                                 "100; advert 100ms, unicast, no preempt"));

    const auto all = load_ok(ha_head + R"(  vip: 192.0.2.10/24
  vip6: 2001:db8::10/64
  interface: eth0
  virtual_router_id: 7
  nodes: { gw1: { priority: 200, interface: veth1 }, gw2: { priority: 100 } }
  advert_int: 1s
  unicast: false
  preempt: true
  health: { interval: 250ms, require_backend: false, weight: -150, track_process: false }
  state_dir: /var/run/rampart-ha/
)");
    const cfg::ha& a = *all->ha_pair;
    REQUIRE(a.vip6);
    CHECK(a.vip6->to_string() == "2001:db8::10/64");
    CHECK(a.nodes[0].interface == "veth1");
    CHECK(a.nodes[1].interface.empty());
    CHECK(a.advert_int == 1s);
    CHECK_FALSE(a.unicast);
    CHECK(a.preempt);
    CHECK(a.health.interval == 250ms);
    CHECK_FALSE(a.health.require_backend);
    CHECK(a.health.weight == -150);
    CHECK_FALSE(a.health.track_process);
    CHECK(h.health.track_process);
    CHECK(a.state_dir == "/var/run/rampart-ha");
}

TEST_CASE("ha: values and the traps that block failover are refused at their position", "[unit][config]") {
    const std::string nodes = "  vip: 192.0.2.10/24\n  interface: eth0\n  virtual_router_id: 51\n";
    CHECK(only_error(ha_head + "  vip: 192.0.2.10\n  interface: eth0\n  virtual_router_id: 51\n"
                               "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n") ==
          "config.yaml:10:8: ha.vip: expected an IPv4 address with prefix like 192.0.2.10/24, got \"192.0.2.10\"");
    CHECK(only_error(ha_head + "  vip: 198.51.100.10/24\n  interface: eth0\n  virtual_router_id: 51\n"
                               "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n") ==
          "config.yaml:10:8: ha.vip: gw1 (192.0.2.11) and gw2 (192.0.2.12) outside 198.51.100.10/24; the VIP must "
          "be on the nodes' link");
    CHECK(only_error(ha_head + ha_basics + "  vip6: 192.0.2.10/24\n") ==
          "config.yaml:14:9: ha.vip6: expected an IPv6 address with prefix like 2001:db8::10/64, got "
          "\"192.0.2.10/24\"");
    CHECK(only_error(ha_head + nodes + "  nodes: { gw1: { priority: 150 }, gw2: { priority: 150 } }\n") ==
          "config.yaml:13:53: ha.nodes.gw2.priority: both nodes have priority 150; give them different priorities "
          "so the first MASTER is predictable");
    CHECK(only_error(ha_head + nodes + "  nodes: { gw1: { priority: 255 }, gw2: { priority: 100 } }\n") ==
          "config.yaml:13:29: ha.nodes.gw1.priority: 255 makes keepalived treat the node as the address owner, "
          "which never gives the VIP up for a failed health check; use 1 to 254");
    CHECK(only_error(ha_head + nodes + "  nodes: { gw1: { priority: 150 }, app1: { priority: 100 } }\n") ==
          "config.yaml:13:36: ha.nodes.app1: server \"app1\" has role app; HA nodes must be gateways");
    CHECK(only_error(ha_head + nodes + "  nodes: { gw1: { priority: 150 } }\n") ==
          "config.yaml:13:10: ha.nodes: expected exactly two nodes (the gateways of the pair), got 1");
    CHECK(only_error(ha_head + nodes + "  nodes: { gw1: { priority: 150 }, gw3: { priority: 100 } }\n") ==
          "config.yaml:13:36: ha.nodes.gw3: unknown server \"gw3\", expected a gateway from servers");
    CHECK(only_error(ha_head + ha_basics + "  advert_int: 15ms\n") ==
          "config.yaml:14:15: ha.advert_int: expected a multiple of 10ms up to 40s (VRRPv3 counts in centiseconds), "
          "got \"15ms\"");
    CHECK(only_error(ha_head + ha_basics + "  health: { weight: -60 }\n") ==
          "config.yaml:14:21: ha.health.weight: a priority weight never fails over with preempt off (the backup "
          "keeps deferring to a live master, however low its priority); use weight 0 (fault) or preempt: true");
    CHECK(only_error(ha_head + ha_basics + "  preempt: true\n  health: { weight: -50 }\n") ==
          "config.yaml:15:21: ha.health.weight: weight -50 does not bring priority 150 below 100, so an unhealthy "
          "MASTER keeps the VIP; use a weight below -50, or 0 (fault)");
    CHECK(only_error(ha_head + ha_basics + "  health: { weight: 5 }\n") ==
          "config.yaml:14:21: ha.health.weight: expected 0 or a negative integer down to -253, got \"5\"");
    CHECK(only_error(ha_head + ha_basics + "  interface2: eth1\n") ==
          "config.yaml:14:3: ha.interface2: unknown key, did you mean 'interface'?");
    CHECK(only_error(ha_head + "  vip: 192.0.2.10/24\n  interface: eth0 lo\n  virtual_router_id: 51\n"
                               "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n") ==
          "config.yaml:11:14: ha.interface: expected an interface name like eth0 (at most 15 letters, digits, '.', "
          "'_', '-'), got \"eth0 lo\"");
    CHECK(only_error(ha_head + ha_basics + "  state_dir: run/ha\n") ==
          "config.yaml:14:14: ha.state_dir: expected an absolute directory path without spaces or quotes, got "
          "\"run/ha\"");
    CHECK(only_error(ha_head + "  interface: eth0\n  virtual_router_id: 51\n"
                               "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n") ==
          "config.yaml:10:3: ha: missing required key 'vip' (an IPv4 address with prefix like 192.0.2.10/24)");
}

TEST_CASE("ha: the ticket secret file must be private", "[unit][config]") {
    const auto dir = std::filesystem::temp_directory_path() / ("rampart-ha-secret-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto secret = (dir / "ticket.secret").string();
    {
        std::ofstream out(secret);
        out << std::string(64, 'a') << "\n";
    }
    std::filesystem::permissions(secret, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    const auto ok = load_ok(ha_head + ha_basics + "  ticket_secret_file: " + secret + "\n");
    CHECK(ok->ha_pair->ticket_secret_file == secret);
    std::filesystem::permissions(secret, std::filesystem::perms::group_read, std::filesystem::perm_options::add);
    CHECK(only_error(ha_head + ha_basics + "  ticket_secret_file: " + secret + "\n") ==
          "config.yaml:14:23: ha.ticket_secret_file: the ticket secret file " + secret +
              " is readable by group or others; run: chmod 600 " + secret);
    std::filesystem::remove_all(dir);
}

TEST_CASE("ha: the peer check needs a private secret and an admin listener the peer can reach", "[unit][config]") {
    const auto dir = std::filesystem::temp_directory_path() / ("rampart-ha-peer-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto secret = (dir / "peer.secret").string();
    {
        std::ofstream out(secret);
        out << std::string(40, 'k') << "\n";
    }
    std::filesystem::permissions(secret, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    std::string head = ha_head;
    head.replace(head.find("{ http: \"127.0.0.1:8080\" }"), 26,
                 "{ http: \"127.0.0.1:8080\", admin: \"0.0.0.0:9100\" }");
    const std::string peer = "  peer_check: { secret_file: " + secret + " }\n";

    const auto ok = load_ok(head + ha_basics + peer);
    const cfg::ha_peer_check& p = ok->ha_pair->peer_check;
    CHECK(p.enabled);
    CHECK(p.secret_file == secret);
    CHECK(p.secret == std::string(40, 'k'));
    CHECK(p.interval == 1s);
    CHECK(p.timeout == 500ms);
    CHECK_THAT(cfg::summary(*ok), Contains("; peer check every 1s"));
    CHECK_THAT(cfg::summary(*ok), !Contains(std::string(40, 'k')));
    CHECK_FALSE(load_ok(head + ha_basics)->ha_pair->peer_check.enabled);
    // A short interval brings the default timeout down with it.
    const auto fast = load_ok(head + ha_basics + "  peer_check: { secret_file: " + secret + ", interval: 200ms }\n");
    CHECK(fast->ha_pair->peer_check.interval == 200ms);
    CHECK(fast->ha_pair->peer_check.timeout == 200ms);

    CHECK(only_error(head + ha_basics + "  peer_check: { secret_file: " + secret + ", interval: 1s, timeout: 2s }\n") ==
          "config.yaml:14:" + std::to_string(55 + secret.size()) +
              ": ha.peer_check.timeout: must not be longer than the interval (1s)");
    CHECK(only_error(ha_head + ha_basics + peer) ==
          "config.yaml:14:15: ha.peer_check: the peer check asks the peer's admin listener; add "
          "gateway.listen.admin (e.g. 0.0.0.0:9100)");
    std::string loopback = ha_head;
    loopback.replace(loopback.find("{ http: \"127.0.0.1:8080\" }"), 26,
                     "{ http: \"127.0.0.1:8080\", admin: \"127.0.0.1:9100\" }");
    CHECK(only_error(loopback + ha_basics + peer) ==
          "config.yaml:14:15: ha.peer_check: the peer check reaches the admin listener at each node's own address, "
          "but gateway.listen.admin is 127.0.0.1:9100; listen on 0.0.0.0:9100 (the firewall opens the port to the "
          "admin networks and the peer only)");
    CHECK(only_error(head + ha_basics + "  peer_check: { interval: 1s }\n") ==
          "config.yaml:14:15: ha.peer_check: missing required key 'secret_file' (the path of the pair's shared "
          "secret (mode 0600))");

    {
        std::ofstream out(secret);
        out << "short-secret\n";
    }
    CHECK(only_error(head + ha_basics + peer) ==
          "config.yaml:14:30: ha.peer_check.secret_file: the HA peer secret in " + secret +
              " must be at least 32 printable characters without spaces");
    std::filesystem::permissions(secret, std::filesystem::perms::others_read, std::filesystem::perm_options::add);
    CHECK(only_error(head + ha_basics + peer) ==
          "config.yaml:14:30: ha.peer_check.secret_file: the HA peer secret file " + secret +
              " is readable by group or others; run: chmod 600 " + secret);
    std::filesystem::remove_all(dir);
}

using rampart::test::routes_head;

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
