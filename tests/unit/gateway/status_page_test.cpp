#include "gateway/control/status_assets.hpp"
#include "gateway/control/status_page.hpp"

#include <catch2/catch.hpp>
#include <openssl/evp.h>

#include <cctype>
#include <chrono>
#include <memory>
#include <string>

using namespace rampart;
using gateway::status_extra;

namespace {

config::snapshot_ptr small_config() {
    auto r = config::load_from_string(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
  app2: { address: "2001:db8::22", role: app, port: 8081, weight: 3 }
  db1: { address: 192.0.2.31, role: db-primary }
gateway:
  listen: { http: "127.0.0.1:8080" }
  workers: 2
  pools:
    app:
      balance: weighted_round_robin
      servers: [app1, { server: app2, weight: 5 }]
      health: { path: /health, interval: 2s }
)",
                                      "status.yaml");
    if (!r) {
        for (const auto& e : r.errors) {
            UNSCOPED_INFO(e.to_string());
        }
    }
    REQUIRE(r);
    return r.config;
}

std::chrono::system_clock::time_point at(std::int64_t unix_seconds) {
    return std::chrono::system_clock::time_point(std::chrono::seconds(unix_seconds));
}

/// A strict JSON syntax check (RFC 8259): one value, nothing after it, no raw
/// control characters in strings, only the defined escapes.
class json_checker {
public:
    explicit json_checker(std::string_view text) : s_(text) {}
    bool valid() {
        ws();
        if (!value()) {
            return false;
        }
        ws();
        return i_ == s_.size();
    }

private:
    bool value() {
        if (i_ >= s_.size()) {
            return false;
        }
        switch (s_[i_]) {
        case '{':
            return composite('}', true);
        case '[':
            return composite(']', false);
        case '"':
            return string();
        case 't':
            return word("true");
        case 'f':
            return word("false");
        case 'n':
            return word("null");
        default:
            return number();
        }
    }
    bool composite(char end, bool object) {
        ++i_;
        ws();
        if (i_ < s_.size() && s_[i_] == end) {
            ++i_;
            return true;
        }
        for (;;) {
            ws();
            if (object) {
                if (i_ >= s_.size() || s_[i_] != '"' || !string()) {
                    return false;
                }
                ws();
                if (i_ >= s_.size() || s_[i_++] != ':') {
                    return false;
                }
                ws();
            }
            if (!value()) {
                return false;
            }
            ws();
            if (i_ >= s_.size()) {
                return false;
            }
            const char c = s_[i_++];
            if (c == end) {
                return true;
            }
            if (c != ',') {
                return false;
            }
        }
    }
    bool string() {
        ++i_;
        while (i_ < s_.size()) {
            const auto c = static_cast<unsigned char>(s_[i_++]);
            if (c == '"') {
                return true;
            }
            if (c < 0x20) {
                return false;
            }
            if (c == '\\') {
                if (i_ >= s_.size()) {
                    return false;
                }
                const char e = s_[i_++];
                if (e == 'u') {
                    for (int k = 0; k < 4; ++k) {
                        if (i_ >= s_.size() || std::isxdigit(static_cast<unsigned char>(s_[i_++])) == 0) {
                            return false;
                        }
                    }
                } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
                    return false;
                }
            }
        }
        return false;
    }
    bool word(std::string_view w) {
        if (s_.substr(i_, w.size()) != w) {
            return false;
        }
        i_ += w.size();
        return true;
    }
    bool number() {
        const std::size_t start = i_;
        if (i_ < s_.size() && s_[i_] == '-') {
            ++i_;
        }
        std::size_t digits = 0;
        while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_])) != 0) {
            ++i_;
            ++digits;
        }
        return digits > 0 && !(digits > 1 && s_[start + (s_[start] == '-' ? 1 : 0)] == '0');
    }
    void ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) {
            ++i_;
        }
    }

    std::string_view s_;
    std::size_t i_ = 0;
};

