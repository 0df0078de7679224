#include "gateway/control/admin.hpp"

#include "gateway/proxy/h2_connection.hpp"
#include "gateway/proxy/http_rules.hpp"
#include "gateway/proxy/static_files.hpp"

#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include "gateway/log.hpp"
#include "ha/peer.hpp"
#include "ha/status.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <vector>

namespace rampart::gateway {
namespace {

void metric(std::ostringstream& out, const char* name, const char* type, const char* help) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
}

/// One line per server of `name{server="..."} value`.
template <class Value>
void per_server(std::ostringstream& out, const config::snapshot& cfg, const char* name, Value value) {
    for (std::size_t i = 0; i < cfg.servers.size(); ++i) {
        out << name << "{server=\"" << cfg.servers[i].name << "\"} " << value(i) << '\n';
    }
}

/// Servers that are members of some pool (the others are not proxied to).
std::vector<std::size_t> pooled_servers(const config::snapshot& cfg) {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < cfg.servers.size(); ++i) {
        for (const auto& p : cfg.gw.pools) {
            if (std::any_of(p.members.begin(), p.members.end(),
                            [&](const config::pool_member& m) { return m.server == i; })) {
                out.push_back(i);
                break;
            }
        }
    }
    return out;
}

/// A Prometheus label value: backslash, double quote and newline escaped.
std::string label_value(std::string_view text) {
    std::string out;
    for (char c : text) {
        if (c == '\\' || c == '"') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

/// The managed certificates' expiry, next attempt and failures.
void render_acme_metrics(std::ostringstream& out, const std::vector<acme_certificate_status>& certs) {
    metric(out, "rampart_acme_certificate_expiry_timestamp_seconds", "gauge",
           "When the certificate ACME manages for a key type expires (0: only the self-signed placeholder so far).");
    for (const auto& c : certs) {
        out << "rampart_acme_certificate_expiry_timestamp_seconds{key_type=\"" << c.key_type << "\"} "
            << (c.placeholder ? 0 : c.not_after) << '\n';
    }
    metric(out, "rampart_acme_next_attempt_timestamp_seconds", "gauge",
           "When the next order (renewal or retry) for a key type is due.");
    for (const auto& c : certs) {
        out << "rampart_acme_next_attempt_timestamp_seconds{key_type=\"" << c.key_type << "\"} " << c.next_attempt
            << '\n';
    }
    metric(out, "rampart_acme_failures_total", "counter", "Orders that failed (the log says why).");
    for (const auto& c : certs) {
        out << "rampart_acme_failures_total{key_type=\"" << c.key_type << "\"} " << c.failures_total << '\n';
    }
    metric(out, "rampart_acme_consecutive_failures", "gauge", "Orders failed since the last success.");
    for (const auto& c : certs) {
        out << "rampart_acme_consecutive_failures{key_type=\"" << c.key_type << "\"} " << c.consecutive_failures
            << '\n';
    }
    metric(out, "rampart_acme_certificates_issued_total", "counter", "Certificates issued since start.");
    for (const auto& c : certs) {
        out << "rampart_acme_certificates_issued_total{key_type=\"" << c.key_type << "\"} " << c.issued_total << '\n';
    }
}

/// /readyz's warning lines: a managed certificate still the placeholder, or
/// within 7 days of its end while its renewal is failing or overdue.
std::string acme_warnings(const admin_state& a) {
    std::string out;
    if (a.acme == nullptr) {
        return out;
    }
    const auto now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    for (const auto& c : *a.acme) {
        if (c.placeholder) {
            out += "warning: the " + c.key_type + " certificate is a self-signed placeholder: ACME has not issued it" +
                   (c.last_error.empty() ? std::string() : " (" + c.last_error + ")") + "\n";
        } else if (c.not_after - now < 7 * 24 * 3600 && (c.consecutive_failures > 0 || c.next_attempt + 60 < now)) {
            out += "warning: the " + c.key_type + " certificate expires in " +
                   std::to_string(std::max<std::int64_t>(c.not_after - now, 0) / 3600) + " h and is not renewed" +
                   (c.last_error.empty() ? std::string() : " (" + c.last_error + ")") + "\n";
        }
    }
    return out;
}

std::string json_escape(std::string_view text) {
    std::string out;
    for (char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
            out += buf;
        } else {
            out += c;
        }
    }
    return out;
}

} // namespace

std::string servers_json(const admin_state& a) {
    const config::snapshot& cfg = *a.cfg;
    const mono_ns now = mono_now();
    std::ostringstream out;
    out << "{\"servers\":[";
    bool first = true;
    for (std::size_t i : pooled_servers(cfg)) {
        const auto& srv = cfg.servers[i];
        const server_health& s = a.shared.servers[a.slots.servers[i]];
        const mono_ns until = s.ejected_until();
        out << (first ? "" : ",") << "{\"name\":\"" << json_escape(srv.name) << "\",\"address\":\""
            << json_escape(srv.address) << "\",\"port\":" << srv.port.value_or(0)
            << ",\"healthy\":" << (s.healthy() ? "true" : "false")
            << ",\"drained\":" << (s.drained() ? "true" : "false")
            << ",\"weight\":" << (s.weight() != 0 ? s.weight() : srv.weight)
            << ",\"ejected_ms\":" << (until > now ? (until - now) / 1'000'000 : 0)
            << ",\"available\":" << (s.available(now) ? "true" : "false") << ",\"active\":" << s.active()
            << ",\"requests\":" << s.requests() << ",\"failures\":" << s.failures()
            << ",\"ejections\":" << s.ejections() << ",\"retries\":" << s.retries()
            << ",\"checks_passed\":" << s.checks_passed() << ",\"checks_failed\":" << s.checks_failed()
            << ",\"last_check\":" << s.last_check() << '}';
        first = false;
    }
    out << "]}\n";
    return out.str();
}

namespace {

/// What the status shows that changes without a reload.
void refresh_status(admin_state& state) {
    state.status.worker_restarts = state.worker_restarts;
    state.status.vrrp_state = state.vrrp.enabled ? state.vrrp.state : "unknown";
    state.status.workers = state.worker_slots;
    // ACME's certificates: their order state, by file.
    if (state.acme != nullptr) {
        for (auto& c : state.status.certificates) {
            for (const auto& a : *state.acme) {
                if (a.file == c.file) {
                    c.acme = a.placeholder ? "placeholder" : "issued";
                    c.acme_next_unix = a.next_attempt;
                    c.acme_error = a.last_error;
                }
            }
        }
    }
}

} // namespace

