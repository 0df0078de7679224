#pragma once
// Role policy: the deployment file -> the lint errors, or the ruleset of one host
// or role. Sans-I/O: no kernel, no files; `plan`, `apply` and the tests all start here.

#include "config/config.hpp"
#include "firewall/model.hpp"

#include <optional>
#include <string>
#include <vector>

namespace rampart::firewall {

/// Whose firewall to build: one host of `servers:` (its own address and port, the
/// other gateway as VRRP peer), or any host of a role (every app port, every gateway).
struct target {
    std::string host;                 ///< a server name, or empty
    std::optional<config::role> role; ///< used when `host` is empty
};

/// Checks the firewall side of a deployment file and returns every problem, each at
/// the file:line:column it comes from: a missing firewall section, an empty admin
/// network list, admin networks SSH can never come from, a host whose address family
/// no admin network covers (SSH cut off), an unknown role in extra_rules, one address
/// in two roles, port clashes with SSH, an app server without a port. Empty = fine.
std::vector<config::error> lint(const config::snapshot& cfg);

/// The result of build(): a ruleset or every reason there is none.
struct plan_result {
    std::optional<ruleset> rules;
    std::vector<config::error> errors;
    explicit operator bool() const { return rules.has_value(); }
};

/// Lints, then derives the ruleset for `who` (see README "Firewall" for the policy).
plan_result build(const config::snapshot& cfg, const target& who);

/// Log prefix of the drop log rule; visible in the kernel log.
inline constexpr const char* drop_log_prefix = "rampart drop: ";

} // namespace rampart::firewall
