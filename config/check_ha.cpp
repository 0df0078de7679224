// The configuration checker: the ha section (the keepalived pair, its interfaces, the peer check).

#include "config/checker.hpp"

#include <arpa/inet.h>
#include <sys/stat.h>

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

// "192.0.2.10/24": an address on an interface, so host bits are the point
// (unlike parse_network). `v6` is the family required.
std::optional<network> checker::interface_address(const field& f, bool v6) {
    const std::string expected =
        v6 ? "an IPv6 address with prefix like 2001:db8::10/64" : "an IPv4 address with prefix like 192.0.2.10/24";
    const auto text = scalar(f, expected);
    if (!text) {
        return std::nullopt;
    }
    const auto slash = text->find('/');
    bool is_v6 = false;
    const auto addr = slash == std::string::npos ? std::nullopt : canonical_ip(text->substr(0, slash), &is_v6);
    const unsigned max_prefix = v6 ? 128 : 32;
    const auto prefix =
        slash == std::string::npos ? std::nullopt : parse_decimal(std::string_view(*text).substr(slash + 1));
    if (!addr || is_v6 != v6 || !prefix || *prefix < 1 || *prefix > max_prefix) {
        fail(f, "expected " + expected + ", got " + in_quotes(*text));
        return std::nullopt;
    }
    network out;
    out.address = *addr;
    out.prefix = static_cast<unsigned>(*prefix);
    out.v6 = v6;
    out.where = where(f.at);
    return out;
}

// Interface names go into keepalived.conf unquoted: the kernel's rules
// (at most 15 bytes, no '/', no spaces) narrowed to plain characters.
std::optional<std::string> checker::interface_name(const field& f) {
    constexpr std::string_view expected = "an interface name like eth0 (at most 15 letters, digits, '.', '_', '-')";
    const auto text = scalar(f, expected);
    if (!text) {
        return std::nullopt;
    }
    if (text->size() > 15 || !valid_name(*text)) {
        fail(f, "expected " + std::string(expected) + ", got " + in_quotes(*text));
        return std::nullopt;
    }
    return text;
}

namespace {

// Whether `address` lies in `net` (same family; prefix bits equal).
bool in_network(const std::string& address, const network& net) {
    unsigned char a[16] = {};
    unsigned char n[16] = {};
    const int family = net.v6 ? AF_INET6 : AF_INET;
    if (::inet_pton(family, address.c_str(), a) != 1 || ::inet_pton(family, net.address.c_str(), n) != 1) {
        return false;
    }
    for (unsigned bit = 0; bit < net.prefix; ++bit) {
        const unsigned mask = 0x80U >> (bit % 8);
        if ((a[bit / 8] & mask) != (n[bit / 8] & mask)) {
            return false;
        }
    }
    return true;
}

} // namespace