void publish_maintenance(admin_state& a) {
    auto& m = a.maintenance;
    std::vector<std::string> kept;
    for (const auto& name : m.routes) {
        const auto& routes = a.cfg->gw.routes;
        if (std::none_of(routes.begin(), routes.end(), [&](const config::route& r) { return r.name == name; })) {
            log(log_level::warn, "maintenance: the configuration has no route named " + name + " any more");
            continue;
        }
        kept.push_back(name);
    }
    m.routes = std::move(kept);
    // By the route's name (its key), not its place: workers of the previous
    // configuration, still draining, read the same list right.
    a.shared.maintenance_retry_after.store(m.retry_after, std::memory_order_relaxed);
    for (std::size_t i = 0; i < m.routes.size() && i < max_maintenance_routes; ++i) {
        a.shared.maintenance_routes[i].store(route_name_key(m.routes[i]), std::memory_order_relaxed);
    }
    a.shared.maintenance_route_count.store(
        static_cast<std::uint32_t>(std::min(m.routes.size(), max_maintenance_routes)), std::memory_order_release);
    a.shared.maintenance_site.store(m.site ? 1 : 0, std::memory_order_release);
    std::string text = m.site ? "site" : "off";
    if (!m.site && !m.routes.empty()) {
        text = "routes";
        for (std::size_t i = 0; i < m.routes.size(); ++i) {
            text += (i == 0 ? " " : ", ") + m.routes[i];
        }
    }
    a.status.maintenance = std::move(text);
}

namespace {

/// GET /api/maintenance; POST /api/maintenance/on|off[?route=NAME][&retry_after=SECONDS].
std::string maintenance_json(const admin_state& a) {
    std::string out = std::string("{\"site\":") + (a.maintenance.site ? "true" : "false") + ",\"routes\":[";
    for (std::size_t i = 0; i < a.maintenance.routes.size(); ++i) {
        out += (i == 0 ? "\"" : ",\"") + json_escape(a.maintenance.routes[i]) + "\"";
    }
    return out + "],\"retry_after\":" + std::to_string(a.maintenance.retry_after) + "}\n";
}

/// The value of `key` in a query string ("" when absent).
std::string_view query_value(std::string_view query, std::string_view key) {
    while (!query.empty()) {
        const auto amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        if (pair.size() > key.size() && pair.starts_with(key) && pair[key.size()] == '=') {
            return pair.substr(key.size() + 1);
        }
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    }
    return {};
}

/// The runtime API: GET /api/servers, POST /api/servers/NAME/drain|enable.
http::response<http::string_body> api(const http::request<http::empty_body>& req, admin_state& a) {
    const config::snapshot& cfg = *a.cfg;
    auto json = [&](http::status st, std::string body) {
        http::response<http::string_body> res{st, req.version()};
        res.set(http::field::content_type, "application/json");
        res.body() = std::move(body);
        return res;
    };
    std::string_view target = req.target();
    if (target == "/api/servers") {
        if (req.method() != http::verb::get) {
            return json(http::status::method_not_allowed, "{\"error\":\"use GET\"}\n");
        }
        return json(http::status::ok, servers_json(a));
    }
    if (target == "/api/reload") {
        if (req.method() != http::verb::post) {
            return json(http::status::method_not_allowed, "{\"error\":\"use POST\"}\n");
        }
        if (!a.reload) {
            return json(http::status::service_unavailable, "{\"error\":\"reload is not available\"}\n");
        }
        auto [ok, message] = a.reload();
        return json(ok ? http::status::ok : http::status::unprocessable_entity,
                    std::string("{\"reloaded\":") + (ok ? "true" : "false") + ",\"generation\":" +
                        std::to_string(a.generation) + ",\"message\":\"" + json_escape(message) + "\"}\n");
    }
    if (target == "/api/maintenance") {
        if (req.method() != http::verb::get) {
            return json(http::status::method_not_allowed,
                        "{\"error\":\"use GET, or POST to /api/maintenance/on or /off\"}\n");
        }
        return json(http::status::ok, maintenance_json(a));
    }
    if (target.starts_with("/api/maintenance/")) {
        const auto question = target.find('?');
        const std::string_view action =
            target.substr(17, question == std::string_view::npos ? question : question - 17);
        const std::string_view query = question == std::string_view::npos ? "" : target.substr(question + 1);
        if (action != "on" && action != "off") {
            return json(http::status::not_found, "{\"error\":\"use /api/maintenance/on or /api/maintenance/off\"}\n");
        }
        if (req.method() != http::verb::post) {
            return json(http::status::method_not_allowed, "{\"error\":\"use POST\"}\n");
        }
        const bool on = action == "on";
        const std::string route(query_value(query, "route"));
        std::optional<unsigned> retry_after;
        if (const std::string_view retry = query_value(query, "retry_after"); !retry.empty()) {
            unsigned seconds = 0;
            const auto [end, ec] = std::from_chars(retry.data(), retry.data() + retry.size(), seconds);
            if (ec != std::errc{} || end != retry.data() + retry.size() || seconds > 86400) {
                return json(http::status::bad_request, "{\"error\":\"retry_after is 0 to 86400 seconds\"}\n");
            }
            retry_after = seconds;
        }
        auto& m = a.maintenance;
        if (route.empty()) {
            m.site = on;
            if (!on) {
                m.routes.clear(); // off for the site ends every route's maintenance too
            }
        } else {
            const auto& routes = cfg.gw.routes;
            const auto it =
                std::find_if(routes.begin(), routes.end(), [&](const config::route& r) { return r.name == route; });
            if (it == routes.end()) {
                return json(http::status::not_found, "{\"error\":\"no route named " + json_escape(route) + "\"}\n");
            }
            if (static_cast<std::size_t>(it - routes.begin()) >= max_maintenance_routes) {
                return json(http::status::bad_request,
                            "{\"error\":\"only the first 256 routes can be put in maintenance\"}\n");
            }
            if (m.routes.size() >= max_maintenance_routes && on &&
                std::find(m.routes.begin(), m.routes.end(), route) == m.routes.end()) {
                return json(http::status::bad_request, "{\"error\":\"at most 64 routes in maintenance at once\"}\n");
            }
            std::erase(m.routes, route);
            if (on) {
                m.routes.push_back(route);
                std::sort(m.routes.begin(), m.routes.end());
            }
        }
        if (retry_after) {
            m.retry_after = *retry_after; // only once the request is known to be good
        }
        publish_maintenance(a);
        log(log_level::info, "admin: maintenance " + std::string(on ? "on" : "off") +
                                 (route.empty() ? " for the site" : " for route " + route) + "; now " +
                                 a.status.maintenance);
        return json(http::status::ok, maintenance_json(a));
    }
    if (target == "/api/ha/release" || target == "/api/ha/resume") {
        if (req.method() != http::verb::post) {
            return json(http::status::method_not_allowed, "{\"error\":\"use POST\"}\n");
        }
        a.ha_released = target == "/api/ha/release";
        log(log_level::info, a.ha_released ? "admin: giving up the VIP (reported unhealthy to keepalived)"
                                           : "admin: taking part in VRRP again");
        return json(http::status::ok, std::string("{\"released\":") + (a.ha_released ? "true" : "false") + "}\n");
    }
    constexpr std::string_view prefix = "/api/servers/";
    if (target.starts_with(prefix)) {
        std::string_view rest = target.substr(prefix.size());
        const auto slash = rest.find('/');
        const std::string_view name = rest.substr(0, slash);
        const std::string_view action = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
        std::size_t index = cfg.servers.size();
        for (std::size_t i : pooled_servers(cfg)) {
            if (cfg.servers[i].name == name) {
                index = i;
            }
        }
        if (index == cfg.servers.size()) {
            return json(http::status::not_found, "{\"error\":\"no pooled server named " + json_escape(name) + "\"}\n");
        }
        if (action.starts_with("weight")) {
            // POST /api/servers/NAME/weight?value=N (1..256), or value=default.
            if (req.method() != http::verb::post) {
                return json(http::status::method_not_allowed, "{\"error\":\"use POST\"}\n");
            }
            constexpr std::string_view query = "weight?value=";
            const std::string_view value = action.starts_with(query) ? action.substr(query.size()) : "";
            unsigned w = 0;
            if (value != "default") {
                const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), w);
                if (ec != std::errc{} || end != value.data() + value.size() || w < 1 || w > 256) {
                    return json(http::status::bad_request,
                                "{\"error\":\"expected weight?value=N with N from 1 to 256, or value=default\"}\n");
                }
            }
            server_health& s = a.shared.servers[a.slots.servers[index]];
            s.set_weight(static_cast<std::uint16_t>(w));
            a.shared.weights_version.fetch_add(1, std::memory_order_relaxed);
            log(log_level::info, "admin: upstream " + cfg.servers[index].name + " weight " +
                                     (w == 0 ? std::string("back to the configured one") : std::to_string(w)));
            return json(http::status::ok, "{\"name\":\"" + json_escape(name) + "\",\"weight\":" +
                                              (w == 0 ? std::string("null") : std::to_string(w)) + "}\n");
        }
        if (action != "drain" && action != "enable") {
            return json(http::status::not_found, "{\"error\":\"actions are drain, enable and weight\"}\n");
        }
        if (req.method() != http::verb::post) {
            return json(http::status::method_not_allowed, "{\"error\":\"use POST\"}\n");
        }
        server_health& s = a.shared.servers[a.slots.servers[index]];
        const bool drain = action == "drain";
        if (drain) {
            s.drain();
        } else {
            s.enable(mono_now()); // through slow start after a drain
        }
        log(log_level::info, "admin: upstream " + cfg.servers[index].name + (drain ? " drained" : " enabled"));
        return json(http::status::ok, "{\"name\":\"" + json_escape(name) +
                                          "\",\"drained\":" + (drain ? "true" : "false") +
                                          ",\"active\":" + std::to_string(s.active()) + "}\n");
    }
    return make_error_response(http::status::not_found, req.version(), "", true);
}

