#include "gateway/proxy/http_rules.hpp"

#include "gateway/shared_state.hpp"

#include <boost/beast/http/rfc7230.hpp>
#include <chrono>
#include <cstring>
#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
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

/// The value of a port of at most 5 digits, or `default_port` when empty.
unsigned port_number(std::string_view port, unsigned default_port) {
    if (port.empty()) {
        return default_port;
    }
    unsigned n = 0;
    for (char c : port) {
        n = n * 10 + static_cast<unsigned>(c - '0');
    }
    return n;
}

/// Splits an authority ("host", "host:port", "[v6]:port") into host and
/// port; false unless the host is a valid name or bracketed IPv6 address
/// and the port, when present, is 1 to 5 digits up to 65535.
bool split_authority(std::string_view a, std::string_view& host, std::string_view& port) {
    std::string_view rest;
    if (!a.empty() && a.front() == '[') {
        auto close = a.find(']');
        if (close == std::string_view::npos) {
            return false;
        }
        host = a.substr(0, close + 1);
        rest = a.substr(close + 1);
    } else {
        auto colon = a.find(':');
        host = a.substr(0, colon);
        rest = colon == std::string_view::npos ? std::string_view{} : a.substr(colon);
    }
    port = {};
    if (!rest.empty()) {
        if (rest.front() != ':') {
            return false;
        }
        port = rest.substr(1);
        if (port.empty() || port.size() > 5 ||
            !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            return false;
        }
        if (port_number(port, 0) > 65535) {
            return false;
        }
    }
    return valid_host_name(host);
}

/// Character classes of the raw request head (RFC 9110 5.6.2, 5.5; RFC
/// 9112 3.2): one table lookup per byte.
enum char_class : std::uint8_t {
    tchar = 1,       ///< method and field-name characters
    target_char = 2, ///< request-target: visible ASCII except '#'
    value_char = 4,  ///< field value: HTAB, SP, visible ASCII, obs-text
};

constexpr std::array<std::uint8_t, 256> make_char_classes() {
    std::array<std::uint8_t, 256> t{};
    constexpr std::string_view token_marks = "!#$%&'*+-.^_`|~";
    for (unsigned c = 0; c < 256; ++c) {
        std::uint8_t v = 0;
        const bool alnum = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        if (alnum || (c < 0x80 && token_marks.find(static_cast<char>(c)) != std::string_view::npos)) {
            v |= tchar;
        }
        if (c > 0x20 && c < 0x7f && c != '#') {
            v |= target_char;
        }
        if (c == '\t' || (c >= 0x20 && c != 0x7f)) {
            v |= value_char;
        }
        t[c] = v;
    }
    return t;
}

constexpr auto char_classes = make_char_classes();

bool in_class(char c, std::uint8_t cls) {
    return (char_classes[static_cast<unsigned char>(c)] & cls) != 0;
}

rejection bad_request(const char* why) {
    return rejection{http::status::bad_request, why};
}

/// True for a field name that reads as Content-Length or Transfer-Encoding
/// once '_' is taken for '-': servers behind CGI-style interfaces
/// (CONTENT_LENGTH, HTTP_TRANSFER_ENCODING) cannot tell the spellings apart.
bool framing_alias(std::string_view name) {
    char mapped[32];
    if (name.size() > sizeof mapped || name.find('_') == std::string_view::npos) {
        return false;
    }
    std::transform(name.begin(), name.end(), mapped, [](char c) { return c == '_' ? '-' : c; });
    auto f = http::string_to_field(std::string_view(mapped, name.size()));
    return f == http::field::content_length || f == http::field::transfer_encoding;
}

