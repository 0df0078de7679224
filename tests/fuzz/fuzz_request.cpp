// libFuzzer target: the request path of a gateway session, without sockets.
//
// The input is what a client sends on one connection, possibly several
// pipelined requests. Each request goes the way gateway/proxy/http1_connection.hpp takes it:
// Beast's buffer_body parser with the gateway's limits reads the header,
// validate_request() and rewrite_request() run on it, and the body is relayed
// piece by piece through one fixed buffer into a request_serializer, as the
// session's relay() does towards the backend. What the backend would receive
// is then parsed again by a fresh parser, and the harness traps when the
// normalised request breaks a rule the gateway promises its backends:
//   - it is exactly one complete message (nothing smuggled after it);
//   - same method and target, HTTP/1.1, the same body bytes;
//   - exactly the header rewrite_request() produced (nothing added later);
//   - it passes validate_request() again;
//   - the forwarding fields are the gateway's own, Forwarded is one
//     well-formed element, and no hop-by-hop field is left.
// Only what the network can produce is fed in; a trap is a bug in the
// gateway (or in this model of it), never an expected outcome.

#include "gateway/proxy/http_rules.hpp"

#include <boost/beast/http/serializer.hpp>

#include <array>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using namespace rampart::gateway;

// The gateway's defaults (config: limits.header_bytes, limits.header_count);
// the body limit is lower than the default 10 MiB, which no fuzz input reaches.
constexpr std::uint32_t header_limit = 16 * 1024;
constexpr std::uint64_t body_limit = 1024 * 1024;
constexpr unsigned max_fields = 100;
// rewrite_request() may add X-Forwarded-For, -Proto, -Host and Forwarded.
constexpr unsigned fields_added = 4;
// The session relays through a 64 KiB chunk; a small one makes bodies arrive
// in several pieces, as they do from a slow client.
constexpr std::size_t piece_size = 256;
// Pipelined requests handled per input, and parser/serializer steps per request:
// far above what a fuzz input needs, so hitting them means a stuck loop.
constexpr int max_requests = 16;
constexpr int max_steps = 1 << 16;

const client_info client{"203.0.113.7", true, {}};

using field_list = std::vector<std::pair<std::string, std::string>>;

std::string printable(std::string_view bytes) {
    std::string out;
    for (char c : bytes) {
        if (c == '\r') {
            out += "\\r";
        } else if (c == '\n') {
            out += "\\n\n";
        } else if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
            char hex[5];
            std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
            out += hex;
        } else {
            out += c;
        }
    }
    return out;
}

// Reports which promise broke and what the backend would have received, then
// aborts so that libFuzzer saves the input.
[[noreturn]] void violated(const char* what, std::string_view forwarded) {
    std::fprintf(stderr, "fuzz_request: invariant violated: %s\n--- forwarded to the backend ---\n%s\n---\n", what,
                 printable(forwarded).c_str());
    __builtin_trap();
}

void require(bool ok, const char* what, std::string_view forwarded) {
    if (!ok) {
        violated(what, forwarded);
    }
}

field_list fields_of(const http::fields& f) {
    field_list out;
    for (const auto& x : f) {
        out.emplace_back(x.name_string(), x.value());
    }
    return out;
}

