#include "gateway/control/acme.hpp"

#include "certs/acme.hpp"
#include "gateway/log.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
// Boost.JSON compiled here, its only user (header-only mode).
#include <boost/json/src.hpp>

#include <openssl/ssl.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <stdexcept>

// g++ 12 reports a false -Wmismatched-new-delete here: Asio's coroutine
// frames are allocated and freed by awaitable_frame_base's own operator
// new/delete pair, which its inliner loses sight of in the larger coroutines.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace rampart::gateway {

namespace acme = certs::acme;
namespace json = boost::json;

namespace {

using clock = std::chrono::system_clock;

constexpr std::size_t max_body = 1024 * 1024;
constexpr std::uint32_t max_header = 16 * 1024;
constexpr auto request_deadline = std::chrono::seconds(30);
/// Polls of an authorization or an order: bounded in count and in time.
constexpr int max_polls = 60;
constexpr auto max_poll_time = std::chrono::minutes(5);
/// A request refused for its nonce (badNonce) is sent again with the fresh
/// nonce of the refusal, this many times at most.
constexpr int max_nonce_tries = 10;
/// The placeholder's validity: short, it is replaced as soon as an order succeeds.
constexpr long placeholder_days = 7;

struct acme_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::int64_t unix_seconds(clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

/// https://host[:port]/path, the only URLs an ACME client follows.
struct url_parts {
    std::string host;
    std::string port = "443";
    std::string target = "/";
};

url_parts parse_url(const std::string& url) {
    static constexpr std::string_view scheme = "https://";
    if (!url.starts_with(scheme) || url.size() > 2048) {
        throw acme_error("not an https URL: " + url.substr(0, 200));
    }
    const std::string rest = url.substr(scheme.size());
    const auto slash = rest.find('/');
    std::string authority = rest.substr(0, slash);
    url_parts u;
    if (slash != std::string::npos) {
        u.target = rest.substr(slash);
    }
    if (authority.find('@') != std::string::npos || authority.empty()) {
        throw acme_error("unusable URL authority: " + url.substr(0, 200));
    }
    if (authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string::npos) {
            throw acme_error("unusable URL authority: " + url.substr(0, 200));
        }
        u.host = authority.substr(1, close - 1);
        if (close + 1 < authority.size() && authority[close + 1] == ':') {
            u.port = authority.substr(close + 2);
        }
    } else if (const auto colon = authority.rfind(':'); colon != std::string::npos) {
        u.host = authority.substr(0, colon);
        u.port = authority.substr(colon + 1);
    } else {
        u.host = authority;
    }
    if (u.host.empty() || u.port.empty() || u.port.size() > 5 ||
        !std::all_of(u.port.begin(), u.port.end(), [](unsigned char c) { return std::isdigit(c) != 0; })) {
        throw acme_error("unusable URL authority: " + url.substr(0, 200));
    }
    return u;
}

struct reply {
    unsigned status = 0;
    std::string location;
    std::string nonce;
    std::string content_type;
    std::string retry_after;
    std::string body;
};

/// The body as a JSON object; throws naming `what` when it is none.
json::object object_of(const reply& r, const std::string& what) {
    error_code ec;
    json::value v = json::parse(r.body, ec);
    if (ec || !v.is_object()) {
        throw acme_error(what + ": the server's answer is not a JSON object (HTTP " + std::to_string(r.status) + ")");
    }
    return std::move(v.as_object());
}

std::string string_of(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
}

/// "HTTP 403 urn:ietf:params:acme:error:unauthorized: detail" from a
/// problem document (RFC 7807), or the status alone.
std::string problem_of(const reply& r) {
    std::string out = "HTTP " + std::to_string(r.status);
    error_code ec;
    json::value v = json::parse(r.body, ec);
    if (!ec && v.is_object()) {
        const auto& o = v.as_object();
        const std::string type = string_of(o, "type");
        const std::string detail = string_of(o, "detail");
        if (!type.empty()) {
            out += " " + type.substr(0, 200);
        }
        if (!detail.empty()) {
            out += ": " + detail.substr(0, 400);
        }
        for (char& c : out) {
            c = static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? '?' : c; // one log line
        }
    }
    return out;
}

bool is_bad_nonce(const reply& r) {
    if (r.status != 400) {
        return false;
    }
    error_code ec;
    json::value v = json::parse(r.body, ec);
    return !ec && v.is_object() && string_of(v.as_object(), "type") == "urn:ietf:params:acme:error:badNonce";
}

/// Retry-After in seconds (RFC 9110: delay-seconds; an HTTP date counts as
/// the default), clamped to [1, 30].
std::chrono::seconds retry_after_of(const reply& r, std::chrono::seconds fallback) {
    if (!r.retry_after.empty() &&
        std::all_of(r.retry_after.begin(), r.retry_after.end(), [](unsigned char c) { return std::isdigit(c) != 0; }) &&
        r.retry_after.size() < 6) {
        return std::chrono::seconds(std::clamp(std::stoi(r.retry_after), 1, 30));
    }
    return fallback;
}

std::string file_name_of(const std::string& path) {
    const auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

} // namespace

namespace {

/// What a certificate must be before it replaces one in service: for every
/// configured name, for `key`, each certificate signed by the next one, and
/// in date (not before now + 5 minutes of clock skew, not expired).
void check_chain(const std::string& chain, const acme::private_key& key, const std::vector<std::string>& names,
                 const std::string& what) {
    const acme::chain_facts facts = acme::inspect_chain(chain);
    for (const auto& n : names) {
        if (std::find(facts.names.begin(), facts.names.end(), n) == facts.names.end()) {
            throw acme_error(what + " does not name " + n);
        }
    }
    if (!acme::key_matches(chain, key)) {
        throw acme_error(what + " is not for its key");
    }
    if (!acme::chain_links(chain)) {
        throw acme_error(what + "'s chain does not verify (each certificate signed by the next)");
    }
    const auto now = clock::now();
    if (facts.not_before > now + std::chrono::minutes(5) || facts.not_after <= now) {
        throw acme_error(what + " is not valid now (not before " + std::to_string(unix_seconds(facts.not_before)) +
                         ", not after " + std::to_string(unix_seconds(facts.not_after)) + ")");
    }
}

/// Text from outside (an ACME server's problem detail, an issuer's name)
/// fit for one log line: control characters become '?', at most 400 bytes.
std::string printable(std::string_view text) {
    std::string out(text.substr(0, 400));
    for (char& c : out) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
            c = '?';
        }
    }
    return out;
}

} // namespace

