// The configuration checker: the gateway section (listeners, workers, TLS, HTTP/2, HSTS, timeouts, limits, security
// headers, the admin token, the access log, abuse blocking).

#include "config/checker.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

namespace rampart::config::detail {

void checker::check_gateway(const field& f, snapshot& s) {
    const auto m = read_map(f, gateway_keys);
    if (!m) {
        return;
    }
    gateway& gw = s.gw;
    std::optional<field> https;
    if (const auto l = required(*m, "listen", "a map with https, http and admin endpoints")) {
        check_listen(*l, gw.listen, https);
    }
    if (const auto w = m->get("workers")) {
        check_workers(*w, gw);
    }
    optional_value(*m, "user", gw.user, [&](const field& u) { return scalar(u, "a user name"); });
    optional_value(*m, "seccomp", gw.seccomp, [&](const field& c) { return one_of(c, seccomp_names); });
    bool tls_failed = false;
    if (const auto t = m->get("tls")) {
        const std::size_t errors_before = error_count_;
        check_tls(*t, gw.tls_settings);
        tls_failed = error_count_ != errors_before;
    }
    if (const auto h = m->get("h2")) {
        check_h2(*h, gw.h2_settings);
    }
    if (const auto h = m->get("hsts")) {
        check_hsts(*h, gw.hsts_settings);
    }
    std::vector<std::string> pool_names;
    const auto pools = required(*m, "pools", "a map of pool name to balance and servers");
    if (pools) {
        check_pools(*pools, s, pool_names);
    }
    if (const auto d = m->get("default_pool")) {
        if (const auto name = scalar(*d, "a pool name")) {
            gw.default_pool = *name;
            const bool known = std::find(pool_names.begin(), pool_names.end(), *name) != pool_names.end();
            // With no pool read at all, gateway.pools already has its error.
            if (!known && !pool_names.empty()) {
                const std::vector<std::string_view> choices(pool_names.begin(), pool_names.end());
                const std::string hint = did_you_mean(*name, choices);
                fail(*d, "no pool named " + in_quotes(*name) + " in gateway.pools" + (hint.empty() ? "" : "; " + hint));
            }
        }
    } else if (pool_names.size() == 1) {
        gw.default_pool = pool_names.front();
    } else if (pool_names.size() > 1) {
        const std::vector<std::string_view> choices(pool_names.begin(), pool_names.end());
        fail(pools->at, "gateway.default_pool",
             "required when there are several pools; expected one of " + join(choices, " or "));
    }
    if (const auto r = m->get("routes")) {
        check_routes(*r, gw, pool_names);
    }
    if (const auto t = m->get("timeouts")) {
        check_timeouts(*t, gw.timeouts_settings);
    }
    if (const auto l = m->get("limits")) {
        check_limits(*l, gw.limits_settings);
    }
    if (const auto a = m->get("abuse")) {
        check_abuse(*a, gw.abuse_settings);
    }
    if (const auto h = m->get("security_headers")) {
        check_security_headers(*h, gw.security_headers);
    }
    if (const auto e = m->get("error_pages")) {
        check_error_pages(*e, gw.error_pages);
    }
    if (const auto c = m->get("compression")) {
        check_compression(*c, gw.compression_settings);
    }
    if (const auto t = m->get("admin_token_file")) {
        check_admin_token(*t, gw);
    }
    if (const auto a = m->get("access_log")) {
        check_access_log(*a, gw.access_log_settings);
    }
    optional_value(*m, "log_level", gw.error_log_level, [&](const field& l) { return one_of(l, log_level_names); });
    bool trusted_failed = false;
    if (const auto t = m->get("trusted_proxies")) {
        const std::size_t errors_before = error_count_;
        gw.trusted_proxies = network_list(*t);
        trusted_failed = error_count_ != errors_before; // said once, where it is wrong
    }
    if (gw.listen.proxy_protocol && gw.trusted_proxies.empty() && !trusted_failed) {
        const auto l = m->get("listen");
        fail(l->node["proxy_protocol"].Mark(), l->path + ".proxy_protocol",
             "needs gateway.trusted_proxies: the networks of the balancers allowed to send the header");
    }
    if (https && gw.tls_settings.certificates.empty() && !tls_failed) {
        fail(*https, "an https listener needs at least one certificate in gateway.tls.certificates");
    }
    if (!gw.tls_settings.acme_webroot.empty() && !gw.listen.http) {
        const auto t = m->get("tls");
        fail(t->node["acme_webroot"].Mark(), t->path + ".acme_webroot",
             "is served on port 80: it needs gateway.listen.http");
    }
    if (const auto& a = gw.tls_settings.acme_settings) {
        if (!https) {
            fail_at(a->at, "gateway.tls.acme: needs an https listener (gateway.listen.https) to serve what it issues");
        } else if (a->challenge == "http-01" && !gw.listen.http) {
            fail_at(a->at, "gateway.tls.acme: the http-01 challenge is answered on port 80: it needs "
                           "gateway.listen.http (or use challenge: tls-alpn-01)");
        }
    }
}

void checker::check_listen(const field& f, listeners& out, std::optional<field>& https) {
    const auto m = read_map(f, listen_keys, "a map with https, http and admin endpoints");
    if (!m) {
        return;
    }
    if (!m->get("https") && !m->get("http")) {
        fail(f, "expected at least one of https and http");
    }
    struct bound {
        field f;
        endpoint ep;
    };
    std::vector<bound> seen;
    for (const auto& [key, lf] : m->entries) {
        if (key == "proxy_protocol") {
            if (const auto b = boolean(lf)) {
                out.proxy_protocol = *b;
            }
            continue;
        }
        auto ep = endpoint_value(lf);
        if (!ep) {
            continue;
        }
        for (const auto& other : seen) {
            if (overlaps(*ep, other.ep)) {
                fail(lf, ep->to_string() + " clashes with " + other.f.path + " (" + other.ep.to_string() +
                             "); listeners need distinct addresses or ports");
                break;
            }
        }
        seen.push_back(bound{lf, *ep});
        if (key == "https") {
            out.https = *ep;
            https = lf;
        } else if (key == "http") {
            out.http = *ep;
        } else {
            out.admin = *ep;
        }
    }
}

void checker::check_workers(const field& f, gateway& gw) {
    const std::string expected = "auto or a number of workers from 1 to " + std::to_string(max_workers);
    const auto text = scalar(f, expected);
    if (!text) {
        return;
    }
    if (*text == "auto") {
        gw.workers = 0;
        return;
    }
    const auto n = parse_decimal(*text);
    if (!n || *n < 1 || *n > max_workers) {
        fail(f, "expected " + expected + ", got " + in_quotes(*text));
        return;
    }
    gw.workers = static_cast<unsigned>(*n);
}

void checker::check_tls(const field& f, tls& out) {
    const auto m = read_map(f, tls_keys);
    if (!m) {
        return;
    }
    if (const auto c = m->get("certificates")) {
        if (const auto list = read_list(*c, "a list of { cert, key } file pairs")) {
            for (const auto& item : *list) {
                const auto pair = read_map(item, certificate_keys, "a map with cert and key");
                if (!pair) {
                    continue;
                }
                certificate cert;
                if (const auto p = required(*pair, "cert", "the certificate chain's PEM file")) {
                    cert.cert_file = file_path(*p).value_or("");
                    cert.cert_at = where(p->at);
                }
                if (const auto p = required(*pair, "key", "the private key's PEM file")) {
                    cert.key_file = file_path(*p).value_or("");
                    cert.key_at = where(p->at);
                }
                out.certificates.push_back(std::move(cert));
            }
        }
    }
    if (const auto a = m->get("acme")) {
        if (auto acme = check_acme(*a)) {
            // Its files come first: the first name's certificate is the
            // default one, served when SNI names nothing configured.
            std::vector<certificate> managed;
            for (const auto& type : acme->key_types) {
                const std::string file = acme->file_of(type);
                managed.push_back(certificate{file, file, acme->at, acme->at, true});
            }
            out.certificates.insert(out.certificates.begin(), managed.begin(), managed.end());
            out.acme_settings = std::move(acme);
        }
    }
    optional_value(*m, "acme_webroot", out.acme_webroot, [&](const field& p) { return file_path(p); });
    optional_value(*m, "session_tickets", out.session_tickets, [&](const field& b) { return boolean(b); });
    optional_value(*m, "ticket_rotation", out.ticket_rotation,
                   [&](const field& d) { return duration_value(d, std::chrono::minutes(1)); });
    if (const auto a = m->get("alpn")) {
        if (const auto list = read_list(*a, "a list of protocols: h2, http/1.1")) {
            std::vector<std::string> protocols;
            bool ok = true;
            for (const auto& item : *list) {
                const auto name = scalar(item, "h2 or http/1.1");
                if (!name) {
                    ok = false;
                } else if (*name != "h2" && *name != "http/1.1") {
                    fail(item, "unknown protocol " + in_quotes(*name) + "; expected h2 or http/1.1");
                    ok = false;
                } else if (std::find(protocols.begin(), protocols.end(), *name) != protocols.end()) {
                    fail(item, in_quotes(*name) + " is listed twice");
                    ok = false;
                } else {
                    protocols.push_back(*name);
                }
            }
            if (ok && protocols.empty()) {
                fail(*a, "at least one protocol is needed (h2, http/1.1)");
            } else if (ok) {
                out.alpn = std::move(protocols);
            }
        }
    }
}

namespace {

/// A host name ACME can validate with http-01 or tls-alpn-01: letters,
/// digits, '-' and '.', labels of 1..63, 253 at most.
bool acme_host_name(std::string_view name) {
    if (name.empty() || name.size() > 253 || name.front() == '.' || name.back() == '.') {
        return false;
    }
    // An address (all digits in the last label) is not a DNS name: IP
    // identifiers (RFC 8738) are not ordered here.
    const std::string_view last = name.substr(name.rfind('.') == std::string_view::npos ? 0 : name.rfind('.') + 1);
    if (std::all_of(last.begin(), last.end(), [](unsigned char c) { return std::isdigit(c) != 0; })) {
        return false;
    }
    std::size_t label = 0;
    for (const char c : name) {
        if (c == '.') {
            if (label == 0) {
                return false;
            }
            label = 0;
            continue;
        }
        if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-') ||
            ++label > 63) {
            return false;
        }
    }
    return true;
}

} // namespace