// True when the request carries the admin token (or none is configured).
// Compared in constant time: the admin listener may face a network.
bool authorized(const http::request<http::empty_body>& req, const std::string& token) {
    if (token.empty()) {
        return true;
    }
    std::string_view auth = req[http::field::authorization];
    constexpr std::string_view scheme = "Bearer ";
    if (auth.size() != scheme.size() + token.size() || !auth.starts_with(scheme)) {
        return false;
    }
    unsigned char diff = 0;
    for (std::size_t i = 0; i < token.size(); ++i) {
        diff |= static_cast<unsigned char>(auth[scheme.size() + i] ^ token[i]);
    }
    return diff == 0;
}

// GET /api/ha/peer: the peer check's question, answered only to the peer
// node that proves it holds the pair's secret (ha/peer.hpp); the admin token
// is neither needed nor accepted here. Refusals are counted, and logged at
// most once a minute (the listener may face a network).
http::response<http::string_body> peer_answer(const http::request<http::empty_body>& req, admin_state& a) {
    const config::ha* h = a.cfg->ha_pair ? &*a.cfg->ha_pair : nullptr;
    if (!a.vrrp.enabled || h == nullptr || !h->peer_check.enabled) {
        return make_error_response(http::status::not_found, req.version(), "", true);
    }
    const auto claim = ha::parse_peer_claim(req[ha::peer_auth_header]);
    const std::string refusal =
        req.method() != http::verb::get ? "not a GET"
        : !claim                        ? "no valid " + std::string(ha::peer_auth_header) + " header"
                 : ha::check_peer_claim(*claim, h->peer_check.secret, a.vrrp.peer.node, ha::unix_seconds());
    if (!refusal.empty()) {
        peer_info& p = a.vrrp.peer;
        ++p.requests_refused;
        const auto now = std::chrono::steady_clock::now();
        if (!p.refusal_logged_at || now - *p.refusal_logged_at >= std::chrono::minutes(1)) {
            p.refusal_logged_at = now;
            log(log_level::warn, "ha: refused a peer check request: " + refusal + " (" +
                                     std::to_string(p.requests_refused) + " refused so far)");
        }
        return make_error_response(http::status::unauthorized, req.version(), "", true);
    }
    ha::peer_view v;
    v.node = a.vrrp.node;
    v.state = a.vrrp.state;
    v.vip_held = a.vrrp.vip_held;
    v.healthy = a.vrrp.healthy;
    v.priority = a.vrrp.priority;
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, "application/json");
    res.body() = ha::peer_answer_body(v);
    res.set(ha::peer_mac_header, ha::sign_peer_answer(h->peer_check.secret, claim->nonce, res.body()));
    return res;
}

