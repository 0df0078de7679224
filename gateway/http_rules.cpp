#include "gateway/http_rules.hpp"

#include <boost/beast/http/rfc7230.hpp>

#include <algorithm>
#include <cctype>
#include <vector>

namespace rampart::gateway {
namespace {

bool valid_host_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.';
}

/// Host without its port: "example.com:8080" -> "example.com", "[::1]:8443" -> "[::1]".
std::string_view host_without_port(std::string_view host) {
    if (!host.empty() && host.front() == '[') {
        auto close = host.find(']');
        return close == std::string_view::npos ? std::string_view{} : host.substr(0, close + 1);
    }
    auto colon = host.find(':');
    return colon == std::string_view::npos ? host : host.substr(0, colon);
}

bool valid_host_name(std::string_view h) {
    if (h.empty() || h.size() > 253) {
        return false;
    }
    if (h.front() == '[') {
        return h.back() == ']' && std::all_of(h.begin() + 1, h.end() - 1, [](char c) {
                   return std::isxdigit(static_cast<unsigned char>(c)) != 0 || c == ':' || c == '.';
               });
    }
    return std::all_of(h.begin(), h.end(), valid_host_char);
}

/// Connection framing for a header whose Connection field was stripped.
void set_keep_alive(http::fields& f, unsigned version, bool keep_alive) {
    if (version >= 11 && !keep_alive) {
        f.set(http::field::connection, "close");
    } else if (version < 11 && keep_alive) {
        f.set(http::field::connection, "keep-alive");
    }
}

}  // namespace

std::optional<rejection> validate_request(const http::request_header<>& h, unsigned max_fields) {
    unsigned fields = 0;
    unsigned hosts = 0;
    for (const auto& f : h) {
        ++fields;
        if (f.name() == http::field::host) {
            ++hosts;
        }
    }
    if (fields > max_fields) {
        return rejection{http::status::request_header_fields_too_large, "too many header fields"};
    }
    if (h.version() >= 11 && hosts != 1) {
        return rejection{http::status::bad_request, hosts == 0 ? "missing Host" : "duplicate Host"};
    }
    if (hosts > 1) {
        return rejection{http::status::bad_request, "duplicate Host"};
    }
    if (hosts == 1 && !valid_host_name(host_without_port(h[http::field::host]))) {
        return rejection{http::status::bad_request, "invalid Host"};
    }
    // Message framing the gateway and the app server could read differently
    // is refused outright (request smuggling): both Content-Length and
    // Transfer-Encoding, Content-Length twice, or any transfer coding other
    // than exactly "chunked".
    const auto lengths = h.count(http::field::content_length);
    const auto codings = h.count(http::field::transfer_encoding);
    if (lengths > 0 && codings > 0) {
        return rejection{http::status::bad_request, "both Content-Length and Transfer-Encoding"};
    }
    if (lengths > 1) {
        return rejection{http::status::bad_request, "duplicate Content-Length"};
    }
    if (codings > 1 || (codings == 1 && !beast::iequals(h[http::field::transfer_encoding], "chunked"))) {
        return rejection{http::status::bad_request, "Transfer-Encoding other than chunked"};
    }
    if (h.method() == http::verb::connect) {
        return rejection{http::status::method_not_allowed, "CONNECT is not supported"};
    }
    std::string_view target = h.target();
    bool origin_form = !target.empty() && target.front() == '/';
    bool asterisk = target == "*" && h.method() == http::verb::options;
    if (!origin_form && !asterisk) {
        return rejection{http::status::bad_request, "request target must be in origin form"};
    }
    return std::nullopt;
}

void strip_hop_by_hop(http::fields& f) {
    // Fields named by Connection are hop-by-hop too (RFC 9110 7.6.1).
    std::vector<std::string> named;
    for (auto it = f.find(http::field::connection); it != f.end() && it->name() == http::field::connection; ++it) {
        for (auto token : http::token_list{it->value()}) {
            named.emplace_back(token);
        }
    }
    for (const auto& n : named) {
        f.erase(n);
    }
    for (auto name : {http::field::connection, http::field::keep_alive, http::field::proxy_connection, http::field::te,
                      http::field::trailer, http::field::upgrade, http::field::proxy_authorization,
                      http::field::proxy_authenticate}) {
        f.erase(name);
    }
}

std::string forwarded_value(const client_info& client, std::string_view host) {
    std::string v = "for=";
    if (client.address.find(':') != std::string::npos) {
        v += "\"[" + client.address + "]\"";
    } else {
        v += client.address;
    }
    v += client.tls ? ";proto=https" : ";proto=http";
    if (!host.empty()) {
        // host may carry ":port", which is not a token character: quote it.
        v += ";host=\"";
        v += host;
        v += '"';
    }
    return v;
}

void rewrite_request(http::request_header<>& h, const client_info& client) {
    strip_hop_by_hop(h);
    h.erase(http::field::expect);
    // Client-supplied forwarding fields are replaced, never appended to: the
    // gateway is the edge, nothing before it is trusted.
    for (auto name : {"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-IP"}) {
        h.erase(name);
    }
    h.erase(http::field::forwarded);
    std::string host{h[http::field::host]};
    h.set("X-Forwarded-For", client.address);
    h.set("X-Forwarded-Proto", client.tls ? "https" : "http");
    if (!host.empty()) {
        h.set("X-Forwarded-Host", host);
    }
    h.set(http::field::forwarded, forwarded_value(client, host));
    h.version(11);  // to the upstream: always HTTP/1.1 with keep-alive
}

void rewrite_response(http::response_header<>& h, std::string_view hsts_value, bool client_keep_alive,
                      unsigned client_version) {
    strip_hop_by_hop(h);
    if (!hsts_value.empty()) {
        h.set(http::field::strict_transport_security, hsts_value);
    }
    h.version(client_version == 10 ? 10 : 11);
    set_keep_alive(h, h.version(), client_keep_alive);
}

std::optional<std::string> https_location(std::string_view host_header, std::string_view target,
                                          std::uint16_t https_port, std::string_view fallback_host) {
    if (target.empty() || target.front() != '/') {
        return std::nullopt;
    }
    std::string_view host = host_without_port(host_header);
    if (!valid_host_name(host)) {
        host = fallback_host;
    }
    std::string url = "https://";
    url += host;
    if (https_port != 443) {
        url += ':';
        url += std::to_string(https_port);
    }
    url += target;
    return url;
}

http::response<http::string_body> make_error_response(http::status status, unsigned version,
                                                       std::string_view hsts_value, bool close) {
    http::response<http::string_body> res{status, version == 10 ? 10U : 11U};
    res.set(http::field::server, "rampart");
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.set(http::field::cache_control, "no-store");
    if (!hsts_value.empty()) {
        res.set(http::field::strict_transport_security, hsts_value);
    }
    res.body() = std::to_string(static_cast<unsigned>(status)) + " ";
    res.body() += http::obsolete_reason(status);
    res.body() += '\n';
    res.keep_alive(!close);
    res.prepare_payload();
    return res;
}

void add_missing_headers(http::fields& f, const std::vector<std::pair<std::string, std::string>>& headers) {
    for (const auto& [name, value] : headers) {
        if (f.find(name) == f.end()) {
            f.set(name, value);
        }
    }
}

}  // namespace rampart::gateway
