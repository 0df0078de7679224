// certs/acme: the ACME client's cryptography, checked against OpenSSL used
// independently (JWK point, ES256 signatures, CSR and certificate contents),
// the sealed transfer between a pair's nodes, and the atomic file writes.

#include "certs/acme.hpp"
#include "certs/openssl_util.hpp"
#include "tests/unit/support.hpp"

#include <catch2/catch.hpp>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace certs = rampart::certs;
namespace acme = rampart::certs::acme;
using Catch::Matchers::Contains;

namespace {

using rampart::certs::detail::openssl_deleter;
using rampart::test::temp_dir;
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY_free>>;
using pkey_ctx_ptr = std::unique_ptr<EVP_PKEY_CTX, openssl_deleter<EVP_PKEY_CTX_free>>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, openssl_deleter<EVP_MD_CTX_free>>;
using x509_ptr = std::unique_ptr<X509, openssl_deleter<X509_free>>;
using req_ptr = std::unique_ptr<X509_REQ, openssl_deleter<X509_REQ_free>>;
using bignum_ptr = std::unique_ptr<BIGNUM, openssl_deleter<BN_free>>;
using ecdsa_sig_ptr = std::unique_ptr<ECDSA_SIG, openssl_deleter<ECDSA_SIG_free>>;
using general_names_ptr = std::unique_ptr<GENERAL_NAMES, openssl_deleter<GENERAL_NAMES_free>>;
using param_bld_ptr = std::unique_ptr<OSSL_PARAM_BLD, openssl_deleter<OSSL_PARAM_BLD_free>>;
using params_ptr = std::unique_ptr<OSSL_PARAM, openssl_deleter<OSSL_PARAM_free>>;
using object_ptr = std::unique_ptr<ASN1_OBJECT, openssl_deleter<ASN1_OBJECT_free>>;
using bio_ptr = std::unique_ptr<BIO, openssl_deleter<BIO_free_all>>;

struct extensions_deleter {
    void operator()(STACK_OF(X509_EXTENSION) * s) const { sk_X509_EXTENSION_pop_free(s, X509_EXTENSION_free); }
};
using extensions_ptr = std::unique_ptr<STACK_OF(X509_EXTENSION), extensions_deleter>;

/// base64url without padding, decoded here rather than by the code under
/// test; nullopt for a character outside the alphabet or a dangling sextet.
std::optional<std::string> b64url_decode(std::string_view text) {
    static const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    unsigned buffer = 0;
    int bits = 0;
    for (const char c : text) {
        const auto v = alphabet.find(c);
        if (v == std::string::npos) {
            return std::nullopt;
        }
        buffer = (buffer << 6) | static_cast<unsigned>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((buffer >> bits) & 0xff);
        }
    }
    if (bits >= 6) { // one character alone carries no byte
        return std::nullopt;
    }
    return out;
}

std::string sha256(std::string_view data) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    REQUIRE(EVP_Digest(data.data(), data.size(), out, &n, EVP_sha256(), nullptr) == 1);
    REQUIRE(n == 32);
    return std::string(reinterpret_cast<const char*>(out), n);
}

bool base64url_alphabet_only(std::string_view s) {
    return std::all_of(s.begin(), s.end(),
                       [](unsigned char c) { return std::isalnum(c) != 0 || c == '-' || c == '_'; });
}

/// The value of a string member `"name":"..."` in flat JSON made of plain
/// (unescaped) strings, such as the JWS and the JWK.
std::string string_member(const std::string& json, const std::string& name) {
    const std::string open = "\"" + name + "\":\"";
    const auto at = json.find(open);
    REQUIRE(at != std::string::npos);
    REQUIRE(json.find(open, at + 1) == std::string::npos);
    const auto start = at + open.size();
    const auto end = json.find('"', start);
    REQUIRE(end != std::string::npos);
    return json.substr(start, end - start);
}

/// A minimal JSON reader for the protected header: one object whose values
/// are strings or objects of strings. Top-level members map to their value,
/// a string unescaped, an object as its raw text. Throws on anything else.
class json_header {
public:
    static std::map<std::string, std::string> parse(std::string_view text) {
        json_header p{text};
        auto members = p.object(true);
        p.space();
        if (p.at_ != text.size()) {
            throw std::runtime_error("trailing text after the object");
        }
        return members;
    }

private:
    explicit json_header(std::string_view text) : text_(text) {}

    std::map<std::string, std::string> object(bool top) {
        std::map<std::string, std::string> out;
        expect('{');
        space();
        if (peek() == '}') {
            ++at_;
            return out;
        }
        for (;;) {
            space();
            std::string key = string();
            space();
            expect(':');
            space();
            std::string value;
            if (peek() == '{') {
                if (!top) {
                    throw std::runtime_error("objects nested too deep");
                }
                const auto start = at_;
                object(false);
                value = std::string(text_.substr(start, at_ - start));
            } else {
                value = string();
            }
            if (!out.emplace(std::move(key), std::move(value)).second) {
                throw std::runtime_error("a member is repeated");
            }
            space();
            if (peek() == ',') {
                ++at_;
                continue;
            }
            expect('}');
            return out;
        }
    }

    std::string string() {
        expect('"');
        std::string out;
        for (;;) {
            if (at_ >= text_.size()) {
                throw std::runtime_error("unterminated string");
            }
            const char c = text_[at_++];
            if (c == '"') {
                return out;
            }
            if (static_cast<unsigned char>(c) < 0x20) {
                throw std::runtime_error("a raw control character in a string");
            }
            if (c != '\\') {
                out += c;
                continue;
            }
            if (at_ >= text_.size()) {
                throw std::runtime_error("unterminated escape");
            }
            const char e = text_[at_++];
            switch (e) {
            case '"':
            case '\\':
            case '/':
                out += e;
                break;
            case 'n':
                out += '\n';
                break;
            case 't':
                out += '\t';
                break;
            case 'r':
                out += '\r';
                break;
            case 'b':
                out += '\b';
                break;
            case 'f':
                out += '\f';
                break;
            case 'u': {
                if (at_ + 4 > text_.size()) {
                    throw std::runtime_error("short \\u escape");
                }
                const std::string hex(text_.substr(at_, 4));
                at_ += 4;
                if (!std::all_of(hex.begin(), hex.end(), [](unsigned char h) { return std::isxdigit(h) != 0; })) {
                    throw std::runtime_error("bad \\u escape");
                }
                const unsigned long v = std::stoul(hex, nullptr, 16);
                if (v >= 0x80) {
                    throw std::runtime_error("non-ASCII \\u escape (not expected here)");
                }
                out += static_cast<char>(v);
                break;
            }
            default:
                throw std::runtime_error("unknown escape");
            }
        }
    }

