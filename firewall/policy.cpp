// Role policy and lint. See README.md "Firewall" for the policy in prose; the
// order of the input chain below is that policy, top to bottom.

#include "firewall/policy.hpp"

#include <algorithm>
#include <map>
#include <set>

namespace rampart::firewall {

namespace {

using config::role;

constexpr std::uint32_t blocklist_timeout_default_ms = 0; // elements carry their own timeouts
constexpr std::uint32_t meter_size = 65535;
constexpr std::uint64_t meter_timeout_ms = 60'000;
constexpr limit ping_limit{10, rate_unit::second, 20, false};
constexpr limit log_limit{5, rate_unit::second, 10, false};

// RFC 4890 4.4.1: ICMPv6 errors a host must not drop (packet-too-big is PMTU
// discovery), and neighbour discovery, which only counts with hop limit 255
// (anything less was forwarded, i.e. came from off-link: RFC 4861 7.1).
constexpr std::uint8_t icmpv6_errors[] = {1, 2, 3, 4};
constexpr std::uint8_t icmpv6_nd[] = {134, 135, 136};
constexpr std::uint8_t icmp_echo_request = 8;
constexpr std::uint8_t icmpv6_echo_request = 128;

const char* suffix(family f) {
    return f == family::ipv4 ? "4" : "6";
}

prefix to_prefix(const config::network& n) {
    auto p = prefix::parse(n.to_string());
    return p.value_or(prefix{});
}

std::optional<prefix> host_prefix(const std::string& address) {
    return prefix::parse(address);
}

// Sorted, duplicates and networks inside another one dropped: the kernel refuses
// overlapping intervals, and an address listed twice is one element.
std::vector<prefix> normalise(std::vector<prefix> in) {
    std::sort(in.begin(), in.end());
    std::vector<prefix> out;
    for (const auto& p : in) {
        if (!out.empty() && out.back().contains(p)) {
            continue;
        }
        out.push_back(p);
    }
    return out;
}

set make_set(std::string name, family fam, bool interval, std::vector<prefix> all, std::string comment) {
    set s;
    s.name = std::move(name);
    s.fam = fam;
    s.interval = interval;
    s.comment = std::move(comment);
    for (const auto& p : all) {
        if (p.fam == fam) {
            s.elements.push_back(p);
        }
    }
    s.elements = normalise(std::move(s.elements));
    return s;
}

// Adds name4 and name6 with the elements of each family.
void add_set_pair(ruleset& rs, const std::string& base, bool interval, const std::vector<prefix>& all,
                  const std::string& comment) {
    for (const family f : {family::ipv4, family::ipv6}) {
        rs.sets.push_back(make_set(base + suffix(f), f, interval, all, comment));
    }
}

rule accept_from(family f, const std::string& set_base, std::uint8_t proto, std::uint16_t port, std::string comment) {
    rule r;
    r.source = source_in_set{f, set_base + suffix(f)};
    r.l4proto = proto;
    r.dport = port;
    r.action = verdict::accept;
    r.comment = std::move(comment);
    return r;
}

bool is_loopback(const std::string& address) {
    return address.starts_with("127.") || address == "::1";
}

std::vector<prefix> addresses_of(const config::snapshot& cfg, role r, const std::string& except = {}) {
    std::vector<prefix> out;
    for (const auto& s : cfg.servers) {
        if (s.server_role == r && s.name != except) {
            if (const auto p = host_prefix(s.address)) {
                out.push_back(*p);
            }
        }
    }
    return out;
}

config::error at(const config::location& where, std::string what) {
    return config::error{where, std::move(what)};
}

// Why SSH can never come from this network, or nullptr.
const char* unreachable_reason(const config::network& n) {
    // Networks SSH can never come from; `host_only`: only a single address
    // inside them is (0.0.0.0/8 as a whole is a valid admin network).
    struct unreachable {
        const char* network;
        bool host_only;
        const char* reason;
    };
    static constexpr unreachable table[] = {
        {"127.0.0.0/8", false, "loopback"},
        {"224.0.0.0/4", false, "multicast"},
        {"0.0.0.0/8", true, "the unspecified address"},
        {"::1/128", true, "loopback"},
        {"ff00::/8", false, "multicast"},
        {"::/128", true, "the unspecified address"},
    };
    const auto p = to_prefix(n);
    for (const auto& u : table) {
        const auto net = prefix::parse(u.network);
        if ((!u.host_only || p.is_host()) && net->contains(p)) {
            return u.reason;
        }
    }
    return nullptr;
}

void input_base(chain& in, const config::firewall& fw) {
    rule r;
    r.ct_state = ct_established | ct_related;
    r.action = verdict::accept;
    r.comment = "established and related";
    in.rules.push_back(r);

    r = rule{};
    r.iif_loopback = true;
    r.action = verdict::accept;
    r.comment = "loopback";
    in.rules.push_back(r);

    // Before the invalid drop: conntrack does not track neighbour discovery and
    // marks ICMPv6 errors of unknown flows invalid, and IPv6 breaks without them.
    for (const auto type : icmpv6_errors) {
        r = rule{};
        r.icmp = icmp_match{family::ipv6, type};
        r.action = verdict::accept;
        r.comment = type == 2 ? "icmpv6 packet-too-big (PMTU)" : "icmpv6 errors";
        in.rules.push_back(r);
    }
    for (const auto type : icmpv6_nd) {
        r = rule{};
        r.icmp = icmp_match{family::ipv6, type};
        r.hoplimit = 255;
        r.action = verdict::accept;
        r.comment = "icmpv6 neighbour discovery";
        in.rules.push_back(r);
    }

    r = rule{};
    r.ct_state = ct_invalid;
    r.action = verdict::drop;
    r.comment = "invalid";
    in.rules.push_back(r);

    for (const family f : {family::ipv4, family::ipv6}) {
        in.rules.push_back(accept_from(f, "admin", proto_tcp, fw.ssh_port, "ssh from admin networks"));
    }
    for (const family f : {family::ipv4, family::ipv6}) {
        r = rule{};
        r.icmp = icmp_match{f, f == family::ipv4 ? icmp_echo_request : icmpv6_echo_request};
        r.rate_limit = ping_limit;
        r.action = verdict::accept;
        r.comment = "ping, rate-limited";
        in.rules.push_back(r);
    }
}

void gateway_rules(ruleset& rs, chain& in, const config::snapshot& cfg, const std::string& host) {
    const config::firewall& fw = *cfg.fw;
    add_set_pair(rs, "vrrp_peers", false, addresses_of(cfg, role::gateway, host),
                 host.empty() ? "every gateway (VRRP)" : "the other gateway(s) of the pair (VRRP)");
    for (const family f : {family::ipv4, family::ipv6}) {
        set m;
        m.name = std::string("connrate") + suffix(f);
        m.fam = f;
        m.dynamic = true;
        m.timeout = true;
        m.timeout_ms = meter_timeout_ms;
        m.size = meter_size;
        m.comment = "per-source new-connection meter for the gateway ports";
        rs.sets.push_back(std::move(m));
    }
    for (const family f : {family::ipv4, family::ipv6}) {
        rule r;
        r.source = source_in_set{f, std::string("vrrp_peers") + suffix(f)};
        r.l4proto = proto_vrrp;
        r.action = verdict::accept;
        r.comment = "vrrp from the peer gateway";
        in.rules.push_back(r);
    }
    const auto& listen = cfg.gw.listen;
    if (listen.admin && !is_loopback(listen.admin->host)) {
        for (const family f : {family::ipv4, family::ipv6}) {
            in.rules.push_back(accept_from(f, "admin", proto_tcp, listen.admin->port, "gateway admin listener"));
        }
        // The peer check: the other gateway asks this one's admin listener.
        if (cfg.ha_pair && cfg.ha_pair->peer_check.enabled) {
            for (const family f : {family::ipv4, family::ipv6}) {
                in.rules.push_back(
                    accept_from(f, "vrrp_peers", proto_tcp, listen.admin->port, "ha peer check from the peer gateway"));
            }
        }
    }
    std::vector<std::uint16_t> ports;
    for (const auto& ep : {listen.https, listen.http}) {
        if (ep && std::find(ports.begin(), ports.end(), ep->port) == ports.end()) {
            ports.push_back(ep->port);
        }
    }
    const limit per_source{fw.conn_rate.count, static_cast<rate_unit>(fw.conn_rate.unit), fw.conn_rate.burst, true};
    for (const auto port : ports) {
        for (const family f : {family::ipv4, family::ipv6}) {
            rule r;
            r.l4proto = proto_tcp;
            r.dport = port;
            r.per_source = meter{f, std::string("connrate") + suffix(f), per_source};
            r.action = verdict::drop;
            r.comment = "gateway new-connection rate per source";
            in.rules.push_back(r);
        }
        rule r;
        r.l4proto = proto_tcp;
        r.dport = port;
        r.action = verdict::accept;
        r.comment = "gateway listener";
        in.rules.push_back(r);
    }
}

void app_rules(ruleset& rs, chain& in, const config::snapshot& cfg, const std::string& host) {
    add_set_pair(rs, "gateways", false, addresses_of(cfg, role::gateway), "the gateways, which proxy to the apps");
    std::set<std::uint16_t> ports;
    for (const auto& s : cfg.servers) {
        if (s.server_role == role::app && s.port && (host.empty() || s.name == host)) {
            ports.insert(*s.port);
        }
    }
    for (const auto port : ports) {
        for (const family f : {family::ipv4, family::ipv6}) {
            in.rules.push_back(accept_from(f, "gateways", proto_tcp, port, "app port from the gateways"));
        }
    }
}

void db_rules(ruleset& rs, chain& in, const config::snapshot& cfg, bool primary) {
    const auto port = cfg.fw->db_port;
    add_set_pair(rs, "apps", false, addresses_of(cfg, role::app), "the app servers, database clients");
    if (primary) {
        add_set_pair(rs, "db_replicas", false, addresses_of(cfg, role::db_replica), "the replicas of this primary");
    }
    for (const family f : {family::ipv4, family::ipv6}) {
        in.rules.push_back(accept_from(f, "apps", proto_tcp, port, "database from the app servers"));
    }
    if (primary) {
        for (const family f : {family::ipv4, family::ipv6}) {
            in.rules.push_back(accept_from(f, "db_replicas", proto_tcp, port, "database from the replica"));
        }
    }
}

void extra_rules(ruleset& rs, chain& in, const config::firewall& fw, role r) {
    for (std::size_t i = 0; i < fw.extra_rules.size(); ++i) {
        const auto& x = fw.extra_rules[i];
        if (config::parse_role(x.role) != r) {
            continue;
        }
        std::vector<prefix> from;
        for (const auto& n : x.from) {
            from.push_back(to_prefix(n));
        }
        const std::string base = "extra" + std::to_string(i + 1) + "_";
        add_set_pair(rs, base, true, from,
                     "firewall.extra_rules[" + std::to_string(i) + "] (line " + std::to_string(x.where.line) + ")");
        const std::uint8_t proto = x.proto == "udp" ? proto_udp : proto_tcp;
        for (const family f : {family::ipv4, family::ipv6}) {
            in.rules.push_back(
                accept_from(f, base, proto, x.port,
                            "extra rule " + std::to_string(i + 1) + ": " + x.proto + " " + std::to_string(x.port)));
        }
    }
}

} // namespace

std::vector<config::error> lint(const config::snapshot& cfg) {
    std::vector<config::error> out;
    if (!cfg.fw) {
        out.push_back(at(config::location{cfg.source_file, 1, 1},
                         "no firewall section; add firewall.admin_networks (the networks that may reach SSH)"));
        return out;
    }
    const config::firewall& fw = *cfg.fw;
    const std::string ssh = "SSH (port " + std::to_string(fw.ssh_port) + ")";

    // Admin networks: empty, or all of them networks nobody logs in from.
    if (fw.admin_networks.empty()) {
        out.push_back(at(fw.admin_networks_at, "firewall.admin_networks: is empty; nobody could reach " + ssh +
                                                   " on any host; list the networks administrators log in from"));
    }
    bool has4 = false;
    bool has6 = false;
    for (const auto& n : fw.admin_networks) {
        if (const char* why = unreachable_reason(n)) {
            out.push_back(at(n.where, "firewall.admin_networks: " + n.to_string() + " is " + why +
                                          "; no SSH connection can come from it, so it cannot keep admins in"));
            continue;
        }
        (n.v6 ? has6 : has4) = true;
    }

    // One address, one role: a host's firewall is built for its one role, so an
    // address placed under two would get one of the two policies only.
    std::map<std::string, const config::server*> by_address;
    for (const auto& s : cfg.servers) {
        const auto [it, fresh] = by_address.emplace(s.address, &s);
        if (!fresh && it->second->server_role != s.server_role) {
            out.push_back(at(s.address_at, "servers." + s.name + ": address " + s.address + " is also server " +
                                               it->second->name + "'s, a " +
                                               config::to_string(it->second->server_role) +
                                               "; one address cannot be both a " + config::to_string(s.server_role) +
                                               " and a " + config::to_string(it->second->server_role)));
        }
    }

    for (const auto& s : cfg.servers) {
        const bool v6 = s.address.find(':') != std::string::npos;
        // Only when some admin network is usable: otherwise the error above says it all.
        if ((has4 || has6) && !(v6 ? has6 : has4)) {
            out.push_back(at(s.address_at, "servers." + s.name + ": " + ssh + " would be cut off: its address " +
                                               s.address + " is " + (v6 ? "IPv6" : "IPv4") +
                                               " and firewall.admin_networks has no " + (v6 ? "IPv6" : "IPv4") +
                                               " network"));
        }
        if (s.server_role == role::app && !s.port) {
            out.push_back(at(s.address_at, "servers." + s.name +
                                               ": an app server needs a port; the firewall opens it to the gateways"));
        }
        if (s.server_role == role::app && s.port && *s.port == fw.ssh_port) {
            out.push_back(at(s.address_at, "servers." + s.name + ": port " + std::to_string(*s.port) +
                                               " is firewall.ssh_port; the app port would open SSH to the gateways"));
        }
    }

    // Ports that would put SSH behind another rule or open it wider.
    if (fw.db_port == fw.ssh_port) {
        out.push_back(at(fw.db_port_at, "firewall.db_port: " + std::to_string(fw.db_port) +
                                            " is also firewall.ssh_port; the database and SSH need distinct ports"));
    }
    const auto& listen = cfg.gw.listen;
    for (const auto& [name, ep] :
         {std::pair{"https", listen.https}, std::pair{"http", listen.http}, std::pair{"admin", listen.admin}}) {
        if (ep && ep->port == fw.ssh_port) {
            out.push_back(at(fw.ssh_port_at, "firewall.ssh_port: " + std::to_string(fw.ssh_port) +
                                                 " is also the gateway's " + name +
                                                 " port; SSH would be open to whoever may reach that listener"));
        }
    }

    for (std::size_t i = 0; i < fw.extra_rules.size(); ++i) {
        const auto& x = fw.extra_rules[i];
        const std::string path = "firewall.extra_rules[" + std::to_string(i) + "]";
        if (!config::parse_role(x.role)) {
            out.push_back(at(x.role_at, path + ".role: unknown role \"" + x.role +
                                            "\", expected one of gateway, app, db-primary or db-replica"));
        }
        if (x.proto == "tcp" && x.port == fw.ssh_port) {
            out.push_back(at(x.where, path + ": opens port " + std::to_string(x.port) +
                                          ", the SSH port; SSH is only ever opened to firewall.admin_networks"));
        }
    }

    std::stable_sort(out.begin(), out.end(), [](const config::error& a, const config::error& b) {
        return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
    });
    return out;
}

plan_result build(const config::snapshot& cfg, const target& who) {
    plan_result result;
    result.errors = lint(cfg);
    std::optional<role> r = who.role;
    if (!who.host.empty()) {
        const config::server* s = cfg.find_server(who.host);
        if (s == nullptr) {
            result.errors.push_back(
                at(config::location{cfg.source_file, 1, 1}, "no server named \"" + who.host + "\" in servers"));
            return result;
        }
        r = s->server_role;
    }
    if (!r) {
        result.errors.push_back(at(config::location{cfg.source_file, 1, 1}, "no host or role given"));
    }
    if (!result.errors.empty()) {
        return result;
    }
    const config::firewall& fw = *cfg.fw;
    ruleset rs;
    rs.description = who.host.empty() ? std::string("role ") + config::to_string(*r)
                                      : "host " + who.host + " (" + config::to_string(*r) + ")";
    std::vector<prefix> admin;
    for (const auto& n : fw.admin_networks) {
        admin.push_back(to_prefix(n));
    }
    add_set_pair(rs, "admin", true, admin, "firewall.admin_networks: SSH and the admin listener");
    for (const family f : {family::ipv4, family::ipv6}) {
        set b;
        b.name = std::string("blocklist") + suffix(f);
        b.fam = f;
        b.timeout = true;
        b.timeout_ms = blocklist_timeout_default_ms;
        b.comment = "dropped before conntrack; filled by `rampart firewall block` and the gateway";
        rs.sets.push_back(std::move(b));
    }

    chain pre;
    pre.name = "prerouting";
    pre.at = hook::prerouting;
    pre.priority = -300;
    pre.policy = verdict::accept;
    for (const family f : {family::ipv4, family::ipv6}) {
        rule b;
        b.source = source_in_set{f, std::string("blocklist") + suffix(f)};
        b.action = verdict::drop;
        b.comment = "blocklist";
        pre.rules.push_back(b);
    }

    chain in;
    in.name = "input";
    in.at = hook::input;
    in.priority = 0;
    in.policy = verdict::drop;
    input_base(in, fw);
    switch (*r) {
    case role::gateway:
        gateway_rules(rs, in, cfg, who.host);
        break;
    case role::app:
        app_rules(rs, in, cfg, who.host);
        break;
    case role::db_primary:
        db_rules(rs, in, cfg, true);
        break;
    case role::db_replica:
        db_rules(rs, in, cfg, false);
        break;
    }
    extra_rules(rs, in, fw, *r);

    rule log;
    log.rate_limit = log_limit;
    log.log_prefix = drop_log_prefix;
    log.comment = "log drops, rate-limited";
    in.rules.push_back(log);
    rule drop;
    drop.action = verdict::drop;
    drop.comment = "default drop";
    in.rules.push_back(drop);

    rs.chains.push_back(std::move(pre));
    rs.chains.push_back(std::move(in));
    result.rules = std::move(rs);
    return result;
}

} // namespace rampart::firewall
