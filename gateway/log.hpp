#pragma once
// Minimal structured logging to stderr: one line per event, with time, pid and
// level. Never pass secrets (keys, tokens, bodies) to it.

#include <exception>
#include <string_view>

namespace rampart::gateway {

enum class log_level { debug, info, warn, error };

/// Lines below this level are dropped (default: info; RAMPART_LOG=debug lowers it).
void set_log_level(log_level l);
bool log_enabled(log_level l);
void log(log_level l, std::string_view message);
/// Logs what `e` holds (nothing when it is null) as an error: `what` and the
/// exception's message.
void log_exception(std::string_view what, std::exception_ptr e);

/// A co_spawn completion handler that logs an exception the coroutine let
/// out, where net::detached would swallow it: co_spawn(io, f(), log_failure{"admin: "}).
struct log_failure {
    const char* what;
    void operator()(std::exception_ptr e) const { log_exception(what, e); }
};

} // namespace rampart::gateway