net::awaitable<void> serve_admin_connection(tcp_socket socket, admin_state& state) {
    beast::flat_buffer buffer;
    buffer.max_size(16 * 1024);
    http::request<http::empty_body> req;
    // One request per connection, bounded in time by the socket closing when
    // the peer is slow: the admin listener is on loopback or an admin network.
    net::steady_timer deadline(socket.get_executor());
    deadline.expires_after(std::chrono::seconds(5));
    deadline.async_wait([&socket](const error_code& ec) {
        if (!ec) {
            error_code ignored;
            socket.cancel(ignored);
        }
    });
    auto [ec, n] = co_await http::async_read(socket, buffer, req, use_tuple);
    if (ec) {
        deadline.cancel();
        co_return;
    }
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::server, "rampart");
    res.set(http::field::cache_control, "no-store");
    const std::string_view target = req.target();
    if (target == "/healthz") {
        res.set(http::field::content_type, "text/plain");
        res.body() = "ok\n";
    } else if (target == "/readyz") {
        const bool ok = ready(state);
        res.result(ok ? http::status::ok : http::status::service_unavailable);
        res.set(http::field::content_type, "text/plain");
        res.body() = ok ? "ready\n" : "not ready: a pool that requests go to has no available server\n";
        res.body() += acme_warnings(state);
    } else if (target == "/status") {
        // The page holds no data and a browser cannot send a bearer token
        // when it opens a URL: it is served without one; the page sends the
        // token on its /api/ calls.
        res.set(http::field::content_type, "text/html; charset=utf-8");
        res.set("Content-Security-Policy", status_page_csp());
        res.set("X-Content-Type-Options", "nosniff");
        // Revalidated on every load (no-cache), answered 304 while the
        // binary serves the same page.
        res.set(http::field::cache_control, "no-cache");
        res.set(http::field::etag, status_page_etag());
        const bool safe = req.method() == http::verb::get || req.method() == http::verb::head;
        if (safe && if_none_match_matches(req[http::field::if_none_match], status_page_etag())) {
            res.result(http::status::not_modified);
            res.erase(http::field::content_type); // no representation in a 304 (RFC 9110 15.4.5)
        } else {
            res.body() = status_page_html();
        }
    } else if (target == "/api/ha/acme" || target.starts_with("/api/ha/acme?")) {
        // The peer's question: the answer is sealed with the pair's secret,
        // so no admin token (the peer has none of this node's).
        if (state.acme_transfer) {
            res = state.acme_transfer(req);
        } else {
            res = make_error_response(http::status::not_found, req.version(), "", true);
        }
        res.set(http::field::server, "rampart");
    } else if (target == "/api/ha/peer") {
        res = peer_answer(req, state);
        res.set(http::field::server, "rampart");
        res.set(http::field::cache_control, "no-store");
    } else if (!authorized(req, state.cfg->gw.admin_token)) {
        res = make_error_response(http::status::unauthorized, req.version(), "", true);
        res.set(http::field::www_authenticate, "Bearer realm=\"rampart\"");
    } else if (target == "/metrics") {
        res.set(http::field::content_type, "text/plain; version=0.0.4");
        res.body() = render_metrics(state);
    } else if (target == "/api/status") {
        res.set(http::field::content_type, "application/json");
        refresh_status(state);
        res.body() = status_json(*state.cfg, state.shared, state.slots, state.status);
    } else if (target == "/status/tables") {
        res.set(http::field::content_type, "text/html; charset=utf-8");
        res.set("Content-Security-Policy", status_tables_csp());
        res.set("X-Content-Type-Options", "nosniff");
        res.set(http::field::cache_control, "no-store");
        refresh_status(state);
        res.body() =
            status_tables_html(*state.cfg, state.shared, state.slots, state.status, std::chrono::system_clock::now());
    } else if (target == "/api/history") {
        res.set(http::field::content_type, "application/json");
        std::vector<metrics_history::named_slot> servers;
        for (const std::size_t i : pooled_servers(*state.cfg)) {
            servers.push_back({state.cfg->servers[i].name, state.slots.servers[i]});
        }
        res.body() = state.history.json(servers);
    } else if (target.starts_with("/api/")) {
        res = api(req, state);
        res.set(http::field::server, "rampart");
        res.set(http::field::cache_control, "no-store");
    } else {
        res = make_error_response(http::status::not_found, req.version(), "", true);
    }
    res.keep_alive(false);
    res.prepare_payload();
    if (res.result() == http::status::not_modified) {
        // Beast writes "Content-Length: 0"; a 304 must not state a length
        // other than the 200's (RFC 9110 8.6): none.
        res.erase(http::field::content_length);
    }
    co_await http::async_write(socket, res, use_tuple);
    deadline.cancel();
    error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
}

} // namespace

// Every pool requests can reach has an available server (the listeners are
// up: this process runs). A pool no route uses does not count either way.
bool ready(const admin_state& a) {
    const mono_ns now = mono_now();
    const config::snapshot& cfg = *a.cfg;
    for (const std::size_t p : config::routed_pools(cfg)) {
        const auto& members = cfg.gw.pools[p].members;
        const bool some = std::any_of(members.begin(), members.end(), [&](const config::pool_member& m) {
            return a.shared.servers[a.slots.servers[m.server]].available(now, true);
        });
        if (!some) {
            return false;
        }
    }
    return true;
}

history_totals history_now(const admin_state& a) {
    history_totals t;
    const shared_block& shared = a.shared;
    for (unsigned w = 0; w < a.worker_slots; ++w) {
        const worker_counters& c = shared.workers[w];
        for (std::size_t k = 0; k < 6; ++k) {
            t.responses[k] += c.responses_by_class[k].load(std::memory_order_relaxed);
        }
        for (std::size_t b = 0; b <= latency_buckets; ++b) {
            t.latency[b] += c.request_latency.buckets[b].load(std::memory_order_relaxed);
        }
        t.handshakes_full += c.handshakes_full.load(std::memory_order_relaxed);
        t.handshakes_resumed += c.handshakes_resumed.load(std::memory_order_relaxed);
        t.handshake_failures += c.handshake_failures.load(std::memory_order_relaxed);
        t.connections_open += c.connections_active.load(std::memory_order_relaxed);
    }
    for (const std::size_t i : pooled_servers(*a.cfg)) {
        const server_health& s = shared.servers[a.slots.servers[i]];
        t.servers.push_back({a.slots.servers[i], s.requests(), s.failures()});
    }
    t.vrrp = a.vrrp.enabled;
    t.vrrp_state = a.vrrp.state;
    t.vrrp_transitions = a.vrrp.transitions;
    return t;
}

