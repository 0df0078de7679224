// libFuzzer target: the PROXY protocol header parser (gateway/proxy/proxy_protocol.cpp).
//
// The input is the start of a connection. parse() promises to read only the
// bytes it is given, to call a header whole only within the specification's
// bounds (107 bytes for v1, 536 for v2) and only when every shorter prefix of
// it was a valid beginning, and to answer the same for the header alone as
// for the header with anything after it (what follows belongs to TLS). The
// harness traps when a promise breaks; memory errors trap through ASan.

#include "gateway/proxy/proxy_protocol.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>

namespace {

using namespace rampart::gateway;
using proxy_protocol::outcome;

[[noreturn]] void violated(const char* what) {
    std::fprintf(stderr, "fuzz_proxy_protocol: invariant violated: %s\n", what);
    __builtin_trap();
}

void require(bool ok, const char* what) {
    if (!ok) {
        violated(what);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const unsigned char> all(data, size);
    const auto r = proxy_protocol::parse(all);
    if (r.what == outcome::need_more) {
        require(size < proxy_protocol::max_header, "more asked for past the largest header");
        require(r.version != 1 || size < proxy_protocol::v1_max, "more asked for past a v1 line's bound");
        return 0;
    }
    if (r.what == outcome::invalid) {
        require(!r.error.empty(), "refused without a reason");
        return 0;
    }
    require(r.length > 0 && r.length <= size, "a header longer than the bytes");
    require(r.length <= proxy_protocol::max_header, "a header past its bound");
    require(r.version == 1 || r.version == 2, "a header of no version");
    require(r.version != 1 || r.length <= proxy_protocol::v1_max, "a v1 line past 107 bytes");
    const auto alone = proxy_protocol::parse(all.first(r.length));
    require(alone.what == outcome::header && alone.length == r.length && alone.local == r.local &&
                alone.source.hi == r.source.hi && alone.source.lo == r.source.lo && alone.source_port == r.source_port,
            "the header alone parses differently from the header with what follows");
    for (std::size_t n = 0; n < r.length; ++n) {
        require(proxy_protocol::parse(all.first(n)).what == outcome::need_more,
                "a prefix of a whole header was not a valid beginning");
    }
    return 0;
}
