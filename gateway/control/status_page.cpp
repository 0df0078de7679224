#include "gateway/control/status_page.hpp"

#include "gateway/control/status_assets.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <concepts>
#include <cstdio>
#include <ctime>
#include <stdexcept>
#include <type_traits>

#ifndef RAMPART_VERSION
#define RAMPART_VERSION "unknown"
#endif

namespace rampart::gateway {
namespace {

// ---------------------------------------------------------------------------
// The page: gateway/control/status/page.{html,css,js}, embedded at build time
// (status_assets.hpp). The style and the script are inlined into the HTML's
// empty <style></style> and <script></script>, so that the CSP can allow
// exactly them by their hashes (no 'unsafe-inline'). Every value from
// /api/status reaches the DOM through textContent, never innerHTML, and the
// page has no inline event handlers or style attributes (the CSP would refuse
// them).
// ---------------------------------------------------------------------------

/// 'sha256-<base64>' of `text`, the CSP source that allows one inline block.
std::string csp_hash(std::string_view text) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
    unsigned char encoded[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    const int n = EVP_EncodeBlock(encoded, digest, static_cast<int>(length));
    return "'sha256-" + std::string(reinterpret_cast<const char*>(encoded), static_cast<std::size_t>(n)) + "'";
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// Length of the valid UTF-8 sequence at `s[i]`, or 0 when it is not one
/// (overlong forms, surrogates and code points above U+10FFFF are invalid).
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = byte(i);
    std::size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xbf;
    if (c < 0x80) {
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (i + len > s.size()) {
        return 0;
    }
    if (byte(i + 1) < lo || byte(i + 1) > hi) {
        return 0;
    }
    for (std::size_t k = 2; k < len; ++k) {
        if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) {
            return 0;
        }
    }
    return len;
}

/// A JSON text built in one string: objects and arrays nest, commas are
/// placed automatically. Keys and strings go through json_string_body().
class json_writer {
public:
    json_writer& begin_object() { return open('{'); }
    json_writer& end_object() { return close('}'); }
    json_writer& begin_array() { return open('['); }
    json_writer& end_array() { return close(']'); }

    json_writer& key(std::string_view k) {
        separate();
        out_ += '"';
        out_ += json_string_body(k);
        out_ += "\":";
        after_key_ = true;
        return *this;
    }
    json_writer& value(std::string_view s) {
        separate();
        out_ += '"';
        out_ += json_string_body(s);
        out_ += '"';
        return *this;
    }
    json_writer& value(const char* s) { return value(std::string_view(s)); }
    json_writer& value(const std::string& s) { return value(std::string_view(s)); }
    json_writer& value(bool b) {
        separate();
        out_ += b ? "true" : "false";
        return *this;
    }
    template <std::integral T>
    requires(!std::same_as<T, bool>) json_writer& value(T n) {
        separate();
        out_ += std::to_string(n);
        return *this;
    }
    json_writer& null() {
        separate();
        out_ += "null";
        return *this;
    }
    template <class T> json_writer& field(std::string_view k, const T& v) {
        key(k);
        return value(v);
    }

    std::string take() {
        out_ += '\n';
        return std::move(out_);
    }

private:
    json_writer& open(char c) {
        separate();
        out_ += c;
        first_.push_back(true);
        return *this;
    }
    json_writer& close(char c) {
        out_ += c;
        first_.pop_back();
        return *this;
    }
    void separate() {
        if (after_key_) {
            after_key_ = false;
            return;
        }
        if (!first_.empty()) {
            if (!first_.back()) {
                out_ += ',';
            }
            first_.back() = false;
        }
    }

    std::string out_;
    std::vector<bool> first_;
    bool after_key_ = false;
};

std::string iso8601_utc(std::int64_t unix_seconds) {
    const std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    if (::gmtime_r(&t, &tm) == nullptr) {
        return "";
    }
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/// Whole days from `now` to `then`, rounded down (negative once expired).
std::int64_t days_between(std::int64_t now, std::int64_t then) {
    const std::int64_t diff = then - now;
    return diff >= 0 ? diff / 86400 : -((-diff + 86399) / 86400);
}

const char* server_state_name(const server_health& s, mono_ns now) {
    if (s.drained()) {
        return "drained";
    }
    if (!s.healthy()) {
        return "down";
    }
    if (s.ejected_until() > now) {
        return "ejected";
    }
    return "up";
}

} // namespace

std::string json_string_body(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
            out += buf;
        } else if (c >= 0x80) {
            const std::size_t len = utf8_sequence(text, i);
            if (len == 0) {
                out += "\xef\xbf\xbd"; // U+FFFD
                ++i;
            } else {
                out.append(text.substr(i, len));
                i += len;
            }
            continue;
        } else {
            out += static_cast<char>(c);
        }
        ++i;
    }
    return out;
}