std::string render_metrics(const admin_state& a) {
    const config::snapshot& cfg = *a.cfg;
    const shared_block& shared = a.shared;
    const unsigned workers = a.worker_slots;
    auto server = [&](std::size_t i) -> const server_health& { return shared.servers[a.slots.servers[i]]; };
    auto pool = [&](std::size_t p) -> const pool_state& { return shared.pools[a.slots.pools[p]]; };
    std::ostringstream out;
    auto sum = [&](auto member) {
        std::uint64_t total = 0;
        for (unsigned w = 0; w < workers; ++w) {
            total += (shared.workers[w].*member).load(std::memory_order_relaxed);
        }
        return total;
    };
    metric(out, "rampart_connections_total", "counter", "Client connections accepted.");
    out << "rampart_connections_total " << sum(&worker_counters::connections_total) << '\n';
    metric(out, "rampart_connections_active", "gauge", "Client connections open.");
    out << "rampart_connections_active " << sum(&worker_counters::connections_active) << '\n';
    metric(out, "rampart_connections_by_protocol", "gauge", "Client connections open, by protocol (ALPN).");
    const auto h2_open =
        std::min(sum(&worker_counters::connections_active), sum(&worker_counters::h2_connections_active));
    out << "rampart_connections_by_protocol{protocol=\"h2\"} " << h2_open << '\n';
    out << "rampart_connections_by_protocol{protocol=\"http/1.1\"} "
        << sum(&worker_counters::connections_active) - h2_open << '\n';
    metric(out, "rampart_h2_connections_total", "counter", "Client connections that chose h2 in ALPN.");
    out << "rampart_h2_connections_total " << sum(&worker_counters::h2_connections_total) << '\n';
    metric(out, "rampart_h2_streams_total", "counter", "HTTP/2 request streams opened.");
    out << "rampart_h2_streams_total " << sum(&worker_counters::h2_streams_total) << '\n';
    metric(out, "rampart_h2_idle_releases_total", "counter",
           "Times an h2 connection without streams for a second handed its frame buffer and zero pages back.");
    out << "rampart_h2_idle_releases_total " << sum(&worker_counters::h2_idle_releases) << '\n';
    metric(out, "rampart_requests_by_protocol_total", "counter", "Requests, by client protocol.");
    out << "rampart_requests_by_protocol_total{protocol=\"h2\"} " << sum(&worker_counters::h2_requests_total) << '\n';
    out << "rampart_requests_by_protocol_total{protocol=\"http/1.1\"} "
        << sum(&worker_counters::requests_total) -
               std::min(sum(&worker_counters::requests_total), sum(&worker_counters::h2_requests_total))
        << '\n';
    metric(out, "rampart_h2_abuse_total", "counter",
           "HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM, by kind of abuse.");
    for (std::size_t k = 0; k < h2_abuse_counters; ++k) {
        std::uint64_t n = 0;
        for (unsigned w = 0; w < workers; ++w) {
            n += shared.workers[w].h2_abuse[k].load(std::memory_order_relaxed);
        }
        out << "rampart_h2_abuse_total{kind=\"" << to_string(static_cast<h2_abuse>(k)) << "\"} " << n << '\n';
    }
    metric(out, "rampart_tunnels_active", "gauge", "Upgraded connections (WebSocket) open.");
    out << "rampart_tunnels_active " << sum(&worker_counters::tunnels_active) << '\n';
    metric(out, "rampart_tunnels_total", "counter", "Upgraded connections (WebSocket) opened.");
    out << "rampart_tunnels_total " << sum(&worker_counters::tunnels_total) << '\n';
    metric(out, "rampart_tunnels_refused_total", "counter", "Upgrades answered 503: limits.tunnels reached.");
    out << "rampart_tunnels_refused_total " << sum(&worker_counters::tunnels_refused) << '\n';
    metric(out, "rampart_tls_handshakes_total", "counter", "Completed TLS handshakes.");
    out << "rampart_tls_handshakes_total{kind=\"full\"} " << sum(&worker_counters::handshakes_full) << '\n';
    out << "rampart_tls_handshakes_total{kind=\"resumed\"} " << sum(&worker_counters::handshakes_resumed) << '\n';
    metric(out, "rampart_tls_handshake_failures_total", "counter", "Failed TLS handshakes.");
    for (unsigned r = 0; r < 3; ++r) {
        static constexpr const char* reasons[] = {"timeout", "client_closed", "tls_error"};
        std::uint64_t total = 0;
        for (unsigned w = 0; w < workers; ++w) {
            total += shared.workers[w].handshake_failures_by[r].load(std::memory_order_relaxed);
        }
        out << "rampart_tls_handshake_failures_total{reason=\"" << reasons[r] << "\"} " << total << '\n';
    }
    metric(out, "rampart_tls_handshakes_by_version_total", "counter", "Completed TLS handshakes by protocol version.");
    out << "rampart_tls_handshakes_by_version_total{version=\"TLSv1.2\"} " << sum(&worker_counters::handshakes_tls12)
        << '\n';
    out << "rampart_tls_handshakes_by_version_total{version=\"TLSv1.3\"} " << sum(&worker_counters::handshakes_tls13)
        << '\n';
    metric(out, "rampart_client_bytes_total", "counter",
           "Bytes on the wire with clients (TLS), counted when a connection ends.");
    out << "rampart_client_bytes_total{direction=\"in\"} " << sum(&worker_counters::bytes_in) << '\n';
    out << "rampart_client_bytes_total{direction=\"out\"} " << sum(&worker_counters::bytes_out) << '\n';
    metric(out, "rampart_certificate_expiry_seconds", "gauge", "Seconds until each certificate expires.");
    {
        const auto now_unix =
            std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        for (const auto& c : a.status.certificates) {
            out << "rampart_certificate_expiry_seconds{file=\"" << label_value(c.file) << "\",key=\"" << c.key_type
                << "\"} " << (c.not_after_unix - now_unix) << '\n';
        }
    }
    metric(out, "rampart_requests_total", "counter",
           "Requests from clients, refused ones included (a timed-out or malformed head counts as one).");
    out << "rampart_requests_total " << sum(&worker_counters::requests_total) << '\n';
    metric(out, "rampart_responses_total", "counter", "Responses sent, by status class.");
    for (unsigned c = 1; c <= 5; ++c) {
        std::uint64_t total = 0;
        for (unsigned w = 0; w < workers; ++w) {
            total += shared.workers[w].responses_by_class[c].load(std::memory_order_relaxed);
        }
        out << "rampart_responses_total{class=\"" << c << "xx\"} " << total << '\n';
    }
    metric(out, "rampart_upstream_requests_total", "counter", "Requests sent to each upstream server.");
    for (std::size_t i = 0; i < cfg.servers.size(); ++i) {
        out << "rampart_upstream_requests_total{server=\"" << cfg.servers[i].name << "\"} " << server(i).requests()
            << '\n';
    }
    metric(out, "rampart_upstream_responses_total", "counter", "Responses from each upstream server, by status class.");
    for (std::size_t i = 0; i < cfg.servers.size(); ++i) {
        for (unsigned c = 1; c <= 5; ++c) {
            out << "rampart_upstream_responses_total{server=\"" << cfg.servers[i].name << "\",class=\"" << c << "xx\"} "
                << server(i).responses(c) << '\n';
        }
    }
    metric(out, "rampart_upstream_active", "gauge", "Requests in flight to each upstream server.");
    for (std::size_t i = 0; i < cfg.servers.size(); ++i) {
        out << "rampart_upstream_active{server=\"" << cfg.servers[i].name << "\"} " << server(i).active() << '\n';
    }
    metric(out, "rampart_upstream_failures_total", "counter",
           "Connect, read and write failures, timeouts and 5xx responses per upstream server.");
    per_server(out, cfg, "rampart_upstream_failures_total", [&](std::size_t i) { return server(i).failures(); });
    const mono_ns now = mono_now();
    metric(out, "rampart_upstream_healthy", "gauge", "1 when the active health checks say the server is up.");
    per_server(out, cfg, "rampart_upstream_healthy", [&](std::size_t i) { return int(server(i).healthy()); });
    metric(out, "rampart_upstream_drained", "gauge", "1 when the server is drained through the admin API.");
    per_server(out, cfg, "rampart_upstream_drained", [&](std::size_t i) { return int(server(i).drained()); });
    metric(out, "rampart_upstream_ejected", "gauge", "1 while passive outlier detection keeps the server out.");
    per_server(out, cfg, "rampart_upstream_ejected", [&](std::size_t i) { return server(i).ejected(now) ? 1 : 0; });
    metric(out, "rampart_upstream_ejections_total", "counter", "Times the server was ejected.");
    per_server(out, cfg, "rampart_upstream_ejections_total", [&](std::size_t i) { return server(i).ejections(); });
    metric(out, "rampart_upstream_retries_total", "counter",
           "Requests retried on another server after failing on this one.");
    per_server(out, cfg, "rampart_upstream_retries_total", [&](std::size_t i) { return server(i).retries(); });
    metric(out, "rampart_health_checks_total", "counter", "Active health checks, by result.");
    for (std::size_t i = 0; i < cfg.servers.size(); ++i) {
        out << "rampart_health_checks_total{server=\"" << cfg.servers[i].name << "\",result=\"passed\"} "
            << server(i).checks_passed() << '\n';
        out << "rampart_health_checks_total{server=\"" << cfg.servers[i].name << "\",result=\"failed\"} "
            << server(i).checks_failed() << '\n';
    }
    // Per pool, so that an alert can say "every server of a pool is down"
    // (the server metrics carry no pool: a server may be in several).
    metric(out, "rampart_pool_servers", "gauge", "Servers in the pool.");
    for (std::size_t p = 0; p < cfg.gw.pools.size(); ++p) {
        out << "rampart_pool_servers{pool=\"" << cfg.gw.pools[p].name << "\"} " << cfg.gw.pools[p].members.size()
            << '\n';
    }
    metric(out, "rampart_pool_servers_available", "gauge",
           "Servers of the pool that take requests now: healthy, not drained, not ejected (when every healthy "
           "one is ejected, the balancer ignores ejection: those count).");
    for (std::size_t p = 0; p < cfg.gw.pools.size(); ++p) {
        const auto& members = cfg.gw.pools[p].members;
        const auto count = [&](bool ignore_ejection) {
            return std::count_if(members.begin(), members.end(), [&](const config::pool_member& m) {
                return server(m.server).available(now, ignore_ejection);
            });
        };
        auto available = count(false);
        if (available == 0) {
            available = count(true);
        }
        out << "rampart_pool_servers_available{pool=\"" << cfg.gw.pools[p].name << "\"} " << available << '\n';
    }
    metric(out, "rampart_pool_queue_length", "gauge", "Requests waiting for a server slot.");
    for (std::size_t p = 0; p < cfg.gw.pools.size(); ++p) {
        out << "rampart_pool_queue_length{pool=\"" << cfg.gw.pools[p].name << "\"} " << pool(p).queued.load() << '\n';
    }
    metric(out, "rampart_pool_queue_timeouts_total", "counter", "Requests that waited queue.timeout and got 503.");
    for (std::size_t p = 0; p < cfg.gw.pools.size(); ++p) {
        out << "rampart_pool_queue_timeouts_total{pool=\"" << cfg.gw.pools[p].name << "\"} "
            << pool(p).queue_timeouts.load() << '\n';
    }
    metric(out, "rampart_rate_limited_total", "counter", "Requests answered 429 by the per-client rate limit.");
    for (std::size_t p = 0; p < cfg.gw.pools.size(); ++p) {
        out << "rampart_rate_limited_total{pool=\"" << cfg.gw.pools[p].name << "\"} " << pool(p).rate_limited.load()
            << '\n';
    }
    metric(out, "rampart_connections_refused_total", "counter", "Client connections closed at accept, by limit.");
    out << "rampart_connections_refused_total{limit=\"per_client\"} "
        << sum(&worker_counters::connections_refused_client) << '\n';
    out << "rampart_connections_refused_total{limit=\"total\"} " << sum(&worker_counters::connections_refused_total)
        << '\n';
    out << "rampart_connections_refused_total{limit=\"descriptors\"} "
        << sum(&worker_counters::connections_refused_descriptors) << '\n';
    metric(out, "rampart_proxy_protocol_total", "counter",
           "Connections on a PROXY-protocol listener, by result: a header named the client; the header was missing, "
           "broken or late (closed); the peer is not in gateway.trusted_proxies (refused).");
    out << "rampart_proxy_protocol_total{result=\"client\"} " << sum(&worker_counters::proxy_headers) << '\n';
    out << "rampart_proxy_protocol_total{result=\"bad_header\"} " << sum(&worker_counters::proxy_header_errors) << '\n';
    out << "rampart_proxy_protocol_total{result=\"untrusted_peer\"} " << sum(&worker_counters::proxy_refused) << '\n';
    metric(out, "rampart_requests_rejected_total", "counter",
           "Requests refused as malformed or too slow, before any backend.");
    out << "rampart_requests_rejected_total " << sum(&worker_counters::requests_rejected) << '\n';
    metric(out, "rampart_access_log_dropped_total", "counter",
           "Access log lines dropped: buffer full or write failed.");
    out << "rampart_access_log_dropped_total " << sum(&worker_counters::access_log_dropped) << '\n';
    metric(out, "rampart_abuse_violations_total", "counter", "Violations counted against clients (L7 -> L3 blocking).");
    out << "rampart_abuse_violations_total " << shared.abuse_violations.load() << '\n';
    metric(out, "rampart_firewall_blocks_total", "counter", "Client addresses pushed into the firewall blocklist.");
    out << "rampart_firewall_blocks_total " << shared.firewall_blocks.load() << '\n';
    metric(out, "rampart_client_table_full_total", "counter",
           "Per-client lookups that found no free slot (that client went unlimited for the moment).");
    out << "rampart_client_table_full_total " << shared.client_table_full.load() << '\n';
    metric(out, "rampart_l7_blocks_total", "counter",
           "Clients behind a trusted proxy blocked at layer 7 (403 to every request) instead of in the firewall.");
    out << "rampart_l7_blocks_total " << shared.l7_blocks.load() << '\n';
    metric(out, "rampart_requests_blocked_total", "counter",
           "Requests answered 403: their client is blocked at layer 7.");
    out << "rampart_requests_blocked_total " << sum(&worker_counters::requests_blocked) << '\n';
    metric(out, "rampart_compressed_responses_total", "counter", "Responses sent gzip- or brotli-encoded.");
    out << "rampart_compressed_responses_total " << sum(&worker_counters::compressed_responses) << '\n';
    metric(out, "rampart_compression_bytes_total", "counter",
           "Bytes of compressed responses before and after encoding.");
    out << "rampart_compression_bytes_total{stage=\"in\"} " << sum(&worker_counters::compression_bytes_in) << '\n';
    out << "rampart_compression_bytes_total{stage=\"out\"} " << sum(&worker_counters::compression_bytes_out) << '\n';
    metric(out, "rampart_maintenance", "gauge",
           "1 while the site (scope=\"site\") or that many routes (scope=\"routes\") are in maintenance.");
    out << "rampart_maintenance{scope=\"site\"} " << (a.maintenance.site ? 1 : 0) << '\n';
    out << "rampart_maintenance{scope=\"routes\"} " << a.maintenance.routes.size() << '\n';
    metric(out, "rampart_maintenance_responses_total", "counter", "Requests answered 503 for maintenance.");
    out << "rampart_maintenance_responses_total " << sum(&worker_counters::maintenance_answers) << '\n';
    if (a.acme != nullptr && !a.acme->empty()) {
        render_acme_metrics(out, *a.acme);
    }
    if (a.acme_transfers != nullptr && a.cfg->ha_pair && a.cfg->gw.tls_settings.acme_settings) {
        metric(out, "rampart_acme_peer_transfers_total", "counter",
               "Asking the HA peer for its ACME certificates: installed, refused (did not open or verify), failed "
               "(no answer).");
        out << "rampart_acme_peer_transfers_total{result=\"installed\"} " << a.acme_transfers->installed << '\n';
        out << "rampart_acme_peer_transfers_total{result=\"refused\"} " << a.acme_transfers->refused << '\n';
        out << "rampart_acme_peer_transfers_total{result=\"failed\"} " << a.acme_transfers->failed << '\n';
    }
    metric(out, "rampart_acme_challenges_answered_total", "counter",
           "ACME validation requests answered by the workers (http-01 on port 80, tls-alpn-01).");
    out << "rampart_acme_challenges_answered_total " << sum(&worker_counters::acme_challenges_answered) << '\n';
    metric(out, "rampart_access_denied_total", "counter", "Requests answered 403 by a route's allow or deny list.");
    out << "rampart_access_denied_total " << sum(&worker_counters::access_denied) << '\n';
    metric(out, "rampart_basic_auth_total", "counter",
           "Basic authentication of routes by result (failed: credentials given that did not match; busy: 503, "
           "too many verifications waiting).");
    for (unsigned r = 0; r < 3; ++r) {
        static constexpr const char* results[] = {"passed", "failed", "busy"};
        std::uint64_t total = 0;
        for (unsigned w = 0; w < workers; ++w) {
            total += shared.workers[w].auth_results[r].load(std::memory_order_relaxed);
        }
        out << "rampart_basic_auth_total{result=\"" << results[r] << "\"} " << total << '\n';
    }
    metric(out, "rampart_firewall_block_errors_total", "counter", "Blocklist updates the kernel refused.");
    out << "rampart_firewall_block_errors_total " << shared.firewall_block_errors.load() << '\n';
    auto histogram = [&](const char* name, const char* help, latency_histogram worker_counters::*member) {
        metric(out, name, "histogram", help);
        std::uint64_t cumulative = 0;
        std::uint64_t sum_us = 0;
        for (std::size_t b = 0; b <= latency_buckets; ++b) {
            for (unsigned w = 0; w < workers; ++w) {
                cumulative += (shared.workers[w].*member).buckets[b].load(std::memory_order_relaxed);
            }
            out << name << "_bucket{le=\"";
            if (b < latency_buckets) {
                out << static_cast<double>(latency_bounds_us[b]) / 1e6;
            } else {
                out << "+Inf";
            }
            out << "\"} " << cumulative << '\n';
        }
        for (unsigned w = 0; w < workers; ++w) {
            sum_us += (shared.workers[w].*member).sum_us.load(std::memory_order_relaxed);
        }
        out << name << "_sum " << static_cast<double>(sum_us) / 1e6 << '\n';
        out << name << "_count " << cumulative << '\n';
    };
    histogram("rampart_request_duration_seconds", "Time from a request's first byte to its last response byte.",
              &worker_counters::request_latency);
    histogram("rampart_upstream_duration_seconds",
              "Time from choosing a server to its response header (retries included).",
              &worker_counters::upstream_latency);
    metric(out, "rampart_config_generation", "gauge", "Configuration generation serving (1 at start, +1 per reload).");
    out << "rampart_config_generation " << a.generation << '\n';
    metric(out, "rampart_config_reloads_total", "counter", "Reloads, by result.");
    out << "rampart_config_reloads_total{result=\"ok\"} " << a.reloads_ok << '\n';
    out << "rampart_config_reloads_total{result=\"failed\"} " << a.reloads_failed << '\n';
    metric(out, "rampart_config_last_reload_ok", "gauge", "1 when the last reload went live (also before any).");
    out << "rampart_config_last_reload_ok " << (a.last_reload.starts_with("failed") ? 0 : 1) << '\n';
    if (cfg.gw.listen.https) {
        metric(out, "rampart_tls_ticket_keys_shared", "gauge",
               "1 when session-ticket keys derive from ha.ticket_secret_file (tickets resume on the peer), 0 when "
               "this process made its own.");
        out << "rampart_tls_ticket_keys_shared " << (a.ticket_keys_shared ? 1 : 0) << '\n';
    }
    metric(out, "rampart_worker_restarts_total", "counter", "Workers that died and were replaced.");
    out << "rampart_worker_restarts_total " << a.worker_restarts << '\n';
    if (a.vrrp.enabled) {
        metric(out, "rampart_vrrp_state", "gauge", "This node's VRRP state as keepalived reported it (1 = current).");
        for (const char* state : {"MASTER", "BACKUP", "FAULT", "STOP", "unknown"}) {
            out << "rampart_vrrp_state{node=\"" << a.vrrp.node << "\",state=\"" << state << "\"} "
                << (a.vrrp.state == state ? 1 : 0) << '\n';
        }
        metric(out, "rampart_vrrp_transitions_total", "counter", "VRRP state changes since the master started.");
        out << "rampart_vrrp_transitions_total " << a.vrrp.transitions << '\n';
        metric(out, "rampart_vrrp_priority", "gauge", "This node's VRRP priority as keepalived last reported it.");
        out << "rampart_vrrp_priority " << a.vrrp.priority << '\n';
        metric(out, "rampart_ha_healthy", "gauge", "1 when the track file tells keepalived this gateway can serve.");
        out << "rampart_ha_healthy " << (a.vrrp.healthy ? 1 : 0) << '\n';
        metric(out, "rampart_vrrp_vip_held", "gauge",
               "1 when the VIP is on an interface of this node: alert when two nodes say 1.");
        // vrid: the pair (its virtual router id), so that Prometheus can sum
        // the nodes of each pair when it scrapes several.
        out << "rampart_vrrp_vip_held{node=\"" << a.vrrp.node << "\",vrid=\""
            << (cfg.ha_pair ? cfg.ha_pair->virtual_router_id : 0U) << "\"} " << (a.vrrp.vip_held ? 1 : 0) << '\n';
        metric(out, "rampart_vrrp_vip_removals_total", "counter",
               "VIPs the master removed from this node because keepalived was not running.");
        out << "rampart_vrrp_vip_removals_total " << a.vrrp.vip_removals << '\n';
        const peer_info& p = a.vrrp.peer;
        if (p.enabled) {
            const std::string node = "{node=\"" + label_value(p.node) + "\"";
            metric(out, "rampart_ha_peer_up", "gauge",
                   "1 when the peer's admin listener answered the last peer check with a valid proof.");
            out << "rampart_ha_peer_up" << node << "} " << (p.up ? 1 : 0) << '\n';
            metric(out, "rampart_ha_peer_state", "gauge",
                   "The peer's VRRP state as it answered the last peer check (1 = current; unknown while it does "
                   "not answer).");
            for (const char* state : {"MASTER", "BACKUP", "FAULT", "STOP", "unknown"}) {
                out << "rampart_ha_peer_state" << node << ",state=\"" << state << "\"} " << (p.state == state ? 1 : 0)
                    << '\n';
            }
            metric(out, "rampart_ha_peer_vip_held", "gauge",
                   "1 when the peer said in the last peer check that the VIP is on one of its interfaces.");
            out << "rampart_ha_peer_vip_held" << node << "} " << (p.up && p.vip_held ? 1 : 0) << '\n';
            metric(out, "rampart_ha_vip_holders", "gauge",
                   "Nodes holding the VIP as this node sees it (itself, and the peer while it answers): alert on 2.");
            out << "rampart_ha_vip_holders " << a.vrrp.vip_holders() << '\n';
            metric(out, "rampart_ha_peer_checks_total", "counter", "Peer checks by result.");
            for (const auto& [result, n] :
                 {std::pair{"ok", p.ok}, std::pair{"refused", p.refused}, std::pair{"timeout", p.timeout},
                  std::pair{"unauthorized", p.unauthorized}, std::pair{"bad_answer", p.bad_answer}}) {
                out << "rampart_ha_peer_checks_total{result=\"" << result << "\"} " << n << '\n';
            }
            metric(out, "rampart_ha_peer_requests_refused_total", "counter",
                   "Peer check requests to this node refused for a proof that did not verify.");
            out << "rampart_ha_peer_requests_refused_total " << p.requests_refused << '\n';
            if (p.answered_at) {
                metric(out, "rampart_ha_peer_answer_age_seconds", "gauge",
                       "Seconds since the peer's last valid answer.");
                out << "rampart_ha_peer_answer_age_seconds "
                    << std::chrono::duration<double>(std::chrono::steady_clock::now() - *p.answered_at).count() << '\n';
            }
        }
    }
    return out.str();
}

net::awaitable<void> serve_admin(tcp_acceptor& acceptor, admin_state& state) {
    net::steady_timer backoff(acceptor.get_executor());
    for (;;) {
        auto [ec, socket] = co_await acceptor.async_accept();
        if (ec) {
            if (ec == net::error::operation_aborted || !acceptor.is_open()) {
                co_return;
            }
            // Out of descriptors or memory: back off instead of spinning.
            backoff.expires_after(std::chrono::milliseconds(100));
            co_await backoff.async_wait(use_tuple);
            continue;
        }
        net::co_spawn(acceptor.get_executor(), serve_admin_connection(tcp_socket(std::move(socket)), state),
                      log_failure{"admin connection failed: "});
    }
}

} // namespace rampart::gateway