// The pair keepalived runs. Beside the values, the lint refuses the setups
// that look fine and silently never fail over: a priority weight with
// preemption off (a backup never takes over from a live master, however low
// its priority), a weight smaller than the priority gap, equal priorities,
// the address owner's 255 (which ignores tracking), an advert interval
// VRRPv3 cannot carry (centiseconds), nodes that are not gateways.
void checker::check_ha(const field& f, snapshot& s) {
    const auto m = read_map(f, ha_keys, "a map with vip, interface, virtual_router_id and nodes");
    if (!m) {
        return;
    }
    ha out;
    out.where = where(f.key_at);
    if (const auto v = required(*m, "vip", "an IPv4 address with prefix like 192.0.2.10/24")) {
        if (auto n = interface_address(*v, false)) {
            out.vip = std::move(*n);
        }
    }
    if (const auto v = m->get("vip6")) {
        out.vip6 = interface_address(*v, true);
    }
    if (const auto i = required(*m, "interface", "an interface name like eth0")) {
        out.interface = interface_name(*i).value_or("");
    }
    if (const auto r = required(*m, "virtual_router_id", "an integer from 1 to 255")) {
        out.virtual_router_id = static_cast<unsigned>(integer(*r, 1, 255, "a virtual router id").value_or(0));
    }
    std::optional<field> priority_at;
    unsigned valid_priorities = 0;
    if (const auto nf = required(*m, "nodes", "a map of the two gateways' server names to their priority")) {
        if (const auto nodes = read_map(*nf, nullptr, "a map of the two gateways' server names to their priority")) {
            if (nodes->entries.size() != 2) {
                fail(*nf, "expected exactly two nodes (the gateways of the pair), got " +
                              std::to_string(nodes->entries.size()));
            }
            for (const auto& [name, node_field] : nodes->entries) {
                ha_node node;
                node.name = name;
                const auto index = server_index_.find(name);
                if (index == server_index_.end()) {
                    if (!servers_unreadable_) {
                        fail(node_field.key_at, node_field.path,
                             "unknown server " + in_quotes(name) + ", expected a gateway from servers");
                    }
                } else if (!broken_servers_.contains(name)) {
                    const server& srv = s.servers[index->second];
                    if (srv.server_role != role::gateway) {
                        fail(node_field.key_at, node_field.path,
                             "server " + in_quotes(name) + " has role " + to_string(srv.server_role) +
                                 "; HA nodes must be gateways");
                    }
                    node.address = srv.address;
                }
                if (const auto nm = read_map(node_field, ha_node_keys, "a map with priority")) {
                    if (const auto p = required(*nm, "priority", "an integer from 1 to 254")) {
                        if (p->node.IsScalar() && p->node.Scalar() == "255") {
                            fail(*p, "255 makes keepalived treat the node as the address owner, which never gives "
                                     "the VIP up for a failed health check; use 1 to 254");
                        } else if (const auto v = integer(*p, 1, 254, "a priority")) {
                            node.priority = static_cast<unsigned>(*v);
                            priority_at = p;
                            ++valid_priorities;
                        }
                    }
                    if (const auto i = nm->get("interface")) {
                        node.interface = interface_name(*i).value_or("");
                    }
                    if (const auto k = nm->get("keepalived_pid_file")) {
                        node.keepalived_pid_file = file_path(*k).value_or("");
                    }
                }
                out.nodes.push_back(std::move(node));
            }
        }
    }
    if (const auto a = m->get("advert_int")) {
        if (const auto d = duration_value(*a, duration{10})) {
            if (d->count() % 10 != 0 || *d > std::chrono::seconds(40)) {
                fail(*a, "expected a multiple of 10ms up to 40s (VRRPv3 counts in centiseconds), got " +
                             in_quotes(a->node.Scalar()));
            } else {
                out.advert_int = *d;
            }
        }
    }
    optional_value(*m, "unicast", out.unicast, [&](const field& b) { return boolean(b); });
    optional_value(*m, "preempt", out.preempt, [&](const field& b) { return boolean(b); });
    std::optional<field> weight_at;
    if (const auto h = m->get("health")) {
        if (const auto hm = read_map(*h, ha_health_keys, "a map with interval, require_backend and weight")) {
            if (const auto i = hm->get("interval")) {
                if (const auto d = duration_value(*i, duration{10})) {
                    if (*d > std::chrono::seconds(10)) {
                        fail(*i, "expected at most 10s, got " + in_quotes(i->node.Scalar()));
                    } else {
                        out.health.interval = *d;
                    }
                }
            }
            optional_value(*hm, "require_backend", out.health.require_backend,
                           [&](const field& b) { return boolean(b); });
            optional_value(*hm, "track_process", out.health.track_process, [&](const field& b) { return boolean(b); });
            if (const auto w = hm->get("weight")) {
                constexpr std::string_view expected = "0 or a negative integer down to -253";
                if (const auto text = scalar(*w, expected)) {
                    const bool negative = text->starts_with('-');
                    const auto magnitude = parse_decimal(std::string_view(*text).substr(negative ? 1 : 0));
                    if (magnitude && (*magnitude == 0 || (negative && *magnitude <= 253))) {
                        out.health.weight = -static_cast<int>(*magnitude);
                        weight_at = w;
                    } else {
                        fail(*w, "expected " + std::string(expected) + ", got " + in_quotes(*text));
                    }
                }
            }
        }
    }
    if (const auto d = m->get("state_dir")) {
        if (const auto text = scalar(*d, "an absolute directory path")) {
            const bool plain = std::all_of(text->begin(), text->end(),
                                           [](char c) { return c > 0x20 && c < 0x7f && c != '"' && c != '\\'; });
            if (!std::filesystem::path(*text).is_absolute() || !plain) {
                fail(*d, "expected an absolute directory path without spaces or quotes, got " + in_quotes(*text));
            } else {
                out.state_dir = std::filesystem::path(*text).lexically_normal().string();
                while (out.state_dir.size() > 1 && out.state_dir.back() == '/') {
                    out.state_dir.pop_back();
                }
            }
        }
    }
    if (const auto t = m->get("ticket_secret_file")) {
        if (const auto path = file_path(*t)) {
            struct stat st {};
            if (::stat(path->c_str(), &st) != 0) {
                fail(*t, "cannot read the ticket secret file " + *path + ": " + std::strerror(errno));
            } else if ((st.st_mode & 077) != 0) {
                fail(*t,
                     "the ticket secret file " + *path + " is readable by group or others; run: chmod 600 " + *path);
            } else {
                out.ticket_secret_file = *path;
            }
        }
    }
    if (const auto p = m->get("peer_check")) {
        check_peer_check(*p, s, out.peer_check);
    }
    if (s.gw.tls_settings.acme_settings && out.ticket_secret_file.empty() && !m->get("ticket_secret_file")) {
        fail(f, "gateway.tls.acme in a pair needs ha.ticket_secret_file: the node holding the VIP orders, and its "
                "certificates reach the other node sealed with a key derived from that secret");
    }
    // Cross-checks, once every value is known.
    if (out.nodes.size() == 2) {
        const ha_node& a = out.nodes[0];
        const ha_node& b = out.nodes[1];
        if (a.priority == b.priority && priority_at && valid_priorities == 2) {
            fail(*priority_at, "both nodes have priority " + std::to_string(a.priority) +
                                   "; give them different priorities so the first MASTER is predictable");
        }
        const unsigned gap = a.priority > b.priority ? a.priority - b.priority : b.priority - a.priority;
        if (out.health.weight != 0 && weight_at) {
            if (!out.preempt) {
                fail(*weight_at, "a priority weight never fails over with preempt off (the backup keeps "
                                 "deferring to a live master, however low its priority); use weight 0 (fault) "
                                 "or preempt: true");
            } else if (static_cast<unsigned>(-out.health.weight) <= gap) {
                fail(*weight_at, "weight " + std::to_string(out.health.weight) + " does not bring priority " +
                                     std::to_string(std::max(a.priority, b.priority)) + " below " +
                                     std::to_string(std::min(a.priority, b.priority)) +
                                     ", so an unhealthy MASTER keeps the VIP; use a weight below -" +
                                     std::to_string(gap) + ", or 0 (fault)");
            }
        }
        if (!out.vip.address.empty()) {
            std::string outside;
            for (const ha_node& n : out.nodes) {
                if (n.address == out.vip.address) {
                    fail(m->get("vip")->at, "ha.vip",
                         "the VIP " + out.vip.address + " is server " + n.name + "'s own address; pick a free one");
                } else if (!n.address.empty() && n.address.find(':') == std::string::npos &&
                           !in_network(n.address, out.vip)) {
                    outside += (outside.empty() ? "" : " and ") + n.name + " (" + n.address + ")";
                }
            }
            if (!outside.empty()) {
                fail(m->get("vip")->at, "ha.vip",
                     outside + " outside " + out.vip.to_string() + "; the VIP must be on the nodes' link");
            }
        }
        if (out.unicast) {
            for (const ha_node& n : out.nodes) {
                if (!n.address.empty() && n.address.find(':') != std::string::npos) {
                    fail(m->get("nodes")->at, "ha.nodes",
                         "server " + n.name +
                             " has an IPv6 address; unicast VRRP for an IPv4 VIP needs IPv4 "
                             "node addresses");
                }
            }
        }
    }
    s.ha_pair = std::move(out);
}