    char peek() const {
        if (at_ >= text_.size()) {
            throw std::runtime_error("unexpected end");
        }
        return text_[at_];
    }
    void expect(char c) {
        if (peek() != c) {
            throw std::runtime_error(std::string("expected '") + c + "'");
        }
        ++at_;
    }
    void space() {
        while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\n' || text_[at_] == '\t')) {
            ++at_;
        }
    }

    std::string_view text_;
    std::size_t at_ = 0;
};

/// A flattened JWS split into its three members, checked for shape.
struct jws {
    std::string protected64;
    std::string payload64;
    std::string signature64;
};

jws split_jws(const std::string& text) {
    static const std::regex shape(
        R"(^\{"protected":"[A-Za-z0-9_-]+","payload":"[A-Za-z0-9_-]*","signature":"[A-Za-z0-9_-]+"\}$)");
    INFO(text);
    REQUIRE(std::regex_match(text, shape));
    return jws{string_member(text, "protected"), string_member(text, "payload"), string_member(text, "signature")};
}

/// Verifies an ES256 JWS signature (raw r || s) over `input` with `key`,
/// through OpenSSL's DER signature verification.
bool es256_verifies(EVP_PKEY* key, const std::string& input, const std::string& raw_signature) {
    REQUIRE(raw_signature.size() == 64);
    const auto* bytes = reinterpret_cast<const unsigned char*>(raw_signature.data());
    BIGNUM* r = BN_bin2bn(bytes, 32, nullptr);
    BIGNUM* s = BN_bin2bn(bytes + 32, 32, nullptr);
    REQUIRE(r != nullptr);
    REQUIRE(s != nullptr);
    ecdsa_sig_ptr sig{ECDSA_SIG_new()};
    REQUIRE(sig);
    REQUIRE(ECDSA_SIG_set0(sig.get(), r, s) == 1); // owns r and s from here
    unsigned char* der = nullptr;
    const int der_length = i2d_ECDSA_SIG(sig.get(), &der);
    REQUIRE(der_length > 0);
    const std::string der_signature(reinterpret_cast<const char*>(der), static_cast<std::size_t>(der_length));
    OPENSSL_free(der);
    md_ctx_ptr md{EVP_MD_CTX_new()};
    REQUIRE(md);
    REQUIRE(EVP_DigestVerifyInit(md.get(), nullptr, EVP_sha256(), nullptr, key) == 1);
    const int verified =
        EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(der_signature.data()), der_signature.size(),
                         reinterpret_cast<const unsigned char*>(input.data()), input.size());
    ERR_clear_error();
    return verified == 1;
}

/// The P-256 public key whose point is (x, y), built by OpenSSL from the
/// uncompressed encoding 04 || x || y.
pkey_ptr p256_public_key(const std::string& x, const std::string& y) {
    REQUIRE(x.size() == 32);
    REQUIRE(y.size() == 32);
    const std::string point = std::string(1, '\x04') + x + y;
    param_bld_ptr bld{OSSL_PARAM_BLD_new()};
    REQUIRE(bld);
    REQUIRE(OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) == 1);
    REQUIRE(OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) == 1);
    params_ptr params{OSSL_PARAM_BLD_to_param(bld.get())};
    REQUIRE(params);
    pkey_ctx_ptr ctx{EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr)};
    REQUIRE(ctx);
    REQUIRE(EVP_PKEY_fromdata_init(ctx.get()) == 1);
    EVP_PKEY* key = nullptr;
    REQUIRE(EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) == 1);
    return pkey_ptr{key};
}

/// The DNS names of a GENERAL_NAMES list; any other kind of name as "other:".
std::vector<std::string> dns_names(const GENERAL_NAMES* names) {
    std::vector<std::string> out;
    for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
        const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_DNS) {
            out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(g->d.dNSName)),
                             static_cast<std::size_t>(ASN1_STRING_length(g->d.dNSName)));
        } else {
            out.emplace_back("other:" + std::to_string(g->type));
        }
    }
    return out;
}

std::string common_name(const X509_NAME* name) {
    char cn[256] = {};
    const int n = X509_NAME_get_text_by_NID(const_cast<X509_NAME*>(name), NID_commonName, cn, sizeof cn);
    return n > 0 ? std::string(cn, static_cast<std::size_t>(n)) : std::string();
}

x509_ptr parse_certificate_der(const std::string& der) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    x509_ptr cert{d2i_X509(nullptr, &p, static_cast<long>(der.size()))};
    REQUIRE(cert);
    CHECK(p == reinterpret_cast<const unsigned char*>(der.data()) + der.size()); // nothing left over
    return cert;
}

std::string random_looking_token(std::size_t length) {
    static const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    for (std::size_t i = 0; i < length; ++i) {
        out += alphabet[(i * 7 + 3) % alphabet.size()];
    }
    return out;
}

/// The account key most tests share: P-256 generation is cheap, but one key
/// keeps the expectations comparable.
const acme::private_key& account() {
    static const acme::private_key key = acme::private_key::generate(acme::key_type::ecdsa);
    return key;
}

const acme::private_key& rsa_key() {
    static const acme::private_key key = acme::private_key::generate(acme::key_type::rsa);
    return key;
}

