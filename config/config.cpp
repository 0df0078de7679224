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
//       proxy_protocol          bool                           false; https and http expect a PROXY header
//                               (v1 or v2) first, from gateway.trusted_proxies only (then required)
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
//       <name>.balance          round_robin | weighted_round_robin | least_connections | hash    round_robin
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
//       <name>.hash             source | uri | { header: N }   source; with balance: hash (a key alone implies
//                               | { cookie: N }                it): rendezvous hashing on the client address,
//                                                              the path, a header or a cookie; without the
//                                                              header or cookie: the pool's schedule
//       <name>.hash_balance_factor 0 | 1.0..10                 1.25 (bounded load: a member above this times
//                                                              its share of requests in flight is skipped)
//       <name>.sticky           map { cookie, ttl }            none; the gateway's cookie names the server
//                                                              (Secure, HttpOnly, SameSite=Lax; ttl 1h, 0 =
//                                                              a session cookie); the app never sees it
//     default_pool              pool name                      the only pool; required with several
//     routes                    list of maps                   none (everything to default_pool); first match wins
//       - name                  [a-z0-9_-]{1,64}, unique       none; how the maintenance API and the status
//                                                              page name the route
//         host                  name or *.name, any case       any host (matched without the port, any case;
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
//         allow                 list of CIDR                   any; only clients in these networks (else 403)
//         deny                  list of CIDR                   none; clients refused (403), checked before allow;
//                                                              the client is the one after trusted_proxies
//         compress              bool                           gateway.compression.enabled (pool routes)
//         basic_auth            map { realm, users }           none; HTTP Basic authentication (RFC 7617)
//           realm               printable ASCII, no '"' '\\'   required; shown by the browser's prompt
//           users               htpasswd file: name:hash       required; bcrypt ($2y$, $2b$) or yescrypt ($y$)
//                                                              only; mode 0640 or stricter; read at load/reload
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
//     trusted_proxies           list of CIDR                   empty; peers whose PROXY header or
//                               X-Forwarded-For names the client; never blocked themselves
//     security_headers          map name -> value, or off      X-Content-Type-Options: nosniff,
//                               X-Frame-Options: SAMEORIGIN, Referrer-Policy: strict-origin-when-cross-origin;
//                               added when the backend sent none of that name; "" drops a default
//     admin_token_file          path, mode 0600                none: /metrics, /status and /api/* then need
//                               "Authorization: Bearer <token>"; /healthz and /readyz never do
//     access_log                map, or off / on / stdout      off (no access log)
//                               / a file path (short forms of { path: ... })
//       path                    stdout, syslog, or a file path stdout; relative to the file's directory;
//                               opened by the master (O_APPEND, created 0640) before the workers start;
//                               syslog: one RFC 5424 message per line to syslog_socket
//       format                  json | combined                json (combined: Apache/nginx, time in UTC)
//       buffer                  size 4KiB..64MiB               256KiB (per worker; a line that does not
//                               fit is dropped and counted)
//       facility                local0..local7, user, daemon   local7 (path: syslog only)
//       syslog_socket           path of a datagram socket      /dev/log (path: syslog only)
//     compression               on | off | map                 off; gzip and brotli of what app servers send
//                                                              uncompressed (routes: compress: true|false)
//       enabled                 bool                           true in the map form
//       codings                 list of br, gzip               [br, gzip] (the order breaks q-value ties)
//       gzip_level              1..9                           6
//       brotli_quality          0..11                          4
//       min_size                size                           1KiB (smaller bodies of known length: as is)
//       types                   list of media types            text/html, text/css, text/plain, JSON, XML,
//                                                              JavaScript, SVG, ... (no text/event-stream)
//       with_cookies            bool                           false (responses with Set-Cookie: as is; BREACH)
//     error_pages               map status -> file             none; status 400..599; .html, .json or .txt
//                                                              (its Content-Type), at most 64KiB, read at
//                                                              load and reload; the body of that status when
//                                                              the gateway answers it (Cache-Control: no-store)
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

#include "config/checker.hpp"

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

using namespace detail;

namespace {

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
        std::string how = to_string(p.algorithm);
        if (p.algorithm == balance::hash) {
            const char* kinds[] = {"source", "uri", "header ", "cookie "};
            how += std::string(" ") + kinds[static_cast<int>(p.hash.what)] + p.hash.name;
        }
        if (p.sticky_cookie) {
            how += ", sticky cookie " + p.sticky_cookie->cookie;
        }
        line("pool", p.name + " (" + how + (p.name == gw.default_pool ? ", default)" : ")"));
        for (const auto& m : p.members) {
            line("", "  " + m.name + "  " + m.address.to_string() + "  weight " + std::to_string(m.weight));
        }
    }
    const auto access_summary = [](const route_access& a) {
        std::string text;
        const auto list = [&](const char* what, const std::vector<network>& nets) {
            if (!nets.empty()) {
                text += std::string(text.empty() ? "; " : ", ") + what;
                for (std::size_t k = 0; k < nets.size(); ++k) {
                    text += (k == 0 ? " " : ",") + nets[k].to_string();
                }
            }
        };
        list("deny", a.deny);
        list("allow", a.allow);
        if (a.auth) {
            text += std::string(text.empty() ? "; " : ", ") + "basic auth \"" + a.auth->realm + "\" (" +
                    std::to_string(a.auth->users.size()) + " users from " + a.auth->users_file + ")";
        }
        return text;
    };
    for (std::size_t i = 0; i < gw.routes.size(); ++i) {
        const route& r = gw.routes[i];
        std::string methods;
        for (const auto& m : r.methods) {
            methods += (methods.empty() ? "" : ",") + m;
        }
        line(i == 0 ? "routes" : "",
             std::to_string(i + 1) + ". " + (r.name.empty() ? "" : r.name + ": ") + (r.host.empty() ? "*" : r.host) +
                 r.path + (methods.empty() ? "" : " " + methods) + " -> " +
                 (r.redirect ? "redirect " + std::to_string(r.redirect->status) + " " + r.redirect->to
                  : r.files  ? "static " + r.files->root
                             : "pool " + r.pool) +
                 access_summary(r.access));
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
    const std::string access = al.enabled
                                   ? al.path + (al.path == "syslog" ? " " + al.syslog_socket : std::string()) + " (" +
                                         (al.format == access_log_format::combined ? "combined" : "json") +
                                         ", buffer " + format_size(al.buffer_bytes) + ")"
                                   : std::string("off");
    if (gw.compression_settings.enabled) {
        const compression& c = gw.compression_settings;
        std::string codings;
        for (const auto& name : c.codings) {
            codings += (codings.empty() ? "" : ", ") + name;
        }
        line("compress", codings + " (gzip " + std::to_string(c.gzip_level) + ", brotli " +
                             std::to_string(c.brotli_quality) + "), from " + format_size(c.min_size) + ", " +
                             std::to_string(c.types.size()) + " types" + (c.with_cookies ? ", with cookies" : ""));
    }
    if (!gw.error_pages.empty()) {
        std::string pages;
        for (const auto& p : gw.error_pages) {
            pages += (pages.empty() ? "" : ", ") + std::to_string(p.status) + " " + p.file;
        }
        line("errors", pages);
    }
    line("logs", "access " + access + ", level " + to_string(gw.error_log_level));
    return out;
}

} // namespace rampart::config