namespace {

/// The authority of an https:// URL: a host, then an optional ":port" of
/// digits (1..65535); "[v6]" allowed.
bool plain_authority(std::string_view url) {
    std::string_view rest = url.substr(8);
    rest = rest.substr(0, rest.find('/'));
    if (rest.empty()) {
        return false;
    }
    std::string_view port;
    if (rest.front() == '[') {
        const auto close = rest.find(']');
        if (close == std::string_view::npos || close == 1) {
            return false;
        }
        if (close + 1 < rest.size()) {
            if (rest[close + 1] != ':') {
                return false;
            }
            port = rest.substr(close + 2);
        } else {
            return true;
        }
    } else if (const auto colon = rest.find(':'); colon != std::string_view::npos) {
        if (colon == 0) {
            return false;
        }
        port = rest.substr(colon + 1);
    } else {
        return true;
    }
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    return ec == std::errc{} && end == port.data() + port.size() && value >= 1 && value <= 65535;
}

} // namespace

std::optional<acme> checker::check_acme(const field& f) {
    const auto m = read_map(f, acme_keys, "a map with directory, names and the other acme settings");
    if (!m) {
        return std::nullopt;
    }
    const std::size_t errors_before = error_count_;
    acme out;
    out.at = where(f.at);
    if (const auto d = required(*m, "directory", "the ACME directory URL (https://...)")) {
        if (const auto url = scalar(*d, "an https:// URL")) {
            if (!url->starts_with("https://") || url->size() <= 8 || url->size() > 2048 ||
                url->find_first_of(" \t\r\n\"@") != std::string::npos || !plain_authority(*url)) {
                fail(*d, "expected an https:// URL (RFC 8555 servers speak HTTPS only), got " + in_quotes(*url));
            } else {
                out.directory = *url;
            }
        }
    }
    if (const auto e = m->get("email")) {
        if (const auto email = scalar(*e, "an email address")) {
            const auto at = email->find('@');
            const bool ok = at != std::string::npos && at > 0 && at + 1 < email->size() && email->size() <= 254 &&
                            std::none_of(email->begin(), email->end(), [](unsigned char c) {
                                return c <= ' ' || c == '"' || c == '\\' || c == ',' || c >= 0x7f;
                            });
            if (!ok) {
                fail(*e, "expected an email address, got " + in_quotes(*email));
            } else {
                out.email = *email;
            }
        }
    }
    if (const auto n = required(*m, "names", "a list of host names")) {
        if (const auto list = read_list(*n, "a list of host names")) {
            for (const auto& item : *list) {
                const auto name = scalar(item, "a host name");
                if (!name) {
                    continue;
                }
                if (name->starts_with("*.")) {
                    fail(item, "wildcard names need the dns-01 challenge, which Rampart does not answer: list the "
                               "names themselves");
                } else if (!acme_host_name(*name)) {
                    fail(item, "expected a lower-case host name (letters, digits, '-', '.'), got " + in_quotes(*name));
                } else if (std::find(out.names.begin(), out.names.end(), *name) != out.names.end()) {
                    fail(item, in_quotes(*name) + " is listed twice");
                } else {
                    out.names.push_back(*name);
                }
            }
            if (list->empty()) {
                fail(*n, "at least one name is needed");
            } else if (list->size() > 100) {
                fail(*n, "at most 100 names fit in one certificate (Let's Encrypt's limit)");
            }
        }
    }
    if (const auto k = m->get("key_types")) {
        if (const auto list = read_list(*k, "a list of key types: ecdsa, rsa")) {
            std::vector<std::string> types;
            for (const auto& item : *list) {
                const auto type = scalar(item, "ecdsa or rsa");
                if (!type) {
                    continue;
                }
                if (*type != "ecdsa" && *type != "rsa") {
                    fail(item, "unknown key type " + in_quotes(*type) + "; expected ecdsa or rsa");
                } else if (std::find(types.begin(), types.end(), *type) != types.end()) {
                    fail(item, in_quotes(*type) + " is listed twice");
                } else {
                    types.push_back(*type);
                }
            }
            if (list->empty()) {
                fail(*k, "at least one key type is needed (ecdsa, rsa)");
            }
            out.key_types = std::move(types);
        }
    }
    if (const auto c = m->get("challenge")) {
        if (const auto text = scalar(*c, "http-01 or tls-alpn-01")) {
            if (*text != "http-01" && *text != "tls-alpn-01") {
                fail(*c, "expected http-01 or tls-alpn-01, got " + in_quotes(*text) +
                             (*text == "dns-01" ? " (dns-01 is not answered: it needs the DNS provider's API)" : ""));
            } else {
                out.challenge = *text;
            }
        }
    }
    optional_value(*m, "renew_before", out.renew_before, [&](const field& d) { return duration_value(d); });
    optional_value(*m, "ca_file", out.ca_file, [&](const field& p) { return file_path(p); });
    optional_value(*m, "state_dir", out.state_dir, [&](const field& p) { return file_path(p); });
    optional_value(*m, "retry_min", out.retry_min,
                   [&](const field& d) { return duration_value(d, std::chrono::seconds(1)); });
    optional_value(*m, "retry_max", out.retry_max,
                   [&](const field& d) { return duration_value(d, std::chrono::seconds(1)); });
    if (out.retry_min > out.retry_max) {
        fail(f, "retry_min is longer than retry_max");
    }
    if (error_count_ != errors_before) {
        return std::nullopt;
    }
    return out;
}