// -------------------------------------------------------------------- session

/// One attempt's protocol state: the verified HTTPS client, the directory,
/// the account and the current nonce.
struct acme_manager::session {
    session(net::io_context& io, const config::acme& s, shared_block& block)
        : io_(io), settings_(s), block_(block), tls_(net::ssl::context::tls_client) {
        tls_.set_verify_mode(net::ssl::verify_peer);
        SSL_CTX_set_min_proto_version(tls_.native_handle(), TLS1_2_VERSION);
        if (!s.ca_file.empty()) {
            error_code ec;
            tls_.load_verify_file(s.ca_file, ec);
            if (ec) {
                throw acme_error("cannot read acme.ca_file " + s.ca_file + ": " + ec.message());
            }
        } else {
            tls_.set_default_verify_paths();
        }
    }

    net::io_context& io_;
    const config::acme& settings_;
    shared_block& block_;
    net::ssl::context tls_;
    std::string new_nonce_url_;
    std::string new_account_url_;
    std::string new_order_url_;
    std::optional<acme::private_key> account_;
    std::string kid_;
    std::string nonce_;
    std::vector<std::pair<std::string, std::string>> http_answers_;
    std::vector<acme_alpn_source> alpn_answers_;

    ~session() {
        // Nothing published outlives the attempt that needed it.
        if (!http_answers_.empty() || !alpn_answers_.empty()) {
            publish_acme_answers(block_.acme, {}, {});
        }
    }

    // ------------------------------------------------------------ HTTPS

    /// One request on a connection of its own, under request_deadline.
    net::awaitable<reply> request(http::verb verb, std::string url, std::string body, std::string accept) {
        const url_parts u = parse_url(url);
        // What the deadline's handler touches is shared with it: a handler
        // already queued when the request ends still finds it alive.
        struct connection {
            connection(net::io_context& io, net::ssl::context& tls) : stream(io, tls), resolver(io) {}
            net::ssl::stream<tcp::socket> stream;
            tcp::resolver resolver;
            bool expired = false;
        };
        auto conn = std::make_shared<connection>(io_, tls_);
        auto& stream = conn->stream;
        net::steady_timer deadline(io_);
        deadline.expires_after(request_deadline);
        deadline.async_wait([conn](const error_code& ec) {
            if (!ec) {
                conn->expired = true;
                conn->resolver.cancel();
                error_code ignored;
                conn->stream.lowest_layer().close(ignored);
            }
        });
        struct cancel_on_exit {
            net::steady_timer& t;
            ~cancel_on_exit() { t.cancel(); }
        } cancel{deadline};
        const bool& expired = conn->expired;

        auto [rec, endpoints] = co_await conn->resolver.async_resolve(u.host, u.port, use_tuple);
        if (rec || expired) {
            throw acme_error("cannot resolve " + u.host + ": " + (expired ? std::string("timed out") : rec.message()));
        }
        auto [cec, connected] = co_await net::async_connect(stream.lowest_layer(), endpoints, use_tuple);
        if (cec || expired) {
            throw acme_error("cannot connect to " + u.host + ":" + u.port + ": " +
                             (expired ? std::string("timed out") : cec.message()));
        }
        // SNI for a name (not for an address), and the certificate must be
        // for the host the URL names.
        boost::system::error_code addr_ec;
        net::ip::make_address(u.host, addr_ec);
        if (addr_ec && SSL_set_tlsext_host_name(stream.native_handle(), u.host.c_str()) != 1) {
            throw acme_error("cannot set SNI " + u.host);
        }
        stream.set_verify_callback(net::ssl::host_name_verification(u.host));
        auto [hec] = co_await stream.async_handshake(net::ssl::stream_base::client, use_tuple);
        if (hec || expired) {
            throw acme_error("TLS with " + u.host + ":" + u.port +
                             " failed: " + (expired ? std::string("timed out") : hec.message()));
        }
        http::request<http::string_body> req(verb, u.target, 11);
        req.set(http::field::host, u.port == "443" ? u.host : u.host + ":" + u.port);
        req.set(http::field::user_agent, "rampart-acme/1");
        req.set(http::field::connection, "close");
        if (!accept.empty()) {
            req.set(http::field::accept, accept);
        }
        if (verb == http::verb::post) {
            req.set(http::field::content_type, "application/jose+json");
            req.body() = std::move(body);
            req.prepare_payload();
        }
        auto [wec, wn] = co_await http::async_write(stream, req, use_tuple);
        if (wec || expired) {
            throw acme_error("sending to " + u.host +
                             " failed: " + (expired ? std::string("timed out") : wec.message()));
        }
        beast::flat_buffer buffer;
        http::response_parser<http::string_body> parser;
        parser.header_limit(max_header);
        parser.body_limit(max_body);
        parser.skip(verb == http::verb::head); // a HEAD's Content-Length announces no body
        auto [rdec, rn] = co_await http::async_read(stream, buffer, parser, use_tuple);
        if (expired || (rdec && !(rdec == http::error::end_of_stream && parser.is_done()))) {
            throw acme_error("reading the answer of " + u.host + " failed: " +
                             (expired                             ? std::string("timed out")
                              : rdec == http::error::body_limit   ? std::string("larger than 1 MiB")
                              : rdec == http::error::header_limit ? std::string("header larger than 16 KiB")
                                                                  : rdec.message()));
        }
        error_code ignored;
        stream.lowest_layer().close(ignored);
        auto& res = parser.get();
        reply r;
        r.status = res.result_int();
        r.location = std::string(res[http::field::location]);
        r.nonce = std::string(res["Replay-Nonce"]);
        r.content_type = std::string(res[http::field::content_type]);
        r.retry_after = std::string(res[http::field::retry_after]);
        r.body = std::move(res.body());
        if (r.status >= 300 && r.status < 400) {
            throw acme_error("unexpected redirect (HTTP " + std::to_string(r.status) + ") from " + url.substr(0, 200) +
                             " to " + r.location.substr(0, 200));
        }
        // A nonce is a base64url token (RFC 8555 section 6.5.1).
        if (!r.nonce.empty() &&
            (r.nonce.size() > 256 || !std::all_of(r.nonce.begin(), r.nonce.end(), [](unsigned char c) {
                 return std::isalnum(c) != 0 || c == '-' || c == '_';
             }))) {
            r.nonce.clear();
        }
        co_return r;
    }