bool is_tchar(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// The parameters of a Forwarded value (RFC 7239 section 4) that must hold
// exactly one element: name=token or name="quoted-string", separated by ';'.
// nullopt when it is not one well-formed element.
std::optional<field_list> forwarded_pairs(std::string_view v) {
    field_list out;
    std::size_t i = 0;
    for (;;) {
        const std::size_t name_start = i;
        while (i < v.size() && is_tchar(v[i])) {
            ++i;
        }
        if (i == name_start || i == v.size() || v[i] != '=') {
            return std::nullopt;
        }
        std::string name(v.substr(name_start, i - name_start));
        ++i;
        std::string value;
        if (i < v.size() && v[i] == '"') {
            ++i;
            for (;;) {
                if (i == v.size()) {
                    return std::nullopt;
                }
                const char c = v[i++];
                if (c == '"') {
                    break;
                }
                if (c == '\\') {
                    if (i == v.size()) {
                        return std::nullopt;
                    }
                    value += v[i++];
                } else {
                    value += c;
                }
            }
        } else {
            const std::size_t value_start = i;
            while (i < v.size() && is_tchar(v[i])) {
                ++i;
            }
            if (i == value_start) {
                return std::nullopt;
            }
            value = v.substr(value_start, i - value_start);
        }
        out.emplace_back(std::move(name), std::move(value));
        if (i == v.size()) {
            return out;
        }
        if (v[i] != ';') {
            return std::nullopt; // ',' starts a second element; anything else is malformed
        }
        ++i;
    }
}

// Appends what the serializer has ready to `out`, as http::async_write does:
// until the message is complete or the body needs its next piece.
void write_ready(http::request_serializer<http::buffer_body>& sr, std::string& out) {
    for (int step = 0; !sr.is_done(); ++step) {
        require(step < max_steps, "the serializer makes no progress", out);
        error_code ec;
        sr.next(ec, [&](error_code&, const auto& buffers) {
            for (auto b : beast::buffers_range_ref(buffers)) {
                out.append(static_cast<const char*>(b.data()), b.size());
            }
            sr.consume(beast::buffer_bytes(buffers));
        });
        if (ec == http::error::need_buffer) {
            return;
        }
        require(!ec, "the serializer fails", out);
    }
}

// Feeds the parser from in[pos...] until the body piece is full or the
// message is complete, as http::async_read does on the session's parser.
// The input ending before the message does is the client closing: false, as
// is any parse error (the gateway answers 400 or 413 and closes).
bool read_piece(request_parser& p, std::string_view in, std::size_t& pos) {
    for (int step = 0; step < max_steps; ++step) {
        error_code ec;
        const std::size_t n = p.put(net::buffer(in.data() + pos, in.size() - pos), ec);
        pos += n;
        if (ec == http::error::need_buffer || (!ec && p.is_done())) {
            return true;
        }
        if (ec == http::error::need_more || (!ec && n == 0)) {
            if (n > 0) {
                continue;
            }
            p.put_eof(ec);
            return !ec && p.is_done();
        }
        if (ec) {
            return false;
        }
    }
    violated("the parser makes no progress", {});
}

// Parses what the backend receives and checks it against what the gateway
// meant to send.
void check_forwarded(std::string_view out, const http::request_header<>& sent, const field_list& sent_fields,
                     std::string_view body) {
    http::request_parser<http::string_body> p;
    p.header_limit(std::numeric_limits<std::uint32_t>::max());
    p.body_limit(boost::none);
    p.eager(true);
    std::size_t pos = 0;
    for (int step = 0; step < max_steps && !p.is_done(); ++step) {
        error_code ec;
        const std::size_t n = p.put(net::buffer(out.data() + pos, out.size() - pos), ec);
        pos += n;
        if (ec == http::error::need_more && n > 0) {
            continue;
        }
        require(!ec, "the forwarded request does not parse", out);
        require(n > 0 || p.is_done(), "the forwarded request is incomplete", out);
    }
    require(p.is_done(), "the forwarded request is incomplete", out);
    require(pos == out.size(), "bytes follow the forwarded request (a second, smuggled message)", out);

    auto& req = p.get();
    require(req.method() == sent.method() && req.method_string() == sent.method_string(), "method changed", out);
    require(req.target() == sent.target(), "target changed", out);
    require(req.version() == 11, "not forwarded as HTTP/1.1", out);
    require(req.body() == body, "body bytes changed", out);
    require(fields_of(req) == sent_fields, "header differs from the one rewrite_request() produced", out);

    http::request_header<>& h = req.base();
    require(!validate_request(h, max_fields + fields_added), "the forwarded request fails validate_request()", out);

    require(req.count("X-Forwarded-For") == 1 && req["X-Forwarded-For"] == client.address,
            "X-Forwarded-For is not the client's address alone", out);
    require(req.count("X-Forwarded-Proto") == 1 && req["X-Forwarded-Proto"] == "https",
            "X-Forwarded-Proto is not the gateway's", out);
    require(req.count("X-Real-IP") == 0, "client-supplied X-Real-IP forwarded", out);
    require(req.count(http::field::forwarded) == 1, "not exactly one Forwarded field", out);
    const auto pairs = forwarded_pairs(req[http::field::forwarded]);
    require(pairs.has_value(), "Forwarded is not one well-formed element", out);
    unsigned fors = 0;
    for (const auto& [name, value] : *pairs) {
        if (iequals(name, "for")) {
            ++fors;
            require(value == client.address, "Forwarded names another client", out);
        }
    }
    require(fors == 1, "Forwarded does not name the client exactly once", out);
    for (auto name : {http::field::connection, http::field::keep_alive, http::field::proxy_connection, http::field::te,
                      http::field::trailer, http::field::upgrade, http::field::proxy_authorization,
                      http::field::proxy_authenticate, http::field::expect}) {
        require(req.count(name) == 0, "a hop-by-hop field is forwarded", out);
    }
}

// Takes one request from in[pos...] through the session's steps. Returns
// whether the connection would carry on with the next pipelined request.
bool forward_one(std::string_view in, std::size_t& pos) {
    request_parser p;
    p.header_limit(header_limit);
    p.body_limit(body_limit);
    error_code ec;
    const std::size_t header_bytes = p.put(net::buffer(in.data() + pos, in.size() - pos), ec);
    if (ec || !p.is_header_done()) {
        return false; // incomplete (the client closed) or refused by the parser: 400/431
    }
    const std::string_view raw_header = in.substr(pos, header_bytes);
    pos += header_bytes;

    // check_raw_header(): the checks on the header bytes as received, before
    // validate_request() (http1_connection.hpp, read_request_header()).
    if (check_raw_header(raw_header)) {
        return false;
    }

    auto& req = p.get();
    http::request_header<>& h = req.base();
    if (validate_request(h, max_fields)) {
        return false; // the gateway answers 4xx and closes
    }
    const bool keep_alive = req.keep_alive();
    rewrite_request(h, client, "www.foobar.com");
    const field_snapshot header_fields = snapshot_fields(h);
    const http::request_header<> sent = h;
    const field_list sent_fields = fields_of(h);

    // exchange.cpp relay_response(): read a piece, hand it to the serializer, write
    // what is ready; the header goes out with the first piece.
    std::array<char, piece_size> chunk{};
    std::string body;
    std::string out;
    auto& piece = req.body();
    http::request_serializer<http::buffer_body> sr{req};
    p.eager(true);
    int steps = 0;
    do {
        require(++steps < max_steps, "the relay makes no progress", out);
        if (!p.is_done()) {
            piece.data = chunk.data();
            piece.size = chunk.size();
            if (!read_piece(p, in, pos)) {
                return false; // body too large, malformed or cut short: 400/413 and close
            }
            piece.size = chunk.size() - piece.size;
            piece.data = piece.size != 0 ? chunk.data() : nullptr;
            piece.more = !p.is_done();
            drop_trailers(h, header_fields);
            body.append(chunk.data(), piece.size);
        } else {
            piece.data = nullptr;
            piece.size = 0;
            piece.more = false;
        }
        write_ready(sr, out);
    } while (!p.is_done() || !sr.is_done());

    check_forwarded(out, sent, sent_fields, body);
    return keep_alive;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    std::size_t pos = 0;
    for (int i = 0; i < max_requests && pos < in.size(); ++i) {
        if (!forward_one(in, pos)) {
            break;
        }
    }
    return 0;
}
