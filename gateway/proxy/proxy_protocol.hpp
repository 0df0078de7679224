#pragma once
// The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2)
// that a layer-4 balancer or a CDN in front of the gateway sends before the
// client's first byte, saying whose connection it relays. Sans-I/O: parse()
// looks at the bytes received so far and says whether they are a whole
// header (and how long it is), a valid beginning, or not a PROXY header.
//
// Only a peer in gateway.trusted_proxies may send one (the accept path
// checks that before reading); what is accepted here is exactly what the
// specification allows: v1 "PROXY TCP4|TCP6|UNKNOWN ..." CRLF within 107
// bytes, v2 with its 12-byte signature, version 2, command LOCAL or PROXY,
// TCP over IPv4 or IPv6 (or UNSPEC with LOCAL), TLVs skipped, the whole
// header within max_header bytes.

#include "gateway/shared_state.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace rampart::gateway::proxy_protocol {

constexpr std::size_t v1_max = 107;     ///< the specification's bound, CRLF included
constexpr std::size_t max_header = 536; ///< v2: 16 + addresses + TLVs; what a balancer sends fits easily

enum class outcome {
    need_more, ///< a valid beginning: read more (the header is longer)
    header,    ///< a whole header of `length` bytes
    invalid    ///< not a PROXY header, or a broken one (`error` says why)
};

struct result {
    outcome what = outcome::need_more;
    std::size_t length = 0; ///< header bytes to consume (what == header)
    /// The connection is the balancer's own (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC):
    /// keep the peer's address.
    bool local = false;
    client_address source; ///< the client's address (unless local)
    std::uint16_t source_port = 0;
    int version = 0; ///< 1 or 2 once known
    std::string_view error;
};

/// Parses the start of a connection's bytes.
result parse(std::span<const unsigned char> data);

} // namespace rampart::gateway::proxy_protocol