    /// A JWS POST (an empty payload: POST-as-GET), with badNonce retried.
    net::awaitable<reply> post(std::string url, std::string payload, std::string accept = "") {
        for (int attempt = 0; attempt < max_nonce_tries; ++attempt) {
            if (nonce_.empty()) {
                reply n = co_await request(http::verb::head, new_nonce_url_, "", "");
                if (n.nonce.empty()) {
                    throw acme_error("newNonce gave no Replay-Nonce (HTTP " + std::to_string(n.status) + ")");
                }
                nonce_ = n.nonce;
            }
            std::string body = acme::sign_request(*account_, kid_, nonce_, url, payload);
            nonce_.clear();
            reply r = co_await request(http::verb::post, url, std::move(body), accept);
            nonce_ = r.nonce;
            if (is_bad_nonce(r)) {
                continue; // the answer carried a fresh nonce
            }
            co_return r;
        }
        throw acme_error("the server refused " + std::to_string(max_nonce_tries) + " nonces in a row (badNonce)");
    }

    // ------------------------------------------------------------ protocol

    net::awaitable<void> load_directory() {
        reply r = co_await request(http::verb::get, settings_.directory, "", "application/json");
        if (r.status != 200) {
            throw acme_error("directory " + settings_.directory + ": " + problem_of(r));
        }
        const json::object d = object_of(r, "directory " + settings_.directory);
        new_nonce_url_ = string_of(d, "newNonce");
        new_account_url_ = string_of(d, "newAccount");
        new_order_url_ = string_of(d, "newOrder");
        if (new_nonce_url_.empty() || new_account_url_.empty() || new_order_url_.empty()) {
            throw acme_error("directory " + settings_.directory + " lacks newNonce, newAccount or newOrder");
        }
        for (const auto* u : {&new_nonce_url_, &new_account_url_, &new_order_url_}) {
            parse_url(*u);
        }
    }

    /// The account key from the state directory (made on first use), and
    /// the account's URL (registered on first use, found again otherwise).
    net::awaitable<void> load_account() {
        const std::string key_file = settings_.state_dir + "/account.key";
        std::string pem;
        if (acme::read_file(key_file, pem)) {
            certs::check_key_permissions(key_file); // not readable by group or others
            account_ = acme::private_key::from_pem(pem, key_file);
            OPENSSL_cleanse(pem.data(), pem.size());
        } else {
            account_ = acme::private_key::generate(acme::key_type::ecdsa);
            std::string out = account_->to_pem();
            acme::write_file_atomic(key_file, out, 0600);
            OPENSSL_cleanse(out.data(), out.size());
            log(log_level::info, "acme: made account key " + key_file);
        }
        json::object payload;
        payload["termsOfServiceAgreed"] = true;
        if (!settings_.email.empty()) {
            payload["contact"] = json::array{json::value("mailto:" + settings_.email)};
        }
        reply r = co_await post(new_account_url_, json::serialize(payload));
        if ((r.status != 200 && r.status != 201) || r.location.empty()) {
            throw acme_error("newAccount: " + problem_of(r));
        }
        parse_url(r.location);
        kid_ = r.location;
        if (r.status == 201) {
            log(log_level::info, "acme: registered account " + kid_);
        }
    }

