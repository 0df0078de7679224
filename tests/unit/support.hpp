#pragma once
// Helpers shared by the unit tests: the source tree, reading a file, loading
// a configuration that must be valid (its errors shown when it is not).

#include "config/config.hpp"

#include <catch2/catch.hpp>

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>

namespace rampart::test {

/// The repository, from RAMPART_SOURCE_DIR (set by ctest).
inline std::string source_dir() {
    const char* s = std::getenv("RAMPART_SOURCE_DIR");
    REQUIRE(s != nullptr);
    return s;
}

/// A fresh directory under /tmp, removed with everything in it when it goes,
/// also when the test fails.
struct temp_dir {
    std::string path;
    explicit temp_dir(const std::string& prefix = "rampart-test") {
        std::string pattern = "/tmp/" + prefix + "-XXXXXX";
        if (::mkdtemp(pattern.data()) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        path = pattern;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
};

inline std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

/// A configuration that must load; otherwise its errors are shown and the test fails.
inline config::snapshot_ptr must_load(const config::load_result& r) {
    for (const auto& e : r.errors) {
        UNSCOPED_INFO(e.to_string());
    }
    REQUIRE(r);
    return r.config;
}

inline config::snapshot_ptr load_text(const std::string& text, const std::string& name = "deploy.yaml") {
    return must_load(config::load_from_string(text, name));
}

inline config::snapshot_ptr load_file(const std::string& path) {
    return must_load(config::load(path));
}

/// A deployment with two pools (app: app1, the default; api: api1) that
/// ends with `  routes:`: the routes follow, one list item a line.
inline const std::string routes_head = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
  api1: { address: 192.0.2.31, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1] }, api: { servers: [api1] } }
  default_pool: app
  routes:
)";

} // namespace rampart::test