void checker::check_h2(const field& f, h2& out) {
    const auto m = read_map(f, h2_keys);
    if (!m) {
        return;
    }
    optional_count(*m, "max_concurrent_streams", out.max_concurrent_streams, 1, 1000);
    std::uint64_t v = 0;
    v = out.initial_window;
    optional_value(*m, "initial_window", v, [&](const field& x) { return size_value(x, 1024, 16 * 1024 * 1024); });
    out.initial_window = static_cast<std::uint32_t>(v);
    v = out.max_frame_size;
    optional_value(*m, "max_frame_size", v,
                   [&](const field& x) { return size_value(x, 16 * 1024, 16 * 1024 * 1024 - 1); });
    out.max_frame_size = static_cast<std::uint32_t>(v);
    v = out.header_table_size;
    if (const auto t = m->get("header_table_size")) {
        if (const auto text = scalar(*t, size_expected); text && *text == "0") {
            v = 0;
        } else {
            optional_value(*m, "header_table_size", v, [&](const field& x) { return size_value(x, 1, 64 * 1024); });
        }
    }
    out.header_table_size = static_cast<std::uint32_t>(v);
}

void checker::check_hsts(const field& f, hsts& out) {
    // `hsts: off` is the short form people reach for first.
    constexpr std::string_view expected = "a map of hsts settings, or on/off";
    if (f.node.IsScalar()) {
        if (const auto on = parse_bool(f.node.Scalar())) {
            out.enabled = *on;
        } else {
            fail(f, "expected " + std::string(expected) + ", got " + in_quotes(f.node.Scalar()));
        }
        return;
    }
    const auto m = read_map(f, hsts_keys, expected);
    if (!m) {
        return;
    }
    optional_value(*m, "enabled", out.enabled, [&](const field& b) { return boolean(b); });
    if (const auto a = m->get("max_age")) {
        if (const auto d = duration_value(*a, std::chrono::seconds(1))) {
            // max-age is whole seconds on the wire; rounding would silently change it.
            if (d->count() % 1000 != 0) {
                fail(*a, "expected a whole number of seconds, got " + in_quotes(a->node.Scalar()));
            } else {
                out.max_age = std::chrono::duration_cast<std::chrono::seconds>(*d);
            }
        }
    }
    optional_value(*m, "include_subdomains", out.include_subdomains, [&](const field& b) { return boolean(b); });
    optional_value(*m, "preload", out.preload, [&](const field& b) { return boolean(b); });
}

