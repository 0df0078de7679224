#pragma once
// Header rules applied between client and upstream. Pure functions on Beast
// headers: no I/O, unit-testable.

#include "gateway/net.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rampart::gateway {

/// What the gateway knows about the client side of a request.
struct client_info {
    std::string address;  ///< peer IP, no port ("192.0.2.7", "2001:db8::1")
    bool tls = true;
};

/// Why a request is refused before it reaches a backend.
struct rejection {
    http::status status;
    std::string reason;
};

/// Checks what Beast's parser does not: exactly one Host, a field count
/// within `max_fields`, unambiguous framing (not both Content-Length and
/// Transfer-Encoding, one Content-Length, no coding but "chunked"), a target
/// in origin form ("/...") or "*" for OPTIONS, no CONNECT. nullopt when the
/// request may be forwarded.
std::optional<rejection> validate_request(const http::request_header<>& h, unsigned max_fields);

/// Removes hop-by-hop fields: Connection and every field it names,
/// Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade, Proxy-Authorization,
/// Proxy-Authenticate. Transfer-Encoding and Content-Length are left to the
/// parser/serializer pair, which own message framing.
void strip_hop_by_hop(http::fields& f);

/// Prepares a parsed client request for the upstream: hop-by-hop fields
/// removed, client-supplied X-Forwarded-* / Forwarded / X-Real-IP dropped and
/// set from what the gateway saw, Expect removed (the gateway answers 100
/// itself), HTTP/1.1 with keep-alive towards the upstream.
void rewrite_request(http::request_header<>& h, const client_info& client);

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

}  // namespace rampart::gateway