/// Rewrites an absolute-form target ("http[s]://authority[/path][?query]")
/// to origin form when its authority is the Host field: same host
/// (case-insensitive) and same port, a missing port being the scheme's.
std::optional<rejection> absolute_to_origin_form(http::request_header<>& h) {
    std::string_view target = h.target();
    auto sep = target.find("://");
    if (sep == std::string_view::npos) {
        return bad_request("request target must be in origin form");
    }
    std::string_view scheme = target.substr(0, sep);
    unsigned default_port = 0;
    if (iequals(scheme, "http")) {
        default_port = 80;
    } else if (iequals(scheme, "https")) {
        default_port = 443;
    } else {
        return bad_request("absolute-form target with a scheme other than http or https");
    }
    std::string_view rest = target.substr(sep + 3);
    auto path_at = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, path_at);
    std::string_view path = path_at == std::string_view::npos ? std::string_view{} : rest.substr(path_at);
    std::string_view host;
    std::string_view port;
    if (authority.find('@') != std::string_view::npos || !split_authority(authority, host, port)) {
        return bad_request("invalid authority in absolute-form target");
    }
    std::string_view field_host;
    std::string_view field_port;
    if (!split_authority(h[http::field::host], field_host, field_port) || !iequals(host, field_host) ||
        port_number(port, default_port) != port_number(field_port, default_port)) {
        return bad_request("absolute-form target does not match Host");
    }
    std::string origin = path.empty() || path.front() == '?' ? "/" : "";
    origin += path;
    h.target(origin);
    return std::nullopt;
}

/// Connection framing for a header whose Connection field was stripped.
void set_keep_alive(http::fields& f, unsigned version, bool keep_alive) {
    if (version >= 11 && !keep_alive) {
        f.set(http::field::connection, "close");
    } else if (version < 11 && keep_alive) {
        f.set(http::field::connection, "keep-alive");
    }
}

} // namespace

// The request line is "method SP target SP HTTP/d.d CRLF", each field line
// "name:value CRLF" with the value's surrounding whitespace allowed, and an
// empty line ends the head. Beast already refuses most deviations; this scan
// repeats them at the cost of one table lookup per byte so the rule set does
// not depend on the parser's version, and adds what Beast lets through:
// obs-fold (it joins the lines), a version other than 1.x as 505 rather
// than a parse error, obs-text and '#' in the target.
std::optional<rejection> check_raw_header(std::string_view in) {
    const char* p = in.data();
    const char* const end = p + in.size();
    const auto scan = [&p, end](std::uint8_t cls) {
        while (p != end && in_class(*p, cls)) {
            ++p;
        }
    };
    const auto incomplete = [] { return bad_request("incomplete request head"); };

    const char* first = p;
    scan(tchar);
    if (p == end) {
        return incomplete();
    }
    if (p == first || *p != ' ') {
        return bad_request("invalid method");
    }
    first = ++p;
    scan(target_char);
    if (p == end) {
        return incomplete();
    }
    if (p == first || *p != ' ') {
        return bad_request("invalid request target");
    }
    ++p;
    for (char c : std::string_view("HTTP/")) {
        if (p == end) {
            return incomplete();
        }
        if (*p++ != c) {
            return bad_request("invalid HTTP version");
        }
    }
    int version[2] = {0, 0};
    for (int i = 0; i < 2; ++i) {
        if (p == end) {
            return incomplete();
        }
        if (*p < '0' || *p > '9') {
            return bad_request("invalid HTTP version");
        }
        version[i] = *p++ - '0';
        if (i == 0) {
            if (p == end) {
                return incomplete();
            }
            if (*p++ != '.') {
                return bad_request("invalid HTTP version");
            }
        }
    }
    if (p != end && *p != '\r') {
        return bad_request(*p == '\n' ? "bare LF" : "invalid HTTP version");
    }
    if (version[0] != 1 || version[1] > 1) {
        return rejection{http::status::http_version_not_supported, "HTTP version not supported"};
    }

    // From here `p` is at the CR ending the previous line.
    for (;;) {
        if (end - p < 2) {
            return incomplete();
        }
        if (p[1] != '\n') {
            return bad_request("bare CR");
        }
        p += 2;
        if (p == end) {
            return incomplete();
        }
        if (*p == '\r') {
            if (end - p < 2) {
                return incomplete();
            }
            if (p[1] != '\n') {
                return bad_request("bare CR");
            }
            return std::nullopt; // the empty line: the head is complete
        }
        if (*p == ' ' || *p == '\t') {
            return bad_request("obsolete line folding");
        }
        first = p;
        scan(tchar);
        if (p == end) {
            return incomplete();
        }
        if (*p != ':') {
            if (*p == '\n') {
                return bad_request("bare LF");
            }
            if (*p == ' ' || *p == '\t') {
                return bad_request("whitespace before colon");
            }
            return bad_request(*p == '\r' ? "field line without colon" : "invalid character in field name");
        }
        if (p == first) {
            return bad_request("empty field name");
        }
        ++p;
        scan(value_char);
        if (p == end) {
            return incomplete();
        }
        if (*p != '\r') {
            return bad_request(*p == '\n' ? "bare LF" : "control character in field value");
        }
    }
}