void checker::check_timeouts(const field& f, timeouts& out) {
    const auto keys = names_of(timeout_fields);
    const auto m = read_map(f, keys);
    if (!m) {
        return;
    }
    for (const auto& entry : timeout_fields) {
        optional_value(*m, entry.name, out.*entry.value, [&](const field& d) { return duration_value(d); });
    }
}

void checker::check_limits(const field& f, limits& out) {
    const auto m = read_map(f, limit_keys);
    if (!m) {
        return;
    }
    optional_value(*m, "header_bytes", out.header_bytes,
                   [&](const field& v) { return size_value(v, 1024, 1024 * 1024); });
    if (const auto c = m->get("header_count")) {
        if (const auto n = integer(*c, 1, 1000)) {
            out.header_count = static_cast<unsigned>(*n);
        }
    }
    optional_value(*m, "body_bytes", out.body_bytes,
                   [&](const field& v) { return size_value(v, 1, std::numeric_limits<std::uint64_t>::max()); });
    if (const auto c = m->get("upstream_idle_per_server")) {
        if (const auto n = integer(*c, 0, 10000)) {
            out.upstream_idle_per_server = static_cast<unsigned>(*n);
        }
    }
    optional_count(*m, "max_connections", out.max_connections, 0, 10'000'000);
    optional_count(*m, "max_connections_per_client", out.max_connections_per_client, 0, 10'000'000);
    optional_count(*m, "tunnels", out.tunnels, 0, 10'000'000);
    if (const auto b = m->get("buffer_body_bytes")) {
        if (const auto text = scalar(*b, size_expected); text && *text == "0") {
            out.buffer_body_bytes = 0;
        } else {
            optional_value(*m, "buffer_body_bytes", out.buffer_body_bytes,
                           [&](const field& v) { return size_value(v, 1, 16 * 1024 * 1024); });
        }
    }
}