/// Sets the process umask for one scope.
struct umask_guard {
    mode_t old;
    explicit umask_guard(mode_t mask) : old(::umask(mask)) {}
    ~umask_guard() { ::umask(old); }
    umask_guard(const umask_guard&) = delete;
    umask_guard& operator=(const umask_guard&) = delete;
};

std::vector<std::string> entries_of(const std::string& dir) {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

mode_t mode_of(const std::string& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

} // namespace

TEST_CASE("base64url: RFC 4648 vectors, the URL alphabet, no padding", "[unit][certs][acme]") {
    CHECK(acme::base64url("") == "");
    CHECK(acme::base64url("f") == "Zg");
    CHECK(acme::base64url("fo") == "Zm8");
    CHECK(acme::base64url("foo") == "Zm9v");
    CHECK(acme::base64url("foob") == "Zm9vYg");
    CHECK(acme::base64url("fooba") == "Zm9vYmE");
    CHECK(acme::base64url("foobar") == "Zm9vYmFy");
    CHECK(acme::base64url(std::string("\xfb\xff", 2)) == "-_8");
    CHECK(acme::base64url(std::string("\xfb\xef\xbe", 3)) == "----");
    CHECK(acme::base64url(std::string("\xff\xff\xff", 3)) == "____");
    CHECK(acme::base64url(std::string("\0\0", 2)) == "AAA");

    // Every byte value, at every length up to 256: the URL alphabet only,
    // the unpadded length, and the bytes back.
    std::string all;
    for (int i = 0; i < 256; ++i) {
        all += static_cast<char>(255 - i);
    }
    for (std::size_t n = 0; n <= all.size(); ++n) {
        const std::string in = all.substr(0, n);
        const std::string out = acme::base64url(in);
        INFO("length " << n << ": " << out);
        CHECK(out.find_first_of("=+/") == std::string::npos);
        CHECK(base64url_alphabet_only(out));
        CHECK(out.size() == (4 * n + 2) / 3);
        CHECK(b64url_decode(out) == in);
    }
}

TEST_CASE("jwk: the account key's public point, members in RFC 7638 order", "[unit][certs][acme]") {
    const std::string j = acme::jwk(account());
    INFO(j);
    static const std::regex shape(R"(^\{"crv":"P-256","kty":"EC","x":"[A-Za-z0-9_-]{43}","y":"[A-Za-z0-9_-]{43}"\}$)");
    REQUIRE(std::regex_match(j, shape));
    CHECK(acme::jwk(account()) == j); // deterministic

    const auto x = b64url_decode(string_member(j, "x"));
    const auto y = b64url_decode(string_member(j, "y"));
    REQUIRE(x);
    REQUIRE(y);
    const pkey_ptr rebuilt = p256_public_key(*x, *y);
    CHECK(EVP_PKEY_eq(rebuilt.get(), account().get()) == 1);

    const auto other = acme::private_key::generate(acme::key_type::ecdsa);
    const std::string other_jwk = acme::jwk(other);
    CHECK(other_jwk != j);
    CHECK(EVP_PKEY_eq(rebuilt.get(), other.get()) != 1);
    ERR_clear_error();
}

TEST_CASE("jwk: only a P-256 key can sign ES256", "[unit][certs][acme]") {
    CHECK_THROWS_AS(acme::jwk(rsa_key()), certs::cert_error);
    CHECK_THROWS_AS(acme::jwk_thumbprint(rsa_key()), certs::cert_error);

    // A P-384 key is EC, but not the curve ES256 names.
    const pkey_ptr p384{EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384")};
    REQUIRE(p384);
    bio_ptr bio{BIO_new(BIO_s_mem())};
    REQUIRE(PEM_write_bio_PrivateKey(bio.get(), p384.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1);
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    const auto key = acme::private_key::from_pem(std::string(data, static_cast<std::size_t>(length)), "a P-384 key");
    CHECK(key.type() == acme::key_type::ecdsa);
    CHECK_THROWS_AS(acme::jwk(key), certs::cert_error);
    CHECK_THROWS_AS(acme::sign_request(key, "", "n", "https://acme.example/new-acct", "{}"), certs::cert_error);
}

TEST_CASE("jwk_thumbprint: base64url(SHA-256(jwk))", "[unit][certs][acme]") {
    const std::string t = acme::jwk_thumbprint(account());
    CHECK(t.size() == 43);
    CHECK(base64url_alphabet_only(t));
    const auto digest = b64url_decode(t);
    REQUIRE(digest);
    CHECK(*digest == sha256(acme::jwk(account())));
    const auto other = acme::private_key::generate(acme::key_type::ecdsa);
    CHECK(acme::jwk_thumbprint(other) != t);
}

TEST_CASE("sign_request: a new account carries its jwk, signed ES256", "[unit][certs][acme]") {
    const std::string payload = R"({"termsOfServiceAgreed":true,"contact":["mailto:ops@foobar.com"]})";
    const std::string text =
        acme::sign_request(account(), "", "nonce-123_ABC", "https://acme.example/new-acct", payload);
    const jws j = split_jws(text);

    const auto header_text = b64url_decode(j.protected64);
    REQUIRE(header_text);
    INFO(*header_text);
    const auto header = json_header::parse(*header_text);
    CHECK(header.size() == 4);
    CHECK(header.at("alg") == "ES256");
    CHECK(header.at("nonce") == "nonce-123_ABC");
    CHECK(header.at("url") == "https://acme.example/new-acct");
    CHECK(header.at("jwk") == acme::jwk(account()));
    CHECK(header.count("kid") == 0);

    CHECK(b64url_decode(j.payload64) == payload);

    const auto signature = b64url_decode(j.signature64);
    REQUIRE(signature);
    REQUIRE(signature->size() == 64);
    const std::string input = j.protected64 + "." + j.payload64;
    CHECK(es256_verifies(account().get(), input, *signature));

    // Not by another key; not over another payload or header.
    const auto other = acme::private_key::generate(acme::key_type::ecdsa);
    CHECK_FALSE(es256_verifies(other.get(), input, *signature));
    std::string tampered_payload = j.payload64;
    tampered_payload[5] = tampered_payload[5] == 'A' ? 'B' : 'A';
    CHECK_FALSE(es256_verifies(account().get(), j.protected64 + "." + tampered_payload, *signature));
    std::string tampered_header = j.protected64;
    tampered_header[10] = tampered_header[10] == 'A' ? 'B' : 'A';
    CHECK_FALSE(es256_verifies(account().get(), tampered_header + "." + j.payload64, *signature));
    std::string tampered_signature = *signature;
    tampered_signature[40] = static_cast<char>(tampered_signature[40] ^ 0x01);
    CHECK_FALSE(es256_verifies(account().get(), input, tampered_signature));
}

TEST_CASE("sign_request: an account's later requests name it by kid", "[unit][certs][acme]") {
    const std::string kid = "https://acme.example/acct/17";
    const std::string text =
        acme::sign_request(account(), kid, "n0nce", "https://acme.example/new-order", R"({"identifiers":[]})");
    const jws j = split_jws(text);
    const auto header_text = b64url_decode(j.protected64);
    REQUIRE(header_text);
    INFO(*header_text);
    CHECK(header_text->find("jwk") == std::string::npos);
    const auto header = json_header::parse(*header_text);
    CHECK(header.size() == 4);
    CHECK(header.at("alg") == "ES256");
    CHECK(header.at("kid") == kid);
    CHECK(header.at("nonce") == "n0nce");
    CHECK(header.at("url") == "https://acme.example/new-order");
    const auto signature = b64url_decode(j.signature64);
    REQUIRE(signature);
    CHECK(es256_verifies(account().get(), j.protected64 + "." + j.payload64, *signature));
}

TEST_CASE("sign_request: what the server sent is escaped in the header", "[unit][certs][acme]") {
    const std::string nonce = "ab\"c\\d\ne\x01";
    const std::string url = "https://acme.example/x?\"q\"";
    const std::string kid = "https://acme.example/acct/\"1\"";
    for (const std::string& k : {std::string(), kid}) {
        const jws j = split_jws(acme::sign_request(account(), k, nonce, url, "{}"));
        const auto header_text = b64url_decode(j.protected64);
        REQUIRE(header_text);
        INFO(*header_text);
        CHECK_THAT(*header_text, Contains(R"("nonce":"ab\"c\\d)"));
        std::map<std::string, std::string> header;
        REQUIRE_NOTHROW(header = json_header::parse(*header_text));
        CHECK(header.size() == 4);
        CHECK(header.at("nonce") == nonce);
        CHECK(header.at("url") == url);
        CHECK(header.at("alg") == "ES256");
        if (!k.empty()) {
            CHECK(header.at("kid") == kid);
        }
    }
}

TEST_CASE("sign_request: an empty payload is a POST-as-GET", "[unit][certs][acme]") {
    const std::string text =
        acme::sign_request(account(), "https://acme.example/acct/1", "n", "https://acme.example/order/5", "");
    CHECK_THAT(text, Contains(R"("payload":"",)"));
    const jws j = split_jws(text);
    CHECK(j.payload64.empty());
    const auto signature = b64url_decode(j.signature64);
    REQUIRE(signature);
    CHECK(es256_verifies(account().get(), j.protected64 + ".", *signature));
    // "{}" is not the same request: a POST with an empty object.
    const jws with_object = split_jws(
        acme::sign_request(account(), "https://acme.example/acct/1", "n", "https://acme.example/order/5", "{}"));
    CHECK(with_object.payload64 == "e30");
}

TEST_CASE("key_authorization: the token, a dot, the account's thumbprint", "[unit][certs][acme]") {
    const std::string token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    const std::string ka = acme::key_authorization(token, account());
    CHECK(ka == token + "." + acme::jwk_thumbprint(account()));
    CHECK(ka.size() == token.size() + 1 + 43);
    const auto other = acme::private_key::generate(acme::key_type::ecdsa);
    CHECK(acme::key_authorization(token, other) != ka);
}

TEST_CASE("valid_token: base64url, 16 to 128 characters, nothing else", "[unit][certs][acme]") {
    CHECK(acme::valid_token("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA")); // RFC 8555's example, 43
    CHECK(acme::valid_token(random_looking_token(43)));
    CHECK(acme::valid_token(random_looking_token(16)));
    CHECK(acme::valid_token(random_looking_token(128))); // what the shared block's token field holds
    CHECK(acme::valid_token("________________"));

    CHECK_FALSE(acme::valid_token(""));
    CHECK_FALSE(acme::valid_token(random_looking_token(15)));
    CHECK_FALSE(acme::valid_token(random_looking_token(129)));
    CHECK_FALSE(acme::valid_token("../../etc/passwd")); // 16 characters, but '.' and '/'
    CHECK_FALSE(acme::valid_token("abc/defghijklmnopqrstu"));
    CHECK_FALSE(acme::valid_token("abcdefghijklmnop..qrstu"));
    CHECK_FALSE(acme::valid_token("abcdefghijklmnop.qrstu"));
    std::string base = random_looking_token(43);
    for (const char bad : {' ', '=', '+', '/', '.', '%', '\n', '\0', '"', '\\'}) {
        std::string t = base;
        t[20] = bad;
        INFO("character " << static_cast<int>(bad));
        CHECK_FALSE(acme::valid_token(t));
    }
    CHECK_FALSE(acme::valid_token(base + "="));
    CHECK_FALSE(acme::valid_token(std::string(20, 'a') + "\xc3\xa9"));
}

TEST_CASE("make_csr: signed by its key, every name in the SAN, the first as CN", "[unit][certs][acme]") {
    const std::vector<std::string> names{"www.foobar.com", "foobar.com", "api.foobar.com"};
    for (const auto* key : {&account(), &rsa_key()}) {
        INFO(acme::key_type_name(key->type()));
        const std::string der = acme::make_csr(*key, names);
        const auto* p = reinterpret_cast<const unsigned char*>(der.data());
        req_ptr req{d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size()))};
        REQUIRE(req);
        CHECK(p == reinterpret_cast<const unsigned char*>(der.data()) + der.size());

        EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
        REQUIRE(pub != nullptr);
        CHECK(EVP_PKEY_eq(pub, key->get()) == 1);
        CHECK(X509_REQ_verify(req.get(), pub) == 1);
        CHECK(X509_REQ_get_version(req.get()) == 0);
        CHECK(common_name(X509_REQ_get_subject_name(req.get())) == "www.foobar.com");

        extensions_ptr exts{X509_REQ_get_extensions(req.get())};
        REQUIRE(exts);
        const int at = X509v3_get_ext_by_NID(exts.get(), NID_subject_alt_name, -1);
        REQUIRE(at >= 0);
        CHECK(X509v3_get_ext_by_NID(exts.get(), NID_subject_alt_name, at) < 0); // only one SAN extension
        const general_names_ptr sans{
            static_cast<GENERAL_NAMES*>(X509V3_EXT_d2i(sk_X509_EXTENSION_value(exts.get(), at)))};
        REQUIRE(sans);
        CHECK(dns_names(sans.get()) == names);
    }
    // A different key's CSR does not verify with this one.
    const std::string der = acme::make_csr(account(), {"www.foobar.com"});
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    req_ptr req{d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size()))};
    REQUIRE(req);
    const auto other = acme::private_key::generate(acme::key_type::ecdsa);
    CHECK(X509_REQ_verify(req.get(), other.get()) != 1);
    ERR_clear_error();
}

