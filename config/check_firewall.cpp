// The configuration checker: the firewall section (admin networks, ports, connection rates, extra rules).

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

void checker::check_firewall(const field& f, snapshot& s) {
    const auto m = read_map(f, firewall_keys, "a map with admin_networks and the firewall settings");
    if (!m) {
        return;
    }
    firewall fw;
    fw.where = where(f.key_at);
    // An empty list is read here and refused by the firewall lint, which
    // knows why it matters (nobody could reach SSH).
    if (const auto a = required(*m, "admin_networks", "a list of networks that may reach SSH")) {
        fw.admin_networks_at = where(a->at);
        fw.admin_networks = network_list(*a);
    }
    // An optional port; its location is the section's when it is absent.
    const auto read_port = [&](const char* key, std::uint16_t& port, location& at) {
        const auto p = m->get(key);
        at = p ? where(p->at) : fw.where;
        if (p) {
            if (const auto value = integer(*p, 1, 65535, "a port number")) {
                port = static_cast<std::uint16_t>(*value);
            }
        }
    };
    read_port("ssh_port", fw.ssh_port, fw.ssh_port_at);
    read_port("db_port", fw.db_port, fw.db_port_at);
    if (const auto c = m->get("conn_rate")) {
        check_conn_rate(*c, fw.conn_rate);
    }
    if (const auto e = m->get("extra_rules")) {
        if (const auto list = read_list(*e, "a list of { role, proto, port, from }")) {
            for (const auto& item : *list) {
                firewall_rule r;
                check_extra_rule(item, r);
                fw.extra_rules.push_back(std::move(r));
            }
        }
    }
    s.fw = std::move(fw);
}

void checker::check_conn_rate(const field& f, rate& out) {
    const auto m = read_map(f, conn_rate_keys, "a map with rate and burst");
    if (!m) {
        return;
    }
    if (const auto r = m->get("rate")) {
        if (const auto text = scalar(*r, rate_expected)) {
            const auto slash = text->find('/');
            const auto count = parse_decimal(std::string_view(*text).substr(0, std::min(slash, text->size())));
            std::optional<rate_unit> unit;
            if (slash != std::string::npos) {
                const std::string_view name = std::string_view(*text).substr(slash + 1);
                for (const auto& entry : rate_unit_names) {
                    if (entry.name == name) {
                        unit = entry.value;
                    }
                }
            }
            // The kernel's limit expression keeps the rate in 64 bits; a
            // million per second is far beyond any real per-source limit.
            if (!count || *count < 1 || *count > 1'000'000 || !unit) {
                fail(*r, "expected " + std::string(rate_expected) + ", got " + in_quotes(*text));
            } else {
                out.count = *count;
                out.unit = *unit;
            }
        }
    }
    if (const auto b = m->get("burst")) {
        if (const auto n = integer(*b, 1, 1'000'000, "a burst")) {
            out.burst = *n;
        }
    }
}

void checker::check_extra_rule(const field& f, firewall_rule& out) {
    out.where = where(f.at);
    const auto m = read_map(f, extra_rule_keys, "a map with role, proto, port and from");
    if (!m) {
        return;
    }
    if (const auto r = required(*m, "role", "the role whose hosts get the rule")) {
        out.role_at = where(r->at);
        out.role = scalar(*r, "a role name").value_or("");
    }
    if (const auto p = m->get("proto")) {
        if (const auto text = scalar(*p, "tcp or udp")) {
            if (*text == "tcp" || *text == "udp") {
                out.proto = *text;
            } else {
                fail(*p, "expected tcp or udp, got " + in_quotes(*text));
            }
        }
    }
    if (const auto p = required(*m, "port", "a port number")) {
        if (const auto port = integer(*p, 1, 65535, "a port number")) {
            out.port = static_cast<std::uint16_t>(*port);
        }
    }
    if (const auto from = required(*m, "from", "a list of networks allowed to connect")) {
        out.from = network_list(*from);
        if (from->node.IsNull() || (from->node.IsSequence() && from->node.size() == 0)) {
            fail(*from, "expected at least one network (0.0.0.0/0 and ::/0 mean anywhere)");
        }
    }
}

} // namespace rampart::config::detail
