#pragma once
// Compressing responses the app server sent uncompressed: the choice of the
// encoding from Accept-Encoding (RFC 9110 12.5.3, q-values), the rules for
// which responses qualify, and a streaming encoder (gzip through zlib,
// brotli through libbrotlienc) that holds only its own state, never the
// body. Sans-I/O: the exchange feeds it the pieces it relays.

#include "config/config.hpp"
#include "gateway/net.hpp"

#include <memory>
#include <string>
#include <string_view>

namespace rampart::gateway {

enum class content_coding { identity, gzip, br };

/// "gzip", "br" or "identity".
const char* to_string(content_coding c);

/// The coding to send for `accept_encoding`: the acceptable coding (q > 0)
/// of `offered` with the highest q, ties to the first in `offered`; gzip
/// also as x-gzip, `*` for anything not named. identity when none is.
content_coding choose_coding(std::string_view accept_encoding, const std::vector<std::string>& offered);

/// Whether `res` (the app server's answer to a request of `method`) may be
/// compressed under `s`, whatever the client accepts: a 200 to a GET (or,
/// for its head fields, a HEAD; a POST's answer may echo its form beside a
/// secret),
/// not already encoded, not a range, no `Cache-Control: no-transform`, a
/// listed type, at least min_size when its length is known, and no
/// Set-Cookie unless s.with_cookies (BREACH).
bool compressible(const http::response_header<>& res, http::verb method, const config::compression& s);

/// Turns `res` into the head of its compressed form: Content-Encoding, no
/// Content-Length (the body's length is not known in advance), a strong
/// ETag made weak (the bytes differ from the uncompressed ones).
void mark_encoded(http::response_header<>& res, content_coding c);

/// Adds Accept-Encoding to Vary (a cache must keep the forms apart), unless
/// it is there or Vary is `*`.
void add_vary_accept_encoding(http::response_header<>& res);

/// A streaming encoder: each encode() appends what the input produced;
/// `flush` makes the encoder give out everything it holds (a piece of a
/// streamed response then reaches the client at once); `last` ends the
/// stream.
class body_encoder {
public:
    body_encoder(content_coding c, const config::compression& s);
    ~body_encoder();
    body_encoder(const body_encoder&) = delete;
    body_encoder& operator=(const body_encoder&) = delete;

    /// Appends the encoding of `in` to `out`; false on an encoder error.
    bool encode(std::string_view in, bool last, std::string& out, bool flush = true);

private:
    struct state;
    std::unique_ptr<state> state_;
};

} // namespace rampart::gateway
