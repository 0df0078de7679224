// The ruleset model: addresses, nft rendering, the state-file format, and the
// change list apply prints.

#include "firewall/model.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <sstream>
#include <string_view>

namespace rampart::firewall {

namespace {

constexpr std::string_view plan_magic = "rampart-firewall-plan 1";

struct icmp_name {
    family fam;
    std::uint8_t type;
    const char* name;
};

constexpr icmp_name icmp_names[] = {
    {family::ipv4, 0, "echo-reply"},           {family::ipv4, 3, "destination-unreachable"},
    {family::ipv4, 8, "echo-request"},         {family::ipv4, 11, "time-exceeded"},
    {family::ipv4, 12, "parameter-problem"},   {family::ipv6, 1, "destination-unreachable"},
    {family::ipv6, 2, "packet-too-big"},       {family::ipv6, 3, "time-exceeded"},
    {family::ipv6, 4, "parameter-problem"},    {family::ipv6, 128, "echo-request"},
    {family::ipv6, 129, "echo-reply"},         {family::ipv6, 133, "nd-router-solicit"},
    {family::ipv6, 134, "nd-router-advert"},   {family::ipv6, 135, "nd-neighbor-solicit"},
    {family::ipv6, 136, "nd-neighbor-advert"},
};

const char* verdict_name(verdict v) {
    switch (v) {
    case verdict::accept:
        return "accept";
    case verdict::drop:
        return "drop";
    case verdict::none:
        break;
    }
    return "none";
}

std::string quoted(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') {
            continue; // the policy never puts these in; never let them break the syntax
        }
        out += c;
    }
    return out + "\"";
}

std::string render_limit(const limit& l) {
    return std::string("limit rate ") + (l.over ? "over " : "") + std::to_string(l.rate) + "/" + to_string(l.unit) +
           " burst " + std::to_string(l.burst) + " packets";
}

const char* family_word(family f) {
    return f == family::ipv4 ? "ip" : "ip6";
}

std::string render_timeout(std::uint64_t ms) {
    if (ms % 3'600'000 == 0) {
        return std::to_string(ms / 3'600'000) + "h";
    }
    if (ms % 60'000 == 0) {
        return std::to_string(ms / 60'000) + "m";
    }
    if (ms % 1000 == 0) {
        return std::to_string(ms / 1000) + "s";
    }
    return std::to_string(ms) + "ms";
}

// ---- state-file encoding ---------------------------------------------------

std::string encode(const std::string& s) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) {
        if (c <= 0x20 || c >= 0x7f || c == '%' || c == '=') {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 0xf];
        } else {
            out += static_cast<char>(c);
        }
    }
    return out.empty() ? "%" : out; // "%" alone is the empty string
}

std::optional<std::string> decode(std::string_view s) {
    if (s == "%") {
        return std::string();
    }
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        if (i + 2 >= s.size()) {
            return std::nullopt;
        }
        unsigned v = 0;
        const auto [end, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
        if (ec != std::errc{} || end != s.data() + i + 3) {
            return std::nullopt;
        }
        out += static_cast<char>(v);
        i += 2;
    }
    return out;
}

template <class T> std::optional<T> number(std::string_view s) {
    T v{};
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end != s.data() + s.size()) {
        return std::nullopt;
    }
    return v;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    std::size_t start = 0;
    for (;;) {
        const auto pos = s.find(sep, start);
        out.push_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
        if (pos == std::string_view::npos) {
            return out;
        }
        start = pos + 1;
    }
}

std::map<std::string, std::string, std::less<>> fields_of(std::string_view line) {
    std::map<std::string, std::string, std::less<>> out;
    for (auto token : split(line, ' ')) {
        const auto eq = token.find('=');
        if (eq != std::string_view::npos) {
            out.emplace(std::string(token.substr(0, eq)), std::string(token.substr(eq + 1)));
        }
    }
    return out;
}

std::string limit_fields(const limit& l) {
    return std::to_string(l.rate) + ":" + to_string(l.unit) + ":" + std::to_string(l.burst) + ":" +
           (l.over ? "1" : "0");
}

