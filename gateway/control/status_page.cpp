#include "gateway/control/status_page.hpp"

#include "gateway/control/status_assets.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <concepts>
#include <cstdio>
#include <ctime>
#include <initializer_list>
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

namespace {

// ---------------------------------------------------------------------------
// What the status shows, read once from the configuration and the shared
// counters; written out as the JSON the page polls, or as the tables of the
// page without JavaScript.
// ---------------------------------------------------------------------------

struct protocol_view {
    const char* protocol;
    std::uint64_t open, total, requests;
};

struct server_view {
    std::string name, address;
    unsigned port = 0, weight = 0;
    const char* state = "up";
    bool healthy = true, drained = false;
    std::int64_t ejected_ms = 0;
    std::uint64_t active = 0, requests = 0, failures = 0;
    std::int32_t last_check = 0;
    std::uint64_t checks_passed = 0, checks_failed = 0;
};

struct pool_view {
    std::string name, balance;
    std::uint64_t queue = 0, queue_timeouts = 0, rate_limited = 0;
    const config::health_check* health = nullptr;
    std::vector<server_view> servers;
};

struct status_view {
    status_view(const config::snapshot& c, const status_extra& e) : cfg(c), extra(e) {}
    const config::snapshot& cfg;
    const status_extra& extra;
    std::int64_t now_unix = 0;
    std::int64_t uptime_s = 0;
    unsigned workers = 0;
    std::uint64_t open = 0, total = 0, tunnels = 0, tunnels_total = 0, requests = 0;
    protocol_view protocols[2] = {};
    std::uint64_t responses[6] = {};
    std::uint64_t full = 0, resumed = 0, failed = 0;
    std::vector<pool_view> pools;
};

status_view collect(const config::snapshot& cfg, const shared_block& shared, const slot_map& slots,
                    const status_extra& extra, std::chrono::system_clock::time_point now) {
    status_view v(cfg, extra);
    v.now_unix = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    v.uptime_s = extra.started_unix > 0 ? std::max<std::int64_t>(0, v.now_unix - extra.started_unix) : 0;
    const mono_ns mono = mono_now();
    v.workers = std::min<unsigned>(extra.workers, max_workers);
    auto sum = [&](auto member) {
        std::uint64_t total = 0;
        for (unsigned w = 0; w < v.workers; ++w) {
            total += (shared.workers[w].*member).load(std::memory_order_relaxed);
        }
        return total;
    };
    v.open = sum(&worker_counters::connections_active);
    v.total = sum(&worker_counters::connections_total);
    v.tunnels = sum(&worker_counters::tunnels_active);
    v.tunnels_total = sum(&worker_counters::tunnels_total);
    v.requests = sum(&worker_counters::requests_total);
    // Connections per protocol: h2 is what ALPN chose; http/1.1 is every
    // other connection (HTTP/1.0 clients, the port-80 redirect, handshakes
    // in progress).
    const auto h2_open = std::min(v.open, sum(&worker_counters::h2_connections_active));
    const auto h2_total = std::min(v.total, sum(&worker_counters::h2_connections_total));
    const auto h2_requests = std::min(v.requests, sum(&worker_counters::h2_requests_total));
    v.protocols[0] = {"h2", h2_open, h2_total, h2_requests};
    v.protocols[1] = {"http/1.1", v.open - h2_open, v.total - h2_total, v.requests - h2_requests};
    for (unsigned c = 1; c <= 5; ++c) {
        for (unsigned w = 0; w < v.workers; ++w) {
            v.responses[c] += shared.workers[w].responses_by_class[c].load(std::memory_order_relaxed);
        }
    }
    v.full = sum(&worker_counters::handshakes_full);
    v.resumed = sum(&worker_counters::handshakes_resumed);
    v.failed = sum(&worker_counters::handshake_failures);

    for (std::size_t p = 0; p < cfg.gw.pools.size() && p < max_pools; ++p) {
        const config::pool& pool = cfg.gw.pools[p];
        const pool_state& ps = shared.pools[slots.pools.empty() ? p : slots.pools[p]];
        pool_view pv;
        pv.name = pool.name;
        pv.balance = config::to_string(pool.algorithm);
        pv.queue = ps.queued.load(std::memory_order_relaxed);
        pv.queue_timeouts = ps.queue_timeouts.load(std::memory_order_relaxed);
        pv.rate_limited = ps.rate_limited.load(std::memory_order_relaxed);
        pv.health = pool.health ? &*pool.health : nullptr;
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
            server_view sv;
            sv.name = srv->name;
            sv.address = m.address.host;
            sv.port = m.address.port;
            // A weight set through the runtime API wins over the configured one.
            sv.weight = s.weight() != 0 ? static_cast<unsigned>(s.weight()) : m.weight;
            sv.state = server_state_name(s, mono);
            sv.healthy = s.healthy();
            sv.drained = s.drained();
            sv.ejected_ms = until > mono ? (until - mono) / 1'000'000 : 0;
            sv.active = s.active();
            sv.requests = s.requests();
            sv.failures = s.failures();
            sv.last_check = s.last_check();
            sv.checks_passed = s.checks_passed();
            sv.checks_failed = s.checks_failed();
            pv.servers.push_back(std::move(sv));
        }
        v.pools.push_back(std::move(pv));
    }
    return v;
}