    /// POST-as-GET of `url` until its status leaves `waiting` (pending,
    /// processing, ready while waiting for the certificate), bounded.
    net::awaitable<json::object> poll(std::string url, std::string what, std::vector<std::string> waiting) {
        const auto until = std::chrono::steady_clock::now() + max_poll_time;
        for (int i = 0; i < max_polls && std::chrono::steady_clock::now() < until; ++i) {
            reply r = co_await post(url, "");
            if (r.status != 200) {
                throw acme_error(what + ": " + problem_of(r));
            }
            json::object o = object_of(r, what);
            const std::string status = string_of(o, "status");
            if (std::find(waiting.begin(), waiting.end(), status) == waiting.end()) {
                co_return o;
            }
            net::steady_timer t(io_);
            t.expires_after(retry_after_of(r, std::chrono::seconds(1)));
            co_await t.async_wait(use_tuple);
        }
        throw acme_error(what + ": still not done after " + std::to_string(max_polls) + " polls");
    }

    void publish() {
        if (!publish_acme_answers(block_.acme, http_answers_, alpn_answers_)) {
            throw acme_error("too many or too large challenge answers to publish");
        }
    }

    /// One authorization: answered and validated, or already valid.
    net::awaitable<void> authorize(std::string url) {
        reply r = co_await post(url, "");
        if (r.status != 200) {
            throw acme_error("authorization " + url + ": " + problem_of(r));
        }
        const json::object authz = object_of(r, "authorization");
        const std::string status = string_of(authz, "status");
        std::string name;
        if (const auto* id = authz.if_contains("identifier"); id != nullptr && id->is_object()) {
            name = string_of(id->as_object(), "value");
        }
        if (status == "valid") {
            co_return;
        }
        if (status != "pending") {
            throw acme_error("authorization for " + name + " is " + status.substr(0, 40));
        }
        if (std::find(settings_.names.begin(), settings_.names.end(), name) == settings_.names.end()) {
            throw acme_error("the server asks to authorize " + name.substr(0, 100) + ", a name not configured");
        }
        std::string challenge_url;
        std::string token;
        if (const auto* list = authz.if_contains("challenges"); list != nullptr && list->is_array()) {
            for (const auto& c : list->as_array()) {
                if (c.is_object() && string_of(c.as_object(), "type") == settings_.challenge) {
                    challenge_url = string_of(c.as_object(), "url");
                    token = string_of(c.as_object(), "token");
                }
            }
        }
        if (challenge_url.empty()) {
            throw acme_error("the server offers no " + settings_.challenge + " challenge for " + name);
        }
        parse_url(challenge_url);
        if (!acme::valid_token(token)) {
            throw acme_error("refused a challenge token that is not plain base64url (" + std::to_string(token.size()) +
                             " bytes) for " + name);
        }
        const std::string key_authorization = acme::key_authorization(token, *account_);
        if (settings_.challenge == "http-01") {
            http_answers_.emplace_back(token, key_authorization);
        } else {
            auto cert = acme::make_alpn_certificate(name, key_authorization);
            alpn_answers_.push_back(acme_alpn_source{name, std::move(cert.cert_der), std::move(cert.key_der)});
        }
        publish();
        reply c = co_await post(challenge_url, "{}");
        if (c.status != 200) {
            throw acme_error(settings_.challenge + " for " + name + ": " + problem_of(c));
        }
        std::vector<std::string> waiting{"pending"};
        std::string what = "authorization for " + name;
        json::object done = co_await poll(url, std::move(what), std::move(waiting));
        // Validated or not, this answer is not needed any more: one answer
        // is published at a time, however many names the order has.
        http_answers_.clear();
        alpn_answers_.clear();
        publish();
        const std::string final_status = string_of(done, "status");
        if (final_status != "valid") {
            std::string why;
            if (const auto* list = done.if_contains("challenges"); list != nullptr && list->is_array()) {
                for (const auto& ch : list->as_array()) {
                    if (ch.is_object()) {
                        if (const auto* e = ch.as_object().if_contains("error"); e != nullptr && e->is_object()) {
                            why = string_of(e->as_object(), "detail").substr(0, 400);
                        }
                    }
                }
            }
            throw acme_error(settings_.challenge + " for " + name + " failed (" + final_status.substr(0, 40) + ")" +
                             (why.empty() ? "" : ": " + why));
        }
        log(log_level::info, "acme: " + name + " validated (" + settings_.challenge + ")");
    }

