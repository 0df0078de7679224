// Parsing and validation of the deployment file.
//
// Every key the file accepts, its type and its default ("required" when it has
// none). Durations are an integer and a unit, ms|s|m|h|d ("250ms", "10s",
// "7d"), and must be > 0. Sizes are an integer and an optional unit,
// B|KiB|MiB|GiB (powers of 2) or KB|MB|GB (powers of 10), and must be > 0.
// Booleans are true/false, yes/no or on/off. A section left empty (`limits:`)
// means all its defaults. Unknown and duplicate keys are errors everywhere.
//
//   site                        DNS name                       required
//   servers                     map name -> server             required, >= 1 entry; names use [A-Za-z0-9._-]
//     <name>.address            literal IPv4 or IPv6 address   required
//     <name>.role               gateway | app | db-primary | db-replica    required
//     <name>.port               integer 1..65535               none (required to be a pool member)
//     <name>.weight             integer 1..256                 1
//   gateway                     map                            required
//     listen                    map; https or http required
//       https                   "ip:port", "[ipv6]:port"       none; needs >= 1 tls certificate
//       http                    endpoint                       none
//       admin                   endpoint                       none
//                               no two listeners may share an address and port ("::" and
//                               "0.0.0.0" cover every address of their families)
//     workers                   auto | integer 1..256          auto (one per CPU)
//     user                      string, "" keeps root          nobody
//     seccomp                   enforce | log | off            enforce (workers' system-call filter: a call
//                               outside the list kills the worker; log = allowed and logged by the kernel)
//     tls                       map
//       certificates            list of { cert, key }          empty; the first is the default
//         cert                  non-empty path                 required; relative to the file's directory
//         key                   non-empty path                 required; relative to the file's directory
//       session_tickets         bool                           true
//       ticket_rotation         duration >= 1m                 12h
//       alpn                    list of h2, http/1.1, >= 1     [h2, http/1.1] (offered in this order)
//     h2                        map                            HTTP/2 to clients (when alpn has h2)
//       max_concurrent_streams  integer 1..1000                100
//       initial_window          size 1KiB..16MiB               64KiB (per stream: request bodies)
//       max_frame_size          size 16KiB..16MiB-1            16KiB
//       header_table_size       size 0..64KiB                  4KiB  (HPACK; header list size = limits.header_bytes)
//     hsts                      map, or a bool (off = disabled, on = defaults)
//       enabled                 bool                           true
//       max_age                 duration, whole seconds        365d
//       include_subdomains      bool                           true
//       preload                 bool                           false
//     pools                     map name -> pool               required, >= 1 entry; names use [A-Za-z0-9._-]
//       <name>.balance          round_robin | weighted_round_robin | least_connections    round_robin
//       <name>.servers          list, >= 1, no repeats         required
//         - <server name>       or { server: <name>, weight: 1..256 }; weight defaults to the server's
//       <name>.health           map                            none (no active checks; servers count as up)
//         path                  "/..." without spaces          /health
//         expect_status         integer 100..599               200
//         interval              duration >= 100ms              2s
//         timeout               duration >= 10ms, <= interval  1s
//         rise                  integer 1..100                 2   (successes to come back up)
//         fall                  integer 1..100                 3   (failures to go down)
//         host                  host name for the Host header  the site
//       <name>.outlier          map                            passive ejection by the workers
//         consecutive_failures  integer 0..1000 (0 = off)      5   (connect errors, timeouts, 5xx)
//         base_ejection         duration                       10s (doubles with each ejection)
//         max_ejection          duration >= base_ejection      5m
//       <name>.retries          integer 0..3                   1   (on another server, when safe)
//       <name>.max_connections  integer 0..1000000 (0 = none)  0   (requests in flight per server)
//       <name>.queue            map                            waiting when every server is full
//         size                  integer 0..1000000             256
//         timeout               duration                       5s  (then 503)
//       <name>.slow_start       duration, or 0                 0   (weight ramp after coming back)
//       <name>.rate_limit       map { rate, burst }            none (requests per client address;
//                               rate as in firewall.conn_rate; burst defaults to one second's worth)
//     default_pool              pool name                      the only pool; required with several
//     routes                    list of maps                   none (everything to default_pool); first match wins
//       - host                  name or *.name, any case       any host (matched without the port, any case;
//                                                              *.example.com: any subdomain, not example.com)
//         path                  normalised prefix "/..."       / (segment-aware: /static/ and /static match
//                                                              /static/x, /static does not match /staticx)
//         methods               list of methods, >= 1          any
//         pool                  pool name                      one of pool, redirect and static: proxy to that pool
//         redirect              map { to, status }             ... or answer a redirect to `to` + the request's
//           to                  http(s) URL, optional path     path and query; status 301, 302, 303, 307, 308
//           status                                             (301)
//         static                map                            ... or serve files: the path without the route's
//                                                              prefix, under root (GET and HEAD; ETag, ranges)
//           root                absolute path of a directory   required; must exist when the file is read
//           index               file name, "" for none         index.html (for a path ending in '/'; no listings)
//           cache_control       header value                   none (Cache-Control of 200, 206 and 304)
//           types               map extension -> media type    none; before the built-in table ("webmanifest:
//                                                              application/manifest+json"; any case, no dot)
//           hidden              bool                           false (names starting with '.', .well-known too)
//           precompressed       bool                           true  (NAME.br, NAME.gz to clients accepting them)
//         headers               map { request, response }      none; pool routes; static routes: response only
//           request|response    map { set, remove }            set: name -> value (replaces), remove: [names];
//                                                              not framing, hop-by-hop, X-Forwarded-*,
//                                                              Forwarded, X-Request-Id, Host, HSTS
//     timeouts                  map of durations
//       handshake 10s, header 10s, body 30s, idle 60s, upstream_connect 3s,
//       upstream_response 30s, drain 30s, tunnel 1h (an upgraded connection without a byte either way)
//     limits                    map
//       header_bytes            size 1KiB..1MiB                16KiB
//       header_count            integer 1..1000                100
//       body_bytes              size >= 1                      10MiB
//       upstream_idle_per_server integer 0..10000              64
//       max_connections         integer 0..10000000 (0 = none) 50000  (client connections, all workers)
//       max_connections_per_client integer, 0 = none           1000   (per client address)
//       tunnels                 integer 0..10000000            10000  (upgraded connections open, all workers; 0:
//       refused) buffer_body_bytes       size <= 16MiB, or 0            64KiB  (bodies read whole before proxying)
//     abuse                     map                            L7 -> L3: violators into the firewall blocklist
//       block                   bool                           true
//       threshold               integer 1..1000000             50   (violations within window)
//       window                  duration >= 1s                 10s
//       block_for               duration >= 1s                 10m
//       allow                   list of CIDR                   empty (firewall.admin_networks are added)
//     security_headers          map name -> value, or off      X-Content-Type-Options: nosniff,
//                               X-Frame-Options: SAMEORIGIN, Referrer-Policy: strict-origin-when-cross-origin;
//                               added when the backend sent none of that name; "" drops a default
//     admin_token_file          path, mode 0600                none: /metrics, /status and /api/* then need
//                               "Authorization: Bearer <token>"; /healthz and /readyz never do
//     access_log                map, or off / on / stdout      off (no access log)
//                               / a file path (short forms of { path: ... })
//       path                    stdout, or a file path         stdout; relative to the file's directory;
//                               opened by the master (O_APPEND, created 0640) before the workers start
//       buffer                  size 4KiB..64MiB               256KiB (per worker; a line that does not
//                               fit is dropped and counted)
//     log_level                 debug | info | warn | error    info (the stderr log; RAMPART_LOG overrides)
//   firewall                    map                            none (no host firewall)
//     admin_networks            list of CIDR or address        required; may reach SSH and the admin
//                               ("198.51.100.0/24", "2001:db8::/48", "192.0.2.5")  listener; the firewall
//                               lint refuses an empty list. Host bits must be zero.
//     ssh_port                  integer 1..65535               22
//     db_port                   integer 1..65535               3306
//     conn_rate                 map                            per source, new gateway connections
//       rate                    "N/second|minute|hour", N >= 1 50/second
//       burst                   integer 1..1000000             100
//     extra_rules               list of maps                   empty
//       - role                  a role name (checked by the firewall lint)   required
//         proto                 tcp | udp                      tcp
//         port                  integer 1..65535               required
//         from                  list of CIDR, >= 1             required ("0.0.0.0/0" and "::/0" for anywhere)
//   ha                          map                            none (a single gateway); keepalived's VRRP pair
//     vip                       "address/prefix", IPv4         required; the address clients reach ("192.0.2.10/24");
//                               its network must hold both nodes' addresses
//     vip6                      "address/prefix", IPv6         none
//     interface                 interface name                 required; where the VIPs and VRRP live
//     virtual_router_id         integer 1..255                 required; unique on the link
//     nodes                     map name -> node               required, exactly 2 servers of role gateway
//       <name>.priority         integer 1..254                 required; the two must differ
//       <name>.interface        interface name                 ha.interface
//       <name>.keepalived_pid_file path                        /run/keepalived/vrrp.pid, /run/vrrp.pid
//                               (keepalived's VRRP process: gone, the master removes a VIP left here)
//     advert_int                duration 10ms..40s, 10ms steps 100ms (VRRPv3; the peer takes over ~3.5x later)
//     unicast                   bool                           true  (adverts to the peer's address)
//     preempt                   bool                           false (a recovered node does not take the VIP back)
//     health                    map                            what keepalived tracks
//       interval                duration 10ms..10s             100ms (the master rewrites the track file)
//       require_backend         bool                           true  (no available server = unhealthy)
//       weight                  integer -253..0                0     (0 = unhealthy FAULTs the node; < 0 lowers
//                               its priority instead, only with preempt and more than the priority gap)
//       track_process           bool                           true  (keepalived follows the master process too;
//                               needs the initial network namespace: false in containers)
//     state_dir                 absolute path                  /run/rampart/ha (track file, notify FIFO, state)
//     ticket_secret_file        path, mode 0600, 32 bytes      none: both gateways derive TLS session-ticket keys
//                               (raw or 64 hex digits)         from it (gateway.tls.ticket_rotation)
//     peer_check                map                            none: each node asks the peer's admin listener
//                                                              who holds the VIP (rampart_ha_peer_state)
//       secret_file             path, mode 0600, >= 32         required; the same on both nodes; signs
//                               printable characters           requests and answers (HMAC-SHA256)
//       interval                duration 100ms..60s            1s
//       timeout                 duration 10ms..interval        500ms

#include "config/config.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
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