bool valid_chunk_extensions(std::string_view extensions) {
    return std::all_of(extensions.begin(), extensions.end(), [](char c) { return in_class(c, value_char); });
}

std::optional<rejection> validate_request(http::request_header<>& h, unsigned max_fields) {
    if (h.version() != 10 && h.version() != 11) {
        return rejection{http::status::http_version_not_supported, "HTTP version not supported"};
    }
    unsigned fields = 0;
    unsigned hosts = 0;
    for (const auto& f : h) {
        ++fields;
        if (f.name() == http::field::host) {
            ++hosts;
        } else if (f.name() == http::field::unknown && framing_alias(f.name_string())) {
            return bad_request("field name spelling a framing field with '_'");
        }
    }
    if (fields > max_fields) {
        return rejection{http::status::request_header_fields_too_large, "too many header fields"};
    }
    if (h.method() == http::verb::connect) {
        return rejection{http::status::method_not_allowed, "CONNECT is not supported"};
    }
    if (h.method() == http::verb::unknown) {
        return rejection{http::status::not_implemented, "unknown method"};
    }
    if (h.version() >= 11 && hosts != 1) {
        return bad_request(hosts == 0 ? "missing Host" : "duplicate Host");
    }
    // Connection naming a framing field or Host would have a hop-by-hop
    // strip remove what delimits the message or routes it: refused.
    for (auto it = h.find(http::field::connection); it != h.end() && it->name() == http::field::connection; ++it) {
        for (auto token : http::token_list{it->value()}) {
            if (iequals(token, "content-length") || iequals(token, "transfer-encoding") || iequals(token, "host")) {
                return bad_request("Connection names a framing field or Host");
            }
        }
    }
    if (hosts > 1) {
        return bad_request("duplicate Host");
    }
    std::string_view host_name;
    std::string_view host_port;
    if (hosts == 1 && !split_authority(h[http::field::host], host_name, host_port)) {
        return bad_request("invalid Host");
    }
    // Message framing the gateway and the app server could read differently
    // is refused outright (request smuggling): both Content-Length and
    // Transfer-Encoding, Content-Length twice or as a list, or any transfer
    // coding other than exactly "chunked". HTTP/1.0 has no chunked coding
    // (RFC 9112 6.1: its framing is faulty).
    const auto lengths = h.count(http::field::content_length);
    const auto codings = h.count(http::field::transfer_encoding);
    if (lengths > 0 && codings > 0) {
        return bad_request("both Content-Length and Transfer-Encoding");
    }
    if (lengths > 1) {
        return bad_request("duplicate Content-Length");
    }
    if (lengths == 1) {
        std::string_view length = h[http::field::content_length];
        if (length.empty() || !std::all_of(length.begin(), length.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            return bad_request("invalid Content-Length");
        }
        if (length.size() > 1 && length.front() == '0') {
            auto digits = length.find_first_not_of('0');
            h.set(http::field::content_length,
                  std::string(digits == std::string_view::npos ? std::string_view("0") : length.substr(digits)));
        }
    }
    if (codings > 1 || (codings == 1 && !iequals(h[http::field::transfer_encoding], "chunked"))) {
        return bad_request("Transfer-Encoding other than chunked");
    }
    if (codings == 1) {
        if (h.version() < 11) {
            return bad_request("Transfer-Encoding in an HTTP/1.0 request");
        }
        if (h[http::field::transfer_encoding] != "chunked") {
            h.set(http::field::transfer_encoding, "chunked");
        }
    }
    std::string_view target = h.target();
    if (!target.empty() && target.front() == '/') {
        return std::nullopt;
    }
    if (target == "*") {
        if (h.method() == http::verb::options) {
            return std::nullopt;
        }
        return bad_request("asterisk-form target outside OPTIONS");
    }
    return absolute_to_origin_form(h);
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
        // Framing and Host are never hop-by-hop, whatever Connection says.
        if (!iequals(n, "content-length") && !iequals(n, "transfer-encoding") && !iequals(n, "host")) {
            f.erase(n);
        }
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

std::string client_from_forwarded_for(const http::fields& f, const network_set& trusted) {
    std::vector<std::string_view> chain;
    const auto fields = f.equal_range("X-Forwarded-For");
    for (auto it = fields.first; it != fields.second; ++it) {
        std::string_view v = it->value();
        while (!v.empty()) {
            const auto comma = v.find(',');
            chain.push_back(trim_ows(v.substr(0, comma)));
            if (comma == std::string_view::npos) {
                break;
            }
            v.remove_prefix(comma + 1);
        }
    }
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        std::string_view item = *it;
        if (item.size() > 2 && item.front() == '[' && item.back() == ']') {
            item = item.substr(1, item.size() - 2); // "[2001:db8::1]"
        }
        if (item.empty() || item.size() > 45) {
            return {};
        }
        const std::string text(item);
        error_code ec;
        const auto address = net::ip::make_address(text, ec);
        if (ec || (address.is_v6() && address.to_v6().scope_id() != 0)) {
            return {};
        }
        const client_address a = client_address::parse(address.to_string());
        if (!trusted.contains(a)) {
            return a.to_string();
        }
    }
    return {};
}

void rewrite_request(http::request_header<>& h, const client_info& client, std::string_view default_host) {
    strip_hop_by_hop(h);
    // An HTTP/1.0 request may come without Host; it goes upstream as
    // HTTP/1.1, which requires one.
    if (h.count(http::field::host) == 0 && !default_host.empty()) {
        h.set(http::field::host, default_host);
    }
    h.erase(http::field::expect);
    // Client-supplied forwarding fields are replaced, never appended to: the
    // gateway is the edge, nothing before it is trusted. From a trusted
    // proxy, its X-Forwarded-For chain is kept and the proxy appended.
    std::string chain;
    if (!client.via.empty()) {
        const auto fields = h.equal_range("X-Forwarded-For");
        for (auto it = fields.first; it != fields.second; ++it) {
            chain.append(it->value()).append(", ");
        }
        chain += client.via;
    }
    for (auto name : {"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-IP"}) {
        h.erase(name);
    }
    h.erase(http::field::forwarded);
    std::string host{h[http::field::host]};
    h.set("X-Forwarded-For", chain.empty() ? client.address : chain);
    h.set("X-Forwarded-Proto", client.tls ? "https" : "http");
    if (!host.empty()) {
        h.set("X-Forwarded-Host", host);
    }
    h.set(http::field::forwarded, forwarded_value(client, host));
    h.version(11); // to the upstream: always HTTP/1.1 with keep-alive
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

void apply_header_rules(http::fields& f, const config::header_rules& rules) {
    for (const auto& [name, value] : rules.set) {
        f.set(name, value);
    }
    for (const auto& name : rules.remove) {
        f.erase(name);
    }
}

void add_missing_headers(http::fields& f, const std::vector<std::pair<std::string, std::string>>& headers) {
    for (const auto& [name, value] : headers) {
        if (f.find(name) == f.end()) {
            f.set(name, value);
        }
    }
}

field_snapshot snapshot_fields(const http::fields& f) {
    field_snapshot out;
    for (const auto& field : f) {
        out.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    return out;
}

void drop_trailers(http::fields& f, const field_snapshot& saved) {
    if (field_count(f) == saved.size()) {
        return;
    }
    for (auto it = f.begin(); it != f.end();) {
        it = f.erase(it);
    }
    for (const auto& [name, value] : saved) {
        f.insert(name, value);
    }
}

std::size_t field_count(const http::fields& f) {
    return static_cast<std::size_t>(std::distance(f.begin(), f.end()));
}

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
        s.remove_suffix(1);
    }
    return s;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; };
        if (lower(a[i]) != lower(b[i])) {
            return false;
        }
    }
    return true;
}