    /// A whole order for `type`: the chain and its key as one PEM text.
    net::awaitable<std::string> order(acme::key_type type) {
        json::array identifiers;
        for (const auto& n : settings_.names) {
            identifiers.push_back(json::object{{"type", "dns"}, {"value", n}});
        }
        json::object payload;
        payload["identifiers"] = std::move(identifiers);
        reply r = co_await post(new_order_url_, json::serialize(payload));
        if (r.status != 201 || r.location.empty()) {
            throw acme_error("newOrder: " + problem_of(r));
        }
        const std::string order_url = r.location;
        parse_url(order_url);
        json::object o = object_of(r, "order");
        const std::string finalize_url = string_of(o, "finalize");
        parse_url(finalize_url);
        if (const auto* list = o.if_contains("authorizations"); list != nullptr && list->is_array()) {
            if (list->as_array().size() > settings_.names.size()) {
                throw acme_error("the order holds more authorizations than names");
            }
            for (const auto& a : list->as_array()) {
                if (!a.is_string()) {
                    throw acme_error("an authorization URL is not a string");
                }
                parse_url(std::string(a.as_string()));
                co_await authorize(std::string(a.as_string()));
            }
        }
        std::vector<std::string> pending{"pending"};
        o = co_await poll(order_url, "order", std::move(pending));
        if (string_of(o, "status") != "ready") {
            throw acme_error("order is " + string_of(o, "status").substr(0, 40) + ", not ready");
        }
        acme::private_key key = acme::private_key::generate(type);
        json::object csr;
        csr["csr"] = acme::base64url(acme::make_csr(key, settings_.names));
        reply f = co_await post(finalize_url, json::serialize(csr));
        if (f.status != 200) {
            throw acme_error("finalize: " + problem_of(f));
        }
        std::vector<std::string> issuing{"ready", "processing"};
        o = co_await poll(order_url, "order", std::move(issuing));
        const std::string certificate_url = string_of(o, "certificate");
        if (string_of(o, "status") != "valid" || certificate_url.empty()) {
            throw acme_error("order is " + string_of(o, "status").substr(0, 40) + " after finalize");
        }
        parse_url(certificate_url);
        reply c = co_await post(certificate_url, "", "application/pem-certificate-chain");
        if (c.status != 200) {
            throw acme_error("certificate download: " + problem_of(c));
        }
        // Only the certificates go back to disk, re-encoded: nothing else
        // the server sent ends up in the key's file.
        const std::string chain = acme::normalise_chain(c.body);
        check_chain(chain, key, settings_.names, "the issued certificate");
        std::string key_pem = key.to_pem();
        std::string pem;
        pem.reserve(key_pem.size() + chain.size());
        pem += key_pem;
        pem += chain;
        OPENSSL_cleanse(key_pem.data(), key_pem.size());
        co_return pem;
    }
};

// -------------------------------------------------------------------- manager

acme_manager::acme_manager(net::io_context& io, shared_block& block,
                           std::function<std::pair<bool, std::string>(const std::string&)> reload,
                           std::function<bool()> may_order)
    : io_(io), block_(block), reload_(std::move(reload)), may_order_(std::move(may_order)), wake_(io) {}

acme_manager::~acme_manager() = default;

void acme_manager::prepare(const config::acme& settings) {
    struct stat st {};
    if (::stat(settings.state_dir.c_str(), &st) != 0) {
        if (errno != ENOENT || ::mkdir(settings.state_dir.c_str(), 0700) != 0) {
            throw std::runtime_error("acme: cannot make the state directory " + settings.state_dir + ": " +
                                     std::strerror(errno));
        }
    } else if (!S_ISDIR(st.st_mode)) {
        throw std::runtime_error("acme: " + settings.state_dir + " is not a directory");
    } else if (st.st_uid != ::geteuid()) {
        throw std::runtime_error("acme: " + settings.state_dir + " belongs to uid " + std::to_string(st.st_uid) +
                                 ", not to the gateway's (" + std::to_string(::geteuid()) + ")");
    } else if ((st.st_mode & 077) != 0 && ::chmod(settings.state_dir.c_str(), 0700) != 0) {
        throw std::runtime_error("acme: cannot restrict " + settings.state_dir +
                                 " to its owner: " + std::strerror(errno));
    }
    for (const auto& type_name : settings.key_types) {
        const std::string file = settings.file_of(type_name);
        if (::stat(file.c_str(), &st) == 0) {
            continue;
        }
        const auto type = type_name == "rsa" ? acme::key_type::rsa : acme::key_type::ecdsa;
        const auto key = acme::private_key::generate(type);
        std::string pem = key.to_pem();
        pem.reserve(pem.size() + 4096);
        pem += acme::make_placeholder(key, settings.names, placeholder_days);
        acme::write_file_atomic(file, pem, 0600);
        OPENSSL_cleanse(pem.data(), pem.size());
        log(log_level::info, "acme: " + file + " holds a self-signed placeholder until the first " + type_name +
                                 " certificate is issued");
    }
}

void acme_manager::configure(const config::snapshot_ptr& cfg, std::optional<acme_pair_link> pair) {
    if (pair_) {
        OPENSSL_cleanse(pair_->key.data(), pair_->key.size());
    }
    pair_ = std::move(pair);
    const auto& next = cfg ? cfg->gw.tls_settings.acme_settings : std::nullopt;
    std::vector<acme_certificate_status> status;
    if (next) {
        for (const auto& type : next->key_types) {
            acme_certificate_status s;
            s.key_type = type;
            s.file = next->file_of(type);
            // What an earlier configuration learnt of the same file stays.
            for (const auto& old : status_) {
                if (old.file == s.file) {
                    s = old;
                }
            }
            status.push_back(std::move(s));
        }
    }
    settings_ = next;
    status_ = std::move(status);
    for (std::size_t i = 0; i < status_.size(); ++i) {
        refresh_status(i);
    }
    wake();
}