// `off` drops every default; a map adds headers or replaces a default's
// value, and "" as a value drops that one.
// `compression: on` (the defaults) or the map.
void checker::check_compression(const field& f, compression& out) {
    if (f.node.IsScalar()) {
        if (const auto on = boolean(f)) {
            out.enabled = *on;
        }
        return;
    }
    const auto m = read_map(f, compression_keys,
                            "on, off, or a map with enabled, codings, gzip_level, "
                            "brotli_quality, min_size, types and with_cookies");
    if (!m) {
        return;
    }
    out.enabled = true;
    optional_value(*m, "enabled", out.enabled, [&](const field& v) { return boolean(v); });
    if (const auto c = m->get("codings")) {
        if (const auto list = read_list(*c, "a list of br and gzip")) {
            std::vector<std::string> codings;
            for (const auto& item : *list) {
                if (const auto text = scalar(item, "br or gzip")) {
                    if (*text != "br" && *text != "gzip") {
                        fail(item, "expected br or gzip, got " + in_quotes(*text));
                    } else if (std::find(codings.begin(), codings.end(), *text) != codings.end()) {
                        fail(item, *text + " is already in the list");
                    } else {
                        codings.push_back(*text);
                    }
                }
            }
            if (list->empty()) {
                fail(*c, "expected at least one of br and gzip (or enabled: false)");
            }
            out.codings = std::move(codings);
        }
    }
    optional_count(*m, "gzip_level", out.gzip_level, 1, 9);
    optional_count(*m, "brotli_quality", out.brotli_quality, 0, 11);
    optional_value(*m, "min_size", out.min_size, [&](const field& b) -> std::optional<std::uint64_t> {
        if (b.node.IsScalar() && b.node.Scalar() == "0") {
            return 0; // everything, however small
        }
        return size_value(b, 0, 1ULL << 30);
    });
    if (const auto t = m->get("types")) {
        if (const auto list = read_list(*t, "a list of media types like text/html")) {
            std::vector<std::string> types;
            for (const auto& item : *list) {
                if (auto text = scalar(item, "a media type like text/html")) {
                    std::transform(text->begin(), text->end(), text->begin(),
                                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
                    const auto slash = text->find('/');
                    const bool ok = slash != std::string::npos && slash > 0 && slash + 1 < text->size() &&
                                    text->find_first_of(" ;,\t", 0) == std::string::npos;
                    if (!ok) {
                        fail(item, "expected a media type like text/html (no parameters), got " + in_quotes(*text));
                    } else {
                        types.push_back(std::move(*text));
                    }
                }
            }
            out.types = std::move(types);
        }
    }
    optional_value(*m, "with_cookies", out.with_cookies, [&](const field& v) { return boolean(v); });
}

// The pages are read now, like certificates: a reload reads them again, and
// the workers (sandboxed, maybe nobody) never open them.
void checker::check_error_pages(const field& f, std::vector<error_page>& out) {
    const auto m = read_map(f, nullptr, "a map of status (400..599) to a .html, .json or .txt file");
    if (!m) {
        return;
    }
    constexpr std::size_t max_page = 64 * 1024;
    for (const auto& entry : m->entries) {
        const std::string& key = entry.first;
        const field& value = entry.second;
        unsigned status = 0;
        const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), status);
        if (ec != std::errc{} || end != key.data() + key.size() || status < 400 || status > 599) {
            fail(value.key_at, value.path, "expected a status from 400 to 599, got " + in_quotes(key));
            continue;
        }
        const auto path = file_path(value);
        if (!path) {
            continue;
        }
        const std::string ext = std::filesystem::path(*path).extension().string();
        std::string type;
        if (ext == ".html" || ext == ".htm") {
            type = "text/html; charset=utf-8";
        } else if (ext == ".json") {
            type = "application/json";
        } else if (ext == ".txt") {
            type = "text/plain; charset=utf-8";
        } else {
            fail(value, "expected a .html, .json or .txt file (its type), got " + in_quotes(*path));
            continue;
        }
        std::error_code size_ec;
        const auto size = std::filesystem::file_size(*path, size_ec);
        if (size_ec) {
            fail(value, "cannot read the error page " + *path + ": " + size_ec.message());
            continue;
        }
        if (size > max_page) {
            fail(value, "the error page " + *path + " is " + std::to_string(size) + " bytes; at most 64KiB");
            continue;
        }
        std::ifstream in(*path, std::ios::binary);
        std::string body((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (!in.good() && !in.eof()) {
            fail(value, "cannot read the error page " + *path);
            continue;
        }
        out.push_back(error_page{status, *path, std::move(type), std::move(body)});
    }
    std::sort(out.begin(), out.end(), [](const error_page& a, const error_page& b) { return a.status < b.status; });
}

void checker::check_security_headers(const field& f, std::vector<std::pair<std::string, std::string>>& out) {
    if (f.node.IsScalar()) {
        if (const auto b = boolean(f)) {
            if (!*b) {
                out.clear();
            }
        }
        return;
    }
    const auto m = read_map(f, nullptr, "a map of header name to value, or off");
    if (!m) {
        return;
    }
    for (const auto& entry_field : m->entries) {
        // Not a structured binding: clang 14 cannot capture one in a lambda.
        const std::string& name = entry_field.first;
        const field& value = entry_field.second;
        const bool token = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
        });
        if (!token) {
            fail(value.key_at, value.path, "expected a header name of letters, digits and dashes");
            continue;
        }
        const auto text = scalar(value, "a header value");
        if (!text) {
            continue;
        }
        if (std::any_of(text->begin(), text->end(),
                        [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
            fail(value, "control characters are not allowed in a header value");
            continue;
        }
        auto same = [&](const auto& entry) {
            return entry.first.size() == name.size() &&
                   std::equal(name.begin(), name.end(), entry.first.begin(), [](char a, char b) {
                       return std::tolower(static_cast<unsigned char>(a)) ==
                              std::tolower(static_cast<unsigned char>(b));
                   });
        };
        std::erase_if(out, same);
        if (!text->empty()) {
            out.emplace_back(name, *text);
        }
    }
}

// The token is a secret: its file must be private like a key, and its
// content never appears in an error message.
void checker::check_admin_token(const field& f, gateway& gw) {
    if (auto secret = secret_file(f, "admin token", 16)) {
        gw.admin_token_file = std::move(secret->first);
        gw.admin_token = std::move(secret->second);
    }
}

// A file holding a secret (the admin token, the HA pair's peer secret): mode
// 0600 or stricter, at least `min_size` printable characters without spaces
// (trailing white space ignored). Returns its path and content.
std::optional<std::pair<std::string, std::string>> checker::secret_file(const field& f, const std::string& what,
                                                                        std::size_t min_size) {
    const auto path = file_path(f);
    if (!path) {
        return std::nullopt;
    }
    struct stat st {};
    if (::stat(path->c_str(), &st) != 0) {
        fail(f, "cannot read the " + what + " file " + *path + ": " + std::strerror(errno));
        return std::nullopt;
    }
    if ((st.st_mode & 077) != 0) {
        fail(f, "the " + what + " file " + *path + " is readable by group or others; run: chmod 600 " + *path);
        return std::nullopt;
    }
    std::ifstream in(*path);
    std::string secret((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!secret.empty() && std::isspace(static_cast<unsigned char>(secret.back())) != 0) {
        secret.pop_back();
    }
    const bool printable = std::all_of(secret.begin(), secret.end(), [](char c) { return c > 0x20 && c < 0x7f; });
    if (!in.good() && !in.eof()) {
        fail(f, "cannot read the " + what + " file " + *path);
    } else if (secret.size() < min_size || !printable) {
        fail(f, "the " + what + " in " + *path + " must be at least " + std::to_string(min_size) +
                    " printable characters without spaces");
    } else {
        return std::pair(*path, std::move(secret));
    }
    return std::nullopt;
}

// `access_log: off` and `access_log: /var/log/rampart/access.log` are the
// short forms; the map form adds the buffer size.
namespace {

// RFC 5424's HOSTNAME: printable ASCII without spaces, "-" when unknown.
std::string syslog_hostname() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') {
        return "-";
    }
    std::string out(name);
    for (char& c : out) {
        if (c <= 0x20 || c >= 0x7f) {
            c = '_';
        }
    }
    return out;
}

} // namespace

