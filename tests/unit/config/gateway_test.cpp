// The gateway section: listeners, TLS, seccomp, HSTS, the access log
// (check_gateway.cpp).

#include "config/config.hpp"
#include "tests/unit/config/config_support.hpp"
#include "tests/unit/support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace rampart::config::test;

TEST_CASE("short forms: hsts off, empty sections, yes/no booleans", "[unit][config]") {
    const auto off = load_ok(minimal + "  hsts: off\n  limits:\n  tls: { session_tickets: no }\n");
    CHECK_FALSE(off->gw.hsts_settings.enabled);
    CHECK(off->gw.limits_settings.header_count == 100);
    CHECK_FALSE(off->gw.tls_settings.session_tickets);

    const auto on = load_ok(minimal + "  hsts: true\n");
    CHECK(on->gw.hsts_settings.enabled);
    CHECK(on->gw.hsts_settings.max_age == std::chrono::seconds(31536000));
}

TEST_CASE("relative certificate paths follow the file, wherever it is", "[unit][config]") {
    const auto dir = std::filesystem::temp_directory_path() / ("rampart-config-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto file = dir / "rampart.yaml";
    {
        std::ofstream out(file);
        out << minimal << "  tls: { certificates: [ { cert: ecdsa.pem, key: ./sub/../ecdsa.key } ] }\n";
    }
    const auto result = cfg::load(file.string());
    std::filesystem::remove_all(dir);
    REQUIRE(result);
    const auto& cert = result.config->gw.tls_settings.certificates.at(0);
    CHECK(cert.cert_file == (dir / "ecdsa.pem").string());
    CHECK(cert.key_file == (dir / "ecdsa.key").string());
    CHECK(result.config->source_file == file.string());
}

TEST_CASE("bad listener endpoints", "[unit][config]") {
    const auto text = [](const std::string& listen) {
        return "site: www.foobar.com\nservers:\n  app1: { address: 192.0.2.21, role: app, port: 8080 }\n"
               "gateway:\n  listen: { http: \"" +
               listen + "\" }\n  pools: { app: { servers: [app1] } }\n";
    };
    CHECK(only_error(text("127.0.0.1:70000")) ==
          "config.yaml:5:19: gateway.listen.http: expected an address:port like 127.0.0.1:8443 or [::]:443, got "
          "\"127.0.0.1:70000\" (the port must be a number from 1 to 65535)");
    CHECK_THAT(only_error(text("127.0.0.1:0")), Contains("the port must be a number from 1 to 65535"));
    CHECK_THAT(only_error(text("::1:80")),
               StartsWith("config.yaml:5:19: gateway.listen.http: expected an address:port") &&
                   Contains("IPv6 addresses go in brackets"));
    CHECK_THAT(only_error(text("localhost:80")), Contains("literal IPv4 or bracketed IPv6"));
    CHECK_THAT(only_error(text("127.0.0.1")), Contains("missing :port"));
}

TEST_CASE("listeners must not share an address and port", "[unit][config]") {
    const std::string text = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen:
    http: "[::]:8080"
    admin: "127.0.0.1:8080"
  pools: { app: { servers: [app1] } }
)";
    CHECK(only_error(text) == "config.yaml:7:12: gateway.listen.admin: 127.0.0.1:8080 clashes with gateway.listen.http "
                              "([::]:8080); listeners need distinct addresses or ports");

    // One message per listener, even when it clashes with both others; the
    // IPv4 wildcard does not cover an IPv6 address.
    const auto errors = errors_of(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "0.0.0.0:80", https: "[::]:80", admin: "127.0.0.1:80" }
  tls: { certificates: [ { cert: a.pem, key: a.key } ] }
  pools: { app: { servers: [app1] } }
)");
    REQUIRE(errors.size() == 2);
    CHECK_THAT(errors[0],
               StartsWith("config.yaml:5:40: gateway.listen.https: [::]:80 clashes with gateway.listen.http"));
    CHECK_THAT(errors[1],
               StartsWith("config.yaml:5:58: gateway.listen.admin: 127.0.0.1:80 clashes with gateway.listen.http"));
    CHECK(load_ok(R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "0.0.0.0:80", admin: "[::1]:80" }
  pools: { app: { servers: [app1] } }
)")
              ->gw.listen.admin->port == 80);
}

