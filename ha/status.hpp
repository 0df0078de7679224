#pragma once
// `rampart ha status`: this node's VRRP state (as the master last learned it
// from keepalived), its priority, its peer, and whether it holds the VIP.

#include "config/config.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rampart::ha {

/// What `rampart ha status` prints.
struct node_status {
    std::string node;
    std::string state = "unknown";              ///< MASTER, BACKUP, FAULT, STOP, or unknown (no state file)
    unsigned priority = 0;                      ///< configured
    std::optional<unsigned> effective_priority; ///< as keepalived last reported it
    std::string health = "unknown";             ///< the track file: "ok", "not ready" or unknown
    std::string peer;
    std::string peer_address;
    /// With ha.peer_check: the peer's VRRP state as it last answered
    /// ("unknown" while it does not), whether it holds the VIP, and when it
    /// last answered (seconds since the epoch; 0 for never).
    std::optional<std::string> peer_state;
    bool peer_vip_held = false;
    std::int64_t peer_answered = 0;
    std::string vip;
    bool vip_held = false;
    std::optional<bool> vip6_held; ///< only with ha.vip6
    /// Seconds since the master last rewrote the track file (it does once a
    /// second while it runs), when that is over stale_after: the state shown
    /// is then what a master that no longer runs last learned.
    std::optional<double> stale_for;
};

/// A running master rewrites the track file at least this often...
inline constexpr double track_rewrite_s = 1.0;
/// ... so a track file older than this means no master runs for the node.
inline constexpr double stale_after_s = 3.0;

/// One line of keepalived's vrrp_notify_fifo: `INSTANCE "rampart_vrid51" MASTER 150`.
/// MASTER_PRIORITY / BACKUP_PRIORITY (notify_priority_changes) change the
/// priority only; MASTER_RX_LOWER_PRI is informational.
struct notify_event {
    std::string kind;  ///< INSTANCE or GROUP
    std::string name;  ///< without the quotes
    std::string state; ///< MASTER, BACKUP, FAULT, STOP, DELETED; "" for a priority change
    unsigned priority = 0;
};

/// nullopt for a line that is not a keepalived VRRP notification.
std::optional<notify_event> parse_notify_line(std::string_view line);

/// Canonical text of every address on this host's interfaces (getifaddrs).
std::vector<std::string> local_addresses();

/// Whether this network namespace has the kernel's process events connector,
/// which keepalived's track_process needs (it exists only in the initial
/// network namespace; elsewhere keepalived stays FAULT). nullopt when that
/// cannot be told from here (no CAP_NET_ADMIN to subscribe).
std::optional<bool> process_events_available();

/// The warning for a pair whose track_process cannot work here; "" when it
/// can, or when track_process is off.
std::string track_process_warning(const config::snapshot& cfg);

/// Whether one of `pid_files` names a running keepalived process (its
/// /proc/PID/comm is "keepalived" and it is not a zombie).
bool keepalived_running(const std::vector<std::string>& pid_files);

/// The pid files `node`'s keepalived VRRP process is looked for in: its
/// keepalived_pid_file, or keepalived's defaults.
std::vector<std::string> keepalived_pid_files(const config::ha& h, const std::string& node);

/// Deletes `address` (with its prefix) from interface `ifname` over
/// rtnetlink (needs CAP_NET_ADMIN). Returns "" or the error.
std::string remove_address(const std::string& ifname, const config::network& address);

/// The peer line of a state file: "peer BACKUP vip-not-held 1765000000".
struct peer_line {
    std::string state;
    bool vip_held = false;
    std::int64_t answered = 0;
};
std::optional<peer_line> parse_peer_line(const std::string& line);

/// The wall clock in whole seconds since the epoch: what peer check requests
/// carry and the state file records. Here, not in peer.cpp, so that
/// `rampart ha status` does not pull OpenSSL into the light binary.
std::int64_t unix_seconds();

/// The content of a state file: "MASTER 150". nullopt when malformed.
std::optional<std::pair<std::string, unsigned>> parse_state_line(const std::string& line);

/// `node`'s status from its state and track files and `local` addresses.
node_status read_status(const config::snapshot& cfg, const std::string& node, const std::vector<std::string>& local);

/// Writes "1" (not ready) into `node`'s track file, whole (a temporary file
/// renamed over it), so that keepalived gives up the VIP: what `rampart ha
/// down` does after the master ended, whatever way it ended (the unit's
/// ExecStopPost). Returns "" or the error.
std::string mark_down(const config::snapshot& cfg, const std::string& node);

/// A few aligned lines, one fact each.
std::string format_status(const node_status& s);

} // namespace rampart::ha