// The peer asks this node's admin listener at this node's address: a
// listener on loopback (or on one address, which cannot be both nodes') is
// refused here rather than found unreachable at run time.
void checker::check_peer_check(const field& f, const snapshot& s, ha_peer_check& out) {
    const auto m = read_map(f, ha_peer_check_keys, "a map with secret_file, interval and timeout");
    if (!m) {
        return;
    }
    if (const auto sf = required(*m, "secret_file", "the path of the pair's shared secret (mode 0600)")) {
        if (auto secret = secret_file(*sf, "HA peer secret", 32)) {
            out.secret_file = std::move(secret->first);
            out.secret = std::move(secret->second);
        }
    }
    if (const auto i = m->get("interval")) {
        if (const auto d = duration_value(*i, duration{100})) {
            if (*d > std::chrono::seconds(60)) {
                fail(*i, "expected at most 60s, got " + in_quotes(i->node.Scalar()));
            } else {
                out.interval = *d;
            }
        }
    }
    if (const auto t = m->get("timeout")) {
        if (const auto d = duration_value(*t, duration{10})) {
            if (*d > out.interval) {
                fail(*t, "must not be longer than the interval (" + format_duration(out.interval) + ")");
            } else {
                out.timeout = *d;
            }
        }
    } else {
        out.timeout = std::min(out.timeout, out.interval);
    }
    const auto& admin = s.gw.listen.admin;
    if (!admin) {
        fail(f, "the peer check asks the peer's admin listener; add gateway.listen.admin (e.g. 0.0.0.0:9100)");
    } else if (admin->host != "0.0.0.0" && admin->host != "::") {
        fail(f, "the peer check reaches the admin listener at each node's own address, but gateway.listen.admin is " +
                    admin->to_string() + "; listen on 0.0.0.0:" + std::to_string(admin->port) +
                    " (the firewall opens the port to the admin networks and the peer only)");
    }
    out.enabled = true;
}

} // namespace rampart::config::detail