namespace rampart::config {

namespace {

using namespace std::string_view_literals;

// Past this many errors the file is probably not a Rampart config at all; more
// messages would only bury the first ones.
constexpr std::size_t max_errors = 100;
// A deployment file is a few kilobytes; the cap keeps `rampart check /dev/zero` finite.
constexpr std::size_t max_file_bytes = 16 * 1024 * 1024;

constexpr unsigned max_weight = 256;
constexpr unsigned max_workers = 256;

constexpr std::string_view duration_expected = "a duration like 250ms, 10s, 5m, 1h or 7d";
constexpr std::string_view size_expected = "a size like 512, 16KiB, 10MiB or 1GB";
constexpr std::string_view endpoint_expected = "an address:port like 127.0.0.1:8443 or [::]:443";
constexpr std::string_view name_chars = "letters, digits, '.', '_' and '-'";

template <class E> struct named {
    std::string_view name;
    E value;
};

constexpr std::array<named<role>, 4> role_names{{
    {"gateway", role::gateway},
    {"app", role::app},
    {"db-primary", role::db_primary},
    {"db-replica", role::db_replica},
}};

constexpr std::array<named<balance>, 3> balance_names{{
    {"round_robin", balance::round_robin},
    {"weighted_round_robin", balance::weighted_round_robin},
    {"least_connections", balance::least_connections},
}};

constexpr std::array<named<log_level>, 4> log_level_names{{
    {"debug", log_level::debug},
    {"info", log_level::info},
    {"warn", log_level::warn},
    {"error", log_level::error},
}};

constexpr std::array<named<seccomp_mode>, 3> seccomp_names{{
    {"enforce", seccomp_mode::enforce},
    {"log", seccomp_mode::log},
    {"off", seccomp_mode::off},
}};

constexpr std::array<named<duration timeouts::*>, 8> timeout_fields{{
    {"handshake", &timeouts::handshake},
    {"header", &timeouts::header},
    {"body", &timeouts::body},
    {"idle", &timeouts::idle},
    {"upstream_connect", &timeouts::upstream_connect},
    {"upstream_response", &timeouts::upstream_response},
    {"drain", &timeouts::drain},
    {"tunnel", &timeouts::tunnel},
}};

constexpr std::array root_keys{"site"sv, "servers"sv, "gateway"sv, "firewall"sv, "ha"sv};
constexpr std::array ha_keys{
    "vip"sv,     "vip6"sv,   "interface"sv, "virtual_router_id"sv,  "nodes"sv,     "advert_int"sv, "unicast"sv,
    "preempt"sv, "health"sv, "state_dir"sv, "ticket_secret_file"sv, "peer_check"sv};
constexpr std::array ha_peer_check_keys{"secret_file"sv, "interval"sv, "timeout"sv};
constexpr std::array ha_node_keys{"priority"sv, "interface"sv, "keepalived_pid_file"sv};
constexpr std::array ha_health_keys{"interval"sv, "require_backend"sv, "weight"sv, "track_process"sv};
constexpr std::array server_keys{"address"sv, "role"sv, "port"sv, "weight"sv};
constexpr std::array gateway_keys{"listen"sv,     "workers"sv,  "user"sv,  "seccomp"sv,          "tls"sv,
                                  "h2"sv,         "hsts"sv,     "pools"sv, "default_pool"sv,     "routes"sv,
                                  "timeouts"sv,   "limits"sv,   "abuse"sv, "security_headers"sv, "admin_token_file"sv,
                                  "access_log"sv, "log_level"sv};
constexpr std::array listen_keys{"https"sv, "http"sv, "admin"sv};
constexpr std::array tls_keys{"certificates"sv, "session_tickets"sv, "ticket_rotation"sv, "alpn"sv};
constexpr std::array h2_keys{"max_concurrent_streams"sv, "initial_window"sv, "max_frame_size"sv, "header_table_size"sv};
constexpr std::array certificate_keys{"cert"sv, "key"sv};
constexpr std::array hsts_keys{"enabled"sv, "max_age"sv, "include_subdomains"sv, "preload"sv};
constexpr std::array pool_keys{"balance"sv,         "servers"sv, "health"sv,     "outlier"sv,   "retries"sv,
                               "max_connections"sv, "queue"sv,   "slow_start"sv, "rate_limit"sv};
constexpr std::array health_keys{"path"sv, "expect_status"sv, "interval"sv, "timeout"sv, "rise"sv, "fall"sv, "host"sv};
constexpr std::array outlier_keys{"consecutive_failures"sv, "base_ejection"sv, "max_ejection"sv};
constexpr std::array queue_keys{"size"sv, "timeout"sv};
constexpr std::array abuse_keys{"block"sv, "threshold"sv, "window"sv, "block_for"sv, "allow"sv};
constexpr std::array access_log_keys{"path"sv, "buffer"sv};
constexpr std::array member_keys{"server"sv, "weight"sv};
constexpr std::array limit_keys{"header_bytes"sv,    "header_count"sv,
                                "body_bytes"sv,      "upstream_idle_per_server"sv,
                                "max_connections"sv, "max_connections_per_client"sv,
                                "tunnels"sv,         "buffer_body_bytes"sv};
constexpr std::array firewall_keys{"admin_networks"sv, "ssh_port"sv, "db_port"sv, "conn_rate"sv, "extra_rules"sv};
constexpr std::array conn_rate_keys{"rate"sv, "burst"sv};
constexpr std::array extra_rule_keys{"role"sv, "proto"sv, "port"sv, "from"sv};
constexpr std::string_view network_expected = "a network like 198.51.100.0/24 or 2001:db8::/48, or one address";
constexpr std::string_view rate_expected = "a rate like 50/second, 600/minute or 1000/hour";

constexpr std::array<named<rate_unit>, 3> rate_unit_names{{
    {"second", rate_unit::second},
    {"minute", rate_unit::minute},
    {"hour", rate_unit::hour},
}};

template <class E, std::size_t N> std::vector<std::string_view> names_of(const std::array<named<E>, N>& table) {
    std::vector<std::string_view> out;
    for (const auto& entry : table) {
        out.push_back(entry.name);
    }
    return out;
}

// ---- text helpers ----------------------------------------------------------

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// A run of decimal digits only: no sign, no spaces, no 0x. nullopt when empty
// or too large for 64 bits.
std::optional<std::uint64_t> parse_decimal(std::string_view s) {
    if (s.empty() || !std::all_of(s.begin(), s.end(), is_digit)) {
        return std::nullopt;
    }
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec != std::errc{} || end != s.data() + s.size()) {
        return std::nullopt;
    }
    return value;
}

// Splits "10MiB" into "10" and "MiB".
std::pair<std::string_view, std::string_view> split_number(std::string_view s) {
    const auto digits = std::min(s.find_first_not_of("0123456789"), s.size());
    return {s.substr(0, digits), s.substr(digits)};
}

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
    return out;
}

// The text of a scalar as it should appear in a message: quoted, control
// characters escaped, long values cut.
std::string in_quotes(std::string_view s) {
    constexpr std::size_t max_shown = 60;
    std::string out = "\"";
    for (std::size_t i = 0; i < s.size() && i < max_shown; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
            constexpr char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        } else {
            out += static_cast<char>(c);
        }
    }
    if (s.size() > max_shown) {
        out += "...";
    }
    return out + "\"";
}

std::string describe(const YAML::Node& node) {
    switch (node.Type()) {
    case YAML::NodeType::Scalar:
        return in_quotes(node.Scalar());
    case YAML::NodeType::Sequence:
        return "a list";
    case YAML::NodeType::Map:
        return "a map";
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
        break;
    }
    return "nothing";
}

std::string join(std::span<const std::string_view> words, std::string_view last_sep = ", ") {
    std::string out;
    for (std::size_t i = 0; i < words.size(); ++i) {
        if (i > 0) {
            out += i + 1 == words.size() ? last_sep : ", "sv;
        }
        out += words[i];
    }
    return out;
}

// YAML 1.1's words, which yaml-cpp and most people still use; y/n are left
// out because they are more often a name than a yes.
std::optional<bool> parse_bool(std::string_view text) {
    const std::string word = lower(text);
    if (word == "true" || word == "yes" || word == "on") {
        return true;
    }
    if (word == "false" || word == "no" || word == "off") {
        return false;
    }
    return std::nullopt;
}

// Optimal string alignment distance: Levenshtein plus adjacent transpositions,
// so "wokrers" is one edit from "workers".
std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
    for (std::size_t i = 0; i <= a.size(); ++i) {
        d[i][0] = i;
    }
    for (std::size_t j = 0; j <= b.size(); ++j) {
        d[0][j] = j;
    }
    for (std::size_t i = 1; i <= a.size(); ++i) {
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
                d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
            }
        }
    }
    return d[a.size()][b.size()];
}

// "did you mean 'x'?" for the closest choice within two edits (ignoring
// case), or "" when nothing is close. A choice is never suggested when the
// edits would replace most of it ("key" is not a typo of "cert").
std::string did_you_mean(std::string_view got, std::span<const std::string_view> choices) {
    constexpr std::size_t max_edits = 2;
    if (got.size() > 64) {
        return {};
    }
    const std::string got_lower = lower(got);
    std::optional<std::string_view> best;
    std::size_t best_distance = max_edits + 1;
    for (const auto choice : choices) {
        const std::size_t d = edit_distance(got_lower, lower(choice));
        if (d < best_distance && d < choice.size()) {
            best = choice;
            best_distance = d;
        }
    }
    if (!best) {
        return {};
    }
    return "did you mean '" + std::string(*best) + "'?";
}

// Canonical text of a literal IP address ("0:0::1" -> "::1"), nullopt for
// anything else, host names included. `v6` tells the family.
std::optional<std::string> canonical_ip(const std::string& text, bool* v6 = nullptr) {
    char out[INET6_ADDRSTRLEN] = {};
    in_addr a4{};
    in6_addr a6{};
    if (::inet_pton(AF_INET, text.c_str(), &a4) == 1) {
        ::inet_ntop(AF_INET, &a4, out, sizeof out);
        if (v6 != nullptr) {
            *v6 = false;
        }
        return std::string(out);
    }
    if (::inet_pton(AF_INET6, text.c_str(), &a6) == 1) {
        ::inet_ntop(AF_INET6, &a6, out, sizeof out);
        if (v6 != nullptr) {
            *v6 = true;
        }
        return std::string(out);
    }
    return std::nullopt;
}

bool valid_dns_name(std::string_view name) {
    constexpr std::size_t max_name = 253;
    constexpr std::size_t max_label = 63;
    if (name.empty() || name.size() > max_name) {
        return false;
    }
    std::size_t start = 0;
    while (start <= name.size()) {
        const std::size_t dot = std::min(name.find('.', start), name.size());
        const std::string_view label = name.substr(start, dot - start);
        if (label.empty() || label.size() > max_label || label.front() == '-' || label.back() == '-') {
            return false;
        }
        const bool ok = std::all_of(label.begin(), label.end(), [](char c) {
            return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
        });
        if (!ok) {
            return false;
        }
        start = dot + 1;
    }
    return true;
}

// Server and pool names end up in metrics labels, log lines and the
// keepalived configuration, so they stay plain.
bool valid_name(std::string_view name) {
    return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
        return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '_' || c == '-';
    });
}

std::optional<endpoint> parse_endpoint_text(std::string_view text, std::string& why) {
    std::string host;
    std::string_view port_text;
    if (text.starts_with('[')) {
        const auto close = text.find("]:");
        if (close == std::string_view::npos) {
            why = "missing ]:port after the IPv6 address";
            return std::nullopt;
        }
        host = text.substr(1, close - 1);
        port_text = text.substr(close + 2);
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            why = "missing :port";
            return std::nullopt;
        }
        host = text.substr(0, colon);
        port_text = text.substr(colon + 1);
        if (host.find(':') != std::string::npos) {
            why = "IPv6 addresses go in brackets, like [::1]:443";
            return std::nullopt;
        }
    }
    bool v6 = false;
    const auto canonical = canonical_ip(host, &v6);
    if (!canonical || v6 != text.starts_with('[')) {
        why = "the host must be a literal IPv4 or bracketed IPv6 address";
        return std::nullopt;
    }
    const auto port = parse_decimal(port_text);
    if (!port || *port < 1 || *port > 65535) {
        why = "the port must be a number from 1 to 65535";
        return std::nullopt;
    }
    return endpoint{*canonical, static_cast<std::uint16_t>(*port)};
}

// Whether two listeners would fight over a port: the same address, or a
// wildcard covering the other ("::" covers both families, as the gateway binds it).
bool overlaps(const endpoint& a, const endpoint& b) {
    if (a.port != b.port) {
        return false;
    }
    const auto v4 = [](const endpoint& e) { return e.host.find(':') == std::string::npos; };
    return a.host == b.host || a.host == "::" || b.host == "::" || (a.host == "0.0.0.0" && v4(b)) ||
           (b.host == "0.0.0.0" && v4(a));
}