std::optional<limit> parse_limit(std::string_view s) {
    const auto parts = split(s, ':');
    if (parts.size() != 4) {
        return std::nullopt;
    }
    limit l;
    const auto r = number<std::uint64_t>(parts[0]);
    const auto b = number<std::uint64_t>(parts[2]);
    if (!r || !b) {
        return std::nullopt;
    }
    l.rate = *r;
    l.burst = *b;
    if (parts[1] == "second") {
        l.unit = rate_unit::second;
    } else if (parts[1] == "minute") {
        l.unit = rate_unit::minute;
    } else if (parts[1] == "hour") {
        l.unit = rate_unit::hour;
    } else {
        return std::nullopt;
    }
    l.over = parts[3] == "1";
    return l;
}

std::optional<family> parse_family(std::string_view s) {
    if (s == "4") {
        return family::ipv4;
    }
    if (s == "6") {
        return family::ipv6;
    }
    return std::nullopt;
}

const char* family_digit(family f) {
    return f == family::ipv4 ? "4" : "6";
}

std::string serialise_rule(const rule& r) {
    std::string out = "rule";
    if (r.ct_state != 0) {
        out += " ct=" + std::to_string(r.ct_state);
    }
    if (r.iif_loopback) {
        out += " lo=1";
    }
    if (r.source) {
        out += std::string(" src=") + family_digit(r.source->fam) + ":" + encode(r.source->set);
    }
    if (r.l4proto) {
        out += " l4=" + std::to_string(*r.l4proto);
    }
    if (r.dport) {
        out += " dport=" + std::to_string(*r.dport);
    }
    if (r.icmp) {
        out += std::string(" icmp=") + family_digit(r.icmp->fam) + ":" + std::to_string(r.icmp->type);
    }
    if (r.hoplimit) {
        out += " hop=" + std::to_string(*r.hoplimit);
    }
    if (r.per_source) {
        out += std::string(" meter=") + family_digit(r.per_source->fam) + ":" + encode(r.per_source->set) + ":" +
               limit_fields(r.per_source->per_source);
    }
    if (r.rate_limit) {
        out += " limit=" + limit_fields(*r.rate_limit);
    }
    if (r.log_prefix) {
        out += " log=" + encode(*r.log_prefix);
    }
    out += std::string(" action=") + verdict_name(r.action);
    out += " comment=" + encode(r.comment);
    return out;
}

std::optional<rule> parse_rule(std::string_view line) {
    const auto f = fields_of(line);
    rule r;
    const auto get = [&](const char* key) -> const std::string* {
        const auto it = f.find(key);
        return it == f.end() ? nullptr : &it->second;
    };
    if (const auto* v = get("ct")) {
        const auto n = number<std::uint32_t>(*v);
        if (!n) {
            return std::nullopt;
        }
        r.ct_state = *n;
    }
    r.iif_loopback = get("lo") != nullptr;
    if (const auto* v = get("src")) {
        const auto parts = split(*v, ':');
        const auto fam = parts.size() == 2 ? parse_family(parts[0]) : std::nullopt;
        const auto name = parts.size() == 2 ? decode(parts[1]) : std::nullopt;
        if (!fam || !name) {
            return std::nullopt;
        }
        r.source = source_in_set{*fam, *name};
    }
    if (const auto* v = get("l4")) {
        const auto n = number<std::uint8_t>(*v);
        if (!n) {
            return std::nullopt;
        }
        r.l4proto = *n;
    }
    if (const auto* v = get("dport")) {
        const auto n = number<std::uint16_t>(*v);
        if (!n) {
            return std::nullopt;
        }
        r.dport = *n;
    }
    if (const auto* v = get("icmp")) {
        const auto parts = split(*v, ':');
        const auto fam = parts.size() == 2 ? parse_family(parts[0]) : std::nullopt;
        const auto type = parts.size() == 2 ? number<std::uint8_t>(parts[1]) : std::nullopt;
        if (!fam || !type) {
            return std::nullopt;
        }
        r.icmp = icmp_match{*fam, *type};
    }
    if (const auto* v = get("hop")) {
        const auto n = number<std::uint8_t>(*v);
        if (!n) {
            return std::nullopt;
        }
        r.hoplimit = *n;
    }
    if (const auto* v = get("meter")) {
        const auto first = v->find(':');
        const auto second = first == std::string::npos ? first : v->find(':', first + 1);
        if (second == std::string::npos) {
            return std::nullopt;
        }
        const auto fam = parse_family(std::string_view(*v).substr(0, first));
        const auto name = decode(std::string_view(*v).substr(first + 1, second - first - 1));
        const auto l = parse_limit(std::string_view(*v).substr(second + 1));
        if (!fam || !name || !l) {
            return std::nullopt;
        }
        r.per_source = meter{*fam, *name, *l};
    }
    if (const auto* v = get("limit")) {
        const auto l = parse_limit(*v);
        if (!l) {
            return std::nullopt;
        }
        r.rate_limit = *l;
    }
    if (const auto* v = get("log")) {
        const auto s = decode(*v);
        if (!s) {
            return std::nullopt;
        }
        r.log_prefix = *s;
    }
    const auto* action = get("action");
    if (action == nullptr) {
        return std::nullopt;
    }
    if (*action == "accept") {
        r.action = verdict::accept;
    } else if (*action == "drop") {
        r.action = verdict::drop;
    } else if (*action != "none") {
        return std::nullopt;
    }
    if (const auto* v = get("comment")) {
        const auto s = decode(*v);
        if (!s) {
            return std::nullopt;
        }
        r.comment = *s;
    }
    return r;
}

