#pragma once
// The master process: binds the listening sockets, forks the workers (which
// inherit the parsed config, the TLS contexts and the sockets), replaces a
// worker that dies, serves the admin listener, and on SIGTERM/SIGINT drains
// the workers and exits 0. It never touches a client request.

#include "config/config.hpp"

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace rampart::gateway {

/// What the control plane needs from the firewall, filled in by cmd/: the
/// gateway module does not link it.
struct control_links {
    /// Adds addresses to the kernel's blocklist for a time (L7 -> L3
    /// blocking); throws std::exception on failure. Null: nothing is blocked.
    std::function<void(const std::vector<std::string>&, std::chrono::milliseconds)> block;
    /// Whether this process may change the firewall (CAP_NET_ADMIN).
    std::function<bool()> can_block;
};

/// Runs the gateway until SIGTERM/SIGINT. Returns the process exit code.
/// Throws (at start-up only) when certificates, sockets or users are unusable.
int run_master(config::snapshot_ptr cfg, control_links links);

} // namespace rampart::gateway
