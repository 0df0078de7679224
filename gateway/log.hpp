#pragma once
// Minimal structured logging to stderr: one line per event, with time, pid and
// level. Never pass secrets (keys, tokens, bodies) to it.

#include <string_view>

namespace rampart::gateway {

enum class log_level { debug, info, warn, error };

/// Lines below this level are dropped (default: info; RAMPART_LOG=debug lowers it).
void set_log_level(log_level l);
bool log_enabled(log_level l);
void log(log_level l, std::string_view message);

}  // namespace rampart::gateway