std::string_view status_page_html() {
    static const std::string page = [] {
        using namespace status_assets;
        constexpr std::string_view style = "<style></style>";
        constexpr std::string_view script = "<script></script>";
        const auto at_style = page_html.find(style);
        const auto at_script = page_html.find(script);
        if (at_style == std::string_view::npos || at_script == std::string_view::npos || at_script < at_style) {
            throw std::logic_error("status/page.html lacks <style></style> before <script></script>");
        }
        const auto style_inside = at_style + style.size() - std::string_view("</style>").size();
        const auto script_inside = at_script + script.size() - std::string_view("</script>").size();
        std::string p;
        p.reserve(page_html.size() + page_css.size() + page_js.size());
        p.append(page_html.substr(0, style_inside))
            .append(page_css)
            .append(page_html.substr(style_inside, script_inside - style_inside))
            .append(page_js)
            .append(page_html.substr(script_inside));
        return p;
    }();
    return page;
}

std::string_view status_page_etag() {
    static const std::string etag = [] {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int length = 0;
        const std::string_view page = status_page_html();
        EVP_Digest(page.data(), page.size(), digest, &length, EVP_sha256(), nullptr);
        std::string tag = "\"";
        char hex[3];
        for (unsigned i = 0; i < 12 && i < length; ++i) {
            std::snprintf(hex, sizeof hex, "%02x", digest[i]);
            tag += hex;
        }
        return tag + "\"";
    }();
    return etag;
}

std::string_view status_page_csp() {
    static const std::string csp = "default-src 'none'; script-src " + csp_hash(status_assets::page_js) +
                                   "; style-src " + csp_hash(status_assets::page_css) +
                                   "; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                                   "frame-ancestors 'none'";
    return csp;
}

