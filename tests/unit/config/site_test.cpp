// The site and its servers (check_site.cpp).

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
