#include "gateway/proxy/proxy_protocol.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace rampart::gateway;
using proxy_protocol::outcome;

namespace {

std::vector<unsigned char> bytes(std::string_view s) {
    return {s.begin(), s.end()};
}

proxy_protocol::result parse(const std::vector<unsigned char>& b) {
    return proxy_protocol::parse(b);
}

/// A v2 header: signature, version/command, family/transport, length, then `block`.
std::vector<unsigned char> v2(unsigned char ver_cmd, unsigned char fam, const std::vector<unsigned char>& block) {
    std::vector<unsigned char> out = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    out.push_back(ver_cmd);
    out.push_back(fam);
    out.push_back(static_cast<unsigned char>(block.size() >> 8));
    out.push_back(static_cast<unsigned char>(block.size() & 0xff));
    out.insert(out.end(), block.begin(), block.end());
    return out;
}

const std::vector<unsigned char> v4_block = {198, 51, 100, 7, 192, 0, 2, 10, 0xc3, 0x50, 0x01, 0xbb}; // :50000 -> :443

} // namespace

TEST_CASE("PROXY v1: TCP4 and TCP6, with what follows left alone", "[unit][gateway][proxy_protocol]") {
    const std::string line = "PROXY TCP4 198.51.100.7 192.0.2.10 50000 443\r\n";
    auto r = parse(bytes(line + "\x16\x03\x01"));
    REQUIRE(r.what == outcome::header);
    CHECK(r.version == 1);
    CHECK(r.length == line.size());
    CHECK_FALSE(r.local);
    CHECK(r.source.to_string() == "198.51.100.7");
    CHECK(r.source_port == 50000);

    r = parse(bytes("PROXY TCP6 2001:db8::7 2001:db8::10 65535 443\r\n"));
    REQUIRE(r.what == outcome::header);
    CHECK(r.source.to_string() == "2001:db8::7");
    CHECK(r.source_port == 65535);

    r = parse(bytes("PROXY UNKNOWN\r\n"));
    REQUIRE(r.what == outcome::header);
    CHECK(r.local);
    r = parse(bytes("PROXY UNKNOWN ffff:f...f:ffff 2001:db8::10 65535 443\r\n"));
    CHECK((r.what == outcome::header && r.local));
}

TEST_CASE("PROXY v1: a valid beginning asks for more; every prefix of a header does",
          "[unit][gateway][proxy_protocol]") {
    const std::string line = "PROXY TCP4 198.51.100.7 192.0.2.10 50000 443\r\n";
    for (std::size_t n = 1; n < line.size(); ++n) {
        INFO(n);
        CHECK(parse(bytes(line.substr(0, n))).what == outcome::need_more);
    }
    CHECK(parse({}).what == outcome::need_more);
}

TEST_CASE("PROXY v1: broken lines are refused", "[unit][gateway][proxy_protocol]") {
    for (const char* bad : {
             "GET / HTTP/1.1\r\n",                                 // not a PROXY header
             "PROXY TCP4 198.51.100.7 192.0.2.10 50000\r\n",       // a port missing
             "PROXY TCP4 198.51.100.7 192.0.2.10 50000 443 x\r\n", // a field too many
             "PROXY TCP4  198.51.100.7 192.0.2.10 50000 443\r\n",  // two spaces
             "PROXY TCP4 198.51.100.7 192.0.2.10 50000 443 \r\n",  // a trailing space
             "PROXY TCP4 2001:db8::7 192.0.2.10 50000 443\r\n",    // an IPv6 address in TCP4
             "PROXY TCP6 198.51.100.7 2001:db8::10 50000 443\r\n", // and the other way round
             "PROXY TCP4 198.51.100.7 192.0.2.10 65536 443\r\n",   // port out of range
             "PROXY TCP4 198.51.100.7 192.0.2.10 050000 443\r\n",  // leading zero
             "PROXY TCP4 198.51.100.7 192.0.2.10 -1 443\r\n",      // sign
             "PROXY UDP4 198.51.100.7 192.0.2.10 50000 443\r\n",   // not TCP
             "PROXY TCP4 198.51.100.7\n192.0.2.10 50000 443\r\n",  // bare LF
             "PROXY TCP4 198.051.100.7 192.0.2.10 50000 443\r\n",  // not inet_pton's form
         }) {
        INFO(bad);
        CHECK(parse(bytes(bad)).what == outcome::invalid);
    }
    // No CRLF within 107 bytes.
    CHECK(parse(bytes("PROXY TCP6 " + std::string(120, 'a'))).what == outcome::invalid);
    CHECK(parse(bytes("PROXY TCP6 " + std::string(95, 'a'))).what == outcome::need_more);
}