std::string set_header(const set& s) {
    std::string out = std::string("set ") + s.name + " (" + (s.fam == family::ipv4 ? "ipv4_addr" : "ipv6_addr");
    if (s.interval) {
        out += ", interval";
    }
    if (s.dynamic) {
        out += ", dynamic";
    }
    if (s.timeout) {
        out += ", timeout";
    }
    if (s.timeout_ms != 0) {
        out += ", timeout " + render_timeout(s.timeout_ms);
    }
    if (s.size != 0) {
        out += ", size " + std::to_string(s.size);
    }
    return out + ")";
}

} // namespace

const char* to_string(rate_unit u) {
    switch (u) {
    case rate_unit::second:
        return "second";
    case rate_unit::minute:
        return "minute";
    case rate_unit::hour:
        return "hour";
    }
    return "second";
}

const char* icmp_type_name(family fam, std::uint8_t type) {
    for (const auto& n : icmp_names) {
        if (n.fam == fam && n.type == type) {
            return n.name;
        }
    }
    return nullptr;
}

std::string prefix::to_string() const {
    char text[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(fam == family::ipv4 ? AF_INET : AF_INET6, bytes.data(), text, sizeof text);
    return is_host() ? std::string(text) : std::string(text) + "/" + std::to_string(length);
}

prefix prefix::last() const {
    prefix out = *this;
    for (unsigned i = 0; i < size(); ++i) {
        const unsigned bits = std::min(8U, length > i * 8 ? length - i * 8 : 0U);
        const auto host_mask = static_cast<std::uint8_t>(bits >= 8 ? 0 : 0xff >> bits);
        out.bytes[i] = static_cast<std::uint8_t>(bytes[i] | host_mask);
    }
    out.length = max_length();
    return out;
}

bool prefix::contains(const prefix& other) const {
    if (fam != other.fam || other.length < length) {
        return false;
    }
    for (unsigned i = 0; i < size(); ++i) {
        const unsigned bits = std::min(8U, length > i * 8 ? length - i * 8 : 0U);
        const auto mask = static_cast<std::uint8_t>(bits == 0 ? 0 : 0xff << (8 - bits));
        if ((bytes[i] & mask) != (other.bytes[i] & mask)) {
            return false;
        }
    }
    return true;
}

std::optional<prefix> prefix::parse(const std::string& text) {
    const auto n = config::parse_network(text);
    if (!n) {
        return std::nullopt;
    }
    prefix p;
    p.fam = n->v6 ? family::ipv6 : family::ipv4;
    p.length = n->prefix;
    ::inet_pton(n->v6 ? AF_INET6 : AF_INET, n->address.c_str(), p.bytes.data());
    return p;
}

const set* ruleset::find_set(const std::string& name) const {
    const auto it = std::find_if(sets.begin(), sets.end(), [&](const set& s) { return s.name == name; });
    return it == sets.end() ? nullptr : &*it;
}

std::string render_rule(const rule& r) {
    std::vector<std::string> words;
    if (r.ct_state != 0) {
        std::string states;
        const std::pair<std::uint32_t, const char*> names[] = {
            {ct_invalid, "invalid"}, {ct_established, "established"}, {ct_related, "related"}, {ct_new, "new"}};
        for (const auto& [bit, name] : names) {
            if ((r.ct_state & bit) != 0) {
                states += (states.empty() ? "" : ",") + std::string(name);
            }
        }
        words.push_back("ct state " + states);
    }
    if (r.iif_loopback) {
        words.emplace_back("iif \"lo\"");
    }
    if (r.source) {
        words.push_back(std::string(family_word(r.source->fam)) + " saddr @" + r.source->set);
    }
    if (r.l4proto) {
        if (r.dport && (*r.l4proto == proto_tcp || *r.l4proto == proto_udp)) {
            words.push_back(std::string(*r.l4proto == proto_tcp ? "tcp" : "udp") + " dport " +
                            std::to_string(*r.dport));
        } else {
            words.push_back("meta l4proto " + std::to_string(*r.l4proto));
        }
    }
    if (r.icmp) {
        const char* name = icmp_type_name(r.icmp->fam, r.icmp->type);
        words.push_back(std::string(r.icmp->fam == family::ipv4 ? "icmp" : "icmpv6") + " type " +
                        (name != nullptr ? std::string(name) : std::to_string(r.icmp->type)));
    }
    if (r.hoplimit) {
        words.push_back("ip6 hoplimit " + std::to_string(*r.hoplimit));
    }
    if (r.per_source) {
        words.push_back("update @" + r.per_source->set + " { " + family_word(r.per_source->fam) + " saddr " +
                        render_limit(r.per_source->per_source) + " }");
    }
    if (r.rate_limit) {
        words.push_back(render_limit(*r.rate_limit));
    }
    words.emplace_back("counter");
    if (r.log_prefix) {
        words.push_back("log prefix " + quoted(*r.log_prefix));
    }
    if (r.action != verdict::none) {
        words.emplace_back(verdict_name(r.action));
    }
    std::string out;
    for (const auto& w : words) {
        out += (out.empty() ? "" : " ") + w;
    }
    return out;
}

std::string render_nft(const ruleset& rs) {
    std::ostringstream out;
    out << "# Rampart firewall plan";
    if (!rs.description.empty()) {
        out << ": " << rs.description;
    }
    out << "\n# Apply with `rampart firewall apply`; it replaces only table inet rampart.\n";
    out << "table inet " << table_name << " {\n";
    for (const auto& s : rs.sets) {
        if (!s.comment.empty()) {
            out << "\t# " << s.comment << "\n";
        }
        out << "\tset " << s.name << " {\n";
        out << "\t\ttype " << (s.fam == family::ipv4 ? "ipv4_addr" : "ipv6_addr") << "\n";
        if (s.size != 0) {
            out << "\t\tsize " << s.size << "\n";
        }
        std::vector<std::string> flags;
        if (s.dynamic) {
            flags.emplace_back("dynamic");
        }
        if (s.interval) {
            flags.emplace_back("interval");
        }
        if (s.timeout) {
            flags.emplace_back("timeout");
        }
        if (!flags.empty()) {
            out << "\t\tflags ";
            for (std::size_t i = 0; i < flags.size(); ++i) {
                out << (i ? "," : "") << flags[i];
            }
            out << "\n";
        }
        if (s.timeout_ms != 0) {
            out << "\t\ttimeout " << render_timeout(s.timeout_ms) << "\n";
        }
        if (!s.elements.empty()) {
            out << "\t\telements = { ";
            for (std::size_t i = 0; i < s.elements.size(); ++i) {
                out << (i ? ", " : "") << s.elements[i].to_string();
            }
            out << " }\n";
        }
        out << "\t}\n\n";
    }
    for (std::size_t c = 0; c < rs.chains.size(); ++c) {
        const chain& ch = rs.chains[c];
        out << "\tchain " << ch.name << " {\n";
        out << "\t\ttype filter hook " << (ch.at == hook::prerouting ? "prerouting" : "input") << " priority "
            << (ch.priority == -300 ? std::string("raw")
                : ch.priority == 0  ? std::string("filter")
                                    : std::to_string(ch.priority))
            << "; policy " << verdict_name(ch.policy) << ";\n";
        for (const auto& r : ch.rules) {
            out << "\t\t" << render_rule(r);
            if (!r.comment.empty()) {
                out << " comment " << quoted(r.comment);
            }
            out << "\n";
        }
        out << "\t}\n";
        if (c + 1 < rs.chains.size()) {
            out << "\n";
        }
    }
    out << "}\n";
    return out.str();
}

std::string serialise(const ruleset& rs) {
    std::string out(plan_magic);
    out += "\ndescription " + encode(rs.description) + "\n";
    for (const auto& s : rs.sets) {
        out += "set name=" + encode(s.name) + " fam=" + family_digit(s.fam) + " interval=" + (s.interval ? "1" : "0") +
               " timeout=" + (s.timeout ? "1" : "0") + " dynamic=" + (s.dynamic ? "1" : "0") +
               " timeout_ms=" + std::to_string(s.timeout_ms) + " size=" + std::to_string(s.size) +
               " comment=" + encode(s.comment) + "\n";
        for (const auto& e : s.elements) {
            out += "element " + e.to_string() + "\n";
        }
    }
    for (const auto& c : rs.chains) {
        out += "chain name=" + encode(c.name) + " hook=" + (c.at == hook::prerouting ? "prerouting" : "input") +
               " priority=" + std::to_string(c.priority) + " policy=" + verdict_name(c.policy) + "\n";
        for (const auto& r : c.rules) {
            out += serialise_rule(r) + "\n";
        }
    }
    out += "end\n";
    return out;
}

std::optional<ruleset> deserialise(const std::string& text, std::string* why) {
    const auto bad = [&](std::size_t line_no, const std::string& what) -> std::optional<ruleset> {
        if (why != nullptr) {
            *why = "line " + std::to_string(line_no) + ": " + what;
        }
        return std::nullopt;
    };
    ruleset rs;
    const auto lines = split(text, '\n');
    if (lines.empty() || lines[0] != plan_magic) {
        return bad(1, "not a Rampart firewall plan");
    }
    bool ended = false;
    for (std::size_t i = 1; i < lines.size(); ++i) {
        const std::string_view line = lines[i];
        const std::size_t n = i + 1;
        if (line.empty()) {
            continue;
        }
        if (ended) {
            return bad(n, "text after end");
        }
        const auto space = line.find(' ');
        const std::string_view kind = line.substr(0, space);
        const std::string_view rest = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
        if (kind == "end") {
            ended = true;
        } else if (kind == "description") {
            const auto d = decode(rest);
            if (!d) {
                return bad(n, "bad description");
            }
            rs.description = *d;
        } else if (kind == "set") {
            const auto f = fields_of(rest);
            set s;
            const auto get = [&](const char* k) { return f.contains(k) ? f.find(k)->second : std::string(); };
            const auto name = decode(get("name"));
            const auto fam = parse_family(get("fam"));
            const auto tmo = number<std::uint64_t>(get("timeout_ms"));
            const auto size = number<std::uint32_t>(get("size"));
            const auto comment = decode(get("comment"));
            if (!name || name->empty() || !fam || !tmo || !size || !comment) {
                return bad(n, "bad set");
            }
            s.name = *name;
            s.fam = *fam;
            s.interval = get("interval") == "1";
            s.timeout = get("timeout") == "1";
            s.dynamic = get("dynamic") == "1";
            s.timeout_ms = *tmo;
            s.size = *size;
            s.comment = *comment;
            rs.sets.push_back(std::move(s));
        } else if (kind == "element") {
            const auto p = prefix::parse(std::string(rest));
            if (rs.sets.empty() || !p || p->fam != rs.sets.back().fam) {
                return bad(n, "bad element");
            }
            rs.sets.back().elements.push_back(*p);
        } else if (kind == "chain") {
            const auto f = fields_of(rest);
            chain c;
            const auto get = [&](const char* k) { return f.contains(k) ? f.find(k)->second : std::string(); };
            const auto name = decode(get("name"));
            const auto prio = number<int>(get("priority"));
            if (!name || name->empty() || !prio) {
                return bad(n, "bad chain");
            }
            c.name = *name;
            c.priority = *prio;
            if (get("hook") == "prerouting") {
                c.at = hook::prerouting;
            } else if (get("hook") == "input") {
                c.at = hook::input;
            } else {
                return bad(n, "bad chain hook");
            }
            c.policy = get("policy") == "drop" ? verdict::drop : verdict::accept;
            rs.chains.push_back(std::move(c));
        } else if (kind == "rule") {
            auto r = parse_rule(rest);
            if (rs.chains.empty() || !r) {
                return bad(n, "bad rule");
            }
            rs.chains.back().rules.push_back(std::move(*r));
        } else {
            return bad(n, "unknown line");
        }
    }
    if (!ended) {
        return bad(lines.size(), "truncated (no end line)");
    }
    return rs;
}

std::vector<std::string> changes(const ruleset& before, const ruleset& after) {
    std::vector<std::string> out;
    for (const auto& s : before.sets) {
        if (after.find_set(s.name) == nullptr) {
            out.push_back("- " + set_header(s));
        }
    }
    for (const auto& s : after.sets) {
        const set* old = before.find_set(s.name);
        if (old == nullptr) {
            std::string line = "+ " + set_header(s);
            if (!s.elements.empty()) {
                line += ": " + std::to_string(s.elements.size()) + " elements";
            }
            out.push_back(line);
            continue;
        }
        set a = *old;
        set b = s;
        a.elements.clear();
        b.elements.clear();
        a.comment.clear();
        b.comment.clear();
        if (a != b) {
            out.push_back("~ " + set_header(*old) + " -> " + set_header(s));
        }
        const std::set<prefix> olds(old->elements.begin(), old->elements.end());
        const std::set<prefix> news(s.elements.begin(), s.elements.end());
        for (const auto& e : olds) {
            if (!news.contains(e)) {
                out.push_back("- element " + s.name + " " + e.to_string());
            }
        }
        for (const auto& e : news) {
            if (!olds.contains(e)) {
                out.push_back("+ element " + s.name + " " + e.to_string());
            }
        }
    }
    // Rules compare per chain as multisets of their text: a rule that only moved
    // is not reported, one added or removed is.
    std::set<std::string> chain_names;
    for (const auto* rs : {&before, &after}) {
        for (const auto& c : rs->chains) {
            chain_names.insert(c.name);
        }
    }
    const auto texts = [](const ruleset& rs, const std::string& name) {
        std::multiset<std::string> out_texts;
        for (const auto& c : rs.chains) {
            if (c.name == name) {
                for (const auto& r : c.rules) {
                    out_texts.insert(render_rule(r) + (r.comment.empty() ? "" : " comment " + quoted(r.comment)));
                }
            }
        }
        return out_texts;
    };
    for (const auto& name : chain_names) {
        auto a = texts(before, name);
        auto b = texts(after, name);
        for (const auto& t : b) {
            if (const auto it = a.find(t); it != a.end()) {
                a.erase(it);
            } else {
                out.push_back("+ rule " + name + ": " + t);
            }
        }
        for (const auto& t : a) {
            out.push_back("- rule " + name + ": " + t);
        }
    }
    return out;
}

} // namespace rampart::firewall
