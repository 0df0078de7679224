#pragma once
// The configuration checker, shared by its files: config.cpp (documents,
// files, the public API), check_scalars.cpp (text helpers and the typed
// readers every section uses) and one file per section: check_site.cpp
// (the walk, site, servers), check_gateway.cpp, check_pools.cpp (pools,
// routes, static files), check_firewall.cpp, check_ha.cpp. Internal to the
// config module: nothing outside config/ includes it.

#include "config/config.hpp"

#include <yaml-cpp/yaml.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rampart::config::detail {

using namespace std::string_view_literals;

// Past this many errors the file is probably not a Rampart config at all; more
// messages would only bury the first ones.
inline constexpr std::size_t max_errors = 100;
// A deployment file is a few kilobytes; the cap keeps `rampart check /dev/zero` finite.
inline constexpr std::size_t max_file_bytes = 16 * 1024 * 1024;

inline constexpr unsigned max_weight = 256;
inline constexpr unsigned max_workers = 256;

inline constexpr std::string_view duration_expected = "a duration like 250ms, 10s, 5m, 1h or 7d";
inline constexpr std::string_view size_expected = "a size like 512, 16KiB, 10MiB or 1GB";
inline constexpr std::string_view endpoint_expected = "an address:port like 127.0.0.1:8443 or [::]:443";
inline constexpr std::string_view name_chars = "letters, digits, '.', '_' and '-'";

template <class E> struct named {
    std::string_view name;
    E value;
};

inline constexpr std::array<named<role>, 4> role_names{{
    {"gateway", role::gateway},
    {"app", role::app},
    {"db-primary", role::db_primary},
    {"db-replica", role::db_replica},
}};

inline constexpr std::array<named<balance>, 4> balance_names{{
    {"round_robin", balance::round_robin},
    {"weighted_round_robin", balance::weighted_round_robin},
    {"least_connections", balance::least_connections},
    {"hash", balance::hash},
}};

inline constexpr std::array<named<log_level>, 4> log_level_names{{
    {"debug", log_level::debug},
    {"info", log_level::info},
    {"warn", log_level::warn},
    {"error", log_level::error},
}};

inline constexpr std::array<named<seccomp_mode>, 3> seccomp_names{{
    {"enforce", seccomp_mode::enforce},
    {"log", seccomp_mode::log},
    {"off", seccomp_mode::off},
}};

inline constexpr std::array<named<duration timeouts::*>, 8> timeout_fields{{
    {"handshake", &timeouts::handshake},
    {"header", &timeouts::header},
    {"body", &timeouts::body},
    {"idle", &timeouts::idle},
    {"upstream_connect", &timeouts::upstream_connect},
    {"upstream_response", &timeouts::upstream_response},
    {"drain", &timeouts::drain},
    {"tunnel", &timeouts::tunnel},
}};

inline constexpr std::array root_keys{"site"sv, "servers"sv, "gateway"sv, "firewall"sv, "ha"sv};
inline constexpr std::array ha_keys{
    "vip"sv,     "vip6"sv,   "interface"sv, "virtual_router_id"sv,  "nodes"sv,     "advert_int"sv, "unicast"sv,
    "preempt"sv, "health"sv, "state_dir"sv, "ticket_secret_file"sv, "peer_check"sv};
inline constexpr std::array ha_peer_check_keys{"secret_file"sv, "interval"sv, "timeout"sv};
inline constexpr std::array ha_node_keys{"priority"sv, "interface"sv, "keepalived_pid_file"sv};
inline constexpr std::array ha_health_keys{"interval"sv, "require_backend"sv, "weight"sv, "track_process"sv};
inline constexpr std::array server_keys{"address"sv, "role"sv, "port"sv, "weight"sv};
inline constexpr std::array gateway_keys{"listen"sv,
                                         "workers"sv,
                                         "user"sv,
                                         "seccomp"sv,
                                         "tls"sv,
                                         "h2"sv,
                                         "hsts"sv,
                                         "pools"sv,
                                         "default_pool"sv,
                                         "routes"sv,
                                         "timeouts"sv,
                                         "limits"sv,
                                         "abuse"sv,
                                         "security_headers"sv,
                                         "admin_token_file"sv,
                                         "access_log"sv,
                                         "log_level"sv,
                                         "trusted_proxies"sv,
                                         "error_pages"sv,
                                         "compression"sv};
inline constexpr std::array compression_keys{"enabled"sv,  "codings"sv, "gzip_level"sv,  "brotli_quality"sv,
                                             "min_size"sv, "types"sv,   "with_cookies"sv};
inline constexpr std::array listen_keys{"https"sv, "http"sv, "admin"sv, "proxy_protocol"sv};
inline constexpr std::array tls_keys{"certificates"sv, "session_tickets"sv, "ticket_rotation"sv, "alpn"sv,
                                     "acme"sv,         "acme_webroot"sv};
inline constexpr std::array acme_keys{"directory"sv,    "email"sv,   "names"sv,     "key_types"sv, "challenge"sv,
                                      "renew_before"sv, "ca_file"sv, "state_dir"sv, "retry_min"sv, "retry_max"sv};
inline constexpr std::array h2_keys{"max_concurrent_streams"sv, "initial_window"sv, "max_frame_size"sv,
                                    "header_table_size"sv};