TEST_CASE("an https listener needs a certificate", "[unit][config]") {
    const std::string text = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { https: "[::]:8443" }
  pools: { app: { servers: [app1] } }
)";
    CHECK(only_error(text) == "config.yaml:5:20: gateway.listen.https: an https listener needs at least one "
                              "certificate in gateway.tls.certificates");
    CHECK_THAT(
        only_error(text + "  tls: { certificates: [ { cert: a.pem, key: \"\" } ] }\n"),
        StartsWith("config.yaml:7:46: gateway.tls.certificates[0].key: expected a file path, got an empty string"));
    // A certificate entry that is itself wrong does not also count as "no certificate".
    CHECK(only_error(text + "  tls: { certificates: [ a.pem ] }\n") ==
          "config.yaml:7:26: gateway.tls.certificates[0]: expected a map with cert and key, got \"a.pem\"");
    CHECK_THAT(only_error(text + "  tls: { certificates: [ { cert: a.pem } ] }\n"),
               StartsWith("config.yaml:7:26: gateway.tls.certificates[0]: missing required key 'key'"));
}

TEST_CASE("gateway.seccomp: enforce, log or off", "[unit][config]") {
    CHECK(load_ok(minimal + "  seccomp: enforce\n")->gw.seccomp == cfg::seccomp_mode::enforce);
    CHECK(load_ok(minimal + "  seccomp: log\n")->gw.seccomp == cfg::seccomp_mode::log);
    // "off" is a YAML boolean word; here it is the mode's name.
    CHECK(load_ok(minimal + "  seccomp: off\n")->gw.seccomp == cfg::seccomp_mode::off);
    CHECK(only_error(minimal + "  seccomp: kill\n") ==
          "config.yaml:7:12: gateway.seccomp: expected one of enforce, log or off, got \"kill\"");
    CHECK(only_error(minimal + "  seccomp: logs\n") ==
          "config.yaml:7:12: gateway.seccomp: expected one of enforce, log or off, got \"logs\"; "
          "did you mean 'log'?");
    CHECK_THAT(only_error(minimal + "  seccomp: [log]\n"), StartsWith("config.yaml:7:12: gateway.seccomp: expected"));
    CHECK_THAT(only_error(minimal + "  secomp: log\n"), Contains("did you mean 'seccomp'?"));
}

TEST_CASE("access log and log level: defaults, short forms and the map", "[unit][config]") {
    const auto d = load_ok(minimal);
    CHECK_FALSE(d->gw.access_log_settings.enabled);
    CHECK(d->gw.access_log_settings.path == "stdout");
    CHECK(d->gw.access_log_settings.buffer_bytes == 256 * 1024);
    CHECK(d->gw.error_log_level == cfg::log_level::info);
    CHECK_THAT(cfg::summary(*d), Contains("logs       access off, level info"));

    const auto on = load_ok(minimal + "  access_log: on\n  log_level: warn\n");
    CHECK(on->gw.access_log_settings.enabled);
    CHECK(on->gw.access_log_settings.path == "stdout");
    CHECK(on->gw.error_log_level == cfg::log_level::warn);

    const auto out = load_ok(minimal + "  access_log: stdout\n");
    CHECK(out->gw.access_log_settings.enabled);
    CHECK(out->gw.access_log_settings.path == "stdout");

    const auto off = load_ok(minimal + "  access_log: off\n  log_level: debug\n");
    CHECK_FALSE(off->gw.access_log_settings.enabled);
    CHECK(off->gw.error_log_level == cfg::log_level::debug);

    const auto file = load_ok(minimal + "  access_log: /var/log/rampart/access.log\n");
    CHECK(file->gw.access_log_settings.enabled);
    CHECK(file->gw.access_log_settings.path == "/var/log/rampart/access.log");

    const auto map = load_ok(minimal + "  access_log: { path: /var/log/rampart/a.log, buffer: 1MiB }\n"
                                       "  log_level: error\n");
    CHECK(map->gw.access_log_settings.enabled);
    CHECK(map->gw.access_log_settings.path == "/var/log/rampart/a.log");
    CHECK(map->gw.access_log_settings.buffer_bytes == 1024 * 1024);
    CHECK(map->gw.error_log_level == cfg::log_level::error);
    CHECK_THAT(cfg::summary(*map),
               Contains("logs       access /var/log/rampart/a.log (json, buffer 1MiB), level error"));

    const auto buffer_only = load_ok(minimal + "  access_log: { buffer: 8KiB }\n");
    CHECK(buffer_only->gw.access_log_settings.enabled);
    CHECK(buffer_only->gw.access_log_settings.path == "stdout");
    CHECK(buffer_only->gw.access_log_settings.buffer_bytes == 8 * 1024);

    const auto empty = load_ok(minimal + "  access_log:\n");
    CHECK(empty->gw.access_log_settings.enabled);
    CHECK(empty->gw.access_log_settings.path == "stdout");
}

