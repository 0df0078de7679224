#include "gateway/proxy/proxy_protocol.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string>

namespace rampart::gateway::proxy_protocol {
namespace {

constexpr unsigned char v2_signature[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
constexpr std::string_view v1_prefix = "PROXY ";

result invalid(std::string_view why, int version = 0) {
    result r;
    r.what = outcome::invalid;
    r.error = why;
    r.version = version;
    return r;
}

/// True when `data` is a prefix of `whole` (or the other way round).
bool agrees(std::span<const unsigned char> data, const unsigned char* whole, std::size_t n) {
    return std::memcmp(data.data(), whole, std::min(data.size(), n)) == 0;
}

/// A v1 port: 1 to 5 digits, no leading zero, at most 65535.
bool port_value(std::string_view s, std::uint16_t& out) {
    if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) {
        return false;
    }
    unsigned v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end != s.data() + s.size() || v > 65535) {
        return false;
    }
    out = static_cast<std::uint16_t>(v);
    return true;
}

/// A v1 address of `family` in canonical text form (inet_pton's).
bool address_value(std::string_view s, int family, client_address& out) {
    if (s.empty() || s.size() >= 46) {
        return false;
    }
    char text[46] = {};
    std::memcpy(text, s.data(), s.size());
    unsigned char bytes[16] = {};
    if (family == AF_INET) {
        unsigned char v4[4];
        if (::inet_pton(AF_INET, text, v4) != 1) {
            return false;
        }
        bytes[10] = bytes[11] = 0xff;
        std::memcpy(bytes + 12, v4, 4);
    } else if (::inet_pton(AF_INET6, text, bytes) != 1) {
        return false;
    }
    out = client_address::from_bytes(bytes);
    return true;
}

result parse_v1(std::span<const unsigned char> data) {
    const std::string_view text(reinterpret_cast<const char*>(data.data()), std::min(data.size(), v1_max));
    const auto crlf = text.find("\r\n");
    if (crlf == std::string_view::npos) {
        if (data.size() >= v1_max) {
            return invalid("a PROXY v1 line longer than 107 bytes", 1);
        }
        // Only the characters a v1 line can hold, so that garbage is refused early.
        for (const char c : text) {
            if (c != '\r' && (c < 0x20 || c > 0x7e)) {
                return invalid("a PROXY v1 line with a control character", 1);
            }
        }
        result r;
        r.version = 1;
        return r;
    }
    // Printable ASCII only, UNKNOWN's ignored rest included: a whole line is
    // refused exactly when some prefix of it would have been.
    for (const char c : text.substr(0, crlf)) {
        if (c < 0x20 || c > 0x7e) {
            return invalid("a PROXY v1 line with a control character", 1);
        }
    }
    const std::string_view line = text.substr(v1_prefix.size(), crlf - v1_prefix.size());
    result r;
    r.version = 1;
    r.length = crlf + 2;
    if (line.starts_with("UNKNOWN")) {
        // "PROXY UNKNOWN" and anything up to CRLF: the receiver ignores the rest.
        r.what = outcome::header;
        r.local = true;
        return r;
    }
    // Exactly five fields, one space apart.
    std::string_view parts[5];
    std::size_t n = 0;
    std::string_view rest = line;
    for (;;) {
        const auto sp = rest.find(' ');
        if (n == 5 || (sp == 0)) {
            return invalid("a PROXY v1 line without exactly protocol, two addresses and two ports", 1);
        }
        parts[n++] = rest.substr(0, sp);
        if (sp == std::string_view::npos) {
            break;
        }
        rest.remove_prefix(sp + 1);
    }
    if (n != 5 || parts[4].empty()) {
        return invalid("a PROXY v1 line without exactly protocol, two addresses and two ports", 1);
    }
    const int family = parts[0] == "TCP4" ? AF_INET : parts[0] == "TCP6" ? AF_INET6 : 0;
    if (family == 0) {
        return invalid("a PROXY v1 protocol other than TCP4, TCP6 or UNKNOWN", 1);
    }
    client_address destination;
    std::uint16_t destination_port = 0;
    if (!address_value(parts[1], family, r.source) || !address_value(parts[2], family, destination)) {
        return invalid("a PROXY v1 address that is not of its protocol", 1);
    }
    if (!port_value(parts[3], r.source_port) || !port_value(parts[4], destination_port)) {
        return invalid("a PROXY v1 port that is not a number from 0 to 65535", 1);
    }
    r.what = outcome::header;
    return r;
}

result parse_v2(std::span<const unsigned char> data) {
    if (data.size() < 16) {
        result r;
        r.version = 2;
        return r;
    }
    const unsigned version = data[12] >> 4;
    const unsigned command = data[12] & 0x0f;
    if (version != 2) {
        return invalid("a PROXY v2 header of another version", 2);
    }
    if (command > 1) {
        return invalid("a PROXY v2 command other than LOCAL or PROXY", 2);
    }
    const unsigned family = data[13] >> 4;
    const unsigned transport = data[13] & 0x0f;
    const std::size_t length = (static_cast<std::size_t>(data[14]) << 8) | data[15];
    if (16 + length > max_header) {
        return invalid("a PROXY v2 header longer than 536 bytes", 2);
    }
    if (data.size() < 16 + length) {
        result r;
        r.version = 2;
        return r;
    }
    result r;
    r.version = 2;
    r.length = 16 + length;
    if (command == 0 || family == 0) {
        // LOCAL (a health check of the balancer itself), or a connection
        // whose addresses it does not know: the peer's own address stands.
        r.what = outcome::header;
        r.local = true;
        return r;
    }
    if (transport != 1) {
        return invalid("a PROXY v2 transport other than TCP", 2);
    }
    unsigned char bytes[16] = {};
    const unsigned char* a = data.data() + 16;
    if (family == 1) {
        if (length < 12) {
            return invalid("a PROXY v2 IPv4 block shorter than its addresses", 2);
        }
        bytes[10] = bytes[11] = 0xff;
        std::memcpy(bytes + 12, a, 4);
        r.source_port = static_cast<std::uint16_t>((a[8] << 8) | a[9]);
    } else if (family == 2) {
        if (length < 36) {
            return invalid("a PROXY v2 IPv6 block shorter than its addresses", 2);
        }
        std::memcpy(bytes, a, 16);
        r.source_port = static_cast<std::uint16_t>((a[32] << 8) | a[33]);
    } else {
        return invalid("a PROXY v2 address family other than IPv4 or IPv6", 2);
    }
    r.source = client_address::from_bytes(bytes);
    r.what = outcome::header;
    return r;
}

} // namespace

result parse(std::span<const unsigned char> data) {
    if (data.empty()) {
        return {};
    }
    if (data[0] == 'P') {
        if (!agrees(data, reinterpret_cast<const unsigned char*>(v1_prefix.data()), v1_prefix.size())) {
            return invalid("not a PROXY protocol header");
        }
        if (data.size() <= v1_prefix.size()) {
            result r;
            r.version = 1;
            return r;
        }
        return parse_v1(data);
    }
    if (!agrees(data, v2_signature, sizeof v2_signature)) {
        return invalid("not a PROXY protocol header");
    }
    return parse_v2(data);
}

} // namespace rampart::gateway::proxy_protocol
