// libFuzzer target: the deployment file parser and checker.
//
// The input is a configuration file. config::load_from_string() promises
// never to throw and to return either a snapshot or at least one error, each
// at a 1-based line and column inside the file and with a message; a snapshot
// is one that code receiving it "may trust every field" of. The harness traps
// when either promise breaks. Undefined behaviour and memory errors trap
// through the sanitizers; an exception escaping is reported by libFuzzer.

#include "config/config.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

namespace {

using namespace rampart::config;

// An absolute name: relative certificate paths hang from its directory, and
// the loader then never asks for the working directory.
const std::string file_name = "/fuzz/rampart.yaml";
// The loader stops collecting after 100 errors and adds one line saying so.
constexpr std::size_t max_errors = 101;

[[noreturn]] void violated(const char* what, const std::string& detail) {
    std::fprintf(stderr, "fuzz_config: invariant violated: %s\n%s\n", what, detail.c_str());
    __builtin_trap();
}

void require(bool ok, const char* what, const std::string& detail = {}) {
    if (!ok) {
        violated(what, detail);
    }
}

// The promises a valid snapshot makes to the gateway, as config.hpp and the
// key list in config.cpp state them.
void check_snapshot(const snapshot& s) {
    require(s.source_file == file_name, "snapshot names another file", s.source_file);
    require(!s.site.empty(), "snapshot without a site");
    require(!s.servers.empty(), "snapshot without servers");
    for (const auto& srv : s.servers) {
        require(!srv.name.empty() && !srv.address.empty(), "server without a name or address", srv.name);
        require(srv.weight >= 1 && srv.weight <= 256, "server weight out of 1..256", srv.name);
        require(!srv.port || *srv.port >= 1, "server port 0", srv.name);
    }
    const gateway& gw = s.gw;
    require(gw.listen.https || gw.listen.http, "neither an https nor an http listener");
    require(!gw.listen.https || !gw.tls_settings.certificates.empty(), "https listener without a certificate");
    require(gw.workers <= 256, "more than 256 workers");
    require(!gw.pools.empty(), "snapshot without pools");
    require(s.find_pool(gw.default_pool) != nullptr, "default_pool names no pool", gw.default_pool);
    for (const auto& p : gw.pools) {
        require(!p.members.empty(), "pool without members", p.name);
        for (const auto& m : p.members) {
            const server* srv = s.find_server(m.name);
            require(srv != nullptr, "pool member names no server", m.name);
            require(srv->port && m.address.port == *srv->port, "pool member without the server's port", m.name);
            require(m.weight >= 1 && m.weight <= 256, "pool member weight out of 1..256", m.name);
        }
    }
    const limits& l = gw.limits_settings;
    require(l.header_bytes >= 1024 && l.header_bytes <= 1024 * 1024, "header_bytes out of 1KiB..1MiB");
    require(l.header_count >= 1 && l.header_count <= 1000, "header_count out of 1..1000");
    require(l.body_bytes >= 1, "body_bytes 0");
    const timeouts& t = gw.timeouts_settings;
    for (auto d : {t.handshake, t.header, t.body, t.idle, t.upstream_connect, t.upstream_response, t.drain}) {
        require(d.count() > 0, "a timeout that is not positive");
    }
    if (s.fw) {
        for (const auto& n : s.fw->admin_networks) {
            require(n.prefix <= (n.v6 ? 128U : 32U), "admin network prefix out of range", n.to_string());
        }
        require(s.fw->ssh_port >= 1 && s.fw->db_port >= 1, "firewall port 0");
    }
    require(!summary(s).empty(), "empty summary");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    const load_result result = load_from_string(text, file_name);

    if (result.config) {
        if (!result.errors.empty()) {
            violated("a snapshot and errors at once", result.errors.front().to_string());
        }
        check_snapshot(*result.config);
        return 0;
    }
    require(!result.errors.empty(), "neither a snapshot nor an error");
    require(result.errors.size() <= max_errors, "more errors than the loader keeps");
    // A position is inside the file: one line more than the file has line
    // breaks at most (yaml-cpp may count a lone CR as one).
    const auto breaks = std::count(text.begin(), text.end(), '\n') + std::count(text.begin(), text.end(), '\r');
    for (const auto& e : result.errors) {
        const std::string line = e.to_string();
        require(e.where.file == file_name, "error names another file", line);
        require(e.where.line >= 1 && e.where.column >= 1, "error position is not 1-based", line);
        require(e.where.line <= breaks + 1, "error line beyond the end of the file", line);
        require(!e.what.empty(), "error without a message", line);
    }
    return 0;
}