TEST_CASE("PROXY v2: PROXY over IPv4 and IPv6, LOCAL, TLVs skipped", "[unit][gateway][proxy_protocol]") {
    auto h = v2(0x21, 0x11, v4_block);
    h.insert(h.end(), {0x16, 0x03, 0x01}); // the TLS ClientHello that follows
    auto r = parse(h);
    REQUIRE(r.what == outcome::header);
    CHECK(r.version == 2);
    CHECK(r.length == 16 + 12);
    CHECK(r.source.to_string() == "198.51.100.7");
    CHECK(r.source_port == 50000);

    std::vector<unsigned char> block6(36, 0);
    block6[0] = 0x20, block6[1] = 0x01, block6[2] = 0x0d, block6[3] = 0xb8, block6[15] = 7;
    block6[32] = 0x01, block6[33] = 0x02;
    // Two TLVs after the addresses (ALPN "h2", a NOOP): skipped with the length.
    block6.insert(block6.end(), {0x01, 0x00, 0x02, 'h', '2', 0x04, 0x00, 0x00});
    r = parse(v2(0x21, 0x21, block6));
    REQUIRE(r.what == outcome::header);
    CHECK(r.length == 16 + 44);
    CHECK(r.source.to_string() == "2001:db8::7");
    CHECK(r.source_port == 258);

    r = parse(v2(0x20, 0x00, {})); // LOCAL: the balancer's own health check
    REQUIRE(r.what == outcome::header);
    CHECK(r.local);
    r = parse(v2(0x21, 0x00, {})); // PROXY with UNSPEC: addresses unknown
    CHECK((r.what == outcome::header && r.local));
}

TEST_CASE("PROXY v2: truncated asks for more; wrong signature, version, command, family, size are refused",
          "[unit][gateway][proxy_protocol]") {
    const auto h = v2(0x21, 0x11, v4_block);
    for (std::size_t n = 1; n < h.size(); ++n) {
        INFO(n);
        CHECK(parse(std::vector<unsigned char>(h.begin(), h.begin() + static_cast<std::ptrdiff_t>(n))).what ==
              outcome::need_more);
    }
    auto bad_signature = h;
    bad_signature[7] = 'X';
    CHECK(parse(bad_signature).what == outcome::invalid);
    CHECK(parse(v2(0x11, 0x11, v4_block)).what == outcome::invalid);  // version 1 in a v2 header
    CHECK(parse(v2(0x22, 0x11, v4_block)).what == outcome::invalid);  // command 2
    CHECK(parse(v2(0x21, 0x12, v4_block)).what == outcome::invalid);  // UDP
    CHECK(parse(v2(0x21, 0x31, v4_block)).what == outcome::invalid);  // AF_UNIX
    CHECK(parse(v2(0x21, 0x11, {1, 2, 3})).what == outcome::invalid); // shorter than its addresses
    CHECK(parse(v2(0x21, 0x21, v4_block)).what == outcome::invalid);  // IPv6 with an IPv4-sized block
    // Oversized: the length field alone decides, before the bytes arrive.
    auto big = v2(0x21, 0x11, v4_block);
    big[14] = 0x02, big[15] = 0x10; // 528 + 16 > 536
    CHECK(parse(std::vector<unsigned char>(big.begin(), big.begin() + 16)).what == outcome::invalid);
    CHECK(parse(bytes("\x16\x03\x01\x02\x00")).what == outcome::invalid); // a TLS ClientHello without a header
}

TEST_CASE("PROXY v1: a whole line is held to the characters its beginning is", "[unit][gateway][proxy_protocol]") {
    // Found by fuzz_proxy_protocol: UNKNOWN's rest with bytes above 0x7e was
    // accepted whole but refused as a beginning.
    CHECK(parse(bytes("PROXY UNKNOWN \xd8\xcd\r\n")).what == outcome::invalid);
    CHECK(parse(bytes("PROXY UNKNOWN \xd8\xcd")).what == outcome::invalid);
    CHECK(parse(bytes("PROXY UNKNOWN x\r y\r\n")).what == outcome::invalid);
    CHECK(parse(bytes("PROXY UNKNOWN anything printable\r\n")).what == outcome::header);
}
