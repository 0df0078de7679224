// The configuration's scalars: durations, sizes, endpoints and enumerations,
// parsed and refused at their file:line:column (check_scalars.cpp).

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
                                  "weighted_round_robin, least_connections or hash, got \"random\"");
    }
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
