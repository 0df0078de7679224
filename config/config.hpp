#pragma once
// The deployment file as plain, immutable structs. Everything here is validated
// by config::load(); code that receives a `snapshot` may trust every field.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rampart::config {

using duration = std::chrono::milliseconds;

/// A position in the configuration file, 1-based, for error messages.
struct location {
    std::string file;
    int line = 0;
    int column = 0;
};

/// One validation failure: where it is and what was expected there.
struct error {
    location where;
    std::string what;

    /// "file:line:column: what"
    std::string to_string() const;
};

/// A listening or upstream address. `host` is a literal IPv4 or IPv6 address
/// (without brackets); the wildcard "::" listens on both families.
struct endpoint {
    std::string host;
    std::uint16_t port = 0;

    /// "1.2.3.4:80" or "[::1]:80"
    std::string to_string() const;
};

enum class role { gateway, app, db_primary, db_replica };

/// One host of the deployment (`servers:` section).
struct server {
    std::string name;
    std::string address; ///< literal IP address
    role server_role = role::app;
    std::optional<std::uint16_t> port; ///< service port (required for servers used in pools)
    unsigned weight = 1;               ///< 1..256, used by weighted balancing
    location address_at;               ///< where `address` is written (firewall lint points here)
};

enum class balance { round_robin, weighted_round_robin, least_connections, hash };

/// One member of an upstream pool: a server reference resolved to its address.
struct pool_member {
    std::string name;       ///< the server's name in `servers:`
    endpoint address;       ///< the server's address and port
    unsigned weight = 1;    ///< pool-level weight (defaults to the server's weight)
    std::size_t server = 0; ///< its index in snapshot::servers (resolved once, here)
};

enum class rate_unit { second, minute, hour };

/// What a worker's seccomp filter does with a system call outside its list.
enum class seccomp_mode {
    enforce, ///< kill the worker (SCMP_ACT_KILL_PROCESS)
    log,     ///< allow it and have the kernel log it (SCMP_ACT_LOG): for finding a missing call
    off,     ///< no filter
};

/// A packet, connection or request rate such as 50/second with its burst.
struct rate {
    std::uint64_t count = 50;
    rate_unit unit = rate_unit::second;
    std::uint64_t burst = 100;

    /// Tokens per second.
    double per_second() const;
};

/// Active health checks of a pool's servers, run by the master (HAProxy's
/// `check inter rise fall`): an HTTP/1.1 GET of `path` over plain TCP.
struct health_check {
    std::string path = "/health";
    unsigned expect_status = 200; ///< the status that counts as healthy
    duration interval{std::chrono::seconds(2)};
    duration timeout{std::chrono::seconds(1)};
    unsigned rise = 2; ///< consecutive successes that bring a down server up
    unsigned fall = 3; ///< consecutive failures that take an up server down
    std::string host;  ///< Host header; "" = the site name
};

/// Passive outlier detection in the workers: consecutive failures (connect
/// errors, timeouts, 5xx) eject a server for base * 2^(ejections-1), at most max.
struct outlier_detection {
    unsigned consecutive_failures = 5; ///< 0 disables ejection
    duration base_ejection{std::chrono::seconds(10)};
    duration max_ejection{std::chrono::minutes(5)};
};

/// What `balance: hash` hashes: the client's address (after trusted
/// proxies), the path (no query), a request header or a cookie.
struct hash_key {
    enum class kind { source, uri, header, cookie } what = kind::source;
    std::string name; ///< the header or cookie (header names in lower case)
};

/// Sticky sessions: the gateway's own cookie names the server that answered.
struct sticky {
    std::string cookie;                       ///< its name
    duration ttl{std::chrono::seconds(3600)}; ///< Max-Age; 0 = a session cookie
};

struct pool {
    std::string name;
    balance algorithm = balance::round_robin;
    hash_key hash;                     ///< with balance: hash
    double hash_balance_factor = 1.25; ///< bounded load: no member above this times the mean; 0 = unbounded
    std::optional<sticky> sticky_cookie;
    std::vector<pool_member> members;
    std::optional<health_check> health; ///< absent: no active checks, servers count as up
    outlier_detection outlier;
    unsigned retries = 1;         ///< extra attempts on another server, 0..3
    unsigned max_connections = 0; ///< per server, requests in flight; 0 = unlimited
    unsigned queue_size = 256;    ///< requests waiting for a slot when every server is full (per pool)
    duration queue_timeout{std::chrono::seconds(5)}; ///< waiting longer than this: 503
    duration slow_start{0};                          ///< a server coming back ramps its share up over this; 0 = off
    std::optional<rate> rate_limit;                  ///< per client address, requests; absent = unlimited
};