void acme_manager::wake() {
    wake_.cancel();
}

/// What the file holds now, and when to order next: now for a placeholder,
/// a chain that misses a configured name, or one within renew_before of
/// its end; else renew_before before its end (unless a failure set a later
/// time).
void acme_manager::refresh_status(std::size_t index) {
    auto& s = status_[index];
    std::string pem;
    try {
        if (!acme::read_file(s.file, pem)) {
            s.placeholder = true;
            s.not_after = 0;
            return;
        }
        const auto facts = acme::inspect_chain(pem);
        OPENSSL_cleanse(pem.data(), pem.size());
        s.issuer = printable(facts.issuer);
        s.serial = facts.serial;
        s.not_after = unix_seconds(facts.not_after);
        s.placeholder = facts.issuer == "Rampart placeholder";
        bool covers = true;
        for (const auto& n : settings_->names) {
            covers = covers && std::find(facts.names.begin(), facts.names.end(), n) != facts.names.end();
        }
        // renew_before, or a third of the lifetime when that is shorter (a
        // CA of 24-hour certificates must not be asked for one in a loop).
        const auto lifetime = facts.not_after - facts.not_before;
        const auto before = std::min<clock::duration>(
            std::chrono::duration_cast<clock::duration>(settings_->renew_before), lifetime / 3);
        const auto renew_at = facts.not_after - before;
        const std::int64_t due = s.placeholder || !covers ? 0 : unix_seconds(renew_at);
        if (s.consecutive_failures == 0 || due > s.next_attempt) {
            s.next_attempt = due;
        }
    } catch (const std::exception& e) {
        OPENSSL_cleanse(pem.data(), pem.size());
        s.last_error = e.what();
        s.next_attempt = 0;
    }
}

net::awaitable<void> acme_manager::attempt(std::size_t index) {
    const config::acme settings = *settings_;
    const std::string type_name = status_[index].key_type;
    const std::string file = status_[index].file;
    std::string error;
    try {
        session s(io_, settings, block_);
        co_await s.load_directory();
        co_await s.load_account();
        std::string pem = co_await s.order(type_name == "rsa" ? acme::key_type::rsa : acme::key_type::ecdsa);
        acme::write_file_atomic(file, pem, 0600);
        OPENSSL_cleanse(pem.data(), pem.size());
    } catch (const std::exception& e) {
        error = printable(e.what());
    }
    // The configuration may have changed while the order ran.
    if (index >= status_.size() || status_[index].file != file) {
        co_return;
    }
    auto& st = status_[index];
    if (!error.empty()) {
        ++st.consecutive_failures;
        ++st.failures_total;
        st.last_error = error;
        // retry_min doubled per failure, capped, then 75..100 % of it: a
        // fleet that failed together does not retry together.
        const auto base = std::chrono::duration_cast<std::chrono::milliseconds>(settings.retry_min);
        std::chrono::milliseconds wait =
            base * (std::int64_t{1} << std::min<std::uint64_t>(st.consecutive_failures - 1, 20));
        wait = std::min(wait, std::chrono::duration_cast<std::chrono::milliseconds>(settings.retry_max));
        static std::minstd_rand jitter{std::random_device{}()};
        wait = wait * (750 + static_cast<long>(jitter() % 251)) / 1000;
        wait = std::max(wait, std::chrono::milliseconds(1000));
        st.next_attempt = unix_seconds(clock::now() + wait + std::chrono::milliseconds(999)); // rounded up
        // Within 7 days of the end, the log says how close it is.
        const std::int64_t left = st.not_after - unix_seconds(clock::now());
        const std::string urgency =
            st.placeholder     ? " (still the self-signed placeholder)"
            : left < 7 * 86400 ? " (it expires in " + std::to_string(std::max<std::int64_t>(left, 0) / 3600) + " h)"
                               : "";
        log(log_level::warn, "acme: " + type_name + " certificate for " + settings.names.front() + " failed (" +
                                 std::to_string(st.consecutive_failures) + " in a row), next attempt in " +
                                 std::to_string(std::chrono::duration_cast<std::chrono::seconds>(wait).count()) +
                                 " s; still serving the current one" + urgency + ": " + error);
        co_return;
    }
    st.consecutive_failures = 0;
    st.last_error.clear();
    ++st.issued_total;
    refresh_status(index);
    // Never again at once, whatever the new certificate says.
    st.next_attempt =
        std::max(st.next_attempt,
                 unix_seconds(clock::now() + std::max<clock::duration>(settings.retry_min, std::chrono::seconds(1))));
    log(log_level::info, "acme: issued the " + type_name + " certificate for " + settings.names.front() + " (serial " +
                             st.serial + ", issuer " + st.issuer + ") into " + file_name_of(file));
    const auto [ok, message] = reload_("ACME certificate " + file_name_of(file) + " issued");
    if (!ok) {
        log(log_level::error, "acme: the new certificate is on disk but the reload failed: " + message);
    }
}

