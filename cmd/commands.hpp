// What rampart.cpp shares with the two ways of running the gateway's own
// commands (serve, certs): in-process in rampart-gateway
// (gateway_commands.cpp), or by replacing `rampart` with rampart-gateway
// (exec_gateway.cpp).
#pragma once

#include "config/config.hpp"

#include <string>
#include <vector>

namespace rampart::cmd {

/// Prints why and the usage to stderr; returns the exit code for bad usage (2).
int fail_usage(const std::string& why);
/// Finds "-c FILE" / "--config FILE" in args; empty when absent.
std::string config_path(const std::vector<std::string>& args);
/// Loads the file; every error goes to stderr as file:line:column, and the result is null.
config::snapshot_ptr load_or_report(const std::string& path);

/// Runs `serve` or `certs` (command, then its arguments; argv is main's, for an exec).
int gateway_command(const std::string& command, const std::vector<std::string>& args, char** argv);

} // namespace rampart::cmd
