#pragma once
// What the configuration's unit tests share: loading a file that must load,
// the errors of one that must not, the smallest valid file, and the names
// they use (`using namespace rampart::config::test;` brings them in).

#include "config/config.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace rampart::config::test {

namespace cfg = rampart::config;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using namespace std::chrono_literals;

// The errors of a file that must not load, as "file:line:column: what".
inline std::vector<std::string> errors_of(const std::string& text) {
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
inline std::string only_error(const std::string& text) {
    const auto errors = errors_of(text);
    INFO(errors.front());
    REQUIRE(errors.size() == 1);
    return errors.front();
}

inline cfg::snapshot_ptr load_ok(const std::string& text, const std::string& name = "config.yaml") {
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
inline const std::string minimal = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1] } }
)";

} // namespace rampart::config::test
