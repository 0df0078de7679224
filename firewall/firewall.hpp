#pragma once
// The firewall commands behind `rampart firewall ...`: apply, rollback,
// confirm-or-revert, diff, status. Each needs CAP_NET_ADMIN in the caller's
// network namespace, prints to the streams it is given and returns the exit code.
//
// State directory (default /var/lib/rampart/firewall, mode 0700):
//   current.plan, previous.plan   the applied plan and the one before (model.hpp's serialisation)
//   pending/                      while an apply waits for `confirm`: deadline, watcher pid,
//                                 and the current/previous plans to restore on revert
//   reverted                      when and why the last unconfirmed apply was reverted
//   lock                          flock()ed by every command that changes state

#include "firewall/model.hpp"

#include <chrono>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace rampart::firewall {

inline constexpr const char* default_state_dir = "/var/lib/rampart/firewall";

/// Whether this process has CAP_NET_ADMIN in its effective set.
bool has_net_admin();
/// The one message for a missing capability.
inline constexpr const char* needs_net_admin = "needs CAP_NET_ADMIN (run as root)";

struct apply_options {
    std::string state_dir = default_state_dir;
    /// Revert automatically unless `confirm` runs within this window.
    std::optional<std::chrono::milliseconds> confirm;
    /// Test hook: make the kernel refuse the batch (RAMPART_FIREWALL_TEST_REJECT=1).
    bool reject_for_test = false;
    /// The program to start as the revert watcher (`<exe> firewall revert-watch --state-dir DIR`).
    std::string self_exe = "/proc/self/exe";
};

/// Replaces table inet rampart with `rs` in one atomic batch and prints what changed
/// against the previously applied plan. 0 on success, 1 on any failure (old ruleset kept).
int apply(const ruleset& rs, const apply_options& opt, std::ostream& out, std::ostream& err);
/// Restores the previously applied plan, or removes our table if there was none.
int rollback(const std::string& state_dir, std::ostream& out, std::ostream& err);
/// Keeps a pending `apply --confirm`: stops the revert watcher.
int confirm(const std::string& state_dir, std::ostream& out, std::ostream& err);
/// Compares the kernel's table with `rs`: 0 in sync, 1 drift (printed), 2 error.
int diff(const ruleset& rs, std::ostream& out, std::ostream& err);
/// Rules with their counters and set sizes, as text or JSON.
int status(const std::string& state_dir, bool json, std::ostream& out, std::ostream& err);
/// `rampart firewall block/unblock`: addresses into or out of blocklist4/blocklist6.
int block(const std::vector<std::string>& addresses, std::chrono::milliseconds timeout, bool remove, std::ostream& out,
          std::ostream& err);

/// The detached watcher `apply --confirm` starts: waits for the deadline in the
/// pending state, then reverts unless `confirm` removed it. Runs until then.
int revert_watch(const std::string& state_dir);

} // namespace rampart::firewall
