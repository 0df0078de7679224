#pragma once
// The ruleset model as libnftnl objects, and the kernel session that commits and
// dumps them. libnftnl and libmnl stay inside nft.cpp: nothing here names them.
//
// Atomic replace: one batch NEWTABLE, DELTABLE, NEWTABLE, then every set, element,
// chain and rule, sent with one sendmsg(). The kernel applies all of it or none
// of it; a commit is proven only by the generation id changing (a zero ACK is not
// proof: in a rejected batch the last message can still be acked with 0, and a
// batch without its END is acked and then silently aborted), so
// session::commit() reads it before and after.

#include "firewall/model.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace rampart::firewall::nft {

/// Netlink messages between a batch begin and end, ready for one sendmsg().
struct batch {
    std::vector<char> bytes;
    std::map<std::uint32_t, std::string> what; ///< sequence number -> the object it builds
    std::size_t messages = 0;                  ///< without the begin and end markers
};

/// The atomic replace of table inet rampart with `rs`. `reject_for_test` appends one
/// rule the kernel must refuse (a jump to a chain that does not exist), so tests can
/// show a refused batch leaves the old ruleset in force.
batch replace_table(const ruleset& rs, std::uint32_t first_seq, bool reject_for_test = false);
/// Removes table inet rampart if it exists (NEWTABLE then DELTABLE, so never ENOENT).
batch delete_table(std::uint32_t first_seq);

enum class element_op { add, remove };
/// Addresses of one set.
struct element_group {
    std::string set_name;
    std::vector<prefix> elements;
};
/// Adds or removes addresses in existing sets of our table, all in one batch;
/// `timeout_ms` 0 = the set's default. Split into messages under 64 KiB each.
batch set_elements(const std::vector<element_group>& groups, std::uint64_t timeout_ms, element_op op,
                   std::uint32_t first_seq);

/// Parses every message of a batch back into libnftnl objects and renders each one
/// as canonical lines (libnftnl's own expression printer for rules). Used by diff
/// for the plan side and by the round-trip tests.
std::vector<std::string> parse_batch(const batch& b);
/// The canonical lines diff expects the kernel's table to show for `rs`.
std::vector<std::string> canonical(const ruleset& rs);

/// One rule as the kernel holds it.
struct kernel_rule {
    std::string chain;
    std::uint64_t handle = 0;
    std::string comment; ///< from the rule's userdata; empty for rules added by hand without one
    std::string text;    ///< libnftnl's rendering of its expressions, counters zeroed
    std::uint64_t packets = 0;
    std::uint64_t bytes = 0;
};

struct kernel_set {
    std::string name;
    std::uint32_t flags = 0;
    std::size_t elements = 0; ///< addresses or networks (interval end markers not counted)
};

/// What the kernel holds in table inet rampart.
struct kernel_table {
    bool exists = false;
    std::vector<std::string> canonical; ///< comparable with canonical(ruleset)
    std::vector<kernel_rule> rules;
    std::vector<kernel_set> sets;
};

/// A netfilter netlink socket in the caller's network namespace. Throws
/// std::runtime_error with a readable message on any failure.
class session {
public:
    session();
    ~session();
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    /// The next free sequence number for a batch.
    std::uint32_t next_seq() { return seq_; }
    /// The ruleset generation id (NFT_MSG_GETGEN).
    std::uint32_t generation();
    /// Sends `b` in one sendmsg() and proves the commit by the generation id; throws
    /// with the failing object named (via its sequence number) if the kernel refused it.
    void commit(const batch& b);
    /// Dumps table inet rampart (chains, sets, rules, and elements of every set).
    kernel_table dump();
    /// The elements of one set of our table with their remaining timeouts
    /// (empty when the table or the set does not exist). Cheaper than dump()
    /// when only the blocklist must be carried across a re-apply.
    std::vector<std::pair<prefix, std::uint64_t>> timed_elements(const std::string& set_name);

private:
    struct impl;
    std::unique_ptr<impl> impl_;
    std::uint32_t seq_;
};

} // namespace rampart::firewall::nft