/// An IPv4 or IPv6 network in CIDR form; host bits are always zero.
struct network {
    std::string address; ///< canonical text of the first address, e.g. "198.51.100.0"
    unsigned prefix = 0; ///< 0..32 (IPv4) or 0..128 (IPv6)
    bool v6 = false;
    location where; ///< where it is written in the file

    /// "198.51.100.0/24", "2001:db8::/32"
    std::string to_string() const;
};

struct certificate {
    std::string cert_file; ///< PEM: leaf certificate first, then its chain
    std::string key_file;  ///< PEM private key; must not be readable by group or others
    location cert_at;      ///< where cert_file is named in the file
    location key_at;       ///< where key_file is named
    bool acme = false;     ///< ACME's file (gateway.tls.acme): made at start when missing
};

struct hsts {
    bool enabled = true;
    std::chrono::seconds max_age{31536000};
    bool include_subdomains = true;
    bool preload = false;

    /// The Strict-Transport-Security header value, e.g. "max-age=31536000; includeSubDomains".
    std::string header_value() const;
};

/// Certificates from an ACME server (RFC 8555), issued and renewed by the
/// master. Each key type's certificate and key live in one file under
/// state_dir (`<first name>-<key type>.pem`, mode 0600), which the
/// configuration's certificate list then names.
struct acme {
    std::string directory; ///< the directory URL (https)
    std::string email;     ///< the account's contact; optional
    std::vector<std::string> names;
    std::vector<std::string> key_types{"ecdsa"}; ///< "ecdsa" (P-256), "rsa" (2048)
    std::string challenge = "http-01";           ///< or "tls-alpn-01"
    duration renew_before{std::chrono::hours(24 * 30)};
    std::string ca_file; ///< trusted for the ACME server's HTTPS; empty: the system's roots
    std::string state_dir = "/var/lib/rampart/acme";
    duration retry_min{std::chrono::seconds(30)}; ///< first wait after a failure, doubled per failure
    duration retry_max{std::chrono::hours(6)};
    location at; ///< where `acme:` is

    /// The file (certificate chain and key) of one key type.
    std::string file_of(const std::string& key_type) const {
        return state_dir + "/" + names.front() + "-" + key_type + ".pem";
    }
};

struct tls {
    /// Certificates in order; the first one is the default (served when SNI
    /// matches nothing or is absent). With `acme`, its files come first.
    std::vector<certificate> certificates;
    std::optional<acme> acme_settings;
    /// certbot's webroot mode: the port-80 listener serves
    /// /.well-known/acme-challenge/NAME from <acme_webroot>/.well-known/acme-challenge/NAME
    /// (what `certbot certonly --webroot -w DIR` writes) before its redirect. "" = off.
    std::string acme_webroot;
    bool session_tickets = true;
    /// How long one session-ticket key encrypts new tickets; tickets stay
    /// valid for two rotation periods.
    duration ticket_rotation{std::chrono::hours(12)};
    /// Protocols offered in ALPN, in order of preference ("h2", "http/1.1").
    std::vector<std::string> alpn{"h2", "http/1.1"};
    bool offers_h2() const;
};

/// HTTP/2 to clients (ALPN h2): the SETTINGS the gateway announces.
struct h2 {
    unsigned max_concurrent_streams = 100;      ///< streams open at once per connection
    std::uint32_t initial_window = 64 * 1024;   ///< per stream, for request bodies
    std::uint32_t max_frame_size = 16 * 1024;   ///< largest frame the gateway receives
    std::uint32_t header_table_size = 4 * 1024; ///< HPACK dynamic table for the client's headers
};

