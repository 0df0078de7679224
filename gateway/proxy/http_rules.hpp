#pragma once
// Header rules applied between client and upstream. Pure functions on Beast
// headers: no I/O, unit-testable.

#include "config/config.hpp"
#include "gateway/net.hpp"
#include "gateway/shared_state.hpp"

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rampart::gateway {

/// What the gateway knows about the client side of a request.
struct client_info {
    std::string address; ///< peer IP, no port ("192.0.2.7", "2001:db8::1")
    bool tls = true;
    /// The request came from a trusted proxy (gateway.trusted_proxies) with
    /// this address: its X-Forwarded-For chain is kept and this appended.
    /// "" (the usual): forwarding fields from the client are replaced.
    std::string via;
};

/// The client a trusted proxy forwards for: walking the X-Forwarded-For
/// fields from the right, the first address that is not in `trusted`
/// (proxies in a chain add themselves on the right). "" when there is no
/// such field, or an element that is not an IP address comes first (the
/// chain is not to be believed past it) and no untrusted address was seen.
std::string client_from_forwarded_for(const http::fields& f, const network_set& trusted);

/// Why a request is refused before it reaches a backend.
struct rejection {
    http::status status;
    std::string reason;
};

/// Checks the raw request head (request line, header fields and the final
/// empty line, exactly as received) for what Beast's parser accepts
/// silently or normalises away, and for everything a parser behind the
/// gateway could read differently: a method that is not a token, single SP
/// separators, a target of visible ASCII without '#', "HTTP/" DIGIT "."
/// DIGIT (another version than 1.0 or 1.1 → 505), lines ending in CRLF only
/// (no bare CR, no bare LF), no obsolete line folding, field names made of
/// token characters directly followed by ':', field values without control
/// characters (HTAB and obs-text allowed). Bytes after the empty line are
/// not looked at; a head that ends early is refused (400) unless an earlier
/// byte already broke a rule, so a partial head that Beast refused can be
/// checked too, for the better status. One linear pass, no allocation
/// unless the request is refused.
std::optional<rejection> check_raw_header(std::string_view header_bytes);

/// True when the chunk extensions Beast hands to a parser's on_chunk_header
/// callback (the raw text between the chunk size and its CRLF) hold no
/// control character: Beast checks their syntax but lets a quoted string
/// carry any byte, a bare LF included.
bool valid_chunk_extensions(std::string_view extensions);

/// Checks the parsed request head for what a raw scan cannot see, and
/// normalises it for the upstream. Refused: a version other than 1.0 or 1.1
/// (505), more fields than `max_fields` (431), CONNECT (405), a method
/// Beast does not know (501: it could be a case variant such as "head" that
/// the app server reads as a known one), a missing (HTTP/1.1) or repeated
/// Host, a Host that is not host[:port]; a Content-Length that is not
/// plain digits or appears twice, Content-Length together with
/// Transfer-Encoding, a Transfer-Encoding other than exactly one final
/// "chunked", any Transfer-Encoding in HTTP/1.0, a field named like a
/// framing field with '_' for '-' (Content_Length, Transfer_Encoding); a
/// target other than origin form ("/..."), "*" for OPTIONS, or absolute
/// form ("http[s]://authority/...") whose authority is the Host field
/// (case-insensitive, default port of the scheme when none is given), which
/// is then rewritten to origin form. Transfer-Encoding is rewritten as
/// "chunked" and Content-Length without leading zeros, so the upstream
/// reads the framing the gateway read. nullopt when the request may be
/// forwarded.
std::optional<rejection> validate_request(http::request_header<>& h, unsigned max_fields);

/// Removes hop-by-hop fields: Connection and every field it names,
/// Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade, Proxy-Authorization,
/// Proxy-Authenticate. Transfer-Encoding and Content-Length are left to the
/// parser/serializer pair, which own message framing.
void strip_hop_by_hop(http::fields& f);

/// Prepares a parsed client request for the upstream: hop-by-hop fields
/// removed, client-supplied X-Forwarded-* / Forwarded / X-Real-IP dropped and
/// set from what the gateway saw, Expect removed (the gateway answers 100
/// itself), HTTP/1.1 with keep-alive towards the upstream.
/// An HTTP/1.0 request without Host gets `default_host` (the site).
void rewrite_request(http::request_header<>& h, const client_info& client, std::string_view default_host = {});

/// Prepares an upstream response for the client: hop-by-hop fields removed,
/// Strict-Transport-Security set when `hsts_value` is non-empty, keep-alive
/// as decided for the client connection.
void rewrite_response(http::response_header<>& h, std::string_view hsts_value, bool client_keep_alive,
                      unsigned client_version);

/// The value of a `Forwarded` element for `client`: for=...;proto=...;host=...
std::string forwarded_value(const client_info& client, std::string_view host);

/// The https URL a plain-HTTP request is redirected to. `host_header` may
/// carry a port, which is replaced by `https_port` (omitted when 443).
/// `fallback_host` (the site) is used when the Host field is missing or not a
/// valid host name. nullopt for a target that is not in origin form.
std::optional<std::string> https_location(std::string_view host_header, std::string_view target,
                                          std::uint16_t https_port, std::string_view fallback_host);

/// A small complete response with a text body; `close` adds Connection: close.
http::response<http::string_body> make_error_response(http::status status, unsigned version,
                                                      std::string_view hsts_value, bool close);

/// Adds each (name, value) the message does not already carry: security
/// headers the application did not set itself (its own choice wins).
void add_missing_headers(http::fields& f, const std::vector<std::pair<std::string, std::string>>& headers);

/// A route's header rules: each `set` field replaces any of its name, then
/// each `remove` field goes (config refuses the gateway's own fields).
void apply_header_rules(http::fields& f, const config::header_rules& rules);

/// The fields of a header in order, taken before a chunked body is read.
using field_snapshot = std::vector<std::pair<std::string, std::string>>;
field_snapshot snapshot_fields(const http::fields& f);
/// Beast's parser adds a chunked message's trailer fields to its header (next
/// to fields of the same name). Trailers are neither validated nor
/// rewritten, so they are dropped: `f` goes back to `saved` when it grew.
void drop_trailers(http::fields& f, const field_snapshot& saved);
std::size_t field_count(const http::fields& f);

/// ASCII case-insensitive equality. Used instead of beast::iequals, which in
/// Boost 1.81 reads one byte past the end of its arguments when they differ
/// only in case (AddressSanitizer reports it).
bool iequals(std::string_view a, std::string_view b);

/// `s` without leading and trailing spaces and tabs (RFC 9110's OWS).
std::string_view trim_ows(std::string_view s);
// ---- request ids

/// True for a request id worth keeping from a client: 1 to 128 characters of
/// letters, digits and . _ : - + / = (UUIDs, hex, ULIDs, base64 all fit).
/// Anything else could smuggle spaces, quotes or control bytes into logs.
bool valid_request_id(std::string_view id);

/// Request ids that are unique in practice, not secret: xoshiro256** over a
/// per-worker seed, 128 bits per id. Not for anything security-related.
/// Single-threaded, like its worker.
class request_id_source {
public:
    /// Any seed works; each word is mixed (splitmix64) into the state.
    explicit request_id_source(const std::array<std::uint64_t, 4>& seed);
    /// 16 pseudo-random bytes as 32 lowercase hex characters.
    std::string next();

private:
    std::uint64_t next64();
    std::array<std::uint64_t, 4> s_;
};

/// 32 bytes from getrandom(2), for a request_id_source; the one function in
/// this file that asks the kernel for anything.
std::array<std::uint64_t, 4> random_seed();

/// The id of a request: the client's X-Request-Id when it sent exactly one
/// and it is valid, else a fresh one from `ids`.
std::string pick_request_id(const http::fields& f, request_id_source& ids);

/// The value of cookie `name` in the request's Cookie fields (the first
/// such cookie), RFC 6265 5.4 syntax: `a=1; b=2`. None when absent.
std::optional<std::string_view> find_cookie(const http::fields& f, std::string_view name);

/// Removes every cookie `name` from the Cookie fields; a field left empty
/// goes. Returns whether one was removed.
bool remove_cookie(http::fields& f, std::string_view name);

} // namespace rampart::gateway