std::string format_duration(duration d) {
    constexpr std::array<std::pair<std::int64_t, std::string_view>, 4> units{{
        {86'400'000, "d"},
        {3'600'000, "h"},
        {60'000, "m"},
        {1'000, "s"},
    }};
    const std::int64_t ms = d.count();
    for (const auto& [scale, unit] : units) {
        if (ms != 0 && ms % scale == 0) {
            return std::to_string(ms / scale) + std::string(unit);
        }
    }
    return std::to_string(ms) + "ms";
}

std::string format_size(std::uint64_t bytes) {
    constexpr std::array<std::pair<std::uint64_t, std::string_view>, 6> units{{
        {1ULL << 30, "GiB"},
        {1ULL << 20, "MiB"},
        {1ULL << 10, "KiB"},
        {1'000'000'000, "GB"},
        {1'000'000, "MB"},
        {1'000, "KB"},
    }};
    for (const auto& [scale, unit] : units) {
        if (bytes != 0 && bytes % scale == 0) {
            return std::to_string(bytes / scale) + std::string(unit);
        }
    }
    return std::to_string(bytes) + "B";
}

// ---- the checker -----------------------------------------------------------

// A node to check: its dotted path for messages ("gateway.timeouts.idle") and
// the position to report. An empty value (`idle:`) has no position of its own
// (yaml-cpp marks it at the next token, often a later line), so it reports at its key.
struct field {
    YAML::Node node;
    std::string path;
    YAML::Mark at;
    YAML::Mark key_at;
};

// The entries of one YAML map in file order, duplicates dropped.
struct map_fields {
    field self;
    std::vector<std::pair<std::string, field>> entries;

    std::optional<field> get(std::string_view key) const {
        for (const auto& [name, f] : entries) {
            if (name == key) {
                return f;
            }
        }
        return std::nullopt;
    }
};

std::string child_path(const std::string& parent, std::string_view key) {
    return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

// Walks one parsed document and fills a snapshot, collecting every problem.
// Cross-references (pool members, default_pool) are checked against what the
// walk has seen so far, and an entry that already failed is not blamed again
// for its consequences.
class checker {
public:
    checker(std::string file, std::filesystem::path base_dir)
        : file_(std::move(file)), base_dir_(std::move(base_dir)) {}

    /// The snapshot of `root`, or every error found in it.
    load_result run(const YAML::Node& root);

private:
    void fail(const YAML::Mark& at, const std::string& path, std::string what) {
        ++error_count_;
        if (errors_.size() < max_errors) {
            errors_.push_back(error{where(at), path.empty() ? std::move(what) : path + ": " + what});
        }
    }
    void fail(const field& f, std::string what) { fail(f.at, f.path, std::move(what)); }
    std::vector<error> take_errors();

    location where(const YAML::Mark& m) const {
        return location{file_, std::max(m.line, 0) + 1, std::max(m.column, 0) + 1};
    }

    std::optional<map_fields> read_map(const field& f, const std::span<const std::string_view>* known,
                                       std::string_view expected = "a map");
    std::optional<map_fields> read_map(const field& f, std::span<const std::string_view> known,
                                       std::string_view expected = "a map") {
        return read_map(f, &known, expected);
    }
    std::optional<std::vector<field>> read_list(const field& f, std::string_view expected);
    std::optional<field> required(const map_fields& m, std::string_view key, std::string_view expected);

    std::optional<std::string> scalar(const field& f, std::string_view expected);
    std::optional<std::uint64_t> integer(const field& f, std::uint64_t min, std::uint64_t max,
                                         std::string_view expected = "an integer");
    std::optional<bool> boolean(const field& f);
    /// The scalar at `f` through `parse` (which returns an optional); fails
    /// with "expected <expected>, got <text>" when it does not parse.
    template <class Parse>
    auto parsed(const field& f, std::string_view expected, Parse parse) -> decltype(parse(std::string{})) {
        const auto text = scalar(f, expected);
        if (!text) {
            return std::nullopt;
        }
        auto value = parse(*text);
        if (!value) {
            fail(f, "expected " + std::string(expected) + ", got " + in_quotes(*text));
        }
        return value;
    }
    std::optional<duration> duration_value(const field& f, duration min = duration(1));
    std::optional<std::uint64_t> size_value(const field& f, std::uint64_t min, std::uint64_t max);
    std::optional<endpoint> endpoint_value(const field& f);
    std::optional<std::string> ip_address(const field& f);
    std::optional<std::string> file_path(const field& f);
    template <class E, std::size_t N> std::optional<E> one_of(const field& f, const std::array<named<E>, N>& table);

    template <class T, class Read> void optional_value(const map_fields& m, std::string_view key, T& out, Read read) {
        if (const auto f = m.get(key)) {
            if (auto v = read(*f)) {
                out = std::move(*v);
            }
        }
    }

    void check_site(const field& f, snapshot& s);
    void check_servers(const field& f, snapshot& s);
    void check_gateway(const field& f, snapshot& s);
    void check_listen(const field& f, listeners& out, std::optional<field>& https);
    void check_workers(const field& f, gateway& gw);
    void check_tls(const field& f, tls& out);
    void check_h2(const field& f, h2& out);
    void check_hsts(const field& f, hsts& out);
    void check_pools(const field& f, snapshot& s, std::vector<std::string>& names);
    void check_routes(const field& f, gateway& gw, const std::vector<std::string>& pool_names);
    void check_header_rules(const field& f, header_rules& out);
    std::optional<route> check_route(const field& f, const std::vector<std::string>& pool_names);
    std::optional<route_static> check_static(const field& f);
    void check_pool(const std::string& name, const field& f, const snapshot& s, pool& out);
    void check_timeouts(const field& f, timeouts& out);
    void check_limits(const field& f, limits& out);
    void check_firewall(const field& f, snapshot& s);
    std::optional<network> network_value(const field& f);
    std::vector<network> network_list(const field& f);
    void check_conn_rate(const field& f, rate& out);
    void check_rate_text(const field& f, rate& out);
    void check_health(const field& f, health_check& out);
    void check_outlier(const field& f, outlier_detection& out);
    void check_abuse(const field& f, abuse& out);
    void check_admin_token(const field& f, gateway& gw);
    std::optional<std::pair<std::string, std::string>> secret_file(const field& f, const std::string& what,
                                                                   std::size_t min_size);
    void check_peer_check(const field& f, const snapshot& s, ha_peer_check& out);
    void check_security_headers(const field& f, std::vector<std::pair<std::string, std::string>>& out);
    void check_access_log(const field& f, access_log& out);
    template <class T>
    void optional_count(const map_fields& m, std::string_view key, T& out, std::uint64_t min, std::uint64_t max) {
        if (const auto f = m.get(key)) {
            if (const auto n = integer(*f, min, max)) {
                out = static_cast<T>(*n);
            }
        }
    }
    void check_extra_rule(const field& f, firewall_rule& out);
    void check_ha(const field& f, snapshot& s);
    std::optional<network> interface_address(const field& f, bool v6);
    std::optional<std::string> interface_name(const field& f);

    std::string file_;
    std::filesystem::path base_dir_;
    std::vector<error> errors_;
    std::size_t error_count_ = 0;
    // Server name -> index in snapshot::servers, for every server seen.
    std::map<std::string, std::size_t, std::less<>> server_index_;
    // Servers whose own entry had an error: pools do not blame them again.
    std::set<std::string, std::less<>> broken_servers_;
    // No server could be read at all, so no pool member is blamed for naming one.
    bool servers_unreadable_ = false;
};

std::vector<error> checker::take_errors() {
    // Reported in file order, whatever order the sections were checked in.
    std::stable_sort(errors_.begin(), errors_.end(), [](const error& a, const error& b) {
        return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
    });
    if (error_count_ > errors_.size()) {
        errors_.push_back(error{location{file_, 1, 1}, "stopped after " + std::to_string(max_errors) + " errors (" +
                                                           std::to_string(error_count_) + " in all)"});
    }
    return std::move(errors_);
}

std::optional<map_fields> checker::read_map(const field& f, const std::span<const std::string_view>* known,
                                            std::string_view expected) {
    map_fields out{f, {}};
    // An empty section (`limits:`) reads as "all defaults".
    if (f.node.IsNull()) {
        return out;
    }
    if (!f.node.IsMap()) {
        fail(f, "expected " + std::string(expected) + ", got " + describe(f.node));
        return std::nullopt;
    }
    std::map<std::string, int, std::less<>> first_line;
    for (auto it = f.node.begin(); it != f.node.end(); ++it) {
        const YAML::Node key = it->first;
        const YAML::Node value = it->second;
        if (!key.IsScalar()) {
            fail(key.Mark(), f.path, "expected a plain key, got " + describe(key));
            continue;
        }
        const std::string& name = key.Scalar();
        const std::string path = child_path(f.path, name);
        if (known != nullptr && std::find(known->begin(), known->end(), name) == known->end()) {
            std::string hint = did_you_mean(name, *known);
            fail(key.Mark(), path,
                 "unknown key, " + (hint.empty() ? "expected one of " + join(*known, " or ") : std::move(hint)));
            continue;
        }
        // yaml-cpp keeps every duplicate and node[key] returns the first; a
        // silent pick would hide an edit that was meant to win.
        if (const auto seen = first_line.find(name); seen != first_line.end()) {
            fail(key.Mark(), path, "duplicate key, first given at line " + std::to_string(seen->second));
            continue;
        }
        first_line.emplace(name, key.Mark().line + 1);
        out.entries.emplace_back(name, field{value, path, value.IsNull() ? key.Mark() : value.Mark(), key.Mark()});
    }
    return out;
}

std::optional<std::vector<field>> checker::read_list(const field& f, std::string_view expected) {
    std::vector<field> out;
    if (f.node.IsNull()) {
        return out;
    }
    if (!f.node.IsSequence()) {
        fail(f, "expected " + std::string(expected) + ", got " + describe(f.node));
        return std::nullopt;
    }
    std::size_t i = 0;
    for (const auto& item : f.node) {
        YAML::Mark at = item.Mark();
        if (at.is_null()) {
            at = f.at;
        }
        out.push_back(field{item, f.path + "[" + std::to_string(i++) + "]", at, at});
    }
    return out;
}

std::optional<field> checker::required(const map_fields& m, std::string_view key, std::string_view expected) {
    if (auto f = m.get(key)) {
        return f;
    }
    fail(m.self, "missing required key '" + std::string(key) + "' (" + std::string(expected) + ")");
    return std::nullopt;
}

std::optional<std::string> checker::scalar(const field& f, std::string_view expected) {
    if (!f.node.IsScalar()) {
        fail(f, "expected " + std::string(expected) + ", got " + describe(f.node));
        return std::nullopt;
    }
    return f.node.Scalar();
}

std::optional<std::uint64_t> checker::integer(const field& f, std::uint64_t min, std::uint64_t max,
                                              std::string_view expected) {
    const std::string what = std::string(expected) + " from " + std::to_string(min) + " to " + std::to_string(max);
    const auto text = scalar(f, what);
    if (!text) {
        return std::nullopt;
    }
    const auto value = parse_decimal(*text);
    if (!value || *value < min || *value > max) {
        fail(f, "expected " + what + ", got " + in_quotes(*text));
        return std::nullopt;
    }
    return value;
}

std::optional<bool> checker::boolean(const field& f) {
    return parsed(f, "true or false", [](const std::string& t) { return parse_bool(t); });
}

std::optional<duration> checker::duration_value(const field& f, duration min) {
    const auto value = parsed(f, duration_expected, [](const std::string& t) { return parse_duration(t); });
    if (value && *value < min) {
        fail(f, "expected at least " + format_duration(min) + ", got " + in_quotes(f.node.Scalar()));
        return std::nullopt;
    }
    return value;
}

std::optional<std::uint64_t> checker::size_value(const field& f, std::uint64_t min, std::uint64_t max) {
    const auto value = parsed(f, size_expected, [](const std::string& t) { return parse_size(t); });
    if (value && (*value < min || *value > max)) {
        const std::string range = max == std::numeric_limits<std::uint64_t>::max()
                                      ? "at least " + format_size(min)
                                      : "from " + format_size(min) + " to " + format_size(max);
        fail(f, "expected a size " + range + ", got " + in_quotes(f.node.Scalar()));
        return std::nullopt;
    }
    return value;
}

std::optional<endpoint> checker::endpoint_value(const field& f) {
    const auto text = scalar(f, endpoint_expected);
    if (!text) {
        return std::nullopt;
    }
    std::string why;
    auto value = parse_endpoint_text(*text, why);
    if (!value) {
        fail(f, "expected " + std::string(endpoint_expected) + ", got " + in_quotes(*text) + " (" + why + ")");
    }
    return value;
}

std::optional<std::string> checker::ip_address(const field& f) {
    return parsed(f, "a literal IPv4 or IPv6 address like 192.0.2.1 or 2001:db8::1",
                  [](const std::string& t) { return canonical_ip(t); });
}

// Relative paths are taken from the config file's directory, not from
// wherever `rampart` happens to be started.
std::optional<std::string> checker::file_path(const field& f) {
    constexpr std::string_view expected = "a file path";
    const auto text = scalar(f, expected);
    if (!text) {
        return std::nullopt;
    }
    if (text->empty()) {
        fail(f, "expected " + std::string(expected) + ", got an empty string");
        return std::nullopt;
    }
    const std::filesystem::path p(*text);
    return (p.is_absolute() ? p : base_dir_ / p).lexically_normal().string();
}

template <class E, std::size_t N>
std::optional<E> checker::one_of(const field& f, const std::array<named<E>, N>& table) {
    const auto names = names_of(table);
    const std::string expected = "one of " + join(names, " or ");
    const auto text = scalar(f, expected);
    if (!text) {
        return std::nullopt;
    }
    for (const auto& entry : table) {
        if (entry.name == *text) {
            return entry.value;
        }
    }
    const std::string hint = did_you_mean(*text, names);
    fail(f, "expected " + expected + ", got " + in_quotes(*text) + (hint.empty() ? "" : "; " + hint));
    return std::nullopt;
}

load_result checker::run(const YAML::Node& root) {
    auto s = std::make_shared<snapshot>();
    s->source_file = file_;
    const YAML::Mark start = root.Mark().is_null() ? YAML::Mark() : root.Mark();
    if (root.IsNull()) {
        fail(start, "", "the file is empty; expected a map with site, servers and gateway");
        return {nullptr, take_errors()};
    }
    const auto top = read_map(field{root, "", start, start}, root_keys, "a map with site, servers and gateway");
    if (top) {
        if (const auto f = required(*top, "site", "a DNS name like www.example.com")) {
            check_site(*f, *s);
        }
        if (const auto f = required(*top, "servers", "a map of server name to address, role and port")) {
            check_servers(*f, *s);
        }
        if (const auto f = required(*top, "gateway", "a map with listen and pools")) {
            check_gateway(*f, *s);
        }
        if (const auto f = top->get("firewall")) {
            check_firewall(*f, *s);
        }
        if (const auto f = top->get("ha")) {
            check_ha(*f, *s);
        }
    }
    if (error_count_ > 0) {
        return {nullptr, take_errors()};
    }
    return {std::move(s), {}};
}

void checker::check_site(const field& f, snapshot& s) {
    constexpr std::string_view expected = "a DNS name like www.example.com";
    const auto text = scalar(f, expected);
    if (!text) {
        return;
    }
    if (!valid_dns_name(*text)) {
        fail(f, "expected " + std::string(expected) + ", got " + in_quotes(*text));
        return;
    }
    s.site = *text;
}

void checker::check_servers(const field& f, snapshot& s) {
    const auto servers = read_map(f, nullptr, "a map of server name to address, role and port");
    if (!servers) {
        servers_unreadable_ = true;
        return;
    }
    if (servers->entries.empty()) {
        fail(f, "expected at least one server");
    }
    for (const auto& [name, sf] : servers->entries) {
        const std::size_t errors_before = error_count_;
        server srv;
        srv.name = name;
        if (!valid_name(name)) {
            fail(sf.key_at, sf.path, "server names may only use " + std::string(name_chars));
        }
        if (const auto m = read_map(sf, server_keys)) {
            if (const auto a = required(*m, "address", "a literal IP address")) {
                srv.address_at = where(a->at);
                if (auto addr = ip_address(*a)) {
                    srv.address = std::move(*addr);
                }
            }
            if (const auto r = required(*m, "role", "one of " + join(names_of(role_names), " or "))) {
                if (const auto value = one_of(*r, role_names)) {
                    srv.server_role = *value;
                }
            }
            if (const auto p = m->get("port")) {
                if (const auto port = integer(*p, 1, 65535, "a port number")) {
                    srv.port = static_cast<std::uint16_t>(*port);
                }
            }
            optional_value(*m, "weight", srv.weight,
                           [&](const field& w) { return integer(w, 1, max_weight, "a weight"); });
        }
        if (error_count_ != errors_before) {
            broken_servers_.insert(name);
        }
        server_index_.emplace(name, s.servers.size());
        s.servers.push_back(std::move(srv));
    }
}

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
    if (const auto t = m->get("admin_token_file")) {
        check_admin_token(*t, gw);
    }
    if (const auto a = m->get("access_log")) {
        check_access_log(*a, gw.access_log_settings);
    }
    optional_value(*m, "log_level", gw.error_log_level, [&](const field& l) { return one_of(l, log_level_names); });
    if (https && gw.tls_settings.certificates.empty() && !tls_failed) {
        fail(*https, "an https listener needs at least one certificate in gateway.tls.certificates");
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

constexpr std::array route_keys{"host"sv, "path"sv, "methods"sv, "pool"sv, "redirect"sv, "static"sv, "headers"sv};
constexpr std::array redirect_keys{"to"sv, "status"sv};
constexpr std::array static_keys{"root"sv, "index"sv, "cache_control"sv, "types"sv, "hidden"sv, "precompressed"sv};
constexpr std::array route_header_keys{"request"sv, "response"sv};
constexpr std::array header_rule_keys{"set"sv, "remove"sv};

// Fields a route may not set or remove: the message's framing, hop-by-hop
// fields, and what the gateway itself vouches for (the client's address and
// scheme, the request id).
bool gateway_owned_field(std::string_view name) {
    static constexpr std::array owned{"content-length"sv,
                                      "transfer-encoding"sv,
                                      "connection"sv,
                                      "keep-alive"sv,
                                      "te"sv,
                                      "trailer"sv,
                                      "upgrade"sv,
                                      "host"sv,
                                      "proxy-connection"sv,
                                      "proxy-authenticate"sv,
                                      "proxy-authorization"sv,
                                      "x-forwarded-for"sv,
                                      "x-forwarded-proto"sv,
                                      "x-forwarded-host"sv,
                                      "forwarded"sv,
                                      "x-real-ip"sv,
                                      "x-request-id"sv,
                                      "strict-transport-security"sv};
    std::string lower(name);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return std::find(owned.begin(), owned.end(), std::string_view(lower)) != owned.end();
}

// A route's path: absolute, already in the normalised form requests are
// compared in (no dot segments, no empty segment, no percent-encoding, no
// query), or it could never match.
bool normalised_path(std::string_view p) {
    if (p.empty() || p.front() != '/') {
        return false;
    }
    const bool chars = std::all_of(p.begin(), p.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
               std::string_view("-._~!$&'()*+,;=:@/").find(c) != std::string_view::npos;
    });
    return chars && p.find("//") == std::string_view::npos && !p.ends_with("/.") && !p.ends_with("/..") &&
           p.find("/./") == std::string_view::npos && p.find("/../") == std::string_view::npos;
}

bool route_host(std::string_view h) {
    std::string_view name = h.starts_with("*.") ? h.substr(2) : h;
    return !name.empty() && name.size() <= 253 && name.front() != '.' && name.back() != '.' &&
           name.find("..") == std::string_view::npos && std::all_of(name.begin(), name.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
           });
}

void checker::check_routes(const field& f, gateway& gw, const std::vector<std::string>& pool_names) {
    const auto list = read_list(f, "a list of routes ({ host, path, methods, and pool, redirect or static })");
    if (!list) {
        return;
    }
    for (const auto& item : *list) {
        if (auto r = check_route(item, pool_names)) {
            gw.routes.push_back(std::move(*r));
        }
    }
}

std::optional<route> checker::check_route(const field& f, const std::vector<std::string>& pool_names) {
    const auto m = read_map(f, route_keys, "a map with host, path, methods, and pool, redirect or static");
    if (!m) {
        return std::nullopt;
    }
    const std::size_t errors_before = error_count_;
    route r;
    r.where = where(f.at);
    if (const auto h = m->get("host")) {
        if (auto text = scalar(*h, "a host name like www.example.com or *.example.com")) {
            std::transform(text->begin(), text->end(), text->begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
            if (!route_host(*text)) {
                fail(*h, "expected a host name like www.example.com or *.example.com (no port), got " +
                             in_quotes(h->node.Scalar()));
            }
            r.host = *text;
        }
    }
    if (const auto p = m->get("path")) {
        if (const auto text = scalar(*p, "a path prefix like /static/")) {
            if (!normalised_path(*text)) {
                fail(*p, "expected a path prefix like /static/ (starting with /, no query, no percent-encoding, "
                         "no . or .. or empty segment), got " +
                             in_quotes(*text));
            }
            r.path = *text;
        }
    }
    if (const auto ms = m->get("methods")) {
        if (const auto list = read_list(*ms, "a list of methods like [GET, HEAD]")) {
            for (const auto& item : *list) {
                if (const auto text = scalar(item, "a method like GET")) {
                    const bool token = !text->empty() && std::all_of(text->begin(), text->end(),
                                                                     [](char c) { return c >= 'A' && c <= 'Z'; });
                    if (!token) {
                        fail(item, "expected a method in upper case like GET, got " + in_quotes(*text));
                    } else {
                        r.methods.push_back(*text);
                    }
                }
            }
            if (list->empty()) {
                fail(*ms, "expected at least one method (leave methods out for any)");
            }
        }
    }
    const auto pool = m->get("pool");
    const auto redirect = m->get("redirect");
    const auto files = m->get("static");
    if (int{pool.has_value()} + int{redirect.has_value()} + int{files.has_value()} != 1) {
        fail(f, "expected exactly one action: pool (proxy to a pool), redirect or static (files from a directory)");
    }
    if (pool) {
        if (const auto name = scalar(*pool, "a pool name")) {
            const auto at = std::find(pool_names.begin(), pool_names.end(), *name);
            if (at != pool_names.end()) {
                r.pool = *name;
                r.pool_index = static_cast<std::size_t>(at - pool_names.begin());
            } else if (!pool_names.empty()) {
                const std::vector<std::string_view> choices(pool_names.begin(), pool_names.end());
                const std::string hint = did_you_mean(*name, choices);
                fail(*pool,
                     "no pool named " + in_quotes(*name) + " in gateway.pools" + (hint.empty() ? "" : "; " + hint));
            }
        }
    }
    if (redirect) {
        if (const auto rm = read_map(*redirect, redirect_keys, "a map with to and status")) {
            route_redirect out;
            if (const auto to = required(*rm, "to", "an http or https URL like https://www.example.com")) {
                if (const auto text = scalar(*to, "an http or https URL like https://www.example.com")) {
                    const std::string_view u = *text;
                    const auto scheme_end = u.find("://");
                    const std::string_view scheme = scheme_end == std::string_view::npos ? "" : u.substr(0, scheme_end);
                    const std::string_view rest = scheme_end == std::string_view::npos ? "" : u.substr(scheme_end + 3);
                    const std::string_view authority = rest.substr(0, rest.find('/'));
                    const std::string_view path = rest.substr(authority.size());
                    const bool ok = (scheme == "http" || scheme == "https") && !authority.empty() &&
                                    u.find_first_of("?# \t\"<>") == std::string_view::npos &&
                                    (path.empty() || normalised_path(path));
                    if (!ok) {
                        fail(*to, "expected an http or https URL like https://www.example.com (an optional path, "
                                  "no query: the request's path and query are appended), got " +
                                      in_quotes(*text));
                    } else {
                        out.to = u.ends_with('/') ? std::string(u.substr(0, u.size() - 1)) : *text;
                    }
                }
            }
            if (const auto st = rm->get("status")) {
                if (const auto n = integer(*st, 301, 308, "301, 302, 303, 307 or 308")) {
                    if (*n > 303 && *n < 307) {
                        fail(*st, "expected 301, 302, 303, 307 or 308, got " + in_quotes(st->node.Scalar()));
                    } else {
                        out.status = static_cast<unsigned>(*n);
                    }
                }
            }
            r.redirect = std::move(out);
        }
    }
    if (files) {
        r.files = check_static(*files);
    }
    if (const auto h = m->get("headers")) {
        if (redirect) {
            fail(*h, "header rules apply to what a pool sends and receives; a redirect route has none");
        } else if (const auto hm = read_map(*h, route_header_keys, "a map with request and response")) {
            if (const auto rq = hm->get("request")) {
                if (files) {
                    fail(*rq, "a static route sends no request to a pool; only headers.response applies to it");
                } else {
                    check_header_rules(*rq, r.request_headers);
                }
            }
            if (const auto rs = hm->get("response")) {
                check_header_rules(*rs, r.response_headers);
            }
        }
    }
    if (error_count_ != errors_before) {
        return std::nullopt;
    }
    return r;
}

void checker::check_header_rules(const field& f, header_rules& out) {
    const auto m = read_map(f, header_rule_keys, "a map with set and remove");
    if (!m) {
        return;
    }
    const auto valid_name = [&](const field& at, const std::string& name) {
        const bool token = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
                   std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
        });
        if (!token) {
            fail(at, "expected a header name (letters, digits and !#$%&'*+-.^_`|~), got " + in_quotes(name));
            return false;
        }
        if (gateway_owned_field(name)) {
            fail(at, name + " is the gateway's own (framing, hop-by-hop, or what it vouches for); a route cannot "
                            "change it");
            return false;
        }
        return true;
    };
    if (const auto sf = m->get("set")) {
        if (const auto fields = read_map(*sf, nullptr, "a map of header name to value")) {
            for (const auto& [name, value] : fields->entries) {
                if (!valid_name(value, name)) {
                    continue;
                }
                if (const auto text = scalar(value, "a header value")) {
                    const bool ok = std::all_of(text->begin(), text->end(), [](char c) {
                        const auto u = static_cast<unsigned char>(c);
                        return u == '\t' || (u >= 0x20 && u != 0x7f);
                    });
                    if (!ok) {
                        fail(value, "a header value cannot hold control characters (CR, LF, NUL)");
                    } else {
                        out.set.emplace_back(name, *text);
                    }
                }
            }
        }
    }
    if (const auto rf = m->get("remove")) {
        if (const auto list = read_list(*rf, "a list of header names")) {
            for (const auto& item : *list) {
                if (const auto text = scalar(item, "a header name")) {
                    if (valid_name(item, *text)) {
                        out.remove.push_back(*text);
                    }
                }
            }
        }
    }
}

// A header value as a route may write it: no control character but tab.
bool header_value_text(std::string_view v) {
    return std::all_of(v.begin(), v.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u == '\t' || (u >= 0x20 && u != 0x7f);
    });
}

bool token_text(std::string_view t) {
    return !t.empty() && std::all_of(t.begin(), t.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
               std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    });
}

// "type/subtype", optionally followed by parameters ("; charset=utf-8"),
// checked loosely: two tokens around one '/', then printable text.
bool media_type_text(std::string_view v) {
    const std::string_view essence = v.substr(0, v.find(';'));
    const auto slash = essence.find('/');
    if (slash == std::string_view::npos) {
        return false;
    }
    const std::string_view params = v.substr(essence.size());
    return token_text(essence.substr(0, slash)) && token_text(essence.substr(slash + 1)) &&
           std::all_of(params.begin(), params.end(), [](char c) {
               const auto u = static_cast<unsigned char>(c);
               return u >= 0x20 && u != 0x7f;
           });
}

// A file extension as `types` keys name it (already lower-cased): no dot, no
// '/', nothing a file name would not end with.
bool extension_text(std::string_view e) {
    return !e.empty() && e.size() <= 32 && std::all_of(e.begin(), e.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' || c == '-' || c == '+';
    });
}