TEST_CASE("make_csr: names that could smuggle SAN entries, and no name, are refused", "[unit][certs][acme]") {
    CHECK_THROWS_AS(acme::make_csr(account(), {}), certs::cert_error);
    for (const std::string bad :
         {"a.com,DNS:evil.com", "a.com DNS:evil.com", "a.com\nDNS:evil.com", "", "IP:192.0.2.1,DNS:a.com", "a.com/x"}) {
        INFO(bad);
        CHECK_THROWS_AS(acme::make_csr(account(), {bad}), certs::cert_error);
        CHECK_THROWS_AS(acme::make_csr(account(), {"www.foobar.com", bad}), certs::cert_error);
    }
    try {
        acme::make_csr(account(), {"www.foobar.com", "a.com,DNS:evil.com"});
        FAIL("no exception");
    } catch (const certs::cert_error& e) {
        CHECK_THAT(e.what(), Contains("a.com,DNS:evil.com"));
    }
}

TEST_CASE("make_csr and make_alpn_certificate: a name longer than a CN holds is in the SAN only",
          "[unit][certs][acme]") {
    // 70 characters: a valid host name, over RFC 5280's 64 for a CN.
    const std::string name = std::string(60, 'a') + ".foobar.com";
    REQUIRE(name.size() > 64);
    const std::string der = acme::make_csr(account(), {name, "www.foobar.com"});
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    req_ptr req{d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size()))};
    REQUIRE(req);
    CHECK(X509_REQ_verify(req.get(), X509_REQ_get0_pubkey(req.get())) == 1);
    CHECK(X509_NAME_entry_count(X509_REQ_get_subject_name(req.get())) == 0);
    extensions_ptr exts{X509_REQ_get_extensions(req.get())};
    REQUIRE(exts);
    const int at = X509v3_get_ext_by_NID(exts.get(), NID_subject_alt_name, -1);
    REQUIRE(at >= 0);
    const general_names_ptr sans{static_cast<GENERAL_NAMES*>(X509V3_EXT_d2i(sk_X509_EXTENSION_value(exts.get(), at)))};
    CHECK(dns_names(sans.get()) == std::vector<std::string>{name, "www.foobar.com"});

    const auto cert = acme::make_alpn_certificate(name, "token.thumbprint");
    const auto* c = reinterpret_cast<const unsigned char*>(cert.cert_der.data());
    x509_ptr x{d2i_X509(nullptr, &c, static_cast<long>(cert.cert_der.size()))};
    REQUIRE(x);
    const general_names_ptr cert_sans{
        static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x.get(), NID_subject_alt_name, nullptr, nullptr))};
    REQUIRE(cert_sans);
    CHECK(dns_names(cert_sans.get()) == std::vector<std::string>{name});
}