std::string sha256_base64(std::string_view text) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(text.data(), text.size(), digest, &n, EVP_sha256(), nullptr);
    unsigned char out[64];
    const int len = EVP_EncodeBlock(out, digest, static_cast<int>(n));
    return std::string(reinterpret_cast<const char*>(out), static_cast<std::size_t>(len));
}

/// The first `bytes` bytes of the SHA-256 of `text`, in lower-case hex.
std::string sha256_hex_prefix(std::string_view text, unsigned bytes) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(text.data(), text.size(), digest, &n, EVP_sha256(), nullptr);
    std::string out;
    for (unsigned i = 0; i < bytes && i < n; ++i) {
        out += "0123456789abcdef"[digest[i] >> 4];
        out += "0123456789abcdef"[digest[i] & 0xf];
    }
    return out;
}

/// The text between the first `open` and the following `close`.
std::string_view between(std::string_view text, std::string_view open, std::string_view close) {
    const auto a = text.find(open);
    REQUIRE(a != std::string_view::npos);
    const auto b = text.find(close, a + open.size());
    REQUIRE(b != std::string_view::npos);
    return text.substr(a + open.size(), b - a - open.size());
}

} // namespace

TEST_CASE("status_json: the whole document for a small config", "[unit][gateway][status]") {
    auto cfg = small_config();
    auto block = std::make_unique<gateway::shared_block>();
    block->workers[0].connections_total = 10;
    block->workers[1].connections_total = 5;
    block->workers[0].connections_active = 2;
    block->workers[0].requests_total = 40;
    block->workers[1].requests_total = 2;
    block->workers[0].responses_by_class[2] = 39;
    block->workers[1].responses_by_class[5] = 1;
    block->workers[0].handshakes_full = 7;
    block->workers[1].handshakes_resumed = 3;
    block->workers[1].handshake_failures = 1;
    block->workers[2].requests_total = 1000; // not a running worker: not summed
    block->workers[0].h2_connections_total = 4;
    block->workers[1].h2_connections_total = 2;
    block->workers[0].h2_connections_active = 1;
    block->workers[1].h2_requests_total = 30;
    block->pools[0].queued = 4;
    // Through server_health's methods, as the gateway sets them.
    const config::outlier_detection never_eject{0, {}, {}};
    gateway::server_health& app1 = block->servers[0];
    gateway::server_health& app2 = block->servers[1];
    REQUIRE(app1.try_acquire(0));
    for (int i = 0; i < 30; ++i) {
        app1.count_request();
    }
    app1.on_attempt_failure(never_eject, 0);
    app1.on_attempt_failure(never_eject, 0);
    for (int i = 0; i < 9; ++i) {
        app1.on_check(true, 200, 2, 3, 0);
    }
    app2.drain();
    for (int i = 0; i < 4; ++i) {
        app2.on_check(false, -1, 2, 5, 0); // fall 5: still healthy
    }

    status_extra extra;
    extra.started_unix = 1'700'000'000;
    extra.workers = 2;
    extra.certificates.push_back({"/etc/rampart/ecdsa.pem",
                                  "ECDSA",
                                  {"www.foobar.com", "foobar.com"},
                                  1'700'000'000 + 30 * 86400 + 3600,
                                  "Test CA",
                                  "issued",
                                  "",
                                  1'700'000'000 + 86400});

    const std::string json = gateway::status_json(*cfg, *block, {}, extra, at(1'700'000'000 + 125));
    const std::string expected =
        R"({"site":"www.foobar.com","version":")" RAMPART_TEST_VERSION
        R"(","generation":1,"last_reload":"none","uptime_s":125,"vrrp_state":"unknown","maintenance":"off",)"
        R"("workers":2,"worker_restarts":0,"connections":{"open":2,"total":15,"tunnels":0,"tunnels_total":0},"requests_total":42,)"
        R"("protocols":[{"protocol":"h2","open":1,"total":6,"requests":30},)"
        R"({"protocol":"http/1.1","open":1,"total":9,"requests":12}],)"
        R"("responses":{"1xx":0,"2xx":39,"3xx":0,"4xx":0,"5xx":1},"handshakes":{"full":7,"resumed":3,"failed":1},)"
        R"("pools":[{"name":"app","balance":"weighted_round_robin","queue":4,"queue_timeouts":0,"rate_limited":0,)"
        R"("health":{"path":"/health","expect_status":200,"interval_ms":2000,"rise":2,"fall":3},"servers":[)"
        R"({"name":"app1","address":"192.0.2.21","port":8080,"weight":1,"state":"up","healthy":true,)"
        R"("drained":false,"ejected_ms":0,"active":1,"requests":30,"failures":2,"last_check":200,)"
        R"("checks_passed":9,"checks_failed":0},)"
        R"({"name":"app2","address":"2001:db8::22","port":8081,"weight":5,"state":"drained","healthy":true,)"
        R"("drained":true,"ejected_ms":0,"active":0,"requests":0,"failures":0,"last_check":-1,)"
        R"("checks_passed":0,"checks_failed":4}]}],)"
        R"("certificates":[{"file":"/etc/rampart/ecdsa.pem","key_type":"ECDSA",)"
        R"("names":["www.foobar.com","foobar.com"],"not_after":"2023-12-14T23:13:20Z","days_left":30,)"
        R"("issuer":"Test CA","acme":{"state":"issued","next_attempt":"2023-11-15T22:13:20Z","last_error":""}}]})"
        "\n";
    CHECK(json == expected);
    CHECK(json_checker(json).valid());
}

TEST_CASE("status_json: server states", "[unit][gateway][status]") {
    auto cfg = small_config();
    auto block = std::make_unique<gateway::shared_block>();
    status_extra extra;

    block->servers[0].on_check(false, 503, 1, 1, gateway::mono_now());
    config::outlier_detection eject_8s;
    eject_8s.consecutive_failures = 1;
    eject_8s.base_ejection = std::chrono::seconds(8);
    REQUIRE(block->servers[1].on_attempt_failure(eject_8s, gateway::mono_now()).ejected);
    std::string json = gateway::status_json(*cfg, *block, {}, extra);
    CHECK(json_checker(json).valid());
    CHECK(json.find(R"("name":"app1","address":"192.0.2.21","port":8080,"weight":1,"state":"down","healthy":false)") !=
          std::string::npos);
    const auto app2 = json.find(R"("name":"app2")");
    REQUIRE(app2 != std::string::npos);
    CHECK(json.find(R"("state":"ejected")", app2) != std::string::npos);
    const auto ms = json.find(R"("ejected_ms":)", app2);
    REQUIRE(ms != std::string::npos);
    const long left = std::stol(json.substr(ms + 13));
    CHECK(left > 7000);
    CHECK(left <= 8000);

    // Drained wins over down: the operator's decision is what the page shows first.
    block->servers[0].drain();
    json = gateway::status_json(*cfg, *block, {}, extra);
    CHECK(json.find(R"("state":"drained","healthy":false,"drained":true)") != std::string::npos);
}

TEST_CASE("status_json: certificate paths are escaped", "[unit][gateway][status]") {
    auto cfg = small_config();
    auto block = std::make_unique<gateway::shared_block>();
    status_extra extra;
    extra.last_reload = "failed: status.yaml:3:5: expected \"a port\"";
    extra.certificates.push_back({"/etc/rampart/we\"ird\\dir/tab\there\nnew\x01line\x7f.pem",
                                  "RSA",
                                  {"caf\xc3\xa9.example", "bad\xff\xc3(utf8"},
                                  0,
                                  "Weird \"CA\"\n\x01",
                                  "placeholder",
                                  "failed: \"quoted\" \\ and\ttab",
                                  0});
    const std::string json = gateway::status_json(*cfg, *block, {}, extra, at(86400 * 3 + 1));
    CHECK(json_checker(json).valid());
    CHECK(json.find(R"("last_reload":"failed: status.yaml:3:5: expected \"a port\"")") != std::string::npos);
    CHECK(json.find(R"("file":"/etc/rampart/we\"ird\\dir/tab\there\nnew\u0001line\u007f.pem")") != std::string::npos);
    // Valid UTF-8 passes through; invalid bytes become U+FFFD so the document stays valid UTF-8.
    CHECK(json.find("\"caf\xc3\xa9.example\"") != std::string::npos);
    CHECK(json.find("\"bad\xef\xbf\xbd\xef\xbf\xbd(utf8\"") != std::string::npos);
    // Expired three days and one second ago: -4 whole days, rounded down.
    CHECK(json.find(R"("not_after":"1970-01-01T00:00:00Z","days_left":-4)") != std::string::npos);
}

TEST_CASE("json_string_body: UTF-8 validation", "[unit][gateway][status]") {
    using gateway::json_string_body;
    CHECK(json_string_body("plain") == "plain");
    CHECK(json_string_body("\xe2\x82\xac") == "\xe2\x82\xac");                         // euro sign
    CHECK(json_string_body("\xf0\x9f\x94\x92") == "\xf0\x9f\x94\x92");                 // 4-byte sequence
    CHECK(json_string_body("\xc0\xaf") == "\xef\xbf\xbd\xef\xbf\xbd");                 // overlong '/'
    CHECK(json_string_body("\xed\xa0\x80") == "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); // surrogate
    CHECK(json_string_body("\xe2\x82") == "\xef\xbf\xbd\xef\xbf\xbd");                 // truncated
    CHECK(json_string_body(std::string_view("a\0b", 3)) == "a\\u0000b");
}

TEST_CASE("status page: self-contained, and the CSP allows exactly its script and style", "[unit][gateway][status]") {
    const std::string_view html = gateway::status_page_html();
    const std::string_view csp = gateway::status_page_csp();
    CHECK(html.starts_with("<!DOCTYPE html>"));
    const std::string_view script = between(html, "<script>", "</script>");
    const std::string_view style = between(html, "<style>", "</style>");
    CHECK(csp.find("script-src 'sha256-" + sha256_base64(script) + "'") != std::string_view::npos);
    CHECK(csp.find("style-src 'sha256-" + sha256_base64(style) + "'") != std::string_view::npos);
    CHECK(csp.find("unsafe") == std::string_view::npos);
    CHECK(csp.find("default-src 'none'") != std::string_view::npos);
    CHECK(csp.find("connect-src 'self'") != std::string_view::npos);
    CHECK(csp.find("frame-ancestors 'none'") != std::string_view::npos);
    // One script and one style block; nothing loaded from elsewhere.
    CHECK(html.find("<script", html.find("<script>") + 1) == std::string_view::npos);
    CHECK(html.find("<style", html.find("<style>") + 1) == std::string_view::npos);
    CHECK(html.find(" src=") == std::string_view::npos);
    CHECK(html.find("@import") == std::string_view::npos);
    CHECK(html.find("url(") == std::string_view::npos);
    CHECK(html.find("https://") == std::string_view::npos);
    // Data reaches the DOM through textContent only; no inline handlers or styles (the CSP refuses them).
    CHECK(html.find("innerHTML") == std::string_view::npos);
    CHECK(html.find("outerHTML") == std::string_view::npos);
    CHECK(html.find("insertAdjacentHTML") == std::string_view::npos);
    CHECK(html.find("document.write") == std::string_view::npos);
    CHECK(html.find(" onclick=") == std::string_view::npos);
    CHECK(html.find(" style=") == std::string_view::npos);
    CHECK(html.find("/api/status") != std::string_view::npos);
    // The page is the three files of gateway/control/status/, byte for byte.
    CHECK(script == gateway::status_assets::page_js);
    CHECK(style == gateway::status_assets::page_css);
    CHECK(html.size() == gateway::status_assets::page_html.size() + script.size() + style.size());
    CHECK(gateway::status_assets::page_html.find("<style></style>") != std::string_view::npos);
    CHECK(gateway::status_assets::page_html.find("<script></script>") != std::string_view::npos);
    // Its entity tag: the first 96 bits of the page's SHA-256 in hex, quoted
    // (the same page, the same tag).
    CHECK(gateway::status_page_etag() == "\"" + sha256_hex_prefix(html, 12) + "\"");
    CHECK(html.find("Authorization") != std::string_view::npos);
    CHECK(html.find("sessionStorage") != std::string_view::npos);
}

TEST_CASE("status tables: the page's tables without script, escaped, under their own CSP", "[unit][gateway][status]") {
    auto cfg = small_config();
    auto block = std::make_unique<gateway::shared_block>();
    block->workers[0].requests_total = 42;
    block->workers[0].responses_by_class[5] = 3;
    block->servers[0].on_check(false, 503, 1, 1, gateway::mono_now());
    block->servers[1].drain();
    status_extra extra;
    extra.workers = 2;
    extra.vrrp_state = "BACKUP";
    extra.certificates.push_back({"/etc/rampart/<script>alert(1)</script>&\"x'.pem",
                                  "RSA",
                                  {"caf\xc3\xa9.example"},
                                  86400 * 20,
                                  "<b>Evil CA</b>",
                                  "issued",
                                  "<img src=x>",
                                  86400 * 10});
    const std::string html = gateway::status_tables_html(*cfg, *block, {}, extra, at(86400 * 3 + 1));
    CHECK(html.starts_with("<!DOCTYPE html>"));
    CHECK(html.find("<meta http-equiv=\"refresh\" content=\"10\">") != std::string::npos);
    CHECK(html.find("<script") == std::string::npos); // no script of its own, and none smuggled in
    CHECK(html.find("/etc/rampart/&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;x&#39;.pem") != std::string::npos);
    CHECK(html.find("caf\xc3\xa9.example") != std::string::npos);
    CHECK(html.find("&lt;b&gt;Evil CA&lt;/b&gt;") != std::string::npos);
    CHECK(html.find("<img") == std::string::npos);
    CHECK(html.find("issued, next 1970-01-11T00:00:00Z; last error: &lt;img src=x&gt;") != std::string::npos);
    CHECK(html.find("<tr data-server=\"app1\"><td>app1</td><td>192.0.2.21:8080</td><td>DOWN</td>") !=
          std::string::npos);
    CHECK(html.find("<tr data-server=\"app2\"><td>app2</td><td>[2001:db8::22]:8081</td><td>DRAINED</td>") !=
          std::string::npos);
    CHECK(html.find("<th>requests total</th><td>42</td>") != std::string::npos);
    CHECK(html.find("5xx 3") != std::string::npos);
    CHECK(html.find("<th>VRRP</th><td>BACKUP</td>") != std::string::npos);
    CHECK(html.find("<td class=\"num\">16</td>") != std::string::npos); // days left: 20 - 3 - 1 s, rounded down
    const std::string_view csp = gateway::status_tables_csp();
    CHECK(csp.find("style-src 'sha256-" + sha256_base64(between(html, "<style>", "</style>")) + "'") !=
          std::string_view::npos);
    CHECK(csp.find("script-src") == std::string_view::npos);
    CHECK(csp.find("default-src 'none'") != std::string_view::npos);
    // The live page links to it for browsers without JavaScript.
    CHECK(gateway::status_page_html().find("<noscript>") != std::string_view::npos);
    CHECK(between(gateway::status_page_html(), "<noscript>", "</noscript>").find("href=\"/status/tables\"") !=
          std::string_view::npos);
}