TEST_CASE("access log formats and syslog", "[unit][config]") {
    const auto combined = load_ok(minimal + "  access_log: { path: stdout, format: combined }\n");
    CHECK(combined->gw.access_log_settings.format == cfg::access_log_format::combined);
    CHECK(combined->gw.access_log_settings.hostname.empty());

    const auto short_form = load_ok(minimal + "  access_log: syslog\n");
    const auto& s = short_form->gw.access_log_settings;
    CHECK(s.enabled);
    CHECK(s.path == "syslog");
    CHECK(s.syslog_socket == "/dev/log");
    CHECK(s.facility == 23);
    CHECK(s.format == cfg::access_log_format::json);
    CHECK_FALSE(s.hostname.empty());
    CHECK(s.hostname.find(' ') == std::string::npos);

    const auto map = load_ok(minimal + "  access_log: { path: syslog, format: combined, facility: local0, "
                                       "syslog_socket: /run/systemd/journal/syslog }\n");
    const auto& m = map->gw.access_log_settings;
    CHECK(m.facility == 16);
    CHECK(m.syslog_socket == "/run/systemd/journal/syslog");
    CHECK_THAT(cfg::summary(*map),
               Contains("logs       access syslog /run/systemd/journal/syslog (combined, buffer 256KiB)"));
    CHECK(load_ok(minimal + "  access_log: { path: syslog, facility: daemon }\n")->gw.access_log_settings.facility ==
          3);

    CHECK(only_error(minimal + "  access_log: { format: apache }\n") ==
          "config.yaml:7:25: gateway.access_log.format: expected json or combined, got \"apache\"");
    CHECK(only_error(minimal + "  access_log: { path: syslog, facility: local8 }\n") ==
          "config.yaml:7:41: gateway.access_log.facility: expected local0 .. local7, user or daemon, got \"local8\"");
    CHECK(only_error(minimal + "  access_log: { path: stdout, facility: local1 }\n") ==
          "config.yaml:7:41: gateway.access_log.facility: facility applies to path: syslog only");
    CHECK(only_error(minimal + "  access_log: { syslog_socket: /dev/log }\n") ==
          "config.yaml:7:32: gateway.access_log.syslog_socket: syslog_socket applies to path: syslog only");
}

