// The configuration checker: the walk over the document, site and servers.

#include "config/checker.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

namespace rampart::config::detail {

load_result checker::run(const YAML::Node& root) {
    auto s = std::make_shared<snapshot>();
    s->source_file = file_;
    const YAML::Mark start = root.Mark().is_null() ? YAML::Mark() : root.Mark();
    if (root.IsNull()) {
        fail(start, "", "the file is empty; expected a map with site, servers and gateway");
        return {nullptr, take_errors()};
    }
    const auto top = read_map(field{root, "", start, start}, root_keys, "a map with site, servers and gateway");
    if (top) {
        if (const auto f = required(*top, "site", "a DNS name like www.example.com")) {
            check_site(*f, *s);
        }
        if (const auto f = required(*top, "servers", "a map of server name to address, role and port")) {
            check_servers(*f, *s);
        }
        if (const auto f = required(*top, "gateway", "a map with listen and pools")) {
            check_gateway(*f, *s);
        }
        if (const auto f = top->get("firewall")) {
            check_firewall(*f, *s);
        }
        if (const auto f = top->get("ha")) {
            check_ha(*f, *s);
        }
    }
    if (error_count_ > 0) {
        return {nullptr, take_errors()};
    }
    return {std::move(s), {}};
}

void checker::check_site(const field& f, snapshot& s) {
    constexpr std::string_view expected = "a DNS name like www.example.com";
    const auto text = scalar(f, expected);
    if (!text) {
        return;
    }
    if (!valid_dns_name(*text)) {
        fail(f, "expected " + std::string(expected) + ", got " + in_quotes(*text));
        return;
    }
    s.site = *text;
}

void checker::check_servers(const field& f, snapshot& s) {
    const auto servers = read_map(f, nullptr, "a map of server name to address, role and port");
    if (!servers) {
        servers_unreadable_ = true;
        return;
    }
    if (servers->entries.empty()) {
        fail(f, "expected at least one server");
    }
    for (const auto& [name, sf] : servers->entries) {
        const std::size_t errors_before = error_count_;
        server srv;
        srv.name = name;
        if (!valid_name(name)) {
            fail(sf.key_at, sf.path, "server names may only use " + std::string(name_chars));
        }
        if (const auto m = read_map(sf, server_keys)) {
            if (const auto a = required(*m, "address", "a literal IP address")) {
                srv.address_at = where(a->at);
                if (auto addr = ip_address(*a)) {
                    srv.address = std::move(*addr);
                }
            }
            if (const auto r = required(*m, "role", "one of " + join(names_of(role_names), " or "))) {
                if (const auto value = one_of(*r, role_names)) {
                    srv.server_role = *value;
                }
            }
            if (const auto p = m->get("port")) {
                if (const auto port = integer(*p, 1, 65535, "a port number")) {
                    srv.port = static_cast<std::uint16_t>(*port);
                }
            }
            optional_value(*m, "weight", srv.weight,
                           [&](const field& w) { return integer(w, 1, max_weight, "a weight"); });
        }
        if (error_count_ != errors_before) {
            broken_servers_.insert(name);
        }
        server_index_.emplace(name, s.servers.size());
        s.servers.push_back(std::move(srv));
    }
}

} // namespace rampart::config::detail
