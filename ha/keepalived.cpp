#include "ha/keepalived.hpp"

#include <algorithm>
#include <sstream>

namespace rampart::ha {

std::string decimal_seconds(config::duration d) {
    const auto ms = d.count();
    std::string out = std::to_string(ms / 1000);
    if (const auto frac = ms % 1000; frac != 0) {
        std::string digits = std::to_string(1000 + frac).substr(1);
        while (digits.back() == '0') {
            digits.pop_back();
        }
        out += "." + digits;
    }
    return out;
}

config::duration first_election_delay(const config::ha& h) {
    return std::chrono::seconds(2) + 3 * h.advert_int;
}

std::string render_keepalived_conf(const config::snapshot& cfg, const std::string& node) {
    if (!cfg.ha_pair) {
        throw render_error(cfg.source_file + " has no ha section");
    }
    const config::ha& h = *cfg.ha_pair;
    const config::ha_node* self = h.find_node(node);
    if (self == nullptr) {
        std::string names;
        for (const auto& n : h.nodes) {
            names += (names.empty() ? "" : " or ") + n.name;
        }
        throw render_error("no node " + node + " in ha.nodes (expected " + names + ")");
    }
    const config::ha_node* peer = h.peer_of(node);
    const std::string ifname = self->interface.empty() ? h.interface : self->interface;
    const std::string process = "rampart_" + node + "_process";
    const std::string health = "rampart_" + node + "_health";

    std::ostringstream out;
    out << "# keepalived.conf for " << node << ", rendered by `rampart ha render` from " << cfg.source_file << ".\n"
        << "# Do not edit: change the deployment file and render again. Check with\n"
        << "#   keepalived --config-test -f keepalived.conf\n"
        << "\n"
        << "global_defs {\n"
        << "    router_id rampart_" << node << "\n"
        << "    # VRRPv3: sub-second advert_int (centiseconds); no VRRP authentication exists in v3.\n"
        << "    vrrp_version 3\n"
        << "    # No script runs (health comes from track_process and track_file), and any\n"
        << "    # script added later must not be writable by non-root users.\n"
        << "    enable_script_security\n"
        << "    script_user root\n"
        << "    # State changes, in order, to the Rampart master: INSTANCE \"name\" MASTER|BACKUP|FAULT|STOP prio\n"
        << "    vrrp_notify_fifo " << h.notify_fifo(node) << "\n"
        << "    # Gratuitous ARP / unsolicited NA: a burst on takeover, again 1 s later,\n"
        << "    # and refreshed every minute while MASTER for switches that forgot.\n"
        << "    vrrp_garp_master_delay 1\n"
        << "    vrrp_garp_master_repeat 3\n"
        << "    vrrp_garp_master_refresh 60\n"
        << "    vrrp_garp_master_refresh_repeat 1\n"
        << "    vrrp_higher_prio_send_advert true\n";
    if (peer != nullptr && peer->priority > self->priority) {
        // Both nodes start as BACKUP with nopreempt: whichever keepalived
        // starts first would win the first election and keep the VIP. The
        // lower priority waits, so that the higher one wins when both start
        // within this delay of each other (a boot, a deploy); alone, it takes
        // the VIP that much later.
        out << "    # The first election goes to the higher priority (" << peer->name << "): this node's\n"
            << "    # VRRP starts this long after keepalived (2 s + 3 adverts).\n"
            << "    vrrp_startup_delay " << decimal_seconds(first_election_delay(h)) << "\n";
    }
    out << "}\n"
        << "\n";
    if (h.health.track_process) {
        out << "# The Rampart master of this node, by process name (no fork per check: the\n"
            << "# kernel's process events). Not running: FAULT, and the peer takes over.\n"
            << "vrrp_track_process " << process << " {\n"
            << "    process " << h.process_name(node) << "\n"
            << "    quorum 1\n"
            << "    weight 0\n"
            << "}\n"
            << "\n";
    }
    out << "# Written by the Rampart master every " << decimal_seconds(h.health.interval) << " s, and by its\n"
        << "# sentinel process the moment the master dies: 0 = able to serve\n"
        << "# (workers up" << (h.health.require_backend ? ", an available backend" : "") << "), 1 = not. "
        << "Until the first write: 1.\n"
        << "track_file " << health << " {\n"
        << "    file \"" << h.track_file(node) << "\"\n"
        << "    weight " << h.health.weight << "\n"
        << "    init_file 1\n"
        << "}\n"
        << "\n"
        << "vrrp_instance rampart_vrid" << h.virtual_router_id << " {\n"
        << "    # BACKUP on both nodes: nopreempt works only from BACKUP; the lower\n"
        << "    # priority's vrrp_startup_delay gives the first election to the higher.\n"
        << "    state BACKUP\n"
        << "    interface " << ifname << "\n"
        << "    virtual_router_id " << h.virtual_router_id << "\n"
        << "    priority " << self->priority << "\n"
        << "    advert_int " << decimal_seconds(h.advert_int) << "\n";
    if (!h.preempt) {
        out << "    nopreempt\n";
    }
    if (h.unicast && peer != nullptr) {
        out << "    unicast_src_ip " << self->address << "\n"
            << "    unicast_peer {\n"
            << "        " << peer->address << "\n"
            << "    }\n"
            << "    # Adverts from anyone but the peer are dropped.\n"
            << "    check_unicast_src\n";
    }
    out << "    virtual_ipaddress {\n"
        << "        " << h.vip.to_string() << " dev " << ifname << "\n"
        << "    }\n";
    if (h.vip6) {
        out << "    # The other family rides on the IPv4 instance (keepalived keeps one family per instance).\n"
            << "    virtual_ipaddress_excluded {\n"
            << "        " << h.vip6->to_string() << " dev " << ifname << "\n"
            << "    }\n";
    }
    if (h.health.track_process) {
        out << "    track_process {\n"
            << "        " << process << "\n"
            << "    }\n";
    }
    out << "    track_file {\n"
        << "        " << health << " weight " << h.health.weight << "\n"
        << "    }\n"
        << "    notify_priority_changes true\n"
        << "}\n";
    return out.str();
}

std::vector<rendered_file> render(const config::snapshot& cfg, const std::string& node) {
    return {rendered_file{"keepalived.conf", render_keepalived_conf(cfg, node)}};
}

} // namespace rampart::ha