TEST_CASE("a relative access log path follows the file", "[unit][config]") {
    const auto dir = std::filesystem::temp_directory_path() / ("rampart-config-alog-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto file = dir / "rampart.yaml";
    {
        std::ofstream out(file);
        out << minimal << "  access_log: { path: logs/../access.log }\n";
    }
    const auto result = cfg::load(file.string());
    std::filesystem::remove_all(dir);
    REQUIRE(result);
    CHECK(result.config->gw.access_log_settings.path == (dir / "access.log").string());
}

TEST_CASE("access log and log level mistakes are named with their positions", "[unit][config]") {
    CHECK(only_error(minimal + "  log_level: verbose\n") ==
          "config.yaml:7:14: gateway.log_level: expected one of debug, info, warn or error, got \"verbose\"");
    CHECK(only_error(minimal + "  log_level: eror\n") ==
          "config.yaml:7:14: gateway.log_level: expected one of debug, info, warn or error, got \"eror\"; "
          "did you mean 'error'?");
    CHECK(only_error(minimal + "  access_log: { path: /a.log, buffer: 1KiB }\n") ==
          "config.yaml:7:39: gateway.access_log.buffer: expected a size from 4KiB to 64MiB, got \"1KiB\"");
    CHECK(only_error(minimal + "  access_log: { path: /a.log, buffer: lots }\n") ==
          "config.yaml:7:39: gateway.access_log.buffer: expected a size like 512, 16KiB, 10MiB or 1GB, got \"lots\"");
    CHECK(only_error(minimal + "  access_log: { file: /a.log }\n") ==
          "config.yaml:7:17: gateway.access_log.file: unknown key, expected one of path, buffer, format, facility or "
          "syslog_socket");
    CHECK(only_error(minimal + "  access_log: { path: \"\" }\n") ==
          "config.yaml:7:23: gateway.access_log.path: expected a file path, got an empty string");
    CHECK(only_error(minimal + "  access_log: { path: [a, b] }\n") ==
          "config.yaml:7:23: gateway.access_log.path: expected a file path, got a list");
    CHECK(only_error(minimal + "  access_log: [stdout]\n") ==
          "config.yaml:7:15: gateway.access_log: expected a map with path, format, buffer, facility and "
          "syslog_socket, or off, on, stdout, syslog or a file path, got a list");
    CHECK(only_error(minimal + "  acces_log: off\n") ==
          "config.yaml:7:3: gateway.acces_log: unknown key, did you mean 'access_log'?");
}

TEST_CASE("trusted proxies and the PROXY protocol", "[unit][config]") {
    const std::string listen =
        "site: www.foobar.com\nservers:\n  app1: { address: 192.0.2.21, role: app, port: 8080 }\n"
        "gateway:\n  listen: { http: \"127.0.0.1:8080\", proxy_protocol: true }\n"
        "  pools: { app: { servers: [app1] } }\n";
    const auto ok = load_ok(listen + "  trusted_proxies: [192.0.2.50/32, \"2001:db8:1::/48\"]\n");
    CHECK(ok->gw.listen.proxy_protocol);
    REQUIRE(ok->gw.trusted_proxies.size() == 2);
    CHECK(ok->gw.trusted_proxies[0].to_string() == "192.0.2.50/32");
    CHECK(ok->gw.trusted_proxies[1].to_string() == "2001:db8:1::/48");
    CHECK_FALSE(load_ok(minimal)->gw.listen.proxy_protocol);
    CHECK(load_ok(minimal)->gw.trusted_proxies.empty());
    // Whom to believe must be said: a PROXY header from anyone would let anyone choose its address.
    CHECK(only_error(listen) == "config.yaml:5:53: gateway.listen.proxy_protocol: needs gateway.trusted_proxies: the "
                                "networks of the balancers allowed to send the header");
    CHECK_THAT(only_error(listen + "  trusted_proxies: [192.0.2.500/32]\n"),
               Contains("config.yaml:7:21: gateway.trusted_proxies[0]: expected a network"));
    CHECK_THAT(only_error(listen + "  trusted_proxies: 192.0.2.50/32\n"), Contains("config.yaml:7:20: "));
    std::string maybe = listen;
    maybe.replace(maybe.find("true"), 4, "maybe");
    CHECK_THAT(only_error(maybe), Contains("config.yaml:5:53: gateway.listen.proxy_protocol: expected"));
}

namespace {

// An https and an http listener, then `gateway.tls.acme:` on line 8; the
// acme settings follow, indented six spaces, from line 9.
const std::string acme_head = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080", https: "127.0.0.1:8443" }
  pools: { app: { servers: [app1] } }
  tls:
    acme:
)";
// The two settings acme requires: line 9 and line 10.
const std::string acme_directory = "      directory: https://acme.example/dir\n";
const std::string acme_names = "      names: [www.foobar.com]\n";

std::string acme_file(const std::string& settings) {
    return acme_head + settings;
}

} // namespace

