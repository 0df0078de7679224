// The configuration checker: pools (members, balancing, health checks, outlier detection) and routes (hosts, paths,
// redirects, static files, header rules).

#include "config/checker.hpp"
#include "config/htpasswd.hpp"

#include <sys/stat.h>

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

constexpr std::array route_keys{"name"sv,   "host"sv,    "path"sv,  "methods"sv, "pool"sv,       "redirect"sv,
                                "static"sv, "headers"sv, "allow"sv, "deny"sv,    "basic_auth"sv, "compress"sv};
constexpr std::array basic_auth_keys{"realm"sv, "users"sv};
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
            if (!r->name.empty()) {
                const auto same = std::find_if(gw.routes.begin(), gw.routes.end(),
                                               [&](const route& other) { return other.name == r->name; });
                if (same != gw.routes.end()) {
                    fail(item, "route name " + in_quotes(r->name) + " is already taken by the route at line " +
                                   std::to_string(same->where.line));
                    continue;
                }
            }
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
    if (const auto n = m->get("name")) {
        if (const auto text = scalar(*n, "a route name like admin")) {
            const bool ok = !text->empty() && text->size() <= 64 && std::all_of(text->begin(), text->end(), [](char c) {
                return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
            });
            if (!ok) {
                fail(*n, "expected a route name of 1 to 64 lower-case letters, digits, '-' and '_', got " +
                             in_quotes(*text));
            }
            r.name = *text;
        }
    }
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
    if (const auto a = m->get("allow")) {
        r.access.allow = network_list(*a);
    }
    if (const auto d = m->get("deny")) {
        r.access.deny = network_list(*d);
    }
    if (const auto b = m->get("basic_auth")) {
        r.access.auth = check_basic_auth(*b);
    }
    if (const auto c = m->get("compress")) {
        if (redirect) {
            fail(*c, "a redirect route has no body to compress");
        } else if (files) {
            fail(*c, "a static route serves its precompressed .br and .gz files (static.precompressed); compress "
                     "applies to pool routes");
        } else if (const auto on = boolean(*c)) {
            r.compress = *on;
        }
    }
    if (error_count_ != errors_before) {
        return std::nullopt;
    }
    return r;
}