std::string to_json(const status_view& v) {
    const status_extra& extra = v.extra;
    json_writer j;
    j.begin_object();
    j.field("site", v.cfg.site);
    j.field("version", RAMPART_VERSION);
    j.field("generation", extra.generation);
    j.field("last_reload", extra.last_reload);
    j.field("uptime_s", v.uptime_s);
    j.field("vrrp_state", extra.vrrp_state);
    j.field("maintenance", extra.maintenance);
    j.field("workers", v.workers);
    j.field("worker_restarts", extra.worker_restarts);

    j.key("connections").begin_object();
    j.field("open", v.open);
    j.field("total", v.total);
    j.field("tunnels", v.tunnels);
    j.field("tunnels_total", v.tunnels_total);
    j.end_object();
    j.field("requests_total", v.requests);
    j.key("protocols").begin_array();
    for (const protocol_view& p : v.protocols) {
        j.begin_object()
            .field("protocol", p.protocol)
            .field("open", p.open)
            .field("total", p.total)
            .field("requests", p.requests)
            .end_object();
    }
    j.end_array();
    j.key("responses").begin_object();
    for (unsigned c = 1; c <= 5; ++c) {
        j.field(std::to_string(c) + "xx", v.responses[c]);
    }
    j.end_object();
    j.key("handshakes").begin_object();
    j.field("full", v.full);
    j.field("resumed", v.resumed);
    j.field("failed", v.failed);
    j.end_object();

    j.key("pools").begin_array();
    for (const pool_view& pool : v.pools) {
        j.begin_object();
        j.field("name", pool.name);
        j.field("balance", pool.balance);
        j.field("queue", pool.queue);
        j.field("queue_timeouts", pool.queue_timeouts);
        j.field("rate_limited", pool.rate_limited);
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
        for (const server_view& s : pool.servers) {
            j.begin_object();
            j.field("name", s.name);
            j.field("address", s.address);
            j.field("port", s.port);
            j.field("weight", s.weight);
            j.field("state", s.state);
            j.field("healthy", s.healthy);
            j.field("drained", s.drained);
            j.field("ejected_ms", s.ejected_ms);
            j.field("active", s.active);
            j.field("requests", s.requests);
            j.field("failures", s.failures);
            j.field("last_check", s.last_check);
            j.field("checks_passed", s.checks_passed);
            j.field("checks_failed", s.checks_failed);
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
        j.field("days_left", days_between(v.now_unix, c.not_after_unix));
        j.field("issuer", c.issuer);
        if (!c.acme.empty()) {
            j.key("acme").begin_object();
            j.field("state", c.acme);
            j.field("next_attempt", iso8601_utc(c.acme_next_unix));
            j.field("last_error", c.acme_error);
            j.end_object();
        }
        j.end_object();
    }
    j.end_array();
    j.end_object();
    return j.take();
}

/// `text` as HTML text or attribute content (invalid UTF-8 replaced).
std::string html(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        const std::size_t len = c >= 0x80 ? utf8_sequence(text, i) : 1;
        if (len == 0) {
            out += "\xef\xbf\xbd";
            ++i;
            continue;
        }
        switch (c) {
        case '&':
            out += "&amp;";
            break;
        case '<':
            out += "&lt;";
            break;
        case '>':
            out += "&gt;";
            break;
        case '"':
            out += "&quot;";
            break;
        case '\'':
            out += "&#39;";
            break;
        default:
            out.append(text.substr(i, len));
        }
        i += len;
    }
    return out;
}