net::awaitable<void> acme_manager::run(const bool& stopping) {
    net::co_spawn(io_, follow_peer(stopping), [](std::exception_ptr e) {
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& x) {
                log(log_level::error, std::string("acme: following the peer failed: ") + x.what());
            }
        }
    });
    while (!stopping) {
        // In a pair, look again soon: taking the VIP over makes this node
        // the one that orders.
        std::chrono::seconds wait = std::chrono::seconds(pair_ ? 3 : 60);
        if (settings_ && may_order_()) {
            const std::int64_t now = unix_seconds(clock::now());
            std::optional<std::size_t> due;
            for (std::size_t i = 0; i < status_.size(); ++i) {
                if (status_[i].next_attempt <= now && (!due || status_[i].next_attempt < status_[*due].next_attempt)) {
                    due = i;
                }
                if (status_[i].next_attempt > now) {
                    wait = std::min(wait, std::chrono::seconds(status_[i].next_attempt - now));
                }
            }
            if (due) {
                co_await attempt(*due);
                continue;
            }
        }
        wake_.expires_after(std::max(wait, std::chrono::seconds(1)));
        co_await wake_.async_wait(use_tuple);
    }
}

// -------------------------------------------------------------------- the pair
//
// Each node of a pair asks the other's admin listener every few seconds for
// the files it has issued (GET /api/ha/acme?have=TYPE:SERIAL,...). The answer
// is 304 when the asker has them already, else the files sealed with
// AES-256-GCM under a key derived from ha.ticket_secret_file; the sender's
// node, the receiver's and the time are authenticated with them. A file is
// installed only when its chain verifies against its key and names, and it
// ends later than the one in place: a replayed answer installs nothing.

namespace {

constexpr auto peer_interval = std::chrono::seconds(2);
constexpr auto peer_timeout = std::chrono::seconds(5);
constexpr std::int64_t peer_clock_skew = 300;
constexpr std::size_t max_bundle = 256 * 1024;

std::string transfer_aad(const std::string& sender, const std::string& receiver, std::int64_t time) {
    return "rampart acme transfer v1\n" + sender + "\n" + receiver + "\n" + std::to_string(time);
}

bool plain_list(std::string_view text) {
    return text.size() <= 512 && std::all_of(text.begin(), text.end(), [](unsigned char c) {
               return std::isalnum(c) != 0 || c == ':' || c == ',';
           });
}

} // namespace

std::string acme_manager::have_list() const {
    std::string out;
    for (const auto& st : status_) {
        if (!st.placeholder && !st.serial.empty()) {
            out += (out.empty() ? "" : ",") + st.key_type + ":" + st.serial;
        }
    }
    return out;
}

http::response<http::string_body> acme_manager::serve_transfer(const http::request<http::empty_body>& req) const {
    http::response<http::string_body> res{http::status::not_found, req.version()};
    res.set(http::field::cache_control, "no-store");
    res.set(http::field::content_type, "text/plain");
    if (!pair_ || !settings_ || req.method() != http::verb::get) {
        return res;
    }
    std::string_view target = req.target();
    std::string_view have;
    if (const auto q = target.find("?have="); q != std::string_view::npos) {
        have = target.substr(q + 6);
    }
    if (!plain_list(have)) {
        res.result(http::status::bad_request);
        return res;
    }
    const std::string mine = have_list();
    if (mine.empty() || mine == have) {
        res.result(http::status::not_modified);
        return res;
    }
    std::string plain = "rampart-acme 1\n";
    plain.reserve(64 * 1024); // the files are a few KiB: no reallocation leaves a copy behind
    for (const auto& st : status_) {
        std::string pem;
        if (st.placeholder || !acme::read_file(st.file, pem)) {
            continue;
        }
        plain += st.key_type;
        plain += ' ';
        plain += std::to_string(pem.size());
        plain += '\n';
        plain += pem;
        OPENSSL_cleanse(pem.data(), pem.size());
    }
    const std::int64_t now = unix_seconds(clock::now());
    res.body() = acme::seal(pair_->key, transfer_aad(pair_->node, pair_->peer, now), plain);
    OPENSSL_cleanse(plain.data(), plain.size());
    res.set("X-Rampart-Node", pair_->node);
    res.set("X-Rampart-Time", std::to_string(now));
    res.result(http::status::ok);
    return res;
}

net::awaitable<void> acme_manager::follow_peer(const bool& stopping) {
    net::steady_timer timer(io_);
    while (!stopping) {
        if (pair_ && settings_) {
            co_await ask_peer(*pair_);
        }
        timer.expires_after(peer_interval);
        co_await timer.async_wait(use_tuple);
    }
}

