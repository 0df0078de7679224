#pragma once
// The master process: binds the listening sockets, forks the workers (which
// inherit the parsed config, the TLS contexts and the sockets), replaces a
// worker that dies, serves the admin listener, and on SIGTERM/SIGINT drains
// the workers and exits 0. It never touches a client request.

#include "config/config.hpp"

namespace rampart::gateway {

/// Runs the gateway until SIGTERM/SIGINT. Returns the process exit code.
/// Throws (at start-up only) when certificates, sockets or users are unusable.
int run_master(config::snapshot_ptr cfg);

}  // namespace rampart::gateway