// The users file is read now, like a certificate: a reload re-reads it, and
// the workers never open it (they may run as nobody). Its hashes are
// secrets of a kind: the file may not be readable by others nor writable by
// anyone but its owner, and its content never appears in a message.
std::optional<basic_auth> checker::check_basic_auth(const field& f) {
    const auto m = read_map(f, basic_auth_keys, "a map with realm and users (an htpasswd file)");
    if (!m) {
        return std::nullopt;
    }
    basic_auth out;
    if (const auto realm = required(*m, "realm", "a realm like \"Administration\"")) {
        if (const auto text = scalar(*realm, "a realm like \"Administration\"")) {
            const bool ok = !text->empty() && text->size() <= 100 &&
                            std::all_of(text->begin(), text->end(),
                                        [](char c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; });
            if (!ok) {
                fail(*realm, "expected a realm of 1 to 100 printable ASCII characters without '\"' or '\\', got " +
                                 in_quotes(*text));
            }
            out.realm = *text;
        }
    }
    const auto users = required(*m, "users", "an htpasswd file of bcrypt or yescrypt hashes");
    if (!users) {
        return std::nullopt;
    }
    const auto path = file_path(*users);
    if (!path) {
        return std::nullopt;
    }
    struct stat st {};
    if (::stat(path->c_str(), &st) != 0) {
        fail(*users, "cannot read the users file " + *path + ": " + std::strerror(errno));
        return std::nullopt;
    }
    if ((st.st_mode & 022) != 0 || (st.st_mode & 004) != 0) {
        fail(*users, "the users file " + *path +
                         " is readable by others or writable by group or others; run: chmod 640 " + *path);
        return std::nullopt;
    }
    std::ifstream in(*path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
        fail(*users, "cannot read the users file " + *path);
        return std::nullopt;
    }
    auto parsed = parse_htpasswd(text);
    if (const auto* e = std::get_if<htpasswd_error>(&parsed)) {
        fail_at(location{*path, e->line, e->column}, e->what + " (the users file of " + users->path + ")");
        return std::nullopt;
    }
    out.users_file = *path;
    out.users = std::move(std::get<std::vector<auth_user>>(parsed));
    return out;
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

// `hash: source`, `hash: uri`, `hash: { header: X-User }`, `hash: { cookie: session }`.
void checker::check_hash_key(const field& f, hash_key& out) {
    constexpr std::string_view expected = "source, uri, { header: NAME } or { cookie: NAME }";
    const auto token = [](const std::string& t) {
        return !t.empty() && t.size() <= 128 && std::all_of(t.begin(), t.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
                   std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
        });
    };
    if (f.node.IsScalar()) {
        const std::string& text = f.node.Scalar();
        if (text == "source") {
            out.what = hash_key::kind::source;
        } else if (text == "uri") {
            out.what = hash_key::kind::uri;
        } else {
            fail(f, "expected " + std::string(expected) + ", got " + in_quotes(text));
        }
        return;
    }
    constexpr std::array keys{"header"sv, "cookie"sv};
    const auto m = read_map(f, keys, expected);
    if (!m || m->entries.size() != 1) {
        if (m) {
            fail(f, "expected one of header or cookie");
        }
        return;
    }
    const auto& [key, value] = m->entries.front();
    const auto text = scalar(value, key == "header" ? "a header name" : "a cookie name");
    if (!text) {
        return;
    }
    if (!token(*text)) {
        fail(value, "expected a " + key + " name (letters, digits and !#$%&'*+-.^_`|~), got " + in_quotes(*text));
        return;
    }
    out.what = key == "header" ? hash_key::kind::header : hash_key::kind::cookie;
    out.name = *text;
    if (out.what == hash_key::kind::header) {
        std::transform(out.name.begin(), out.name.end(), out.name.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    }
}

std::optional<sticky> checker::check_sticky(const field& f) {
    const auto m = read_map(f, sticky_keys, "a map with cookie and ttl");
    if (!m) {
        return std::nullopt;
    }
    sticky out;
    if (const auto c = required(*m, "cookie", "a cookie name")) {
        if (const auto text = scalar(*c, "a cookie name")) {
            const bool ok =
                !text->empty() && text->size() <= 64 && std::all_of(text->begin(), text->end(), [](char ch) {
                    return std::isalnum(static_cast<unsigned char>(ch)) != 0 || ch == '_' || ch == '-';
                });
            if (!ok) {
                fail(*c, "expected a cookie name of letters, digits, '_' and '-', got " + in_quotes(*text));
                return std::nullopt;
            }
            out.cookie = *text;
        }
    } else {
        return std::nullopt;
    }
    if (const auto t = m->get("ttl")) {
        if (const auto text = scalar(*t, "a duration, or 0 for a session cookie")) {
            if (*text == "0") {
                out.ttl = duration{0};
            } else if (const auto d = duration_value(*t, std::chrono::seconds(1))) {
                out.ttl = *d;
            }
        }
    }
    return out;
}

void checker::check_pool(const std::string& name, const field& f, const snapshot& s, pool& out) {
    const auto m = read_map(f, pool_keys);
    if (!m) {
        return;
    }
    optional_value(*m, "balance", out.algorithm, [&](const field& b) { return one_of(b, balance_names); });
    if (const auto h = m->get("hash")) {
        if (!m->get("balance")) {
            out.algorithm = balance::hash; // a key says what the balancing is
        } else if (out.algorithm != balance::hash) {
            fail(*h, "a hash key needs balance: hash (or no balance at all)");
        }
        check_hash_key(*h, out.hash);
    }
    if (const auto b = m->get("hash_balance_factor")) {
        if (out.algorithm != balance::hash) {
            fail(*b, "hash_balance_factor applies to balance: hash");
        } else if (const auto text = scalar(*b, "0, or a factor from 1.0 to 10")) {
            double v = -1;
            const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
            if (ec != std::errc{} || end != text->data() + text->size() || !(v == 0 || (v >= 1.0 && v <= 10.0))) {
                fail(*b, "expected 0 (unbounded) or a factor from 1.0 to 10, got " + in_quotes(*text));
            } else {
                out.hash_balance_factor = v;
            }
        }
    }
    if (const auto st = m->get("sticky")) {
        out.sticky_cookie = check_sticky(*st);
    }
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

} // namespace rampart::config::detail