net::awaitable<void> acme_manager::ask_peer(acme_pair_link pair) {
    error_code ec;
    const auto address = net::ip::make_address(pair.peer_address, ec);
    if (ec) {
        co_return;
    }
    // Shared with the deadline's handler, which may already be queued
    // when this coroutine ends.
    auto shared_socket = std::make_shared<tcp_socket>(io_.get_executor());
    tcp_socket& socket = *shared_socket;
    net::steady_timer deadline(io_);
    deadline.expires_after(peer_timeout);
    deadline.async_wait([shared_socket](const error_code& e) {
        if (!e) {
            error_code ignored;
            shared_socket->close(ignored);
        }
    });
    struct cancel_on_exit {
        net::steady_timer& t;
        ~cancel_on_exit() { t.cancel(); }
    } cancel{deadline};
    auto [cec] = co_await socket.async_connect(tcp::endpoint(address, pair.admin_port));
    if (cec) {
        ++transfers_.failed;
        co_return;
    }
    http::request<http::empty_body> req{http::verb::get, "/api/ha/acme?have=" + have_list(), 11};
    req.set(http::field::host, pair.peer_address);
    req.keep_alive(false);
    auto [wec, wn] = co_await http::async_write(socket, req, use_tuple);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(max_bundle);
    parser.header_limit(8192);
    auto [rec, rn] = co_await http::async_read(socket, buffer, parser, use_tuple);
    if (wec || rec) {
        ++transfers_.failed;
        co_return;
    }
    const auto& res = parser.get();
    if (res.result() == http::status::not_modified || res.result() == http::status::not_found) {
        co_return; // the same files, or a peer without ACME
    }
    std::string why;
    std::int64_t time = 0;
    const std::string time_text(res["X-Rampart-Time"]);
    if (res.result() != http::status::ok) {
        why = "status " + std::to_string(res.result_int());
    } else if (res["X-Rampart-Node"] != pair.peer) {
        why = "it does not come from node " + pair.peer;
    } else if (time_text.empty() || time_text.size() > 12 ||
               !std::all_of(time_text.begin(), time_text.end(), [](unsigned char c) { return std::isdigit(c) != 0; }) ||
               std::abs((time = std::stoll(time_text)) - unix_seconds(clock::now())) > peer_clock_skew) {
        why = "its time is not within 5 minutes of this node's";
    }
    std::optional<std::string> bundle;
    if (why.empty()) {
        bundle = acme::open_sealed(pair.key, transfer_aad(pair.peer, pair.node, time), res.body());
        if (!bundle) {
            why = "it does not open with this node's ha.ticket_secret_file (is the file the same on both nodes?)";
        }
    }
    bool installed = false;
    if (why.empty()) {
        try {
            installed = install_from_peer(pair, *bundle);
        } catch (const std::exception& e) {
            why = e.what();
        }
        OPENSSL_cleanse(bundle->data(), bundle->size());
    }
    if (!why.empty()) {
        ++transfers_.refused;
        const auto now = std::chrono::steady_clock::now();
        if (now - refusal_logged_at_ >= std::chrono::minutes(1)) {
            refusal_logged_at_ = now;
            log(log_level::warn, "acme: refused the certificates of peer " + pair.peer + ": " + why + " (" +
                                     std::to_string(transfers_.refused) + " refused so far)");
        }
        co_return;
    }
    if (installed) {
        const auto [ok, message] = reload_("ACME certificates from peer " + pair.peer);
        if (!ok) {
            log(log_level::error, "acme: the peer's certificate is on disk but the reload failed: " + message);
        }
    }
}

bool acme_manager::install_from_peer(const acme_pair_link& pair, std::string_view bundle) {
    static constexpr std::string_view magic = "rampart-acme 1\n";
    if (!bundle.starts_with(magic)) {
        throw acme_error("not a bundle of this version");
    }
    bundle.remove_prefix(magic.size());
    bool installed = false;
    while (!bundle.empty()) {
        const auto eol = bundle.find('\n');
        const auto space = bundle.find(' ');
        if (eol == std::string_view::npos || space == std::string_view::npos || space > eol) {
            throw acme_error("a malformed bundle");
        }
        const std::string type(bundle.substr(0, space));
        const std::string length_text(bundle.substr(space + 1, eol - space - 1));
        if (length_text.empty() || length_text.size() > 7 ||
            !std::all_of(length_text.begin(), length_text.end(),
                         [](unsigned char c) { return std::isdigit(c) != 0; })) {
            throw acme_error("a malformed bundle");
        }
        const std::size_t length = std::stoul(length_text);
        bundle.remove_prefix(eol + 1);
        if (length > bundle.size()) {
            throw acme_error("a truncated bundle");
        }
        const std::string_view pem = bundle.substr(0, length);
        bundle.remove_prefix(length);
        const auto it = std::find_if(status_.begin(), status_.end(),
                                     [&](const acme_certificate_status& st) { return st.key_type == type; });
        if (it == status_.end()) {
            continue; // a key type this node does not manage
        }
        const auto key = acme::private_key::from_pem(pem, "the peer's " + type + " key");
        if ((type == "rsa") != (key.type() == acme::key_type::rsa)) {
            throw acme_error("the peer's " + type + " key is of another type");
        }
        const std::string chain = acme::normalise_chain(pem);
        check_chain(chain, key, settings_->names, "the peer's " + type + " certificate");
        const auto facts = acme::inspect_chain(chain);
        if (facts.issuer == "Rampart placeholder") {
            throw acme_error("the peer's " + type + " certificate is a placeholder");
        }
        if (!it->placeholder && unix_seconds(facts.not_after) <= it->not_after) {
            continue; // not newer than the one in place (a replay, or the same)
        }
        std::string file = key.to_pem();
        file.reserve(file.size() + chain.size());
        file += chain;
        acme::write_file_atomic(it->file, file, 0600);
        OPENSSL_cleanse(file.data(), file.size());
        log(log_level::info, "acme: installed the " + type + " certificate of peer " + pair.peer + " (serial " +
                                 facts.serial + ", issuer " + printable(facts.issuer) + ")");
        ++transfers_.installed;
        installed = true;
        refresh_status(static_cast<std::size_t>(it - status_.begin()));
    }
    return installed;
}

} // namespace rampart::gateway