TEST_CASE("make_alpn_certificate: RFC 8737's self-signed validation certificate", "[unit][certs][acme]") {
    const std::string name = "www.foobar.com";
    const std::string ka = acme::key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", account());
    const acme::alpn_certificate made = acme::make_alpn_certificate(name, ka);
    const x509_ptr cert = parse_certificate_der(made.cert_der);

    EVP_PKEY* pub = X509_get0_pubkey(cert.get());
    REQUIRE(pub != nullptr);
    CHECK(X509_verify(cert.get(), pub) == 1);
    CHECK(X509_NAME_cmp(X509_get_subject_name(cert.get()), X509_get_issuer_name(cert.get())) == 0);

    const general_names_ptr sans{
        static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr))};
    REQUIRE(sans);
    CHECK(dns_names(sans.get()) == std::vector<std::string>{name});

    const object_ptr oid{OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1)};
    REQUIRE(oid);
    const int at = X509_get_ext_by_OBJ(cert.get(), oid.get(), -1);
    REQUIRE(at >= 0);
    CHECK(X509_get_ext_by_OBJ(cert.get(), oid.get(), at) < 0); // once
    X509_EXTENSION* ext = X509_get_ext(cert.get(), at);
    REQUIRE(ext != nullptr);
    CHECK(X509_EXTENSION_get_critical(ext) == 1);
    const ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(ext);
    REQUIRE(value != nullptr);
    const std::string bytes(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                            static_cast<std::size_t>(ASN1_STRING_length(value)));
    CHECK(bytes == std::string("\x04\x20", 2) + sha256(ka));

    const auto* k = reinterpret_cast<const unsigned char*>(made.key_der.data());
    const pkey_ptr key{d2i_AutoPrivateKey(nullptr, &k, static_cast<long>(made.key_der.size()))};
    REQUIRE(key);
    CHECK(X509_check_private_key(cert.get(), key.get()) == 1);
    CHECK(EVP_PKEY_is_a(key.get(), "EC") == 1);

    // Another key authorization, another digest; a fresh key each time.
    const acme::alpn_certificate again = acme::make_alpn_certificate(name, ka + "x");
    const x509_ptr cert2 = parse_certificate_der(again.cert_der);
    const int at2 = X509_get_ext_by_OBJ(cert2.get(), oid.get(), -1);
    REQUIRE(at2 >= 0);
    const ASN1_OCTET_STRING* value2 = X509_EXTENSION_get_data(X509_get_ext(cert2.get(), at2));
    const std::string bytes2(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value2)),
                             static_cast<std::size_t>(ASN1_STRING_length(value2)));
    CHECK(bytes2 == std::string("\x04\x20", 2) + sha256(ka + "x"));
    CHECK(again.key_der != made.key_der);
    CHECK(X509_check_private_key(cert2.get(), key.get()) != 1);
    ERR_clear_error();

    CHECK_THROWS_AS(acme::make_alpn_certificate("a.com,DNS:evil.com", ka), certs::cert_error);
}