TEST_CASE("gateway.tls.acme: the smallest setting, its defaults and its certificate file", "[unit][config][acme]") {
    CHECK_FALSE(load_ok(minimal)->gw.tls_settings.acme_settings);

    const auto s = load_ok(acme_file(acme_directory + acme_names));
    const cfg::tls& tls = s->gw.tls_settings;
    REQUIRE(tls.acme_settings);
    const cfg::acme& a = *tls.acme_settings;
    CHECK(a.directory == "https://acme.example/dir");
    CHECK(a.names == std::vector<std::string>{"www.foobar.com"});
    CHECK(a.email.empty());
    CHECK(a.key_types == std::vector<std::string>{"ecdsa"});
    CHECK(a.challenge == "http-01");
    CHECK(a.renew_before == std::chrono::hours(24 * 30));
    CHECK(a.ca_file.empty());
    CHECK(a.state_dir == "/var/lib/rampart/acme");
    CHECK(a.retry_min == 30s);
    CHECK(a.retry_max == std::chrono::hours(6));
    CHECK(a.at.line == 9);
    CHECK(a.at.column == 7);

    REQUIRE(tls.certificates.size() == 1);
    const cfg::certificate& c = tls.certificates[0];
    CHECK(c.cert_file == "/var/lib/rampart/acme/www.foobar.com-ecdsa.pem");
    CHECK(c.key_file == c.cert_file); // chain and key in one file
    CHECK(c.acme);
    CHECK(a.file_of("ecdsa") == c.cert_file);
}

TEST_CASE("gateway.tls.acme: every setting, and its files before the configured certificates", "[unit][config][acme]") {
    const std::string text = R"(site: www.foobar.com
servers:
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { https: "127.0.0.1:8443" }
  pools: { app: { servers: [app1] } }
  tls:
    certificates: [ { cert: /etc/rampart/other.pem, key: /etc/rampart/other.key } ]
    acme:
      directory: https://acme.example/directory
      email: ops@foobar.com
      names: [foobar.com, www.foobar.com, api-2.foobar.com]
      key_types: [ecdsa, rsa]
      challenge: tls-alpn-01
      renew_before: 20d
      ca_file: /etc/rampart/acme-ca.pem
      state_dir: /srv/rampart/acme
      retry_min: 1m
      retry_max: 2h
)";
    const auto s = load_ok(text);
    const cfg::tls& tls = s->gw.tls_settings;
    REQUIRE(tls.acme_settings);
    const cfg::acme& a = *tls.acme_settings;
    CHECK(a.directory == "https://acme.example/directory");
    CHECK(a.email == "ops@foobar.com");
    CHECK(a.names == std::vector<std::string>{"foobar.com", "www.foobar.com", "api-2.foobar.com"});
    CHECK(a.key_types == std::vector<std::string>{"ecdsa", "rsa"});
    CHECK(a.challenge == "tls-alpn-01"); // so no http listener is needed
    CHECK(a.renew_before == std::chrono::hours(24 * 20));
    CHECK(a.ca_file == "/etc/rampart/acme-ca.pem");
    CHECK(a.state_dir == "/srv/rampart/acme");
    CHECK(a.retry_min == 1min);
    CHECK(a.retry_max == 2h);

    // ACME's files first (the first one is the default certificate), each
    // key type in the order given, named after the first name.
    REQUIRE(tls.certificates.size() == 3);
    CHECK(tls.certificates[0].cert_file == "/srv/rampart/acme/foobar.com-ecdsa.pem");
    CHECK(tls.certificates[0].key_file == "/srv/rampart/acme/foobar.com-ecdsa.pem");
    CHECK(tls.certificates[0].acme);
    CHECK(tls.certificates[1].cert_file == "/srv/rampart/acme/foobar.com-rsa.pem");
    CHECK(tls.certificates[1].key_file == "/srv/rampart/acme/foobar.com-rsa.pem");
    CHECK(tls.certificates[1].acme);
    CHECK(tls.certificates[2].cert_file == "/etc/rampart/other.pem");
    CHECK(tls.certificates[2].key_file == "/etc/rampart/other.key");
    CHECK_FALSE(tls.certificates[2].acme);
}