constexpr std::string_view tables_style =
    "body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#1d2430}"
    "table{border-collapse:collapse;margin:6px 0 18px}th,td{border:1px solid #dde2ea;padding:4px 10px;"
    "text-align:left}td.num{text-align:right}th{background:#f4f6f9}h1{font-size:20px}h2{font-size:16px}";

std::string to_html(const status_view& v) {
    const status_extra& extra = v.extra;
    std::string o;
    o.reserve(4096);
    auto cell = [&](std::string_view text, bool num = false) {
        o += num ? "<td class=\"num\">" : "<td>";
        o += html(text);
        o += "</td>";
    };
    auto number = [&](std::uint64_t n) { cell(std::to_string(n), true); };
    auto head = [&](std::initializer_list<std::string_view> names) {
        o += "<tr>";
        for (const auto n : names) {
            o += "<th>";
            o += n;
            o += "</th>";
        }
        o += "</tr>";
    };
    o += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
         "<meta http-equiv=\"refresh\" content=\"10\"><meta name=\"referrer\" content=\"no-referrer\">"
         "<title>Rampart status (tables) \xc2\xb7 ";
    o += html(v.cfg.site);
    o += "</title><style>";
    o += tables_style;
    o += "</style></head><body><h1>Rampart \xc2\xb7 ";
    o += html(v.cfg.site);
    o += "</h1><p>The status page without JavaScript: these tables, read again every 10 s. "
         "<a href=\"/status\">The live page</a> adds charts.</p><table id=\"gateway\">";
    auto row = [&](std::string_view name, std::string_view value) {
        o += "<tr><th>";
        o += name;
        o += "</th>";
        cell(value);
        o += "</tr>";
    };
    row("version", RAMPART_VERSION);
    row("config generation", std::to_string(extra.generation));
    row("last reload", extra.last_reload);
    row("uptime", std::to_string(v.uptime_s) + " s");
    row("VRRP", extra.vrrp_state);
    row("maintenance", extra.maintenance);
    row("workers", std::to_string(v.workers) + " (" + std::to_string(extra.worker_restarts) + " restarted)");
    row("connections open", std::to_string(v.open) + " (" + std::to_string(v.tunnels) + " WebSocket)");
    row("connections total", std::to_string(v.total));
    row("requests total", std::to_string(v.requests));
    row("responses", "1xx " + std::to_string(v.responses[1]) + ", 2xx " + std::to_string(v.responses[2]) + ", 3xx " +
                         std::to_string(v.responses[3]) + ", 4xx " + std::to_string(v.responses[4]) + ", 5xx " +
                         std::to_string(v.responses[5]));
    row("TLS handshakes", "full " + std::to_string(v.full) + ", resumed " + std::to_string(v.resumed) + ", failed " +
                              std::to_string(v.failed));
    o += "</table>";
    for (const pool_view& pool : v.pools) {
        o += "<h2>Pool ";
        o += html(pool.name);
        o += "</h2><p>";
        o += html(pool.balance);
        o += ", queue " + std::to_string(pool.queue) + ", " + std::to_string(pool.queue_timeouts) +
             " queue timeouts, " + std::to_string(pool.rate_limited) + " rate limited</p><table data-pool=\"";
        o += html(pool.name);
        o += "\">";
        head({"Server", "Address", "State", "Weight", "Active", "Requests", "Failures", "Last check", "Checks ok",
              "Checks failed"});
        for (const server_view& s : pool.servers) {
            o += "<tr data-server=\"" + html(s.name) + "\">";
            cell(s.name);
            cell(s.address.find(':') != std::string::npos ? "[" + s.address + "]:" + std::to_string(s.port)
                                                          : s.address + ":" + std::to_string(s.port));
            std::string state = s.state;
            std::transform(state.begin(), state.end(), state.begin(), [](unsigned char c) { return std::toupper(c); });
            if (s.ejected_ms > 0 && std::string_view(s.state) == "ejected") {
                state += " " + std::to_string((s.ejected_ms + 999) / 1000) + " s";
            }
            cell(state);
            number(s.weight);
            number(s.active);
            number(s.requests);
            number(s.failures);
            cell(!pool.health        ? "no checks"
                 : s.last_check == 0 ? "pending"
                 : s.last_check < 0  ? "no response"
                                     : "HTTP " + std::to_string(s.last_check));
            number(s.checks_passed);
            number(s.checks_failed);
            o += "</tr>";
        }
        o += "</table>";
    }
    o += "<h2>Client protocols</h2><table id=\"protocols\">";
    head({"Protocol", "Connections open", "Connections total", "Requests"});
    for (const protocol_view& p : v.protocols) {
        o += "<tr>";
        cell(p.protocol);
        number(p.open);
        number(p.total);
        number(p.requests);
        o += "</tr>";
    }
    o += "</table><h2>Certificates</h2><table id=\"certs\">";
    head({"File", "Key", "Names", "Issuer", "Not after", "Days left", "ACME"});
    for (const cert_info& c : extra.certificates) {
        o += "<tr>";
        cell(c.file);
        cell(c.key_type);
        std::string names;
        for (const std::string& n : c.names) {
            names += (names.empty() ? "" : ", ") + n;
        }
        cell(names);
        cell(c.issuer);
        cell(iso8601_utc(c.not_after_unix));
        const std::int64_t days = days_between(v.now_unix, c.not_after_unix);
        cell(days < 0 ? "expired" : std::to_string(days), true);
        cell(c.acme.empty() ? std::string("—")
                            : c.acme + ", next " + iso8601_utc(c.acme_next_unix) +
                                  (c.acme_error.empty() ? std::string() : "; last error: " + c.acme_error));
        o += "</tr>";
    }
    o += "</table></body></html>\n";
    return o;
}

} // namespace

std::string status_json(const config::snapshot& cfg, const shared_block& shared, const slot_map& slots,
                        const status_extra& extra, std::chrono::system_clock::time_point now) {
    return to_json(collect(cfg, shared, slots, extra, now));
}

std::string status_tables_html(const config::snapshot& cfg, const shared_block& shared, const slot_map& slots,
                               const status_extra& extra, std::chrono::system_clock::time_point now) {
    return to_html(collect(cfg, shared, slots, extra, now));
}

std::string_view status_tables_csp() {
    static const std::string csp = "default-src 'none'; style-src " + csp_hash(tables_style) +
                                   "; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    return csp;
}

std::string status_json(const config::snapshot& cfg, const shared_block& shared, const slot_map& slots,
                        const status_extra& extra) {
    return status_json(cfg, shared, slots, extra, std::chrono::system_clock::now());
}

} // namespace rampart::gateway
