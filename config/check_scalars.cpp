// The configuration checker: text helpers, and the typed readers every section uses (maps, lists, integers, durations,
// sizes, endpoints, addresses, paths, networks).

#include "config/checker.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

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

namespace rampart::config::detail {

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

std::string join(std::span<const std::string_view> words, std::string_view last_sep) {
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
std::optional<std::string> canonical_ip(const std::string& text, bool* v6) {
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

std::string child_path(const std::string& parent, std::string_view key) {
    return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

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

} // namespace rampart::config::detail