// A static route's `static:` map. The root must exist now, so that a typo is
// reported at its line rather than by every worker at start-up.
std::optional<route_static> checker::check_static(const field& f) {
    const auto m = read_map(f, static_keys, "a map with root, index, cache_control, types, hidden and precompressed");
    if (!m) {
        return std::nullopt;
    }
    route_static out;
    if (const auto r = required(*m, "root", "the absolute path of the directory to serve")) {
        if (const auto text = scalar(*r, "an absolute directory path")) {
            const bool plain = std::all_of(text->begin(), text->end(), [](char c) {
                const auto u = static_cast<unsigned char>(c);
                return u >= 0x20 && u != 0x7f;
            });
            if (!std::filesystem::path(*text).is_absolute() || !plain) {
                fail(*r, "expected an absolute directory path like /srv/www/static, got " + in_quotes(*text));
            } else {
                std::string root = std::filesystem::path(*text).lexically_normal().string();
                while (root.size() > 1 && root.back() == '/') {
                    root.pop_back();
                }
                // A root that does not exist (yet) is a warning (route_warnings),
                // like nginx's: the directory may be deployed or mounted later.
                struct stat st {};
                if (::stat(root.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
                    fail(*r, root + " is not a directory; a static root must be one");
                } else {
                    out.root = std::move(root);
                }
            }
        }
    }
    if (const auto i = m->get("index")) {
        if (const auto text = scalar(*i, "a file name like index.html, or \"\" for none")) {
            const bool ok =
                text->empty() || (*text != "." && *text != ".." && text->find_first_of("/\\") == std::string::npos &&
                                  std::all_of(text->begin(), text->end(), [](char c) {
                                      const auto u = static_cast<unsigned char>(c);
                                      return u >= 0x20 && u != 0x7f;
                                  }));
            if (!ok) {
                fail(*i, "expected a file name like index.html (no '/'), or \"\" for none, got " + in_quotes(*text));
            } else {
                out.index = *text;
            }
        }
    }
    if (const auto c = m->get("cache_control")) {
        if (const auto text = scalar(*c, "a Cache-Control value like \"public, max-age=3600\"")) {
            if (!header_value_text(*text)) {
                fail(*c, "a header value cannot hold control characters (CR, LF, NUL)");
            } else {
                out.cache_control = *text;
            }
        }
    }
    if (const auto t = m->get("types")) {
        if (const auto entries = read_map(*t, nullptr, "a map of file extension to media type")) {
            std::map<std::string, int, std::less<>> first_line;
            for (const auto& [name, value] : entries->entries) {
                const std::string ext = lower(name);
                if (!extension_text(ext)) {
                    fail(value.key_at, value.path,
                         "expected a file extension without the dot, like webmanifest (letters, digits, '_', '-' "
                         "and '+'), got " +
                             in_quotes(name));
                    continue;
                }
                if (const auto seen = first_line.find(ext); seen != first_line.end()) {
                    fail(value.key_at, value.path,
                         "the extension " + ext + " is already given at line " + std::to_string(seen->second) +
                             " (extensions are compared in lower case)");
                    continue;
                }
                first_line.emplace(ext, value.key_at.line + 1);
                if (const auto text = scalar(value, "a media type like application/manifest+json")) {
                    if (!media_type_text(*text)) {
                        fail(value, "expected a media type like application/manifest+json or \"text/plain; "
                                    "charset=utf-8\", got " +
                                        in_quotes(*text));
                    } else {
                        out.types.emplace_back(ext, *text);
                    }
                }
            }
        }
    }
    optional_value(*m, "hidden", out.hidden, [&](const field& b) { return boolean(b); });
    optional_value(*m, "precompressed", out.precompressed, [&](const field& b) { return boolean(b); });
    return out;
}

void checker::check_pools(const field& f, snapshot& s, std::vector<std::string>& names) {
    const auto m = read_map(f, nullptr, "a map of pool name to balance and servers");
    if (!m) {
        return;
    }
    if (m->entries.empty()) {
        fail(f, "expected at least one pool");
    }
    for (const auto& [name, pf] : m->entries) {
        names.push_back(name);
        if (!valid_name(name)) {
            fail(pf.key_at, pf.path, "pool names may only use " + std::string(name_chars));
        }
        pool p;
        p.name = name;
        check_pool(name, pf, s, p);
        s.gw.pools.push_back(std::move(p));
    }
}

void checker::check_pool(const std::string& name, const field& f, const snapshot& s, pool& out) {
    const auto m = read_map(f, pool_keys);
    if (!m) {
        return;
    }
    optional_value(*m, "balance", out.algorithm, [&](const field& b) { return one_of(b, balance_names); });
    if (const auto h = m->get("health")) {
        out.health.emplace();
        check_health(*h, *out.health);
    }
    if (const auto o = m->get("outlier")) {
        check_outlier(*o, out.outlier);
    }
    optional_count(*m, "retries", out.retries, 0, 3);
    optional_count(*m, "max_connections", out.max_connections, 0, 1'000'000);
    if (const auto q = m->get("queue")) {
        if (const auto qm = read_map(*q, queue_keys, "a map with size and timeout")) {
            optional_count(*qm, "size", out.queue_size, 0, 1'000'000);
            optional_value(*qm, "timeout", out.queue_timeout, [&](const field& d) { return duration_value(d); });
        }
    }
    if (const auto ss = m->get("slow_start")) {
        if (const auto text = scalar(*ss, "a duration, or 0 to disable")) {
            if (*text == "0") {
                out.slow_start = duration{0};
            } else if (const auto d = duration_value(*ss)) {
                out.slow_start = *d;
            }
        }
    }
    if (const auto r = m->get("rate_limit")) {
        out.rate_limit.emplace();
        out.rate_limit->burst = 0;
        check_conn_rate(*r, *out.rate_limit);
        if (out.rate_limit->burst == 0) {
            // Default burst: one second's worth, at least 1.
            out.rate_limit->burst =
                std::max<std::uint64_t>(1, static_cast<std::uint64_t>(out.rate_limit->per_second()));
        }
    }
    const auto sf = required(*m, "servers", "a list of server names");
    if (!sf) {
        return;
    }
    const auto members = read_list(*sf, "a list of server names");
    if (!members) {
        return;
    }
    if (members->empty()) {
        fail(*sf, "a pool needs at least one server");
        return;
    }
    std::vector<std::string_view> server_names;
    for (const auto& srv : s.servers) {
        server_names.push_back(srv.name);
    }
    std::map<std::string, std::string, std::less<>> seen; // member name -> its path
    for (const auto& item : *members) {
        constexpr std::string_view expected = "a server name or { server: name, weight: N }";
        std::optional<field> name_field;
        std::optional<field> weight_field;
        if (item.node.IsScalar()) {
            name_field = item;
        } else if (item.node.IsMap()) {
            const auto mm = read_map(item, member_keys, expected);
            if (!mm) {
                continue;
            }
            name_field = required(*mm, "server", "a server name");
            weight_field = mm->get("weight");
        } else {
            fail(item, "expected " + std::string(expected) + ", got " + describe(item.node));
            continue;
        }
        std::optional<std::uint64_t> weight;
        if (weight_field) {
            weight = integer(*weight_field, 1, max_weight, "a weight");
        }
        if (!name_field) {
            continue;
        }
        const auto server_name = scalar(*name_field, "a server name");
        if (!server_name) {
            continue;
        }
        const auto index = server_index_.find(*server_name);
        if (index == server_index_.end() && servers_unreadable_) {
            continue;
        }
        if (index == server_index_.end()) {
            const std::string hint = did_you_mean(*server_name, server_names);
            fail(*name_field, "unknown server " + in_quotes(*server_name) + ", expected a name from servers" +
                                  (hint.empty() ? "" : "; " + hint));
            continue;
        }
        if (const auto dup = seen.find(*server_name); dup != seen.end()) {
            fail(*name_field, "server " + in_quotes(*server_name) + " is already a member of pool " + in_quotes(name) +
                                  " (" + dup->second + ")");
            continue;
        }
        seen.emplace(*server_name, name_field->path);
        if (broken_servers_.contains(*server_name)) {
            continue;
        }
        const server& srv = s.servers[index->second];
        if (!srv.port) {
            fail(*name_field, "server " + in_quotes(*server_name) + " has no port; pool members need servers." +
                                  *server_name + ".port");
            continue;
        }
        const unsigned w = weight ? static_cast<unsigned>(*weight) : srv.weight;
        out.members.push_back(pool_member{srv.name, endpoint{srv.address, *srv.port}, w, index->second});
    }
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

void checker::check_health(const field& f, health_check& out) {
    const auto m = read_map(f, health_keys, "a map with path, expect_status, interval, timeout, rise and fall");
    if (!m) {
        return;
    }
    if (const auto p = m->get("path")) {
        if (const auto text = scalar(*p, "a path starting with /")) {
            const bool printable = std::all_of(text->begin(), text->end(), [](char c) { return c > 0x20 && c < 0x7f; });
            if (text->empty() || text->front() != '/' || !printable || text->size() > 1024) {
                fail(*p,
                     "expected a path starting with / without spaces or control characters, got " + in_quotes(*text));
            } else {
                out.path = *text;
            }
        }
    }
    optional_count(*m, "expect_status", out.expect_status, 100, 599);
    optional_value(*m, "interval", out.interval, [&](const field& d) { return duration_value(d, duration{100}); });
    optional_value(*m, "timeout", out.timeout, [&](const field& d) { return duration_value(d, duration{10}); });
    optional_count(*m, "rise", out.rise, 1, 100);
    optional_count(*m, "fall", out.fall, 1, 100);
    if (const auto h = m->get("host")) {
        if (const auto text = scalar(*h, "a host name")) {
            const bool ok = !text->empty() && std::all_of(text->begin(), text->end(), [](char c) {
                return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '-' || c == ':';
            });
            if (!ok) {
                fail(*h, "expected a host name, got " + in_quotes(*text));
            } else {
                out.host = *text;
            }
        }
    }
    if (out.timeout > out.interval) {
        fail(m->get("timeout") ? m->get("timeout")->at : f.at, f.path + ".timeout",
             "must not be longer than the interval (" + format_duration(out.interval) + ")");
    }
}

void checker::check_outlier(const field& f, outlier_detection& out) {
    const auto m = read_map(f, outlier_keys, "a map with consecutive_failures, base_ejection and max_ejection");
    if (!m) {
        return;
    }
    optional_count(*m, "consecutive_failures", out.consecutive_failures, 0, 1000);
    optional_value(*m, "base_ejection", out.base_ejection, [&](const field& d) { return duration_value(d); });
    optional_value(*m, "max_ejection", out.max_ejection, [&](const field& d) { return duration_value(d); });
    if (out.max_ejection < out.base_ejection) {
        fail(m->get("max_ejection") ? m->get("max_ejection")->at : f.at, f.path + ".max_ejection",
             "must not be shorter than base_ejection (" + format_duration(out.base_ejection) + ")");
    }
}

// `off` drops every default; a map adds headers or replaces a default's
// value, and "" as a value drops that one.
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
void checker::check_access_log(const field& f, access_log& out) {
    constexpr std::string_view expected = "a map with path and buffer, or off, on, stdout or a file path";
    const auto target = [&](const field& p) -> std::optional<std::string> {
        if (p.node.IsScalar() && p.node.Scalar() == "stdout") {
            return std::string("stdout");
        }
        return file_path(p);
    };
    if (f.node.IsScalar()) {
        if (const auto on = parse_bool(f.node.Scalar())) {
            out.enabled = *on;
        } else if (auto path = target(f)) {
            out.enabled = true;
            out.path = std::move(*path);
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

std::optional<network> checker::network_value(const field& f) {
    const auto text = scalar(f, network_expected);
    if (!text) {
        return std::nullopt;
    }
    std::string why;
    auto value = parse_network(*text, &why);
    if (!value) {
        fail(f, "expected " + std::string(network_expected) + ", got " + in_quotes(*text) + " (" + why + ")");
        return std::nullopt;
    }
    value->where = where(f.at);
    return value;
}

std::vector<network> checker::network_list(const field& f) {
    std::vector<network> out;
    if (const auto list = read_list(f, "a list of networks")) {
        for (const auto& item : *list) {
            if (auto n = network_value(item)) {
                out.push_back(std::move(*n));
            }
        }
    }
    return out;
}

void checker::check_firewall(const field& f, snapshot& s) {
    const auto m = read_map(f, firewall_keys, "a map with admin_networks and the firewall settings");
    if (!m) {
        return;
    }
    firewall fw;
    fw.where = where(f.key_at);
    // An empty list is read here and refused by the firewall lint, which
    // knows why it matters (nobody could reach SSH).
    if (const auto a = required(*m, "admin_networks", "a list of networks that may reach SSH")) {
        fw.admin_networks_at = where(a->at);
        fw.admin_networks = network_list(*a);
    }
    // An optional port; its location is the section's when it is absent.
    const auto read_port = [&](const char* key, std::uint16_t& port, location& at) {
        const auto p = m->get(key);
        at = p ? where(p->at) : fw.where;
        if (p) {
            if (const auto value = integer(*p, 1, 65535, "a port number")) {
                port = static_cast<std::uint16_t>(*value);
            }
        }
    };
    read_port("ssh_port", fw.ssh_port, fw.ssh_port_at);
    read_port("db_port", fw.db_port, fw.db_port_at);
    if (const auto c = m->get("conn_rate")) {
        check_conn_rate(*c, fw.conn_rate);
    }
    if (const auto e = m->get("extra_rules")) {
        if (const auto list = read_list(*e, "a list of { role, proto, port, from }")) {
            for (const auto& item : *list) {
                firewall_rule r;
                check_extra_rule(item, r);
                fw.extra_rules.push_back(std::move(r));
            }
        }
    }
    s.fw = std::move(fw);
}

void checker::check_conn_rate(const field& f, rate& out) {
    const auto m = read_map(f, conn_rate_keys, "a map with rate and burst");
    if (!m) {
        return;
    }
    if (const auto r = m->get("rate")) {
        if (const auto text = scalar(*r, rate_expected)) {
            const auto slash = text->find('/');
            const auto count = parse_decimal(std::string_view(*text).substr(0, std::min(slash, text->size())));
            std::optional<rate_unit> unit;
            if (slash != std::string::npos) {
                const std::string_view name = std::string_view(*text).substr(slash + 1);
                for (const auto& entry : rate_unit_names) {
                    if (entry.name == name) {
                        unit = entry.value;
                    }
                }
            }
            // The kernel's limit expression keeps the rate in 64 bits; a
            // million per second is far beyond any real per-source limit.
            if (!count || *count < 1 || *count > 1'000'000 || !unit) {
                fail(*r, "expected " + std::string(rate_expected) + ", got " + in_quotes(*text));
            } else {
                out.count = *count;
                out.unit = *unit;
            }
        }
    }
    if (const auto b = m->get("burst")) {
        if (const auto n = integer(*b, 1, 1'000'000, "a burst")) {
            out.burst = *n;
        }
    }
}

void checker::check_extra_rule(const field& f, firewall_rule& out) {
    out.where = where(f.at);
    const auto m = read_map(f, extra_rule_keys, "a map with role, proto, port and from");
    if (!m) {
        return;
    }
    if (const auto r = required(*m, "role", "the role whose hosts get the rule")) {
        out.role_at = where(r->at);
        out.role = scalar(*r, "a role name").value_or("");
    }
    if (const auto p = m->get("proto")) {
        if (const auto text = scalar(*p, "tcp or udp")) {
            if (*text == "tcp" || *text == "udp") {
                out.proto = *text;
            } else {
                fail(*p, "expected tcp or udp, got " + in_quotes(*text));
            }
        }
    }
    if (const auto p = required(*m, "port", "a port number")) {
        if (const auto port = integer(*p, 1, 65535, "a port number")) {
            out.port = static_cast<std::uint16_t>(*port);
        }
    }
    if (const auto from = required(*m, "from", "a list of networks allowed to connect")) {
        out.from = network_list(*from);
        if (from->node.IsNull() || (from->node.IsSequence() && from->node.size() == 0)) {
            fail(*from, "expected at least one network (0.0.0.0/0 and ::/0 mean anywhere)");
        }
    }
}

// "192.0.2.10/24": an address on an interface, so host bits are the point
// (unlike parse_network). `v6` is the family required.
std::optional<network> checker::interface_address(const field& f, bool v6) {
    const std::string expected =
        v6 ? "an IPv6 address with prefix like 2001:db8::10/64" : "an IPv4 address with prefix like 192.0.2.10/24";
    const auto text = scalar(f, expected);
    if (!text) {
        return std::nullopt;
    }
    const auto slash = text->find('/');
    bool is_v6 = false;
    const auto addr = slash == std::string::npos ? std::nullopt : canonical_ip(text->substr(0, slash), &is_v6);
    const unsigned max_prefix = v6 ? 128 : 32;
    const auto prefix =
        slash == std::string::npos ? std::nullopt : parse_decimal(std::string_view(*text).substr(slash + 1));
    if (!addr || is_v6 != v6 || !prefix || *prefix < 1 || *prefix > max_prefix) {
        fail(f, "expected " + expected + ", got " + in_quotes(*text));
        return std::nullopt;
    }
    network out;
    out.address = *addr;
    out.prefix = static_cast<unsigned>(*prefix);
    out.v6 = v6;
    out.where = where(f.at);
    return out;
}

// Interface names go into keepalived.conf unquoted: the kernel's rules
// (at most 15 bytes, no '/', no spaces) narrowed to plain characters.
std::optional<std::string> checker::interface_name(const field& f) {
    constexpr std::string_view expected = "an interface name like eth0 (at most 15 letters, digits, '.', '_', '-')";
    const auto text = scalar(f, expected);
    if (!text) {
        return std::nullopt;
    }
    if (text->size() > 15 || !valid_name(*text)) {
        fail(f, "expected " + std::string(expected) + ", got " + in_quotes(*text));
        return std::nullopt;
    }
    return text;
}

namespace {

// Whether `address` lies in `net` (same family; prefix bits equal).
bool in_network(const std::string& address, const network& net) {
    unsigned char a[16] = {};
    unsigned char n[16] = {};
    const int family = net.v6 ? AF_INET6 : AF_INET;
    if (::inet_pton(family, address.c_str(), a) != 1 || ::inet_pton(family, net.address.c_str(), n) != 1) {
        return false;
    }
    for (unsigned bit = 0; bit < net.prefix; ++bit) {
        const unsigned mask = 0x80U >> (bit % 8);
        if ((a[bit / 8] & mask) != (n[bit / 8] & mask)) {
            return false;
        }
    }
    return true;
}

} // namespace

// The pair keepalived runs. Beside the values, the lint refuses the setups
// that look fine and silently never fail over: a priority weight with
// preemption off (a backup never takes over from a live master, however low
// its priority), a weight smaller than the priority gap, equal priorities,
// the address owner's 255 (which ignores tracking), an advert interval
// VRRPv3 cannot carry (centiseconds), nodes that are not gateways.
void checker::check_ha(const field& f, snapshot& s) {
    const auto m = read_map(f, ha_keys, "a map with vip, interface, virtual_router_id and nodes");
    if (!m) {
        return;
    }
    ha out;
    out.where = where(f.key_at);
    if (const auto v = required(*m, "vip", "an IPv4 address with prefix like 192.0.2.10/24")) {
        if (auto n = interface_address(*v, false)) {
            out.vip = std::move(*n);
        }
    }
    if (const auto v = m->get("vip6")) {
        out.vip6 = interface_address(*v, true);
    }
    if (const auto i = required(*m, "interface", "an interface name like eth0")) {
        out.interface = interface_name(*i).value_or("");
    }
    if (const auto r = required(*m, "virtual_router_id", "an integer from 1 to 255")) {
        out.virtual_router_id = static_cast<unsigned>(integer(*r, 1, 255, "a virtual router id").value_or(0));
    }
    std::optional<field> priority_at;
    unsigned valid_priorities = 0;
    if (const auto nf = required(*m, "nodes", "a map of the two gateways' server names to their priority")) {
        if (const auto nodes = read_map(*nf, nullptr, "a map of the two gateways' server names to their priority")) {
            if (nodes->entries.size() != 2) {
                fail(*nf, "expected exactly two nodes (the gateways of the pair), got " +
                              std::to_string(nodes->entries.size()));
            }
            for (const auto& [name, node_field] : nodes->entries) {
                ha_node node;
                node.name = name;
                const auto index = server_index_.find(name);
                if (index == server_index_.end()) {
                    if (!servers_unreadable_) {
                        fail(node_field.key_at, node_field.path,
                             "unknown server " + in_quotes(name) + ", expected a gateway from servers");
                    }
                } else if (!broken_servers_.contains(name)) {
                    const server& srv = s.servers[index->second];
                    if (srv.server_role != role::gateway) {
                        fail(node_field.key_at, node_field.path,
                             "server " + in_quotes(name) + " has role " + to_string(srv.server_role) +
                                 "; HA nodes must be gateways");
                    }
                    node.address = srv.address;
                }
                if (const auto nm = read_map(node_field, ha_node_keys, "a map with priority")) {
                    if (const auto p = required(*nm, "priority", "an integer from 1 to 254")) {
                        if (p->node.IsScalar() && p->node.Scalar() == "255") {
                            fail(*p, "255 makes keepalived treat the node as the address owner, which never gives "
                                     "the VIP up for a failed health check; use 1 to 254");
                        } else if (const auto v = integer(*p, 1, 254, "a priority")) {
                            node.priority = static_cast<unsigned>(*v);
                            priority_at = p;
                            ++valid_priorities;
                        }
                    }
                    if (const auto i = nm->get("interface")) {
                        node.interface = interface_name(*i).value_or("");
                    }
                    if (const auto k = nm->get("keepalived_pid_file")) {
                        node.keepalived_pid_file = file_path(*k).value_or("");
                    }
                }
                out.nodes.push_back(std::move(node));
            }
        }
    }
    if (const auto a = m->get("advert_int")) {
        if (const auto d = duration_value(*a, duration{10})) {
            if (d->count() % 10 != 0 || *d > std::chrono::seconds(40)) {
                fail(*a, "expected a multiple of 10ms up to 40s (VRRPv3 counts in centiseconds), got " +
                             in_quotes(a->node.Scalar()));
            } else {
                out.advert_int = *d;
            }
        }
    }
    optional_value(*m, "unicast", out.unicast, [&](const field& b) { return boolean(b); });
    optional_value(*m, "preempt", out.preempt, [&](const field& b) { return boolean(b); });
    std::optional<field> weight_at;
    if (const auto h = m->get("health")) {
        if (const auto hm = read_map(*h, ha_health_keys, "a map with interval, require_backend and weight")) {
            if (const auto i = hm->get("interval")) {
                if (const auto d = duration_value(*i, duration{10})) {
                    if (*d > std::chrono::seconds(10)) {
                        fail(*i, "expected at most 10s, got " + in_quotes(i->node.Scalar()));
                    } else {
                        out.health.interval = *d;
                    }
                }
            }
            optional_value(*hm, "require_backend", out.health.require_backend,
                           [&](const field& b) { return boolean(b); });
            optional_value(*hm, "track_process", out.health.track_process, [&](const field& b) { return boolean(b); });
            if (const auto w = hm->get("weight")) {
                constexpr std::string_view expected = "0 or a negative integer down to -253";
                if (const auto text = scalar(*w, expected)) {
                    const bool negative = text->starts_with('-');
                    const auto magnitude = parse_decimal(std::string_view(*text).substr(negative ? 1 : 0));
                    if (magnitude && (*magnitude == 0 || (negative && *magnitude <= 253))) {
                        out.health.weight = -static_cast<int>(*magnitude);
                        weight_at = w;
                    } else {
                        fail(*w, "expected " + std::string(expected) + ", got " + in_quotes(*text));
                    }
                }
            }
        }
    }
    if (const auto d = m->get("state_dir")) {
        if (const auto text = scalar(*d, "an absolute directory path")) {
            const bool plain = std::all_of(text->begin(), text->end(),
                                           [](char c) { return c > 0x20 && c < 0x7f && c != '"' && c != '\\'; });
            if (!std::filesystem::path(*text).is_absolute() || !plain) {
                fail(*d, "expected an absolute directory path without spaces or quotes, got " + in_quotes(*text));
            } else {
                out.state_dir = std::filesystem::path(*text).lexically_normal().string();
                while (out.state_dir.size() > 1 && out.state_dir.back() == '/') {
                    out.state_dir.pop_back();
                }
            }
        }
    }
    if (const auto t = m->get("ticket_secret_file")) {
        if (const auto path = file_path(*t)) {
            struct stat st {};
            if (::stat(path->c_str(), &st) != 0) {
                fail(*t, "cannot read the ticket secret file " + *path + ": " + std::strerror(errno));
            } else if ((st.st_mode & 077) != 0) {
                fail(*t,
                     "the ticket secret file " + *path + " is readable by group or others; run: chmod 600 " + *path);
            } else {
                out.ticket_secret_file = *path;
            }
        }
    }
    if (const auto p = m->get("peer_check")) {
        check_peer_check(*p, s, out.peer_check);
    }
    // Cross-checks, once every value is known.
    if (out.nodes.size() == 2) {
        const ha_node& a = out.nodes[0];
        const ha_node& b = out.nodes[1];
        if (a.priority == b.priority && priority_at && valid_priorities == 2) {
            fail(*priority_at, "both nodes have priority " + std::to_string(a.priority) +
                                   "; give them different priorities so the first MASTER is predictable");
        }
        const unsigned gap = a.priority > b.priority ? a.priority - b.priority : b.priority - a.priority;
        if (out.health.weight != 0 && weight_at) {
            if (!out.preempt) {
                fail(*weight_at, "a priority weight never fails over with preempt off (the backup keeps "
                                 "deferring to a live master, however low its priority); use weight 0 (fault) "
                                 "or preempt: true");
            } else if (static_cast<unsigned>(-out.health.weight) <= gap) {
                fail(*weight_at, "weight " + std::to_string(out.health.weight) + " does not bring priority " +
                                     std::to_string(std::max(a.priority, b.priority)) + " below " +
                                     std::to_string(std::min(a.priority, b.priority)) +
                                     ", so an unhealthy MASTER keeps the VIP; use a weight below -" +
                                     std::to_string(gap) + ", or 0 (fault)");
            }
        }
        if (!out.vip.address.empty()) {
            std::string outside;
            for (const ha_node& n : out.nodes) {
                if (n.address == out.vip.address) {
                    fail(m->get("vip")->at, "ha.vip",
                         "the VIP " + out.vip.address + " is server " + n.name + "'s own address; pick a free one");
                } else if (!n.address.empty() && n.address.find(':') == std::string::npos &&
                           !in_network(n.address, out.vip)) {
                    outside += (outside.empty() ? "" : " and ") + n.name + " (" + n.address + ")";
                }
            }
            if (!outside.empty()) {
                fail(m->get("vip")->at, "ha.vip",
                     outside + " outside " + out.vip.to_string() + "; the VIP must be on the nodes' link");
            }
        }
        if (out.unicast) {
            for (const ha_node& n : out.nodes) {
                if (!n.address.empty() && n.address.find(':') != std::string::npos) {
                    fail(m->get("nodes")->at, "ha.nodes",
                         "server " + n.name +
                             " has an IPv6 address; unicast VRRP for an IPv4 VIP needs IPv4 "
                             "node addresses");
                }
            }
        }
    }
    s.ha_pair = std::move(out);
}

// The peer asks this node's admin listener at this node's address: a
// listener on loopback (or on one address, which cannot be both nodes') is
// refused here rather than found unreachable at run time.
void checker::check_peer_check(const field& f, const snapshot& s, ha_peer_check& out) {
    const auto m = read_map(f, ha_peer_check_keys, "a map with secret_file, interval and timeout");
    if (!m) {
        return;
    }
    if (const auto sf = required(*m, "secret_file", "the path of the pair's shared secret (mode 0600)")) {
        if (auto secret = secret_file(*sf, "HA peer secret", 32)) {
            out.secret_file = std::move(secret->first);
            out.secret = std::move(secret->second);
        }
    }
    if (const auto i = m->get("interval")) {
        if (const auto d = duration_value(*i, duration{100})) {
            if (*d > std::chrono::seconds(60)) {
                fail(*i, "expected at most 60s, got " + in_quotes(i->node.Scalar()));
            } else {
                out.interval = *d;
            }
        }
    }
    if (const auto t = m->get("timeout")) {
        if (const auto d = duration_value(*t, duration{10})) {
            if (*d > out.interval) {
                fail(*t, "must not be longer than the interval (" + format_duration(out.interval) + ")");
            } else {
                out.timeout = *d;
            }
        }
    } else {
        out.timeout = std::min(out.timeout, out.interval);
    }
    const auto& admin = s.gw.listen.admin;
    if (!admin) {
        fail(f, "the peer check asks the peer's admin listener; add gateway.listen.admin (e.g. 0.0.0.0:9100)");
    } else if (admin->host != "0.0.0.0" && admin->host != "::") {
        fail(f, "the peer check reaches the admin listener at each node's own address, but gateway.listen.admin is " +
                    admin->to_string() + "; listen on 0.0.0.0:" + std::to_string(admin->port) +
                    " (the firewall opens the port to the admin networks and the peer only)");
    }
    out.enabled = true;
}

// Records where each document of a stream starts; the content is read later by YAML::Load().
class document_starts final : public YAML::EventHandler {
public:
    std::vector<YAML::Mark> starts;

    void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

// Refuses a stream of several documents (only the first would be read), and
// works around a yaml-cpp 0.7 hang: a stray ',' at document level is never
// consumed, so the parser returns the same empty document forever and
// YAML::LoadAll() loops, allocating without bound (jbeder/yaml-cpp#1040, fixed
// after 0.7 by #1319). Documents are therefore walked here with the event
// parser, three at most; one that starts where the previous one did is that
// stuck token. Throws what the parser throws.
std::optional<std::pair<YAML::Mark, std::string>> check_single_document(const std::string& text) {
    std::istringstream in(text);
    YAML::Parser parser(in);
    document_starts documents;
    while (documents.starts.size() < 3 && parser.HandleNextDocument(documents)) {
    }
    const auto& starts = documents.starts;
    for (std::size_t i = 1; i < starts.size(); ++i) {
        if (starts[i].pos == starts[i - 1].pos) {
            const auto pos = static_cast<std::size_t>(std::max(starts[i].pos, 0));
            const std::string token = pos < text.size() ? text.substr(pos, 1) : "";
            return std::pair(starts[i], "YAML syntax error: unexpected " + in_quotes(token));
        }
    }
    if (starts.size() > 1) {
        return std::pair(starts[1], std::string("expected one YAML document, found a second one here"));
    }
    return std::nullopt;
}

// The directory relative certificate paths hang from: the config file's own,
// made absolute so the snapshot does not depend on the working directory.
std::filesystem::path base_directory(const std::string& file) {
    std::error_code ec;
    std::filesystem::path dir = std::filesystem::path(file).parent_path();
    if (dir.empty()) {
        dir = std::filesystem::current_path(ec);
        return ec ? std::filesystem::path() : dir;
    }
    auto absolute = std::filesystem::absolute(dir, ec);
    return ec ? dir : absolute.lexically_normal();
}

std::optional<std::string> read_whole_file(const std::string& path, std::string& why) {
    struct file_descriptor {
        int fd;
        ~file_descriptor() {
            if (fd >= 0) {
                ::close(fd);
            }
        }
    };
    const file_descriptor file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (file.fd < 0) {
        why = std::generic_category().message(errno);
        return std::nullopt;
    }
    std::string text;
    std::array<char, 16384> buffer{};
    for (;;) {
        const ssize_t n = ::read(file.fd, buffer.data(), buffer.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            why = std::generic_category().message(errno);
            return std::nullopt;
        }
        if (n == 0) {
            return text;
        }
        if (text.size() + static_cast<std::size_t>(n) > max_file_bytes) {
            why = "larger than " + format_size(max_file_bytes);
            return std::nullopt;
        }
        text.append(buffer.data(), static_cast<std::size_t>(n));
    }
}

} // namespace

std::string error::to_string() const {
    return where.file + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) + ": " + what;
}

std::string endpoint::to_string() const {
    const std::string p = std::to_string(port);
    return host.find(':') != std::string::npos ? "[" + host + "]:" + p : host + ":" + p;
}

bool tls::offers_h2() const {
    return std::find(alpn.begin(), alpn.end(), "h2") != alpn.end();
}

// Computed whether or not `enabled` is set: the caller decides to send it.
std::string hsts::header_value() const {
    std::string value = "max-age=" + std::to_string(max_age.count());
    if (include_subdomains) {
        value += "; includeSubDomains";
    }
    if (preload) {
        value += "; preload";
    }
    return value;
}

const pool* snapshot::find_pool(const std::string& name) const {
    const auto it = std::find_if(gw.pools.begin(), gw.pools.end(), [&](const pool& p) { return p.name == name; });
    return it == gw.pools.end() ? nullptr : &*it;
}

const ha_node* ha::find_node(const std::string& name) const {
    const auto it = std::find_if(nodes.begin(), nodes.end(), [&](const ha_node& n) { return n.name == name; });
    return it == nodes.end() ? nullptr : &*it;
}

const ha_node* ha::peer_of(const std::string& name) const {
    const auto it = std::find_if(nodes.begin(), nodes.end(), [&](const ha_node& n) { return n.name != name; });
    return find_node(name) == nullptr || it == nodes.end() ? nullptr : &*it;
}

const ha_node* ha::node_with_address(const std::vector<std::string>& local_addresses) const {
    for (const auto& n : nodes) {
        if (std::find(local_addresses.begin(), local_addresses.end(), n.address) != local_addresses.end()) {
            return &n;
        }
    }
    return nullptr;
}

const server* snapshot::find_server(const std::string& name) const {
    const auto it = std::find_if(servers.begin(), servers.end(), [&](const server& s) { return s.name == name; });
    return it == servers.end() ? nullptr : &*it;
}

unsigned snapshot::effective_workers() const {
    if (gw.workers != 0) {
        return gw.workers;
    }
    // hardware_concurrency() may return 0 when it cannot tell.
    return std::max(1U, std::thread::hardware_concurrency());
}

const char* to_string(balance b) {
    for (const auto& entry : balance_names) {
        if (entry.value == b) {
            return entry.name.data();
        }
    }
    return "unknown";
}

const char* to_string(seccomp_mode m) {
    for (const auto& entry : seccomp_names) {
        if (entry.value == m) {
            return entry.name.data();
        }
    }
    return "unknown";
}

const char* to_string(role r) {
    for (const auto& entry : role_names) {
        if (entry.value == r) {
            return entry.name.data();
        }
    }
    return "unknown";
}

double rate::per_second() const {
    switch (unit) {
    case rate_unit::second:
        return static_cast<double>(count);
    case rate_unit::minute:
        return static_cast<double>(count) / 60.0;
    case rate_unit::hour:
        return static_cast<double>(count) / 3600.0;
    }
    return static_cast<double>(count);
}

const char* to_string(log_level l) {
    for (const auto& entry : log_level_names) {
        if (entry.value == l) {
            return entry.name.data();
        }
    }
    return "unknown";
}

const char* to_string(rate_unit u) {
    for (const auto& entry : rate_unit_names) {
        if (entry.value == u) {
            return entry.name.data();
        }
    }
    return "unknown";
}

std::optional<role> parse_role(const std::string& text) {
    for (const auto& entry : role_names) {
        if (entry.name == text) {
            return entry.value;
        }
    }
    return std::nullopt;
}

std::string network::to_string() const {
    return address + "/" + std::to_string(prefix);
}

std::optional<network> parse_network(const std::string& text, std::string* why) {
    const auto explain = [&](std::string reason) -> std::optional<network> {
        if (why != nullptr) {
            *why = std::move(reason);
        }
        return std::nullopt;
    };
    const auto slash = text.find('/');
    const std::string host = text.substr(0, slash);
    network out;
    unsigned char bytes[16] = {};
    if (::inet_pton(AF_INET, host.c_str(), bytes) == 1) {
        out.v6 = false;
    } else if (::inet_pton(AF_INET6, host.c_str(), bytes) == 1) {
        out.v6 = true;
    } else {
        return explain("not a literal IPv4 or IPv6 address");
    }
    const unsigned max_prefix = out.v6 ? 128 : 32;
    out.prefix = max_prefix;
    if (slash != std::string::npos) {
        const auto prefix = parse_decimal(std::string_view(text).substr(slash + 1));
        if (!prefix || *prefix > max_prefix) {
            return explain("the prefix length must be a number from 0 to " + std::to_string(max_prefix));
        }
        out.prefix = static_cast<unsigned>(*prefix);
    }
    const unsigned size = out.v6 ? 16 : 4;
    unsigned char masked[16] = {};
    for (unsigned i = 0; i < size; ++i) {
        const unsigned bits = std::min(8U, out.prefix > i * 8 ? out.prefix - i * 8 : 0U);
        const auto mask = static_cast<unsigned char>(bits == 0 ? 0 : 0xff << (8 - bits));
        masked[i] = static_cast<unsigned char>(bytes[i] & mask);
    }
    char canonical[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(out.v6 ? AF_INET6 : AF_INET, masked, canonical, sizeof canonical);
    out.address = canonical;
    // A set host bit is almost always a typo for the network or a host
    // address pasted with the wrong prefix; guessing would widen or narrow access.
    if (std::memcmp(bytes, masked, size) != 0) {
        return explain("host bits are set; the network is " + out.to_string());
    }
    return out;
}

namespace {

/// "<digits><unit>" scaled by the unit's factor: nullopt for zero, an unknown
/// unit, or a product above `max`.
template <std::size_t N>
std::optional<std::uint64_t> scaled_number(const std::string& text,
                                           const std::array<std::pair<std::string_view, std::uint64_t>, N>& units,
                                           std::uint64_t max) {
    const auto [digits, unit] = split_number(text);
    const auto n = parse_decimal(digits);
    if (!n || *n == 0) {
        return std::nullopt;
    }
    for (const auto& [name, scale] : units) {
        if (unit == name) {
            if (*n > max / scale) {
                return std::nullopt;
            }
            return *n * scale;
        }
    }
    return std::nullopt;
}

} // namespace

std::optional<duration> parse_duration(const std::string& text) {
    constexpr std::array<std::pair<std::string_view, std::uint64_t>, 5> units{{
        {"ms", 1},
        {"s", 1'000},
        {"m", 60'000},
        {"h", 3'600'000},
        {"d", 86'400'000},
    }};
    const auto ms = scaled_number(text, units, static_cast<std::uint64_t>(std::numeric_limits<duration::rep>::max()));
    if (!ms) {
        return std::nullopt;
    }
    return duration(static_cast<duration::rep>(*ms));
}

std::optional<std::uint64_t> parse_size(const std::string& text) {
    constexpr std::array<std::pair<std::string_view, std::uint64_t>, 8> units{{
        {"", 1},
        {"B", 1},
        {"KiB", 1ULL << 10},
        {"MiB", 1ULL << 20},
        {"GiB", 1ULL << 30},
        {"KB", 1'000},
        {"MB", 1'000'000},
        {"GB", 1'000'000'000},
    }};
    return scaled_number(text, units, std::numeric_limits<std::uint64_t>::max());
}

std::optional<endpoint> parse_endpoint(const std::string& text) {
    std::string why;
    return parse_endpoint_text(text, why);
}

// The parser is yaml-cpp, which reports by exception; nothing escapes from here.
load_result load_from_string(const std::string& text, const std::string& name) {
    const auto failure = [&](int line, int column, std::string what) {
        return load_result{nullptr,
                           {error{location{name, std::max(line, 0) + 1, std::max(column, 0) + 1}, std::move(what)}}};
    };
    try {
        if (const auto problem = check_single_document(text)) {
            return failure(problem->first.line, problem->first.column, std::move(problem->second));
        }
        checker c(name, base_directory(name));
        return c.run(YAML::Load(text));
    } catch (const YAML::DeepRecursion& e) {
        // yaml-cpp's guard against stack exhaustion; its own message is just "bad file".
        return failure(e.mark.line, e.mark.column, "YAML nested too deeply (" + std::to_string(e.depth()) + " levels)");
    } catch (const YAML::Exception& e) {
        return failure(e.mark.line, e.mark.column, "YAML syntax error: " + e.msg);
    } catch (const std::exception& e) {
        return failure(0, 0, std::string("cannot load: ") + e.what());
    }
}

load_result load(const std::string& path) {
    std::string why;
    try {
        if (const auto text = read_whole_file(path, why)) {
            return load_from_string(*text, path);
        }
    } catch (const std::exception& e) {
        why = e.what();
    }
    return load_result{nullptr, {error{location{path, 1, 1}, "cannot read file: " + why}}};
}

namespace {

// Whether host pattern `a` (of an earlier route) matches every host `b` does.
bool host_covers(const std::string& a, const std::string& b) {
    if (a.empty() || a == b) {
        return true;
    }
    if (b.empty() || !a.starts_with("*.")) {
        return false;
    }
    const std::string_view suffix = std::string_view(a).substr(1); // ".example.com"
    const std::string_view rest = b.starts_with("*.") ? std::string_view(b).substr(1) : std::string_view(b);
    return rest.size() > suffix.size() && rest.ends_with(suffix);
}

// Whether prefix `a` matches every path prefix `b` matches (segment-aware).
bool path_covers(const std::string& a, const std::string& b) {
    if (a == "/" || a == b) {
        return true;
    }
    if (a.ends_with('/')) {
        return b.starts_with(a);
    }
    return b.starts_with(a) && b.size() > a.size() && b[a.size()] == '/';
}

bool methods_cover(const std::vector<std::string>& a, const std::vector<std::string>& b) {
    if (a.empty()) {
        return true;
    }
    return !b.empty() && std::all_of(b.begin(), b.end(),
                                     [&](const std::string& m) { return std::find(a.begin(), a.end(), m) != a.end(); });
}

} // namespace

std::vector<error> route_warnings(const snapshot& s) {
    std::vector<error> out;
    const auto& routes = s.gw.routes;
    for (std::size_t j = 0; j < routes.size(); ++j) {
        if (routes[j].files) {
            struct stat st {};
            if (::stat(routes[j].files->root.c_str(), &st) != 0) {
                out.push_back(error{routes[j].where, "gateway.routes[" + std::to_string(j) + "]: static root " +
                                                         routes[j].files->root + ": " + std::strerror(errno) +
                                                         "; its requests get 404 until it exists and the "
                                                         "gateway reloads"});
            }
        }
        for (std::size_t i = 0; i < j; ++i) {
            if (host_covers(routes[i].host, routes[j].host) && path_covers(routes[i].path, routes[j].path) &&
                methods_cover(routes[i].methods, routes[j].methods)) {
                out.push_back(error{routes[j].where, "gateway.routes[" + std::to_string(j) +
                                                         "]: can never match: gateway.routes[" + std::to_string(i) +
                                                         "] (line " + std::to_string(routes[i].where.line) +
                                                         ") matches every request it would"});
                break;
            }
        }
    }
    return out;
}

std::vector<std::size_t> routed_pools(const snapshot& s) {
    std::vector<std::size_t> out;
    if (s.gw.routes.empty()) {
        for (std::size_t i = 0; i < s.gw.pools.size(); ++i) {
            if (s.gw.pools[i].name == s.gw.default_pool) {
                out.push_back(i);
            }
        }
        return out;
    }
    for (const auto& r : s.gw.routes) {
        if (!r.redirect && !r.files && std::find(out.begin(), out.end(), r.pool_index) == out.end()) {
            out.push_back(r.pool_index);
        }
    }
    return out;
}

std::string summary(const snapshot& s) {
    std::string out;
    const auto line = [&](std::string_view label, const std::string& text) {
        std::string padded(label);
        padded.resize(std::max<std::size_t>(padded.size() + 1, 11), ' ');
        out += padded + text + "\n";
    };
    line("site", s.site + " (" + s.source_file + ")");

    std::string roles;
    for (const auto& entry : role_names) {
        const auto n = std::count_if(s.servers.begin(), s.servers.end(),
                                     [&](const server& srv) { return srv.server_role == entry.value; });
        if (n > 0) {
            roles += (roles.empty() ? "" : ", ") + std::to_string(n) + " " + std::string(entry.name);
        }
    }
    line("servers", std::to_string(s.servers.size()) + " (" + roles + ")");

    const gateway& gw = s.gw;
    std::string listen;
    const auto add_listener = [&](std::string_view label, const std::optional<endpoint>& ep) {
        if (ep) {
            listen += (listen.empty() ? "" : ", ") + std::string(label) + " " + ep->to_string();
        }
    };
    add_listener("https", gw.listen.https);
    add_listener("http", gw.listen.http);
    add_listener("admin", gw.listen.admin);
    line("listen", listen);
    line("workers", std::to_string(s.effective_workers()) + (gw.workers == 0 ? " (auto)" : "") + ", user " +
                        (gw.user.empty() ? "(stays root)" : gw.user) + ", seccomp " + to_string(gw.seccomp));

    const tls& t = gw.tls_settings;
    for (std::size_t i = 0; i < t.certificates.size(); ++i) {
        line(i == 0 ? "tls" : "",
             t.certificates[i].cert_file + " + " + t.certificates[i].key_file + (i == 0 ? " (default)" : ""));
    }
    line(t.certificates.empty() ? "tls" : "",
         "session tickets " +
             std::string(t.session_tickets ? "on, key rotation " + format_duration(t.ticket_rotation) : "off"));
    std::string alpn;
    for (const auto& p : t.alpn) {
        alpn += (alpn.empty() ? "" : ", ") + p;
    }
    const h2& h2s = gw.h2_settings;
    line("", "alpn " + alpn +
                 (t.offers_h2() ? "; h2 streams " + std::to_string(h2s.max_concurrent_streams) + ", window " +
                                      format_size(h2s.initial_window) + ", frame " + format_size(h2s.max_frame_size) +
                                      ", hpack table " + format_size(h2s.header_table_size)
                                : std::string()));
    line("hsts", gw.hsts_settings.enabled ? gw.hsts_settings.header_value() : "off");

    for (const auto& p : gw.pools) {
        line("pool", p.name + " (" + to_string(p.algorithm) + (p.name == gw.default_pool ? ", default)" : ")"));
        for (const auto& m : p.members) {
            line("", "  " + m.name + "  " + m.address.to_string() + "  weight " + std::to_string(m.weight));
        }
    }
    for (std::size_t i = 0; i < gw.routes.size(); ++i) {
        const route& r = gw.routes[i];
        std::string methods;
        for (const auto& m : r.methods) {
            methods += (methods.empty() ? "" : ",") + m;
        }
        line(i == 0 ? "routes" : "",
             std::to_string(i + 1) + ". " + (r.host.empty() ? "*" : r.host) + r.path +
                 (methods.empty() ? "" : " " + methods) + " -> " +
                 (r.redirect ? "redirect " + std::to_string(r.redirect->status) + " " + r.redirect->to
                  : r.files  ? "static " + r.files->root
                             : "pool " + r.pool));
    }

    const timeouts& to = gw.timeouts_settings;
    std::string times;
    for (const auto& entry : timeout_fields) {
        times += (times.empty() ? "" : ", ") + std::string(entry.name) + " " + format_duration(to.*entry.value);
    }
    line("timeouts", times);

    const limits& l = gw.limits_settings;
    if (s.fw) {
        std::string admin;
        for (const auto& n : s.fw->admin_networks) {
            admin += (admin.empty() ? "" : ", ") + n.to_string();
        }
        line("firewall", "admin " + (admin.empty() ? std::string("(none)") : admin) + "; ssh " +
                             std::to_string(s.fw->ssh_port) + ", db " + std::to_string(s.fw->db_port) + ", conn_rate " +
                             std::to_string(s.fw->conn_rate.count) + "/" + to_string(s.fw->conn_rate.unit) + " burst " +
                             std::to_string(s.fw->conn_rate.burst) + ", " + std::to_string(s.fw->extra_rules.size()) +
                             " extra rules");
    }
    if (s.ha_pair) {
        const ha& h = *s.ha_pair;
        std::string nodes;
        for (const auto& n : h.nodes) {
            nodes += (nodes.empty() ? "" : ", ") + n.name + " priority " + std::to_string(n.priority);
        }
        line("ha", "vip " + h.vip.to_string() + (h.vip6 ? " + " + h.vip6->to_string() : "") + " on " + h.interface +
                       ", vrid " + std::to_string(h.virtual_router_id) + ", " + nodes + "; advert " +
                       format_duration(h.advert_int) + (h.unicast ? ", unicast" : ", multicast") +
                       (h.preempt ? ", preempt" : ", no preempt") +
                       (h.peer_check.enabled ? "; peer check every " + format_duration(h.peer_check.interval) : ""));
    }
    line("limits", "header_bytes " + format_size(l.header_bytes) + ", header_count " + std::to_string(l.header_count) +
                       ", body_bytes " + format_size(l.body_bytes) + ", upstream_idle_per_server " +
                       std::to_string(l.upstream_idle_per_server));
    const access_log& al = gw.access_log_settings;
    const std::string access =
        al.enabled ? al.path + " (buffer " + format_size(al.buffer_bytes) + ")" : std::string("off");
    line("logs", "access " + access + ", level " + to_string(gw.error_log_level));
    return out;
}

} // namespace rampart::config