struct listeners {
    std::optional<endpoint> https;
    std::optional<endpoint> http;  ///< plain HTTP: answers 301 to https
    std::optional<endpoint> admin; ///< admin listener (health, metrics)
    /// The https and http listeners expect a PROXY protocol header (v1 or
    /// v2) first, from a peer in gateway.trusted_proxies only.
    bool proxy_protocol = false;
};

struct timeouts {
    duration handshake{std::chrono::seconds(10)}; ///< TLS handshake
    duration header{std::chrono::seconds(10)};    ///< whole request line + headers
    duration body{std::chrono::seconds(30)};      ///< inactivity while a body streams, either way
    duration idle{std::chrono::seconds(60)};      ///< keep-alive wait for the next request
    duration upstream_connect{std::chrono::seconds(3)};
    duration upstream_response{std::chrono::seconds(30)}; ///< request sent -> response header
    duration drain{std::chrono::seconds(30)};             ///< SIGTERM: time given to in-flight requests
    duration tunnel{std::chrono::hours(1)}; ///< an upgraded connection (WebSocket) with no byte either way
};

struct limits {
    std::uint64_t header_bytes = 16 * 1024; ///< request line + headers
    unsigned header_count = 100;
    std::uint64_t body_bytes = 10 * 1024 * 1024; ///< request body
    unsigned upstream_idle_per_server = 64;      ///< idle keep-alive connections kept per worker
    unsigned max_connections = 50000;            ///< client connections open, all workers; 0 = unlimited
    unsigned max_connections_per_client = 1000;  ///< per client address; 0 = unlimited
    unsigned tunnels = 10000;                    ///< upgraded connections (WebSocket) open, all workers;
                                                 ///< 0 = upgrades refused
    std::uint64_t buffer_body_bytes = 64 * 1024; ///< request bodies up to this are read whole before a
                                                 ///< backend is chosen (then replayable); 0 = stream all
};

/// Pushing abusive clients into the firewall's blocklist (L7 -> L3).
struct abuse {
    bool block = true;       ///< false: count violations, never block
    unsigned threshold = 50; ///< violations within `window` that get a client blocked
    duration window{std::chrono::seconds(10)};
    duration block_for{std::chrono::minutes(10)};
    std::vector<network> allow; ///< never blocked (firewall.admin_networks are added)
};

/// How an access log line is written: Rampart's JSON object, or the
/// Apache/nginx "combined" format existing log tools parse.
enum class access_log_format { json, combined };

/// The access log: one line per request, written by each worker's own
/// writer thread to a descriptor the master opened: stdout, a file, or the
/// local syslog socket (one RFC 5424 message per line).
struct access_log {
    bool enabled = false;                    ///< off unless configured
    std::string path = "stdout";             ///< "stdout", "syslog", or an absolute file path (opened O_APPEND)
    std::uint64_t buffer_bytes = 256 * 1024; ///< per worker; a line that does not fit is dropped and counted
    access_log_format format = access_log_format::json;
    std::string syslog_socket = "/dev/log"; ///< with path: syslog, the local datagram socket
    unsigned facility = 23;                 ///< with path: syslog; 16..23 = local0..local7 (nginx's default local7)
    std::string hostname;                   ///< with path: syslog, this host's name, read with the file
};

/// Compression of the app servers' uncompressed responses (gzip, brotli).
struct compression {
    bool enabled = false;                           ///< off unless configured; routes may say otherwise
    std::vector<std::string> codings{"br", "gzip"}; ///< offered, in the server's order of preference
    unsigned gzip_level = 6;                        ///< 1..9 (nginx's gzip_comp_level; 6 is zlib's default)
    unsigned brotli_quality = 4;                    ///< 0..11; 4 compresses better than gzip -6 at less CPU
    std::uint64_t min_size = 1024;                  ///< smaller bodies of known length are sent as they are
    std::vector<std::string> types{"text/html",
                                   "text/css",
                                   "text/plain",
                                   "text/xml",
                                   "text/javascript",
                                   "text/csv",
                                   "text/markdown",
                                   "application/javascript",
                                   "application/json",
                                   "application/xml",
                                   "application/rss+xml",
                                   "application/atom+xml",
                                   "application/manifest+json",
                                   "application/wasm",
                                   "image/svg+xml"}; ///< media types, lower case
    bool with_cookies = false;                       ///< compress responses that set cookies (BREACH: off)
};

