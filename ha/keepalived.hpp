#pragma once
// keepalived's configuration for one node of the HA pair, rendered from the
// deployment file. Rampart does not speak VRRP: keepalived does, and learns
// the local gateway's health without forking a check: track_process follows
// the master process by name, track_file reads the health the master writes,
// and state changes come back through vrrp_notify_fifo. Sans-I/O: rendering
// touches no file.

#include "config/config.hpp"

#include <stdexcept>
#include <string>
#include <vector>

namespace rampart::ha {

/// Thrown for a file without `ha:` or a node that is not in it.
struct render_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// One file of a rendered configuration: its name within the output
/// directory and its content.
struct rendered_file {
    std::string name;
    std::string content;
};

/// keepalived.conf for `node`: global_defs (VRRPv3, script security, the
/// notify FIFO), the process and file trackers, and one vrrp_instance that
/// starts as BACKUP on both nodes (required by nopreempt; the election picks
/// the higher priority anyway).
std::string render_keepalived_conf(const config::snapshot& cfg, const std::string& node);

/// Every file `rampart ha render` writes for `node` (keepalived.conf today).
std::vector<rendered_file> render(const config::snapshot& cfg, const std::string& node);

/// "0.1" for 100ms, "1" for 1s: keepalived's decimal seconds.
std::string decimal_seconds(config::duration d);

/// How long the lower-priority node's VRRP waits after keepalived starts
/// (vrrp_startup_delay), so that the first election goes to the higher
/// priority when both start within that time of each other.
config::duration first_election_delay(const config::ha& h);

} // namespace rampart::ha