void checker::check_access_log(const field& f, access_log& out) {
    constexpr std::string_view expected =
        "a map with path, format, buffer, facility and syslog_socket, or off, on, stdout, syslog or a file path";
    const auto target = [&](const field& p) -> std::optional<std::string> {
        if (p.node.IsScalar() && (p.node.Scalar() == "stdout" || p.node.Scalar() == "syslog")) {
            return p.node.Scalar();
        }
        return file_path(p);
    };
    if (f.node.IsScalar()) {
        if (const auto on = parse_bool(f.node.Scalar())) {
            out.enabled = *on;
        } else if (auto path = target(f)) {
            out.enabled = true;
            out.path = std::move(*path);
            out.hostname = out.path == "syslog" ? syslog_hostname() : std::string();
        }
        return;
    }
    const auto m = read_map(f, access_log_keys, expected);
    if (!m) {
        return;
    }
    out.enabled = true;
    optional_value(*m, "path", out.path, target);
    optional_value(*m, "buffer", out.buffer_bytes, [&](const field& b) { return size_value(b, 4096, 64ULL << 20); });
    optional_value(*m, "format", out.format, [&](const field& v) -> std::optional<access_log_format> {
        const auto text = scalar(v, "json or combined");
        if (!text) {
            return std::nullopt;
        }
        if (*text == "json") {
            return access_log_format::json;
        }
        if (*text == "combined") {
            return access_log_format::combined;
        }
        fail(v, "expected json or combined, got " + in_quotes(*text));
        return std::nullopt;
    });
    for (const char* key : {"facility", "syslog_socket"}) {
        if (const auto k = m->get(key); k && out.path != "syslog") {
            fail(*k, std::string(key) + " applies to path: syslog only");
        }
    }
    optional_value(*m, "facility", out.facility, [&](const field& v) -> std::optional<unsigned> {
        const auto text = scalar(v, "local0 .. local7, user or daemon");
        if (!text) {
            return std::nullopt;
        }
        if (*text == "user") {
            return 1U;
        }
        if (*text == "daemon") {
            return 3U;
        }
        if (text->size() == 6 && text->starts_with("local") && (*text)[5] >= '0' && (*text)[5] <= '7') {
            return 16U + static_cast<unsigned>((*text)[5] - '0');
        }
        fail(v, "expected local0 .. local7, user or daemon, got " + in_quotes(*text));
        return std::nullopt;
    });
    optional_value(*m, "syslog_socket", out.syslog_socket, [&](const field& v) { return file_path(v); });
    out.hostname = out.path == "syslog" ? syslog_hostname() : std::string();
}

void checker::check_abuse(const field& f, abuse& out) {
    const auto m = read_map(f, abuse_keys, "a map with block, threshold, window, block_for and allow");
    if (!m) {
        return;
    }
    optional_value(*m, "block", out.block, [&](const field& b) { return boolean(b); });
    optional_count(*m, "threshold", out.threshold, 1, 1'000'000);
    optional_value(*m, "window", out.window, [&](const field& d) { return duration_value(d, duration{1000}); });
    optional_value(*m, "block_for", out.block_for, [&](const field& d) { return duration_value(d, duration{1000}); });
    if (const auto a = m->get("allow")) {
        out.allow = network_list(*a);
    }
}

} // namespace rampart::config::detail
