#include "gateway/proxy/router.hpp"

#include <algorithm>
#include <cctype>
#include <vector>

namespace rampart::gateway {
namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool unreserved(unsigned char c) {
    return std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~';
}

} // namespace

bool is_normal_path(std::string_view path) {
    if (path.empty() || path.front() != '/') {
        return false;
    }
    for (std::size_t i = 0; i < path.size(); ++i) {
        const auto c = static_cast<unsigned char>(path[i]);
        if (c == '%' || c == '\\' || c < 0x20 || c == 0x7f) {
            return false;
        }
        // A dot segment: "/." followed by the end, '/', or ".".
        if (c == '.' && path[i - 1] == '/' &&
            (i + 1 == path.size() || path[i + 1] == '/' ||
             (path[i + 1] == '.' && (i + 2 == path.size() || path[i + 2] == '/')))) {
            return false;
        }
    }
    return true;
}

std::optional<std::string> normalise_path(std::string_view path) {
    if (path.empty() || path.front() != '/') {
        return std::nullopt;
    }
    // 1. Escapes: unreserved characters decoded, the rest kept upper-case;
    //    what could change the path's structure or reach a file system
    //    unnoticed is refused.
    std::string decoded;
    decoded.reserve(path.size());
    for (std::size_t i = 0; i < path.size(); ++i) {
        const auto c = static_cast<unsigned char>(path[i]);
        if (c == '\\' || c < 0x20 || c == 0x7f) {
            return std::nullopt;
        }
        if (c != '%') {
            decoded += static_cast<char>(c);
            continue;
        }
        if (i + 2 >= path.size()) {
            return std::nullopt;
        }
        const int hi = hex_value(path[i + 1]);
        const int lo = hex_value(path[i + 2]);
        if (hi < 0 || lo < 0) {
            return std::nullopt;
        }
        const auto byte = static_cast<unsigned char>(hi * 16 + lo);
        if (byte == '/' || byte == '\\' || byte < 0x20 || byte == 0x7f) {
            return std::nullopt;
        }
        if (unreserved(byte)) {
            decoded += static_cast<char>(byte);
        } else {
            constexpr char digits[] = "0123456789ABCDEF";
            decoded += '%';
            decoded += digits[byte >> 4];
            decoded += digits[byte & 0xf];
        }
        i += 2;
    }
    // 2. Dot segments (RFC 3986 5.2.4), segment by segment; ".." above the
    //    root is refused rather than clamped: no client has a reason to send it.
    std::vector<std::string_view> segments;
    std::string_view rest = std::string_view(decoded).substr(1);
    bool trailing_slash = false;
    for (;;) {
        const auto slash = rest.find('/');
        const std::string_view seg = rest.substr(0, slash);
        const bool last = slash == std::string_view::npos;
        if (seg == ".") {
            trailing_slash = last;
        } else if (seg == "..") {
            if (segments.empty()) {
                return std::nullopt;
            }
            segments.pop_back();
            trailing_slash = last;
        } else {
            segments.push_back(seg);
            trailing_slash = false;
        }
        if (last) {
            break;
        }
        rest = rest.substr(slash + 1);
    }
    std::string out;
    out.reserve(decoded.size());
    for (const auto& seg : segments) {
        out += '/';
        out += seg;
    }
    if (trailing_slash || out.empty()) {
        out += '/';
    }
    return out;
}

std::string_view host_name(std::string_view host_header) {
    std::string_view h = host_header;
    if (h.starts_with('[')) {
        const auto end = h.find(']');
        h = end == std::string_view::npos ? h : h.substr(0, end + 1);
    } else if (const auto colon = h.rfind(':'); colon != std::string_view::npos) {
        h = h.substr(0, colon);
    }
    if (h.ends_with('.')) {
        h.remove_suffix(1);
    }
    return h;
}

namespace {

// `host` ends with `suffix` (lower case), ignoring the case of `host`.
bool ends_with_nocase(std::string_view host, std::string_view suffix) {
    if (host.size() < suffix.size()) {
        return false;
    }
    const std::string_view tail = host.substr(host.size() - suffix.size());
    return std::equal(tail.begin(), tail.end(), suffix.begin(),
                      [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; });
}

} // namespace

bool router::host_matches(std::string_view pattern, std::string_view host) {
    if (pattern.empty()) {
        return true;
    }
    if (pattern.starts_with("*.")) {
        const std::string_view suffix = pattern.substr(1); // ".example.com"
        return host.size() > suffix.size() && ends_with_nocase(host, suffix);
    }
    return host.size() == pattern.size() && ends_with_nocase(host, pattern);
}

bool router::path_matches(std::string_view prefix, std::string_view path) {
    if (!path.starts_with(prefix)) {
        return false;
    }
    return prefix.ends_with('/') || path.size() == prefix.size() || path[prefix.size()] == '/';
}

const config::route* router::match(std::string_view host, std::string_view path, std::string_view method) const {
    for (const auto& r : *routes_) {
        if (host_matches(r.host, host) && path_matches(r.path, path) &&
            (r.methods.empty() || std::find(r.methods.begin(), r.methods.end(), method) != r.methods.end())) {
            return &r;
        }
    }
    return nullptr;
}

} // namespace rampart::gateway