TEST_CASE("make_placeholder: what inspect_chain reads back", "[unit][certs][acme]") {
    const auto key = acme::private_key::generate(acme::key_type::ecdsa);
    const std::vector<std::string> names{"www.foobar.com", "foobar.com"};
    const long days = 10;
    const auto now = std::chrono::system_clock::now();
    const std::string pem = acme::make_placeholder(key, names, days);
    CHECK_THAT(pem, Contains("-----BEGIN CERTIFICATE-----"));

    const acme::chain_facts f = acme::inspect_chain(pem);
    CHECK(f.issuer == "Rampart placeholder");
    CHECK(f.names == names);
    CHECK(f.certificates == 1);
    CHECK_FALSE(f.serial.empty());
    CHECK(std::all_of(f.serial.begin(), f.serial.end(), [](unsigned char c) { return std::isxdigit(c) != 0; }));
    const auto expected_end = now + std::chrono::hours(24 * days);
    const auto off = f.not_after > expected_end ? f.not_after - expected_end : expected_end - f.not_after;
    CHECK(off <= std::chrono::minutes(65));
    CHECK(f.not_before <= now + std::chrono::seconds(1));
    CHECK(f.not_before >= now - std::chrono::minutes(65));
    CHECK(f.not_after > f.not_before);

    CHECK(acme::key_matches(pem, key));
    const auto other = acme::private_key::generate(acme::key_type::ecdsa);
    CHECK_FALSE(acme::key_matches(pem, other));
    CHECK_FALSE(acme::key_matches(pem, rsa_key()));

    // Serial numbers are random: two placeholders never share one.
    CHECK(acme::inspect_chain(acme::make_placeholder(key, names, days)).serial != f.serial);
    // An RSA placeholder works the same way.
    const std::string rsa_pem = acme::make_placeholder(rsa_key(), {"rsa.foobar.com"}, 1);
    CHECK(acme::key_matches(rsa_pem, rsa_key()));
    CHECK_FALSE(acme::key_matches(rsa_pem, key));
    CHECK(acme::inspect_chain(rsa_pem).names == std::vector<std::string>{"rsa.foobar.com"});
}

TEST_CASE("inspect_chain: the leaf first, every certificate counted", "[unit][certs][acme]") {
    const auto leaf_key = acme::private_key::generate(acme::key_type::ecdsa);
    const auto other_key = acme::private_key::generate(acme::key_type::ecdsa);
    const std::string leaf = acme::make_placeholder(leaf_key, {"leaf.foobar.com"}, 30);
    const std::string second = acme::make_placeholder(other_key, {"other.foobar.com"}, 60);
    const std::string chain = leaf + second;
    const auto f = acme::inspect_chain(chain);
    CHECK(f.certificates == 2);
    CHECK(f.names == std::vector<std::string>{"leaf.foobar.com"});
    CHECK(acme::key_matches(chain, leaf_key));
    CHECK_FALSE(acme::key_matches(chain, other_key));
    CHECK(acme::inspect_chain(second + leaf).names == std::vector<std::string>{"other.foobar.com"});
    // The key in the same file (as ACME's state files keep them) is skipped.
    CHECK(acme::inspect_chain(chain + leaf_key.to_pem()).certificates == 2);
}

TEST_CASE("normalise_chain and chain_links: only the certificates, each signed by the next", "[unit][certs][acme]") {
    temp_dir dir;
    certs::make_dev_certificates(dir.path, {"www.foobar.com"});
    std::string leaf;
    std::string ca;
    std::string key;
    REQUIRE(acme::read_file(dir.path + "/ecdsa.pem", leaf));
    REQUIRE(acme::read_file(dir.path + "/ca.pem", ca));
    REQUIRE(acme::read_file(dir.path + "/ecdsa.key", key));
    // What a server might add around the chain is dropped; the certificates stay, in order.
    const std::string messy = "junk before\n" + leaf + key + "# a comment\n" + ca + "junk after\n";
    const std::string chain = acme::normalise_chain(messy);
    CHECK(chain.find("PRIVATE KEY") == std::string::npos);
    CHECK(chain.find("junk") == std::string::npos);
    CHECK(acme::inspect_chain(chain).certificates == 2);
    CHECK(acme::inspect_chain(chain).names == std::vector<std::string>{"www.foobar.com"});
    CHECK(acme::normalise_chain(chain) == chain);
    CHECK(acme::chain_links(chain));
    CHECK(acme::chain_links(leaf)); // one certificate: nothing to link
    CHECK_FALSE(acme::chain_links(ca + leaf));
    const auto other = acme::private_key::generate(acme::key_type::ecdsa);
    CHECK_FALSE(acme::chain_links(leaf + acme::make_placeholder(other, {"ca.example"}, 30)));
    CHECK(ERR_peek_error() == 0);
    std::string eleven;
    for (int i = 0; i < 11; ++i) {
        eleven += leaf;
    }
    CHECK_THROWS_AS(acme::normalise_chain(eleven), certs::cert_error);
    CHECK_THROWS_AS(acme::normalise_chain(key), certs::cert_error);
}

