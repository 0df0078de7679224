#pragma once
// Which route serves a request (gateway.routes: first match wins), and the
// normalised path it is matched in and sent upstream in. Sans-I/O: strings
// in, a route out; tests/unit/gateway/router_test.cpp holds the matrix.

#include "config/config.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace rampart::gateway {

/// An origin-form target's path (without the query) in normal form (RFC 3986
/// 6.2.2): percent-encoded unreserved characters decoded, the hex digits of
/// other escapes in upper case, dot segments removed, runs of '/' kept.
/// nullopt (answered 400) for what no app should see: an encoded '/' or '\'
/// (%2F, %5C), an encoded or raw NUL or other control byte, a raw '\', a
/// malformed escape, or a ".." that would climb above the root.
std::optional<std::string> normalise_path(std::string_view path);

/// Whether `path` is already in the form normalise_path() returns (no
/// escape, no dot segment, no control byte or '\\'): the common case, checked
/// without allocating.
bool is_normal_path(std::string_view path);

/// The Host header's name: without the port and a trailing dot (any case;
/// routes compare it case-insensitively). "" when there is none.
std::string_view host_name(std::string_view host_header);

class router {
public:
    explicit router(const config::gateway& gw) : routes_(&gw.routes) {}

    /// The first route whose host, path prefix and methods match; null when
    /// none does (404). `host`: host_name() of the request, any case; `path`: normalised.
    const config::route* match(std::string_view host, std::string_view path, std::string_view method) const;

    bool empty() const { return routes_->empty(); }

    static bool host_matches(std::string_view pattern, std::string_view host);
    static bool path_matches(std::string_view prefix, std::string_view path);

private:
    const std::vector<config::route>* routes_;
};

} // namespace rampart::gateway