/// Severity threshold of the error log (stderr).
enum class log_level { debug, info, warn, error };

/// A route's redirect: `to` (scheme, host and an optional path prefix) with
/// the request's path and query appended.
struct route_redirect {
    std::string to;        ///< "https://www.foobar.com" or "https://example.com/new"
    unsigned status = 301; ///< 301, 302, 303, 307 or 308
};

/// A route's static files: the request's path, without the route's path
/// prefix, names a file under `root` (nginx's `alias`). The workers open
/// `root` once, when they start: a symlink in its own path is followed then,
/// and a later change of that symlink is seen on the next reload.
struct route_static {
    std::string root; ///< absolute path of a directory (missing: a warning), normal form, no trailing '/'
    std::string index = "index.html"; ///< served for a path ending in '/'; "" = none (no directory listing ever)
    std::string cache_control;        ///< Cache-Control of the file answers (200, 206, 304); "" = none
    /// File extension (lower case, no dot) -> media type, before the built-in table.
    std::vector<std::pair<std::string, std::string>> types;
    bool hidden = false;       ///< serve names starting with '.' (.well-known included)
    bool precompressed = true; ///< serve NAME.br / NAME.gz beside NAME to clients that accept them
};

/// Header rules of a route for one direction: fields set (replacing any of
/// that name), then fields removed.
struct header_rules {
    std::vector<std::pair<std::string, std::string>> set;
    std::vector<std::string> remove;
    bool empty() const { return set.empty() && remove.empty(); }
};

/// One user of a basic_auth users file: the name and its crypt(3) hash
/// (bcrypt `$2b$`/`$2y$` or yescrypt `$y$`; nothing weaker is accepted).
struct auth_user {
    std::string name;
    std::string hash;
};

/// HTTP Basic authentication of a route (RFC 7617).
struct basic_auth {
    std::string realm;            ///< the challenge's realm: printable ASCII, no '"' or '\'
    std::string users_file;       ///< the htpasswd-style file the users were read from
    std::vector<auth_user> users; ///< that file's content, read when the configuration is
};

/// Who may use a route: the client's address (after gateway.trusted_proxies)
/// against `deny`, then `allow`; then the credentials of `auth`.
struct route_access {
    std::vector<network> allow; ///< empty: any address not denied
    std::vector<network> deny;
    std::optional<basic_auth> auth;
    bool empty() const { return allow.empty() && deny.empty() && !auth; }
};

/// A page the gateway answers with instead of its plain-text body, for one
/// status it produces itself (429, 502, 503, 504, ...).
struct error_page {
    unsigned status = 0;
    std::string file;         ///< where it was read from
    std::string content_type; ///< from the file's extension
    std::string body;         ///< the file's content (at most 64 KiB), read when the configuration is
};

/// One entry of `gateway.routes`: the first whose host, path and method
/// match a request decides what serves it.
struct route {
    std::string name;                       ///< "" = none; what the maintenance API and the status page call it
    std::string host;                       ///< "" any; a lower-case name, or "*.name" for any subdomain of name
    std::string path = "/";                 ///< a normalised path prefix, matched segment by segment
    std::vector<std::string> methods;       ///< empty: any method
    std::string pool;                       ///< the action: proxy to this pool ...
    std::size_t pool_index = 0;             ///< ... (its index in gateway::pools, resolved here once)
    std::optional<route_redirect> redirect; ///< ... or answer with a redirect
    std::optional<route_static> files;      ///< ... or serve files (`static:`; the word is C++'s)
    header_rules request_headers;           ///< applied to the request sent to the pool
    header_rules response_headers;          ///< applied to the pool's response, or to a static route's answer
    route_access access;                    ///< allow, deny, basic_auth: checked before the action
    std::optional<bool> compress;           ///< none: gateway.compression.enabled decides
    location where;                         ///< the list item
};

