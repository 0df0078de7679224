#pragma once
// Privilege separation and the service manager (README "Running as a
// service", SECURITY.md "Privilege separation").
//
// The master keeps uid 0 but only the capabilities it uses after start-up;
// a worker ends with no capability at all, as `gateway.user`, behind a
// seccomp filter that allows only the system calls a worker makes. The
// order inside a freshly forked worker matters:
//
//     clear_bounding_set();          // needs CAP_SETPCAP, which setuid() takes away
//     drop to gateway.user;          // setgroups/setgid/setuid (master.cpp)
//     sandbox_worker(mode);          // no capabilities, NO_NEW_PRIVS, seccomp
//
// None of this needs libcap or libsystemd: capabilities are four raw system
// calls (capget/capset, PR_CAPBSET_DROP, PR_CAP_AMBIENT), and sd_notify is
// one datagram.

#include "config/config.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace rampart::gateway {

/// Capability bit (CAP_* number) as a mask.
constexpr std::uint64_t capability_bit(int cap) {
    return std::uint64_t{1} << cap;
}

/// The master's effective set after restrict_master_capabilities():
/// CAP_NET_BIND_SERVICE (listeners added by a reload), CAP_NET_ADMIN (the
/// nftables blocklist), CAP_SETUID and CAP_SETGID (start workers as
/// gateway.user), CAP_KILL (signal workers that run as another user).
std::uint64_t master_effective_capabilities();

/// The master's permitted (and bounding) set: the effective set plus
/// CAP_SETPCAP, kept out of the effective set, which a new worker raises for
/// the moment it takes to empty its own bounding set.
std::uint64_t master_permitted_capabilities();

/// Reduces the master's bounding, permitted and effective sets to the two
/// sets above, clears its inheritable and ambient sets. Call once, after the
/// listening sockets are bound and before the first worker is forked. A
/// no-op (debug log) when the process does not run as root. Throws
/// std::runtime_error if the kernel refuses (start-up only).
///
/// Without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH the master, still uid 0,
/// reads files by their permission bits like any user: it warns about each
/// file of `cfg` (the configuration, certificates, keys) it could not read
/// again on a reload, typically a key owned by another user.
void restrict_master_capabilities(const config::snapshot& cfg);

/// Empties the calling process's capability bounding set while it still can:
/// in a worker right after fork(), before it switches to gateway.user (the
/// switch clears CAP_SETPCAP, which dropping needs). Does nothing when the
/// process holds no CAP_SETPCAP (not started as root). Never throws; a
/// failure is logged and the worker exits, it never serves half-sandboxed.
void clear_bounding_set();

/// Runs in a worker right after it switched to gateway.user: clears every
/// capability set (effective, permitted, inheritable, ambient), keeps
/// NO_NEW_PRIVS, then (unless `mode` is off) installs the seccomp filter of
/// privileges.cpp, whose default action is to kill the worker (enforce) or
/// to let the call through and have the kernel log it (log). Every later
/// system call of the process, and of the threads it starts, goes through
/// the filter. On failure it logs and _exit()s the worker (exit code 70).
/// `serve_files`: the configuration has a static route, so the filter lets
/// the worker open files for reading (openat2, read-only openat) and pread them.
void sandbox_worker(config::seccomp_mode mode, bool serve_files = false);

/// sd_notify(3) without libsystemd: when NOTIFY_SOCKET is set, sends `state`
/// ("READY=1", "STOPPING=1", "STATUS=…", reloading_state()) as one datagram
/// to that AF_UNIX socket ('@' = abstract namespace). Without NOTIFY_SOCKET
/// it does nothing. Never throws and never blocks: a failure is logged.
void notify_systemd(std::string_view state);

/// "RELOADING=1\nMONOTONIC_USEC=<CLOCK_MONOTONIC now>": what the master
/// sends when a configuration reload starts (READY=1 again when it is done).
std::string reloading_state();

} // namespace rampart::gateway