TEST_CASE("gateway.tls.acme: key types in the order given", "[unit][config][acme]") {
    const auto both = load_ok(acme_file(acme_directory + acme_names + "      key_types: [ecdsa, rsa]\n"));
    const auto& certs = both->gw.tls_settings.certificates;
    REQUIRE(certs.size() == 2);
    CHECK(certs[0].cert_file == "/var/lib/rampart/acme/www.foobar.com-ecdsa.pem");
    CHECK(certs[1].cert_file == "/var/lib/rampart/acme/www.foobar.com-rsa.pem");
    CHECK(certs[0].acme);
    CHECK(certs[1].acme);

    const auto reversed = load_ok(acme_file(acme_directory + acme_names + "      key_types: [rsa, ecdsa]\n"));
    const auto& r = reversed->gw.tls_settings.certificates;
    REQUIRE(r.size() == 2);
    CHECK(r[0].cert_file == "/var/lib/rampart/acme/www.foobar.com-rsa.pem");
    CHECK(r[1].cert_file == "/var/lib/rampart/acme/www.foobar.com-ecdsa.pem");

    const auto rsa = load_ok(acme_file(acme_directory + acme_names + "      key_types: [rsa]\n"));
    REQUIRE(rsa->gw.tls_settings.certificates.size() == 1);
    CHECK(rsa->gw.tls_settings.certificates[0].cert_file == "/var/lib/rampart/acme/www.foobar.com-rsa.pem");
}

TEST_CASE("gateway.tls.acme: a wrong directory or name is named with its position", "[unit][config][acme]") {
    CHECK(only_error(acme_file("      directory: http://acme.example/dir\n" + acme_names)) ==
          "config.yaml:9:18: gateway.tls.acme.directory: expected an https:// URL (RFC 8555 servers speak HTTPS "
          "only), got \"http://acme.example/dir\"");
    CHECK_THAT(only_error(acme_file("      directory: https://\n" + acme_names)),
               StartsWith("config.yaml:9:18: gateway.tls.acme.directory: expected an https:// URL"));
    CHECK_THAT(only_error(acme_file(acme_names)),
               StartsWith("config.yaml:9:7: gateway.tls.acme: missing required key 'directory'"));
    CHECK_THAT(only_error(acme_file(acme_directory)),
               StartsWith("config.yaml:9:7: gateway.tls.acme: missing required key 'names'"));

    // Line 10 is `      names: [`, its first item at column 15.
    CHECK_THAT(only_error(acme_file(acme_directory + "      names: [www.foobar.com, \"*.foobar.com\"]\n")),
               StartsWith("config.yaml:10:31: gateway.tls.acme.names[1]: wildcard names need the dns-01 challenge"));
    CHECK_THAT(only_error(acme_file(acme_directory + "      names: [WWW.foobar.com]\n")),
               StartsWith("config.yaml:10:15: gateway.tls.acme.names[0]: expected a lower-case host name") &&
                   Contains("\"WWW.foobar.com\""));
    CHECK(only_error(acme_file(acme_directory + "      names: [www.foobar.com, www.foobar.com]\n")) ==
          "config.yaml:10:31: gateway.tls.acme.names[1]: \"www.foobar.com\" is listed twice");
    CHECK_THAT(only_error(acme_file(acme_directory + "      names: []\n")),
               StartsWith("config.yaml:10:14: gateway.tls.acme.names: at least one name is needed"));
    for (const std::string bad : {"foo..com", ".foobar.com", "foobar.com.", "foo_bar.com", "foo bar.com",
                                  "a.com,DNS:evil.com", "192.0.2.1:80"}) {
        INFO(bad);
        CHECK_THAT(only_error(acme_file(acme_directory + "      names: [\"" + bad + "\"]\n")),
                   StartsWith("config.yaml:10:15: gateway.tls.acme.names[0]: expected a lower-case host name"));
    }
    // An address is not a name (IP identifiers are not ordered).
    for (const std::string address : {"192.0.2.1", "10.0.0.255"}) {
        INFO(address);
        CHECK_THAT(only_error(acme_file(acme_directory + "      names: [\"" + address + "\"]\n")),
                   StartsWith("config.yaml:10:15: gateway.tls.acme.names[0]: expected a lower-case host name"));
    }
    CHECK(load_ok(acme_file(acme_directory + "      names: [a1.foobar2.com]\n")));
    // The directory's port must be a port; an authority with a user is refused.
    for (const std::string bad :
         {"https://acme.example:abc/dir", "https://acme.example:0/dir", "https://acme.example:70000/dir",
          "https://user@acme.example/dir", "https://:443/dir", "https://[::1/dir"}) {
        INFO(bad);
        CHECK_THAT(only_error(acme_file("      directory: " + bad + "\n" + acme_names)),
                   StartsWith("config.yaml:9:18: gateway.tls.acme.directory: expected an https:// URL"));
    }
    for (const std::string good : {"https://acme.example:14000/dir", "https://[2001:db8::1]:443/dir",
                                   "https://[2001:db8::1]/dir", "https://192.0.2.100:14000/dir"}) {
        INFO(good);
        CHECK(load_ok(acme_file("      directory: " + good + "\n" + acme_names))->gw.tls_settings.acme_settings);
    }
    const std::string label63(63, 'a');
    CHECK(load_ok(acme_file(acme_directory + "      names: [" + label63 + ".foobar.com]\n"))
              ->gw.tls_settings.acme_settings->names.front() == label63 + ".foobar.com");
    CHECK_THAT(only_error(acme_file(acme_directory + "      names: [a" + label63 + ".foobar.com]\n")),
               Contains("expected a lower-case host name"));
}

