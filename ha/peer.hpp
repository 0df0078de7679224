#pragma once
// The peer check's wire format: each node of the pair asks the other's admin
// listener `GET /api/ha/peer` who holds the VIP. Both sides prove they know
// the pair's secret (ha.peer_check.secret_file) without sending it: the
// request carries an HMAC-SHA256 over the asking node's name, the time and a
// fresh nonce; the answer carries an HMAC over that nonce and the body, so a
// replayed or forged answer does not verify. Pure functions, no I/O.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rampart::ha {

/// The request header that carries the asking node's proof.
inline constexpr std::string_view peer_auth_header = "X-Rampart-Peer";
/// The answer's header: the HMAC over the nonce and the body.
inline constexpr std::string_view peer_mac_header = "X-Rampart-Peer-Mac";
/// A request whose time differs from the answering node's clock by more than
/// this is refused (the two clocks of a pair are expected to be NTP-close).
inline constexpr std::int64_t peer_max_skew_s = 30;

/// What a request's X-Rampart-Peer header says.
struct peer_claim {
    std::string node;      ///< the asking node
    std::int64_t time = 0; ///< its clock, seconds since the epoch
    std::string nonce;     ///< 32 hex digits, fresh for each request
    std::string mac;       ///< 64 hex digits
};

/// HMAC-SHA256 of `message` under `secret`, as 64 lower-case hex digits.
std::string hmac_hex(std::string_view secret, std::string_view message);

/// 32 hex digits from the system's random source.
std::string random_nonce();

/// The header value a node sends: `node=gw1, time=..., nonce=..., mac=...`.
std::string sign_peer_request(std::string_view secret, std::string_view node, std::int64_t time,
                              std::string_view nonce);

/// nullopt when the header is not one sign_peer_request would write.
std::optional<peer_claim> parse_peer_claim(std::string_view header);

/// Why a request is refused ("" when it is accepted): the wrong node, a
/// clock too far apart, or a proof that does not verify.
std::string check_peer_claim(const peer_claim& claim, std::string_view secret, std::string_view expected_node,
                             std::int64_t now);

/// The MAC the answering node puts on its answer to the request with `nonce`.
std::string sign_peer_answer(std::string_view secret, std::string_view nonce, std::string_view body);

/// Constant-time comparison of two MACs.
bool same_mac(std::string_view a, std::string_view b);

/// What an answer says of the answering node.
struct peer_view {
    std::string node;
    std::string state = "unknown"; ///< MASTER, BACKUP, FAULT, STOP or unknown
    bool vip_held = false;
    bool healthy = false;
    unsigned priority = 0;
};

/// The answer's body: one line of JSON.
std::string peer_answer_body(const peer_view& v);

/// nullopt when `body` is not one peer_answer_body would write.
std::optional<peer_view> parse_peer_answer(std::string_view body);

} // namespace rampart::ha