TEST_CASE("inspect_chain and key_matches: no certificate is an error", "[unit][certs][acme]") {
    CHECK_THROWS_AS(acme::inspect_chain(""), certs::cert_error);
    CHECK_THROWS_AS(acme::inspect_chain("garbage, not a certificate"), certs::cert_error);
    CHECK_THROWS_AS(acme::inspect_chain("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                    certs::cert_error);
    CHECK_THROWS_AS(acme::inspect_chain(account().to_pem()), certs::cert_error);
    CHECK_THROWS_AS(acme::key_matches("", account()), certs::cert_error);
    CHECK_THROWS_AS(acme::key_matches("garbage", account()), certs::cert_error);
    CHECK(ERR_peek_error() == 0); // nothing left for the next OpenSSL call to trip on
}

TEST_CASE("private_key: PEM round trip keeps the type and the key", "[unit][certs][acme]") {
    CHECK(std::string(acme::key_type_name(acme::key_type::ecdsa)) == "ecdsa");
    CHECK(std::string(acme::key_type_name(acme::key_type::rsa)) == "rsa");
    for (const auto* key : {&account(), &rsa_key()}) {
        INFO(acme::key_type_name(key->type()));
        const std::string pem = key->to_pem();
        CHECK_THAT(pem, Contains("-----BEGIN PRIVATE KEY-----"));
        const auto back = acme::private_key::from_pem(pem, "a key");
        CHECK(back.type() == key->type());
        CHECK(EVP_PKEY_eq(back.get(), key->get()) == 1);
        CHECK(back.to_pem() == pem);
    }
    CHECK(account().type() == acme::key_type::ecdsa);
    CHECK(rsa_key().type() == acme::key_type::rsa);
    CHECK(EVP_PKEY_is_a(account().get(), "EC") == 1);
    CHECK(EVP_PKEY_get_bits(rsa_key().get()) == 2048);
}

TEST_CASE("private_key::from_pem: the error names what, never the input", "[unit][certs][acme]") {
    const std::string secretish = "supersecret-0123456789";
    const std::string pem = account().to_pem();
    const std::string body = pem.substr(pem.find('\n') + 1, 40);
    const std::vector<std::string> inputs{
        secretish, "", "-----BEGIN PRIVATE KEY-----\n" + secretish + "\n-----END PRIVATE KEY-----\n",
        pem.substr(0, pem.size() / 2), // cut short
    };
    for (const auto& input : inputs) {
        INFO(input);
        try {
            (void)acme::private_key::from_pem(input, "the account key /var/lib/rampart/acme/account.pem");
            FAIL("no exception");
        } catch (const certs::cert_error& e) {
            const std::string message = e.what();
            CHECK_THAT(message, Contains("the account key /var/lib/rampart/acme/account.pem"));
            CHECK(message.find(secretish) == std::string::npos);
            CHECK(message.find(body) == std::string::npos);
        }
    }
    CHECK(ERR_peek_error() == 0);
}

TEST_CASE("derive_transfer_key: HKDF-SHA256 of the pair's secret, under its own label", "[unit][certs][acme]") {
    std::array<unsigned char, 32> secret{};
    for (std::size_t i = 0; i < secret.size(); ++i) {
        secret[i] = static_cast<unsigned char>(i * 11 + 5);
    }
    std::array<unsigned char, 32> another = secret;
    another[31] ^= 0x80;

    const acme::transfer_key key = acme::derive_transfer_key(secret);
    CHECK(acme::derive_transfer_key(secret) == key);
    CHECK(acme::derive_transfer_key(another) != key);
    CHECK(std::vector<unsigned char>(key.begin(), key.end()) !=
          std::vector<unsigned char>(secret.begin(), secret.end()));

    // RFC 5869 by hand: no salt (32 zero bytes), one block of expansion.
    const std::string label = "rampart acme transfer v1";
    const unsigned char zeros[32] = {};
    unsigned char prk[EVP_MAX_MD_SIZE];
    unsigned int prk_length = 0;
    REQUIRE(HMAC(EVP_sha256(), zeros, sizeof zeros, secret.data(), secret.size(), prk, &prk_length) != nullptr);
    REQUIRE(prk_length == 32);
    const std::string block = label + '\x01';
    unsigned char okm[EVP_MAX_MD_SIZE];
    unsigned int okm_length = 0;
    REQUIRE(HMAC(EVP_sha256(), prk, static_cast<int>(prk_length), reinterpret_cast<const unsigned char*>(block.data()),
                 block.size(), okm, &okm_length) != nullptr);
    REQUIRE(okm_length == 32);
    CHECK(std::equal(key.begin(), key.end(), okm));
}

TEST_CASE("seal and open_sealed: AES-256-GCM, bound to its key and its aad", "[unit][certs][acme]") {
    std::array<unsigned char, 32> secret{};
    secret.fill(0x42);
    std::array<unsigned char, 32> other_secret{};
    other_secret.fill(0x43);
    const auto key = acme::derive_transfer_key(secret);
    const auto other_key = acme::derive_transfer_key(other_secret);
    const std::string aad = "www.foobar.com-ecdsa.pem 1700000000";
    const std::string plain = account().to_pem() + std::string("\0binary\xff", 8);

    const std::string sealed = acme::seal(key, aad, plain);
    CHECK(base64url_alphabet_only(sealed));
    CHECK(sealed.find(plain.substr(0, 20)) == std::string::npos);
    const auto raw = b64url_decode(sealed);
    REQUIRE(raw);
    CHECK(raw->size() == 12 + plain.size() + 16); // nonce, ciphertext, tag

    CHECK(acme::open_sealed(key, aad, sealed) == plain);
    CHECK(acme::open_sealed(key, aad, acme::seal(key, aad, "")) == std::string());
    CHECK(acme::open_sealed(key, "", acme::seal(key, "", "x")) == std::string("x"));

    CHECK(acme::open_sealed(other_key, aad, sealed) == std::nullopt);
    CHECK(acme::open_sealed(key, aad + " ", sealed) == std::nullopt);
    CHECK(acme::open_sealed(key, "", sealed) == std::nullopt);

    // One character changed anywhere but the last (whose low bits may be
    // padding): nonce, ciphertext or tag, it never opens.
    for (std::size_t i = 0; i + 1 < sealed.size(); ++i) {
        std::string tampered = sealed;
        tampered[i] = tampered[i] == 'A' ? 'B' : 'A';
        INFO("position " << i);
        CHECK(acme::open_sealed(key, aad, tampered) == std::nullopt);
    }
    for (std::size_t cut = 1; cut <= 8; ++cut) {
        INFO("cut " << cut);
        CHECK(acme::open_sealed(key, aad, sealed.substr(0, sealed.size() - cut)) == std::nullopt);
    }
    CHECK(acme::open_sealed(key, aad, sealed.substr(0, 30)) == std::nullopt); // shorter than nonce + tag
    CHECK(acme::open_sealed(key, aad, sealed + "A") == std::nullopt);
    CHECK(acme::open_sealed(key, aad, sealed + "AAAA") == std::nullopt);
    CHECK(acme::open_sealed(key, aad, "") == std::nullopt);
    CHECK(acme::open_sealed(key, aad, "not base64url at all!") == std::nullopt);
    CHECK(acme::open_sealed(key, aad, sealed.substr(0, 40) + "+" + sealed.substr(41)) == std::nullopt);
    CHECK(acme::open_sealed(key, aad, sealed.substr(0, 40) + "=" + sealed.substr(41)) == std::nullopt);
    CHECK(acme::open_sealed(key, aad, sealed + "==") == std::nullopt);
    CHECK(acme::open_sealed(key, aad, " " + sealed) == std::nullopt);

    // A random nonce: the same text sealed twice differs, and both open.
    const std::string again = acme::seal(key, aad, plain);
    CHECK(again != sealed);
    CHECK(again.substr(0, 16) != sealed.substr(0, 16));
    CHECK(acme::open_sealed(key, aad, again) == plain);
    CHECK(ERR_peek_error() == 0);
}

TEST_CASE("write_file_atomic: the mode from the start, whatever the umask", "[unit][certs][acme]") {
    const temp_dir dir;
    const std::string secret_file = dir.path + "/www.foobar.com-ecdsa.pem";
    const std::string public_file = dir.path + "/public.pem";
    {
        const umask_guard mask(0);
        acme::write_file_atomic(secret_file, "secret", 0600);
    }
    CHECK(mode_of(secret_file) == 0600);
    {
        const umask_guard mask(0077);
        acme::write_file_atomic(public_file, "public", 0644);
    }
    CHECK(mode_of(public_file) == 0644);
    {
        const umask_guard mask(0022);
        acme::write_file_atomic(public_file + ".2", "x", 0600);
        acme::write_file_atomic(public_file + ".3", "x", 0666);
    }
    CHECK(mode_of(public_file + ".2") == 0600);
    CHECK(mode_of(public_file + ".3") == 0666);
    struct stat st {};
    REQUIRE(::stat(secret_file.c_str(), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK(st.st_uid == ::geteuid());
}

TEST_CASE("write_file_atomic: replacing leaves the new content and no temporary file", "[unit][certs][acme]") {
    const temp_dir dir;
    const std::string path = dir.path + "/state.pem";
    acme::write_file_atomic(path, "first version, rather long " + std::string(5000, 'x'), 0644);
    CHECK(entries_of(dir.path) == std::vector<std::string>{"state.pem"});

    const std::string second = std::string("second\0with a zero byte", 23);
    acme::write_file_atomic(path, second, 0600);
    CHECK(entries_of(dir.path) == std::vector<std::string>{"state.pem"});
    CHECK(mode_of(path) == 0600); // the new file's mode, not the old one's

    std::string out = "stale";
    REQUIRE(acme::read_file(path, out));
    CHECK(out == second);

    acme::write_file_atomic(path, "", 0600);
    REQUIRE(acme::read_file(path, out));
    CHECK(out.empty());

    // Larger than one read.
    std::string big;
    for (int i = 0; i < 100000; ++i) {
        big += static_cast<char>(i * 31);
    }
    acme::write_file_atomic(path, big, 0600);
    REQUIRE(acme::read_file(path, out));
    CHECK(out == big);
    CHECK(entries_of(dir.path) == std::vector<std::string>{"state.pem"});
}

TEST_CASE("read_file: false when missing, the content otherwise", "[unit][certs][acme]") {
    const temp_dir dir;
    std::string out;
    CHECK_FALSE(acme::read_file(dir.path + "/missing.pem", out));
    acme::write_file_atomic(dir.path + "/present.pem", "content\n", 0600);
    CHECK(acme::read_file(dir.path + "/present.pem", out));
    CHECK(out == "content\n");
    // A directory in the way is an error, not "missing".
    CHECK_THROWS_AS(acme::read_file(dir.path + "/present.pem/below", out), certs::cert_error);
}

TEST_CASE("write_file_atomic: a missing directory is an error, and nothing is left", "[unit][certs][acme]") {
    const temp_dir dir;
    const std::string path = dir.path + "/missing/state.pem";
    try {
        acme::write_file_atomic(path, "data", 0600);
        FAIL("no exception");
    } catch (const certs::cert_error& e) {
        CHECK_THAT(e.what(), Contains(path));
    }
    CHECK(entries_of(dir.path).empty());
    std::string out;
    CHECK_FALSE(acme::read_file(path, out));
}