TEST_CASE("gateway.tls.acme: key types, challenge and retries", "[unit][config][acme]") {
    const std::string base = acme_directory + acme_names; // line 11 is free
    CHECK(only_error(acme_file(base + "      key_types: [ecdsa, dsa]\n")) ==
          "config.yaml:11:26: gateway.tls.acme.key_types[1]: unknown key type \"dsa\"; expected ecdsa or rsa");
    CHECK(only_error(acme_file(base + "      key_types: [rsa, rsa]\n")) ==
          "config.yaml:11:24: gateway.tls.acme.key_types[1]: \"rsa\" is listed twice");
    CHECK_THAT(only_error(acme_file(base + "      key_types: []\n")),
               StartsWith("config.yaml:11:18: gateway.tls.acme.key_types: at least one key type is needed"));

    const std::string dns = only_error(acme_file(base + "      challenge: dns-01\n"));
    CHECK_THAT(dns, StartsWith("config.yaml:11:18: gateway.tls.acme.challenge: expected http-01 or tls-alpn-01, "
                               "got \"dns-01\""));
    CHECK_THAT(dns, Contains("dns-01 is not answered"));
    const std::string other = only_error(acme_file(base + "      challenge: tls-sni-01\n"));
    CHECK_THAT(other, StartsWith("config.yaml:11:18: gateway.tls.acme.challenge: expected http-01 or tls-alpn-01"));
    CHECK_THAT(other, !Contains("dns-01 is not answered"));

    CHECK(only_error(acme_file(base + "      retry_min: 2h\n      retry_max: 1h\n")) ==
          "config.yaml:9:7: gateway.tls.acme: retry_min is longer than retry_max");
    // Under a second would retry at once (the schedule counts whole seconds).
    CHECK_THAT(only_error(acme_file(base + "      retry_min: 500ms\n")),
               StartsWith("config.yaml:11:18: gateway.tls.acme.retry_min:"));
    CHECK_THAT(only_error(acme_file(base + "      retry_max: 10ms\n")),
               StartsWith("config.yaml:11:18: gateway.tls.acme.retry_max:"));
    const auto equal = load_ok(acme_file(base + "      retry_min: 1h\n      retry_max: 1h\n"));
    CHECK(equal->gw.tls_settings.acme_settings->retry_min == 1h);
    // The default retry_max (6h) bounds a longer retry_min too.
    CHECK(only_error(acme_file(base + "      retry_min: 7h\n")) ==
          "config.yaml:9:7: gateway.tls.acme: retry_min is longer than retry_max");
    CHECK_THAT(only_error(acme_file(base + "      renew_before: soon\n")),
               StartsWith("config.yaml:11:21: gateway.tls.acme.renew_before: expected a duration"));
    CHECK_THAT(only_error(acme_file(base + "      email: not-an-address\n")),
               StartsWith("config.yaml:11:14: gateway.tls.acme.email: expected an email address"));
}

