#pragma once
// The ruleset model: what Rampart programs into its one nftables table, as plain
// values. The policy builds it from the configuration (policy.hpp); it is rendered
// as nft syntax for `plan` (render_nft), turned into one libnftnl batch for `apply`
// (nft.hpp), and serialised into the state directory so an earlier plan can be
// re-applied by `rollback` and by the confirm-or-revert watchdog.
//
// Only the few rule shapes the policy uses exist here, each with a fixed order of
// matches; that order is also nft's own, so the plan text, the libnftnl expressions
// and the kernel's dump of them line up one to one.

#include "config/config.hpp"

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rampart::firewall {

/// The table Rampart owns: `table inet rampart`. Nothing else is ever touched.
inline constexpr const char* table_name = "rampart";

enum class family { ipv4, ipv6 };

/// An address or network of one family; `length` is the prefix length.
struct prefix {
    family fam = family::ipv4;
    std::array<std::uint8_t, 16> bytes{}; ///< network order; only the first 4 for IPv4
    unsigned length = 32;

    unsigned size() const { return fam == family::ipv4 ? 4 : 16; }
    unsigned max_length() const { return fam == family::ipv4 ? 32 : 128; }
    bool is_host() const { return length == max_length(); }
    /// "198.51.100.0/24", or "192.0.2.1" for a single address.
    std::string to_string() const;
    /// The last address of the network, same family.
    prefix last() const;
    /// Parses what prefix::to_string() prints (and any CIDR or address); nullopt if invalid.
    static std::optional<prefix> parse(const std::string& text);
    friend bool operator==(const prefix&, const prefix&) = default;
    friend auto operator<=>(const prefix&, const prefix&) = default;
    /// True when `other` lies entirely inside this network (same family).
    bool contains(const prefix& other) const;
};

/// A named set of the table.
struct set {
    std::string name;
    family fam = family::ipv4;
    bool interval = false;        ///< elements are CIDR networks (`flags interval`)
    bool timeout = false;         ///< elements may carry timeouts (`flags timeout`)
    bool dynamic = false;         ///< filled by rules at run time (`flags dynamic`): a meter
    std::uint64_t timeout_ms = 0; ///< default element timeout, 0 = none
    std::uint32_t size = 0;       ///< size hint and cap, 0 = none
    std::vector<prefix> elements; ///< sorted, no element inside another
    std::string comment;          ///< why the set exists; shown in the plan only
    /// Run-time elements (the blocklist's) carried across a re-apply with
    /// their remaining timeout in ms (0 = none). Never part of a plan: set
    /// only on the copy that is programmed.
    std::vector<std::pair<prefix, std::uint64_t>> carried;

    friend bool operator==(const set&, const set&) = default;
};

enum class verdict { none, accept, drop };

enum class rate_unit { second, minute, hour };

/// `limit rate [over] N/unit burst B packets`
struct limit {
    std::uint64_t rate = 1;
    rate_unit unit = rate_unit::second;
    std::uint64_t burst = 5;
    bool over = false;
    friend bool operator==(const limit&, const limit&) = default;
};

/// `ip saddr @set` / `ip6 saddr @set`
struct source_in_set {
    family fam = family::ipv4;
    std::string set;
    friend bool operator==(const source_in_set&, const source_in_set&) = default;
};

/// `icmp type T` / `icmpv6 type T`
struct icmp_match {
    family fam = family::ipv4;
    std::uint8_t type = 0;
    friend bool operator==(const icmp_match&, const icmp_match&) = default;
};

/// `update @set { ip saddr limit rate over ... }`: a per-source meter.
struct meter {
    family fam = family::ipv4;
    std::string set;
    limit per_source;
    friend bool operator==(const meter&, const meter&) = default;
};

/// ct state bits as the kernel's NF_CT_STATE_* (host order).
inline constexpr std::uint32_t ct_invalid = 1;
inline constexpr std::uint32_t ct_established = 2;
inline constexpr std::uint32_t ct_related = 4;
inline constexpr std::uint32_t ct_new = 8;

inline constexpr std::uint8_t proto_icmp = 1;
inline constexpr std::uint8_t proto_tcp = 6;
inline constexpr std::uint8_t proto_udp = 17;
inline constexpr std::uint8_t proto_icmpv6 = 58;
inline constexpr std::uint8_t proto_vrrp = 112;

/// One rule. Matches apply in the order of the fields; a counter is always there.
struct rule {
    std::uint32_t ct_state = 0; ///< `ct state ...` (any of the bits), 0 = no match
    bool iif_loopback = false;  ///< `iif "lo"` (lo is ifindex 1 in every namespace)
    std::optional<source_in_set> source;
    std::optional<std::uint8_t> l4proto; ///< `tcp`/`udp` with dport, else `meta l4proto N`
    std::optional<std::uint16_t> dport;  ///< needs l4proto tcp or udp
    std::optional<icmp_match> icmp;
    std::optional<std::uint8_t> hoplimit; ///< `ip6 hoplimit N` (after an icmpv6 match)
    std::optional<meter> per_source;
    std::optional<limit> rate_limit;
    std::optional<std::string> log_prefix; ///< `log prefix "..."`
    verdict action = verdict::none;
    std::string comment; ///< names the rule in status and errors

    friend bool operator==(const rule&, const rule&) = default;
};

enum class hook { prerouting, input };

struct chain {
    std::string name;
    hook at = hook::input;
    int priority = 0; ///< -300 = raw, 0 = filter
    verdict policy = verdict::accept;
    std::vector<rule> rules;
    friend bool operator==(const chain&, const chain&) = default;
};

/// The whole content of `table inet rampart`.
struct ruleset {
    std::string description; ///< e.g. "host gw1 (gateway)"; a comment in the plan
    std::vector<set> sets;
    std::vector<chain> chains;

    const set* find_set(const std::string& name) const;
    friend bool operator==(const ruleset&, const ruleset&) = default;
};

/// The ruleset in nft syntax: a complete `table inet rampart { ... }` that
/// `nft -c -f` accepts and that programs exactly what apply programs.
std::string render_nft(const ruleset& rs);
/// One rule in nft syntax, without the trailing comment (for messages and diffs).
std::string render_rule(const rule& r);

/// Serialises a ruleset for the state directory (a line-oriented text format of our own).
std::string serialise(const ruleset& rs);
/// Reads what serialise() wrote; nullopt (and `why`) if it is damaged.
std::optional<ruleset> deserialise(const std::string& text, std::string* why = nullptr);

/// What changed from `before` to `after`, one line per set, element or rule added or
/// removed ("+ rule input: tcp dport 443 counter accept"); empty when equal.
std::vector<std::string> changes(const ruleset& before, const ruleset& after);

const char* icmp_type_name(family fam, std::uint8_t type);
const char* to_string(rate_unit u);

} // namespace rampart::firewall