inline constexpr std::array certificate_keys{"cert"sv, "key"sv};
inline constexpr std::array hsts_keys{"enabled"sv, "max_age"sv, "include_subdomains"sv, "preload"sv};
inline constexpr std::array pool_keys{"balance"sv,
                                      "servers"sv,
                                      "health"sv,
                                      "outlier"sv,
                                      "retries"sv,
                                      "max_connections"sv,
                                      "queue"sv,
                                      "slow_start"sv,
                                      "rate_limit"sv,
                                      "hash"sv,
                                      "hash_balance_factor"sv,
                                      "sticky"sv};
inline constexpr std::array sticky_keys{"cookie"sv, "ttl"sv};
inline constexpr std::array health_keys{"path"sv, "expect_status"sv, "interval"sv, "timeout"sv,
                                        "rise"sv, "fall"sv,          "host"sv};
inline constexpr std::array outlier_keys{"consecutive_failures"sv, "base_ejection"sv, "max_ejection"sv};
inline constexpr std::array queue_keys{"size"sv, "timeout"sv};
inline constexpr std::array abuse_keys{"block"sv, "threshold"sv, "window"sv, "block_for"sv, "allow"sv};
inline constexpr std::array access_log_keys{"path"sv, "buffer"sv, "format"sv, "facility"sv, "syslog_socket"sv};
inline constexpr std::array member_keys{"server"sv, "weight"sv};
inline constexpr std::array limit_keys{"header_bytes"sv,    "header_count"sv,
                                       "body_bytes"sv,      "upstream_idle_per_server"sv,
                                       "max_connections"sv, "max_connections_per_client"sv,
                                       "tunnels"sv,         "buffer_body_bytes"sv};
inline constexpr std::array firewall_keys{"admin_networks"sv, "ssh_port"sv, "db_port"sv, "conn_rate"sv,
                                          "extra_rules"sv};
inline constexpr std::array conn_rate_keys{"rate"sv, "burst"sv};
inline constexpr std::array extra_rule_keys{"role"sv, "proto"sv, "port"sv, "from"sv};
inline constexpr std::string_view network_expected = "a network like 198.51.100.0/24 or 2001:db8::/48, or one address";
inline constexpr std::string_view rate_expected = "a rate like 50/second, 600/minute or 1000/hour";

inline constexpr std::array<named<rate_unit>, 3> rate_unit_names{{
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

// ---- text helpers (check_scalars.cpp) ---------------------------------------

bool is_digit(char c);
// A run of decimal digits only: no sign, no spaces, no 0x. nullopt when empty
// or too large for 64 bits.
std::optional<std::uint64_t> parse_decimal(std::string_view s);
// Splits "10MiB" into "10" and "MiB".
std::pair<std::string_view, std::string_view> split_number(std::string_view s);
std::string lower(std::string_view s);
// The text of a scalar as it should appear in a message: quoted, control
// characters escaped, long values cut.
std::string in_quotes(std::string_view s);
std::string describe(const YAML::Node& node);
std::string join(std::span<const std::string_view> words, std::string_view last_sep = ", ");
// YAML 1.1's words, which yaml-cpp and most people still use; y/n are left
// out because they are more often a name than a yes.
std::optional<bool> parse_bool(std::string_view text);
// Optimal string alignment distance: Levenshtein plus adjacent transpositions,
// so "wokrers" is one edit from "workers".
std::size_t edit_distance(std::string_view a, std::string_view b);
// "did you mean 'x'?" for the closest choice within two edits (ignoring
// case), or "" when nothing is close. A choice is never suggested when the
// edits would replace most of it ("key" is not a typo of "cert").
std::string did_you_mean(std::string_view got, std::span<const std::string_view> choices);
// Canonical text of a literal IP address ("0:0::1" -> "::1"), nullopt for
// anything else, host names included. `v6` tells the family.
std::optional<std::string> canonical_ip(const std::string& text, bool* v6 = nullptr);
bool valid_dns_name(std::string_view name);
// Server and pool names end up in metrics labels, log lines and the
// keepalived configuration, so they stay plain.
bool valid_name(std::string_view name);
std::optional<endpoint> parse_endpoint_text(std::string_view text, std::string& why);
// Whether two listeners would fight over a port: the same address, or a
// wildcard covering the other ("::" covers both families, as the gateway binds it).
bool overlaps(const endpoint& a, const endpoint& b);
std::string format_duration(duration d);
std::string format_size(std::uint64_t bytes);

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

/// "parent.key", or "key" at the top.
std::string child_path(const std::string& parent, std::string_view key);

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
    /// A problem in another file the configuration names (a users file).
    void fail_at(location at, std::string what) {
        ++error_count_;
        if (errors_.size() < max_errors) {
            errors_.push_back(error{std::move(at), std::move(what)});
        }
    }
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
    std::optional<acme> check_acme(const field& f);
    void check_h2(const field& f, h2& out);
    void check_hsts(const field& f, hsts& out);
    void check_pools(const field& f, snapshot& s, std::vector<std::string>& names);
    void check_routes(const field& f, gateway& gw, const std::vector<std::string>& pool_names);
    void check_header_rules(const field& f, header_rules& out);
    std::optional<route> check_route(const field& f, const std::vector<std::string>& pool_names);
    std::optional<route_static> check_static(const field& f);
    std::optional<basic_auth> check_basic_auth(const field& f);
    void check_error_pages(const field& f, std::vector<error_page>& out);
    void check_hash_key(const field& f, hash_key& out);
    void check_compression(const field& f, compression& out);
    std::optional<sticky> check_sticky(const field& f);
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

} // namespace rampart::config::detail