std::string status_json(const config::snapshot& cfg, const shared_block& shared, const slot_map& slots,
                        const status_extra& extra, std::chrono::system_clock::time_point now) {
    const std::int64_t now_unix = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    const mono_ns mono = mono_now();
    const unsigned workers = std::min<unsigned>(extra.workers, max_workers);
    auto sum = [&](auto member) {
        std::uint64_t total = 0;
        for (unsigned w = 0; w < workers; ++w) {
            total += (shared.workers[w].*member).load(std::memory_order_relaxed);
        }
        return total;
    };

    json_writer j;
    j.begin_object();
    j.field("site", cfg.site);
    j.field("version", RAMPART_VERSION);
    j.field("generation", extra.generation);
    j.field("last_reload", extra.last_reload);
    j.field("uptime_s", extra.started_unix > 0 ? std::max<std::int64_t>(0, now_unix - extra.started_unix) : 0);
    j.field("vrrp_state", extra.vrrp_state);
    j.field("workers", workers);
    j.field("worker_restarts", extra.worker_restarts);

    j.key("connections").begin_object();
    j.field("open", sum(&worker_counters::connections_active));
    j.field("total", sum(&worker_counters::connections_total));
    j.field("tunnels", sum(&worker_counters::tunnels_active));
    j.field("tunnels_total", sum(&worker_counters::tunnels_total));
    j.end_object();
    j.field("requests_total", sum(&worker_counters::requests_total));
    // Connections per protocol: h2 is what ALPN chose; http/1.1 is every
    // other connection (HTTP/1.0 clients, the port-80 redirect, handshakes
    // in progress).
    {
        const auto open = sum(&worker_counters::connections_active);
        const auto total = sum(&worker_counters::connections_total);
        const auto requests = sum(&worker_counters::requests_total);
        const auto h2_open = std::min(open, sum(&worker_counters::h2_connections_active));
        const auto h2_total = std::min(total, sum(&worker_counters::h2_connections_total));
        const auto h2_requests = std::min(requests, sum(&worker_counters::h2_requests_total));
        j.key("protocols").begin_array();
        j.begin_object()
            .field("protocol", "h2")
            .field("open", h2_open)
            .field("total", h2_total)
            .field("requests", h2_requests)
            .end_object();
        j.begin_object()
            .field("protocol", "http/1.1")
            .field("open", open - h2_open)
            .field("total", total - h2_total)
            .field("requests", requests - h2_requests)
            .end_object();
        j.end_array();
    }
    j.key("responses").begin_object();
    for (unsigned c = 1; c <= 5; ++c) {
        std::uint64_t total = 0;
        for (unsigned w = 0; w < workers; ++w) {
            total += shared.workers[w].responses_by_class[c].load(std::memory_order_relaxed);
        }
        j.field(std::to_string(c) + "xx", total);
    }
    j.end_object();
    j.key("handshakes").begin_object();
    j.field("full", sum(&worker_counters::handshakes_full));
    j.field("resumed", sum(&worker_counters::handshakes_resumed));
    j.field("failed", sum(&worker_counters::handshake_failures));
    j.end_object();

    j.key("pools").begin_array();
    for (std::size_t p = 0; p < cfg.gw.pools.size() && p < max_pools; ++p) {
        const config::pool& pool = cfg.gw.pools[p];
        const pool_state& ps = shared.pools[slots.pools.empty() ? p : slots.pools[p]];
        j.begin_object();
        j.field("name", pool.name);
        j.field("balance", config::to_string(pool.algorithm));
        j.field("queue", ps.queued.load(std::memory_order_relaxed));
        j.field("queue_timeouts", ps.queue_timeouts.load(std::memory_order_relaxed));
        j.field("rate_limited", ps.rate_limited.load(std::memory_order_relaxed));
        j.key("health");
        if (pool.health) {
            j.begin_object();
            j.field("path", pool.health->path);
            j.field("expect_status", pool.health->expect_status);
            j.field("interval_ms", static_cast<std::int64_t>(pool.health->interval.count()));
            j.field("rise", pool.health->rise);
            j.field("fall", pool.health->fall);
            j.end_object();
        } else {
            j.null();
        }
        j.key("servers").begin_array();
        for (const config::pool_member& m : pool.members) {
            const config::server* srv = cfg.find_server(m.name);
            if (srv == nullptr) {
                continue; // validated configs never get here
            }
            const auto index = static_cast<std::size_t>(srv - cfg.servers.data());
            if (index >= max_servers) {
                continue;
            }
            const server_health& s = shared.servers[slots.servers.empty() ? index : slots.servers[index]];
            const mono_ns until = s.ejected_until();
            j.begin_object();
            j.field("name", srv->name);
            j.field("address", m.address.host);
            j.field("port", static_cast<unsigned>(m.address.port));
            // A weight set through the runtime API wins over the configured one.
            j.field("weight", s.weight() != 0 ? static_cast<unsigned>(s.weight()) : m.weight);
            j.field("state", server_state_name(s, mono));
            j.field("healthy", s.healthy());
            j.field("drained", s.drained());
            j.field("ejected_ms", until > mono ? (until - mono) / 1'000'000 : 0);
            j.field("active", s.active());
            j.field("requests", s.requests());
            j.field("failures", s.failures());
            j.field("last_check", s.last_check());
            j.field("checks_passed", s.checks_passed());
            j.field("checks_failed", s.checks_failed());
            j.end_object();
        }
        j.end_array();
        j.end_object();
    }
    j.end_array();

    j.key("certificates").begin_array();
    for (const cert_info& c : extra.certificates) {
        j.begin_object();
        j.field("file", c.file);
        j.field("key_type", c.key_type);
        j.key("names").begin_array();
        for (const std::string& n : c.names) {
            j.value(n);
        }
        j.end_array();
        j.field("not_after", iso8601_utc(c.not_after_unix));
        j.field("days_left", days_between(now_unix, c.not_after_unix));
        j.end_object();
    }
    j.end_array();
    j.end_object();
    return j.take();
}

std::string status_json(const config::snapshot& cfg, const shared_block& shared, const slot_map& slots,
                        const status_extra& extra) {
    return status_json(cfg, shared, slots, extra, std::chrono::system_clock::now());
}

} // namespace rampart::gateway