// ---- request ids

bool valid_request_id(std::string_view id) {
    return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
               c == ':' || c == '-' || c == '+' || c == '/' || c == '=';
    });
}

// The seed is folded into one splitmix64 stream that fills the state, as
// xoshiro's authors recommend: every state word depends on every seed word,
// so seeds that differ a little still give unrelated ids.
request_id_source::request_id_source(const std::array<std::uint64_t, 4>& seed) {
    const auto mix = [](std::uint64_t z) {
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    };
    std::uint64_t x = 0;
    for (const std::uint64_t word : seed) {
        x = mix(x ^ word) + 0x9e3779b97f4a7c15ULL;
    }
    for (auto& word : s_) {
        x += 0x9e3779b97f4a7c15ULL;
        word = mix(x);
    }
    if ((s_[0] | s_[1] | s_[2] | s_[3]) == 0) {
        s_ = {0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL, 0x94d049bb133111ebULL, 0x2545f4914f6cdd1dULL};
    }
}

// xoshiro256** (Blackman and Vigna): four words of state, a few shifts and
// multiplies per 64 bits, and no short cycles for any non-zero seed.
std::uint64_t request_id_source::next64() {
    const auto rotl = [](std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

std::string request_id_source::next() {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out(32, '0');
    for (int half = 0; half < 2; ++half) {
        std::uint64_t v = next64();
        for (int i = 15; i >= 0; --i) {
            out[static_cast<std::size_t>(half * 16 + i)] = hex[v & 0xf];
            v >>= 4;
        }
    }
    return out;
}

std::array<std::uint64_t, 4> random_seed() {
    std::array<std::uint64_t, 4> seed{};
    unsigned char bytes[sizeof seed];
    std::size_t got = 0;
    // The kernel's pool is ready long before a gateway starts; a failure
    // (seccomp, a very old kernel) leaves part of the seed to the clock,
    // which still tells workers apart: ids need uniqueness, not secrecy.
    for (int attempt = 0; attempt < 8 && got < sizeof bytes; ++attempt) {
        const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
        if (n > 0) {
            got += static_cast<std::size_t>(n);
        }
    }
    std::memcpy(seed.data(), bytes, got);
    if (got < sizeof bytes) {
        seed[3] ^= static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
        seed[2] ^= static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    }
    return seed;
}

std::string pick_request_id(const http::fields& f, request_id_source& ids) {
    const auto range = f.equal_range("X-Request-Id");
    if (range.first != range.second && std::next(range.first) == range.second &&
        valid_request_id(range.first->value())) {
        return std::string(range.first->value());
    }
    return ids.next();
}

namespace {

// Calls `each(name, value, whole)` for every cookie of a Cookie value (name
// and value empty for a pair without '='); stops when it returns true.
template <class Fn> bool for_each_cookie(std::string_view header, Fn&& each) {
    while (!header.empty()) {
        const auto semi = header.find(';');
        std::string_view pair = header.substr(0, semi);
        header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
        pair = trim_ows(pair);
        if (pair.empty()) {
            continue;
        }
        const auto eq = pair.find('=');
        const std::string_view name = eq == std::string_view::npos ? std::string_view() : pair.substr(0, eq);
        const std::string_view value = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
        if (each(name, value, pair)) {
            return true;
        }
    }
    return false;
}

} // namespace

std::optional<std::string_view> find_cookie(const http::fields& f, std::string_view name) {
    std::optional<std::string_view> found;
    for (auto it = f.find(http::field::cookie); it != f.end() && it->name() == http::field::cookie; ++it) {
        if (for_each_cookie(it->value(), [&](std::string_view k, std::string_view v, std::string_view) {
                if (!k.empty() && k == name) {
                    found = v;
                    return true;
                }
                return false;
            })) {
            break;
        }
    }
    return found;
}

bool remove_cookie(http::fields& f, std::string_view name) {
    bool removed = false;
    std::vector<std::string> kept_fields;
    for (auto it = f.find(http::field::cookie); it != f.end() && it->name() == http::field::cookie; ++it) {
        std::string kept;
        for_each_cookie(it->value(), [&](std::string_view k, std::string_view, std::string_view whole) {
            if (!k.empty() && k == name) {
                removed = true;
            } else {
                kept += kept.empty() ? "" : "; ";
                kept.append(whole); // as the client wrote it, a pair without '=' too
            }
            return false;
        });
        kept_fields.push_back(std::move(kept));
    }
    if (!removed) {
        return false;
    }
    f.erase(http::field::cookie);
    for (auto& k : kept_fields) {
        if (!k.empty()) {
            f.insert(http::field::cookie, k);
        }
    }
    return true;
}

} // namespace rampart::gateway