struct gateway {
    listeners listen;
    unsigned workers = 0;                         ///< 0 = auto (one per core)
    std::string user = "nobody";                  ///< workers drop to this user when started as root; "" keeps root
    seccomp_mode seccomp = seccomp_mode::enforce; ///< the workers' system-call filter
    tls tls_settings;
    h2 h2_settings;
    hsts hsts_settings;
    std::vector<pool> pools;
    std::string default_pool;  ///< the pool requests go to when there are no routes
    std::vector<route> routes; ///< first match wins; empty: everything to default_pool
    timeouts timeouts_settings;
    limits limits_settings;
    abuse abuse_settings;
    std::string admin_token_file; ///< "" = the admin listener needs no token
    std::string admin_token;      ///< that file's content (never logged or printed)
    /// Response headers added when the backend sent none of that name (name,
    /// value); HSTS is separate (hsts).
    std::vector<std::pair<std::string, std::string>> security_headers{
        {"X-Content-Type-Options", "nosniff"},
        {"X-Frame-Options", "SAMEORIGIN"},
        {"Referrer-Policy", "strict-origin-when-cross-origin"},
    };
    access_log access_log_settings;
    std::vector<error_page> error_pages; ///< by status, ascending
    compression compression_settings;
    log_level error_log_level = log_level::info; ///< RAMPART_LOG overrides it
    /// Peers whose word on the client's address is taken: the PROXY protocol
    /// header they send. Never pushed into the firewall's blocklist.
    std::vector<network> trusted_proxies;
};

/// One `firewall.extra_rules` item: open `port` on hosts of `role` to `from`.
struct firewall_rule {
    std::string role; ///< as written; the firewall lint checks that it names a role
    location role_at;
    std::string proto = "tcp"; ///< tcp or udp
    std::uint16_t port = 0;
    std::vector<network> from; ///< at least one network
    location where;            ///< the item itself
};

/// The `firewall:` section: what the host firewalls are derived from.
struct firewall {
    std::vector<network> admin_networks; ///< SSH and the admin listener; the lint refuses an empty list
    location admin_networks_at;
    std::uint16_t ssh_port = 22;
    location ssh_port_at;
    std::uint16_t db_port = 3306;
    location db_port_at;
    rate conn_rate; ///< new gateway connections per source
    std::vector<firewall_rule> extra_rules;
    location where; ///< the `firewall` key
};

/// One gateway of the HA pair (`ha.nodes`): a server of role gateway.
struct ha_node {
    std::string name;        ///< its name in `servers:`
    std::string address;     ///< that server's address (VRRP unicast source / peer)
    unsigned priority = 100; ///< 1..254; 255 (address owner) is refused
    std::string interface;   ///< where the VIP lives on this node ("" = ha.interface)
    /// The pid file of keepalived's VRRP process on this node ("" = the
    /// defaults, /run/keepalived/vrrp.pid and /run/vrrp.pid): the master
    /// removes the VIP from this node when that process is gone.
    std::string keepalived_pid_file;
};

/// How keepalived learns whether the local Rampart can serve.
struct ha_health {
    duration interval{100};      ///< how often the master rewrites the track file
    bool require_backend = true; ///< no available server in any pool counts as a failure
    int weight = 0;              ///< 0: a failure FAULTs the node; < 0: lowers its priority (needs preempt)
    /// keepalived's track_process on the master too (the kernel's process
    /// connector: only in the initial network namespace, not in containers).
    bool track_process = true;
};

/// Each node asking its peer's admin listener who holds the VIP
/// (`ha.peer_check`): requests and answers signed with the pair's secret.
struct ha_peer_check {
    bool enabled = false;                       ///< on when `ha.peer_check` is present
    std::string secret_file;                    ///< mode 0600, the same on both nodes
    std::string secret;                         ///< that file's content (never logged or printed)
    duration interval{std::chrono::seconds(1)}; ///< how often the peer is asked
    duration timeout{500};                      ///< connect + answer, at most the interval
};

/// The `ha:` section: two gateways sharing a VRRP virtual address through keepalived.
struct ha {
    network vip;                    ///< IPv4 address and prefix, e.g. 192.0.2.10/24 (host bits allowed)
    std::optional<network> vip6;    ///< optional IPv6 VIP
    std::string interface;          ///< default interface for the VIPs and VRRP
    unsigned virtual_router_id = 0; ///< 1..255, the same on both nodes
    std::vector<ha_node> nodes;     ///< exactly two, in file order
    duration advert_int{100};       ///< VRRPv3 advertisement interval, 10ms steps
    bool unicast = true;            ///< adverts to the peer's address, not multicast
    bool preempt = false;           ///< a recovered higher-priority node takes the VIP back
    ha_health health;
    std::string state_dir = "/run/rampart/ha"; ///< track file, notify FIFO, state file
    std::string ticket_secret_file;            ///< "" = per-process ticket keys; else shared, mode 0600
    ha_peer_check peer_check;
    location where; ///< the `ha` key