TEST_CASE("gateway.tls.acme: unknown keys and a value that is not a map", "[unit][config][acme]") {
    const std::string base = acme_directory + acme_names;
    CHECK(only_error(acme_file(base + "      renew_befor: 10d\n")) ==
          "config.yaml:11:7: gateway.tls.acme.renew_befor: unknown key, did you mean 'renew_before'?");
    const std::string bogus = only_error(acme_file(base + "      bogus: 1\n"));
    CHECK_THAT(bogus, StartsWith("config.yaml:11:7: gateway.tls.acme.bogus: unknown key, expected one of directory"));
    CHECK_THAT(bogus, Contains("retry_max"));
    // An unknown key makes the whole setting fail: no certificate is added,
    // and the https listener is not blamed for it.
    CHECK_THAT(only_error(acme_head.substr(0, acme_head.rfind("    acme:")) + "    acme: letsencrypt\n"),
               StartsWith("config.yaml:8:11: gateway.tls.acme: expected a map with directory, names and the other "
                          "acme settings"));
}

TEST_CASE("gateway.tls.acme: the listeners it needs", "[unit][config][acme]") {
    const std::string settings = "    acme:\n" + acme_directory + acme_names;
    const auto file = [&](const std::string& listen, const std::string& extra) {
        return "site: www.foobar.com\nservers:\n  app1: { address: 192.0.2.21, role: app, port: 8080 }\n"
               "gateway:\n  listen: " +
               listen + "\n  pools: { app: { servers: [app1] } }\n  tls:\n" + settings + extra;
    };
    // http-01 is answered on port 80: no http listener, no http-01.
    const std::string no_http = only_error(file("{ https: \"127.0.0.1:8443\" }", ""));
    CHECK_THAT(no_http, StartsWith("config.yaml:9:7: "));
    CHECK_THAT(no_http, Contains("http-01") && Contains("gateway.listen.http"));
    // tls-alpn-01 does without it.
    CHECK(load_ok(file("{ https: \"127.0.0.1:8443\" }", "      challenge: tls-alpn-01\n"))
              ->gw.tls_settings.acme_settings->challenge == "tls-alpn-01");
    // What it issues is served on an https listener.
    const std::string no_https = only_error(file("{ http: \"127.0.0.1:8080\" }", ""));
    CHECK_THAT(no_https, StartsWith("config.yaml:9:7: "));
    CHECK_THAT(no_https, Contains("gateway.listen.https"));
}

TEST_CASE("gateway.tls.acme in a pair needs the pair's ticket secret", "[unit][config][acme]") {
    const std::string head = R"(site: www.foobar.com
servers:
  gw1: { address: 192.0.2.11, role: gateway }
  gw2: { address: 192.0.2.12, role: gateway }
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080", https: "127.0.0.1:8443" }
  pools: { app: { servers: [app1] } }
  tls:
    acme: { directory: "https://acme.example/dir", names: [www.foobar.com] }
ha:
  vip: 192.0.2.10/24
  interface: eth0
  virtual_router_id: 51
  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }
)";
    const std::string e = only_error(head);
    CHECK_THAT(e, StartsWith("config.yaml:12:3: ha: gateway.tls.acme in a pair needs ha.ticket_secret_file"));

    const auto dir = std::filesystem::temp_directory_path() / ("rampart-acme-pair-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    struct remove_dir {
        std::filesystem::path path;
        ~remove_dir() {
            std::error_code ec;
            std::filesystem::remove_all(path, ec);
        }
    } const cleanup{dir};
    const auto secret = (dir / "ticket.secret").string();
    {
        std::ofstream out(secret);
        out << std::string(64, 'a') << "\n";
    }
    std::filesystem::permissions(secret, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    const auto ok = load_ok(head + "  ticket_secret_file: " + secret + "\n");
    REQUIRE(ok->ha_pair);
    CHECK(ok->ha_pair->ticket_secret_file == secret);
    REQUIRE(ok->gw.tls_settings.acme_settings);
    // Without acme, a pair needs no ticket secret.
    std::string plain = head;
    plain.replace(plain.find("  tls:\n"), plain.find("ha:\n") - plain.find("  tls:\n"),
                  "  tls: { certificates: [ { cert: /etc/a.pem, key: /etc/a.key } ] }\n");
    CHECK_FALSE(load_ok(plain)->gw.tls_settings.acme_settings);
}