    const ha_node* find_node(const std::string& name) const;
    /// The other node of the pair.
    const ha_node* peer_of(const std::string& name) const;
    /// The node whose address is one of `local_addresses` (canonical text), or null.
    const ha_node* node_with_address(const std::vector<std::string>& local_addresses) const;

    // Files shared by keepalived and Rampart on one node, named after the node
    // so that two nodes may share a directory (tests, one host running both).
    /// Written by the master: "0" healthy, "1" not (keepalived's track_file).
    std::string track_file(const std::string& node) const { return state_dir + "/" + node + ".health"; }
    /// keepalived's vrrp_notify_fifo, read by the master.
    std::string notify_fifo(const std::string& node) const { return state_dir + "/" + node + ".fifo"; }
    /// The last VRRP state the master learned, for `rampart ha status`.
    std::string state_file(const std::string& node) const { return state_dir + "/" + node + ".state"; }
    /// The master's process name (/proc/PID/comm, at most 15 bytes) that
    /// keepalived's track_process follows: "rampart-gw1".
    std::string process_name(const std::string& node) const { return ("rampart-" + node).substr(0, 15); }
};

/// The whole validated deployment file.
struct snapshot {
    std::string source_file;
    std::string site; ///< e.g. www.foobar.com
    std::vector<server> servers;
    gateway gw;
    std::optional<firewall> fw; ///< absent when the file has no `firewall:` section
    std::optional<ha> ha_pair;  ///< absent when the file has no `ha:` section

    const pool* find_pool(const std::string& name) const;
    const server* find_server(const std::string& name) const;
    /// Workers actually started: `workers`, or the number of online CPUs for auto.
    unsigned effective_workers() const;
};

using snapshot_ptr = std::shared_ptr<const snapshot>;

/// Result of load(): the snapshot, or every error found (at least one).
struct load_result {
    snapshot_ptr config;
    std::vector<error> errors;
    explicit operator bool() const { return config != nullptr; }
};

/// Routes that can never match, each shadowed by an earlier one whose host,
/// path and methods cover it: warnings for `rampart check`.
std::vector<error> route_warnings(const snapshot& s);

/// Indexes in gateway::pools of the pools requests can reach: those routes
/// name, or default_pool without routes.
std::vector<std::size_t> routed_pools(const snapshot& s);

/// Reads, parses and validates a deployment file. Never throws; every problem
/// (unreadable file, YAML syntax, unknown key, bad value, dangling reference)
/// becomes an error with file:line:column.
load_result load(const std::string& path);

/// Same as load(), from text; `name` is used as the file name in errors.
load_result load_from_string(const std::string& text, const std::string& name);

/// A one-screen human summary of a valid snapshot (for `rampart check`).
std::string summary(const snapshot& s);

const char* to_string(balance b);
const char* to_string(role r);
const char* to_string(rate_unit u);
const char* to_string(log_level l);
const char* to_string(seccomp_mode m);
/// Parses a role name as written in the file ("db-primary"); nullopt if unknown.
std::optional<role> parse_role(const std::string& text);
/// Parses "192.0.2.0/24", "2001:db8::/32" or a single address (a /32 or /128); nullopt if
/// invalid. `why` says what is wrong (host bits set, prefix out of range, ...).
std::optional<network> parse_network(const std::string& text, std::string* why = nullptr);

/// Parses "250ms", "10s", "5m", "1h", "7d" into milliseconds; nullopt if invalid.
std::optional<duration> parse_duration(const std::string& text);
/// Parses "512", "16KiB", "10MiB", "1GiB" (also KB/MB/GB as powers of 10); nullopt if invalid.
std::optional<std::uint64_t> parse_size(const std::string& text);
/// Parses "1.2.3.4:443", "[::]:443", "[::1]:9100"; nullopt if invalid. Port 0 is refused.
std::optional<endpoint> parse_endpoint(const std::string& text);

} // namespace rampart::config
