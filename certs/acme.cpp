#include "certs/acme.hpp"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace rampart::certs::acme {

using namespace detail;

namespace {

using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, openssl_deleter<EVP_MD_CTX_free>>;
using req_ptr = std::unique_ptr<X509_REQ, openssl_deleter<X509_REQ_free>>;
using ecdsa_sig_ptr = std::unique_ptr<ECDSA_SIG, openssl_deleter<ECDSA_SIG_free>>;
using octet_ptr = std::unique_ptr<ASN1_OCTET_STRING, openssl_deleter<ASN1_OCTET_STRING_free>>;
using object_ptr = std::unique_ptr<ASN1_OBJECT, openssl_deleter<ASN1_OBJECT_free>>;

std::string sha256(std::string_view data) {
    unsigned char out[32];
    unsigned int n = 0;
    if (EVP_Digest(data.data(), data.size(), out, &n, EVP_sha256(), nullptr) != 1 || n != sizeof out) {
        fail("SHA-256 failed");
    }
    return std::string(reinterpret_cast<const char*>(out), n);
}

std::string bignum_bytes(const BIGNUM* bn, int width) {
    std::string out(static_cast<std::size_t>(width), '\0');
    if (BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), width) != width) {
        fail("number too large");
    }
    return out;
}

/// A JSON string literal; what the server sent (a nonce, a URL) is escaped.
std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20) {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\u00";
            out += hex[u >> 4];
            out += hex[u & 15];
        } else {
            out += c;
        }
    }
    return out + "\"";
}

std::chrono::system_clock::time_point to_time(const ASN1_TIME* t) {
    std::tm tm{};
    if (ASN1_TIME_to_tm(t, &tm) != 1) {
        throw cert_error("a certificate has an unreadable validity time");
    }
    return std::chrono::system_clock::from_time_t(::timegm(&tm));
}

/// Host names only (letters, digits, '-', '.', an optional leading "*."):
/// anything else could add entries to the "DNS:a,DNS:b" extension text.
void check_name(const std::string& name) {
    const std::string_view rest = name.starts_with("*.") ? std::string_view(name).substr(2) : name;
    const bool ok = !rest.empty() && rest.size() <= 253 && std::all_of(rest.begin(), rest.end(), [](unsigned char c) {
        return std::isalnum(c) != 0 || c == '-' || c == '.';
    });
    if (!ok) {
        throw cert_error("not a host name: " + name);
    }
}

std::string san_list(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) {
        check_name(n);
        out += (out.empty() ? "DNS:" : ",DNS:") + n;
    }
    return out;
}

std::vector<x509_ptr> read_chain(std::string_view pem) {
    bio_ptr bio{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
    std::vector<x509_ptr> chain;
    while (bio) {
        x509_ptr cert{PEM_read_bio_X509(bio.get(), nullptr, no_password, nullptr)};
        if (!cert) {
            break;
        }
        chain.push_back(std::move(cert));
    }
    ERR_clear_error(); // the end of the buffer reads as an error
    if (chain.empty()) {
        throw cert_error("no certificate in the chain");
    }
    return chain;
}

} // namespace

const char* key_type_name(key_type t) {
    return t == key_type::rsa ? "rsa" : "ecdsa";
}

// ------------------------------------------------------------------ keys

private_key private_key::generate(key_type t) {
    private_key k;
    k.key_ = generate_key(t == key_type::rsa);
    return k;
}

private_key private_key::from_pem(std::string_view pem, const std::string& what) {
    bio_ptr bio{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
    private_key k;
    k.key_.reset(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr) : nullptr);
    if (!k.key_) {
        ERR_clear_error();
        throw cert_error(what + ": not a readable unencrypted PEM private key");
    }
    if (!EVP_PKEY_is_a(k.key_.get(), "EC") && !EVP_PKEY_is_a(k.key_.get(), "RSA")) {
        throw cert_error(what + ": neither an EC nor an RSA key");
    }
    return k;
}

std::string private_key::to_pem() const {
    return pem_of(
        [&](BIO* b) { return PEM_write_bio_PrivateKey(b, key_.get(), nullptr, nullptr, 0, nullptr, nullptr); },
        "a private key");
}

key_type private_key::type() const {
    return EVP_PKEY_is_a(key_.get(), "RSA") ? key_type::rsa : key_type::ecdsa;
}

// ------------------------------------------------------------------ JWS

std::string base64url(std::string_view bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(n));
    while (!out.empty() && out.back() == '=') {
        out.pop_back();
    }
    for (char& c : out) {
        c = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    return out;
}

std::string jwk(const private_key& account) {
    EVP_PKEY* k = account.get();
    char group[32] = {};
    std::size_t group_length = 0;
    if (!EVP_PKEY_is_a(k, "EC") ||
        EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &group_length) != 1 ||
        std::string_view(group, group_length) != "prime256v1") {
        throw cert_error("the ACME account key must be an EC P-256 key (ES256)");
    }
    BIGNUM* x = nullptr;
    BIGNUM* y = nullptr;
    if (EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
        EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1) {
        BN_free(x);
        fail("cannot read the account key's public point");
    }
    const bignum_ptr hold_x{x};
    const bignum_ptr hold_y{y};
    return R"({"crv":"P-256","kty":"EC","x":")" + base64url(bignum_bytes(x, 32)) + R"(","y":")" +
           base64url(bignum_bytes(y, 32)) + "\"}";
}

std::string jwk_thumbprint(const private_key& account) {
    return base64url(sha256(jwk(account)));
}

std::string sign_request(const private_key& account, std::string_view kid, std::string_view nonce, std::string_view url,
                         std::string_view payload) {
    std::string header = R"({"alg":"ES256",)";
    header += kid.empty() ? "\"jwk\":" + jwk(account) : "\"kid\":" + json_string(kid);
    header += ",\"nonce\":" + json_string(nonce) + ",\"url\":" + json_string(url) + "}";
    const std::string protected64 = base64url(header);
    const std::string payload64 = base64url(payload);
    const std::string input = protected64 + "." + payload64;

    md_ctx_ptr md{EVP_MD_CTX_new()};
    std::size_t der_length = 0;
    if (!md || EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, account.get()) != 1 ||
        EVP_DigestSign(md.get(), nullptr, &der_length, reinterpret_cast<const unsigned char*>(input.data()),
                       input.size()) != 1) {
        fail("cannot sign an ACME request");
    }
    std::string der(der_length, '\0');
    if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(der.data()), &der_length,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
        fail("cannot sign an ACME request");
    }
    // JWS wants r || s, 32 bytes each (RFC 7518 section 3.4), not DER.
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    ecdsa_sig_ptr sig{d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der_length))};
    if (!sig) {
        fail("cannot decode an ECDSA signature");
    }
    const std::string raw =
        bignum_bytes(ECDSA_SIG_get0_r(sig.get()), 32) + bignum_bytes(ECDSA_SIG_get0_s(sig.get()), 32);
    return R"({"protected":")" + protected64 + R"(","payload":")" + payload64 + R"(","signature":")" + base64url(raw) +
           "\"}";
}

std::string key_authorization(std::string_view token, const private_key& account) {
    return std::string(token) + "." + jwk_thumbprint(account);
}

bool valid_token(std::string_view token) {
    return token.size() >= 16 && token.size() <= 128 && std::all_of(token.begin(), token.end(), [](unsigned char c) {
               return std::isalnum(c) != 0 || c == '-' || c == '_';
           });
}

// ------------------------------------------------------------------ certificates

std::string make_csr(const private_key& key, const std::vector<std::string>& names) {
    if (names.empty()) {
        throw cert_error("a certificate request needs at least one name");
    }
    const std::string sans = san_list(names);
    req_ptr req{X509_REQ_new()};
    X509_NAME* subject = req ? X509_REQ_get_subject_name(req.get()) : nullptr;
    // The CN holds 64 characters at most (RFC 5280); a longer first name is
    // in the SAN only, which is what clients check anyway.
    const bool with_cn = names.front().size() <= 64;
    if (!req || X509_REQ_set_version(req.get(), 0) != 1 ||
        (with_cn &&
         X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(names.front().c_str()), -1, -1, 0) != 1) ||
        X509_REQ_set_pubkey(req.get(), key.get()) != 1) {
        fail("cannot build a certificate request");
    }
    STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, sans.c_str());
    const bool added = exts != nullptr && san != nullptr && sk_X509_EXTENSION_push(exts, san) > 0;
    if (!added) {
        X509_EXTENSION_free(san);
    }
    const bool ok = added && X509_REQ_add_extensions(req.get(), exts) == 1;
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    if (!ok || X509_REQ_sign(req.get(), key.get(), EVP_sha256()) <= 0) {
        fail("cannot sign a certificate request");
    }
    unsigned char* der = nullptr;
    const int n = i2d_X509_REQ(req.get(), &der);
    if (n <= 0) {
        fail("cannot encode a certificate request");
    }
    std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(n));
    OPENSSL_free(der);
    return out;
}

alpn_certificate make_alpn_certificate(const std::string& name, std::string_view key_authorization) {
    const std::string sans = san_list({name});
    const pkey_ptr key = generate_key(false);
    // Its CN is not what is validated (the SAN is): a fixed one fits any name.
    x509_ptr cert = make_certificate(key.get(), "ACME tls-alpn-01 validation", 7, nullptr);
    add_extension(cert.get(), nullptr, NID_subject_alt_name, sans);
    // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31), critical; its extnValue is
    // the DER of an OCTET STRING holding SHA-256(key authorization).
    const std::string digest = sha256(key_authorization);
    std::string inner = std::string("\x04\x20", 2) + digest;
    object_ptr oid{OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1)};
    octet_ptr value{ASN1_OCTET_STRING_new()};
    if (!oid || !value ||
        ASN1_OCTET_STRING_set(value.get(), reinterpret_cast<const unsigned char*>(inner.data()),
                              static_cast<int>(inner.size())) != 1) {
        fail("cannot build the acmeIdentifier extension");
    }
    x509_ext_ptr ext{X509_EXTENSION_create_by_OBJ(nullptr, oid.get(), 1, value.get())};
    if (!ext || X509_add_ext(cert.get(), ext.get(), -1) != 1) {
        fail("cannot add the acmeIdentifier extension");
    }
    sign(cert.get(), key.get());
    alpn_certificate out;
    unsigned char* der = nullptr;
    int n = i2d_X509(cert.get(), &der);
    if (n <= 0) {
        fail("cannot encode the validation certificate");
    }
    out.cert_der.assign(reinterpret_cast<const char*>(der), static_cast<std::size_t>(n));
    OPENSSL_free(der);
    der = nullptr;
    n = i2d_PrivateKey(key.get(), &der);
    if (n <= 0) {
        fail("cannot encode the validation key");
    }
    out.key_der.assign(reinterpret_cast<const char*>(der), static_cast<std::size_t>(n));
    OPENSSL_clear_free(der, static_cast<std::size_t>(n));
    return out;
}

chain_facts inspect_chain(std::string_view pem) {
    const auto chain = read_chain(pem);
    X509* leaf = chain.front().get();
    chain_facts f;
    f.certificates = chain.size();
    f.not_before = to_time(X509_get0_notBefore(leaf));
    f.not_after = to_time(X509_get0_notAfter(leaf));
    if (const bignum_ptr serial{ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), nullptr)}) {
        if (char* hex = BN_bn2hex(serial.get())) {
            f.serial = hex;
            OPENSSL_free(hex);
        }
    }
    f.issuer = issuer_name(leaf);
    const EVP_PKEY* public_key = X509_get0_pubkey(leaf);
    f.key_type = public_key == nullptr                              ? "other"
                 : EVP_PKEY_get_base_id(public_key) == EVP_PKEY_EC  ? "ECDSA"
                 : EVP_PKEY_get_base_id(public_key) == EVP_PKEY_RSA ? "RSA"
                                                                    : "other";
    const general_names_ptr sans{
        static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr))};
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans.get()); ++i) {
        const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans.get(), i);
        if (g->type == GEN_DNS) {
            f.names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(g->d.dNSName)),
                                 static_cast<std::size_t>(ASN1_STRING_length(g->d.dNSName)));
        }
    }
    return f;
}

std::string issuer_name(X509* cert) {
    const X509_NAME* issuer = X509_get_issuer_name(cert);
    char cn[256] = {};
    if (X509_NAME_get_text_by_NID(const_cast<X509_NAME*>(issuer), NID_commonName, cn, sizeof cn) > 0) {
        return cn;
    }
    std::string out;
    if (char* line = X509_NAME_oneline(issuer, nullptr, 0)) {
        out = line;
        OPENSSL_free(line);
    }
    return out;
}

std::string normalise_chain(std::string_view pem) {
    const auto chain = read_chain(pem);
    if (chain.size() > 10) {
        throw cert_error("a chain of " + std::to_string(chain.size()) + " certificates (10 at most)");
    }
    std::string out;
    for (const auto& cert : chain) {
        out += pem_of([&](BIO* b) { return PEM_write_bio_X509(b, cert.get()); }, "a certificate");
    }
    return out;
}

bool chain_links(std::string_view pem) {
    const auto chain = read_chain(pem);
    for (std::size_t i = 0; i + 1 < chain.size(); ++i) {
        EVP_PKEY* issuer_key = X509_get0_pubkey(chain[i + 1].get());
        if (issuer_key == nullptr || X509_verify(chain[i].get(), issuer_key) != 1) {
            ERR_clear_error();
            return false;
        }
    }
    return true;
}

bool key_matches(std::string_view chain_pem, const private_key& key) {
    const auto chain = read_chain(chain_pem);
    const bool ok = X509_check_private_key(chain.front().get(), key.get()) == 1;
    ERR_clear_error();
    return ok;
}

std::string make_placeholder(const private_key& key, const std::vector<std::string>& names, long days) {
    x509_ptr cert = make_certificate(key.get(), "Rampart placeholder", days, nullptr);
    add_extension(cert.get(), nullptr, NID_subject_alt_name, san_list(names));
    sign(cert.get(), key.get());
    return pem_of([&](BIO* b) { return PEM_write_bio_X509(b, cert.get()); }, "a certificate");
}

// ------------------------------------------------------------------ the pair

transfer_key derive_transfer_key(const std::array<unsigned char, 32>& secret) {
    static constexpr std::string_view label = "rampart acme transfer v1";
    transfer_key key{};
    hkdf_sha256(secret.data(), secret.size(), reinterpret_cast<const unsigned char*>(label.data()), label.size(),
                key.data(), key.size());
    return key;
}

namespace {

using cipher_ctx_ptr = std::unique_ptr<EVP_CIPHER_CTX, openssl_deleter<EVP_CIPHER_CTX_free>>;
constexpr std::size_t gcm_nonce = 12;
constexpr std::size_t gcm_tag = 16;

std::optional<std::string> base64url_decode(std::string_view text) {
    std::string b64(text);
    for (char& c : b64) {
        if (c == '-') {
            c = '+';
        } else if (c == '_') {
            c = '/';
        } else if (!(std::isalnum(static_cast<unsigned char>(c)) != 0)) {
            return std::nullopt;
        }
    }
    while (b64.size() % 4 != 0) {
        b64 += '=';
    }
    std::string out(b64.size() / 4 * 3, '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
    if (n < 0) {
        return std::nullopt;
    }
    // EVP_DecodeBlock counts the padding's zero bytes too.
    const std::size_t padding =
        static_cast<std::size_t>(std::count(b64.end() - std::min<std::size_t>(2, b64.size()), b64.end(), '='));
    out.resize(static_cast<std::size_t>(n) - padding);
    // Only the canonical encoding is accepted (a length of 1 mod 4, or
    // stray bits in the last character, would decode to something).
    if (base64url(out) != text) {
        return std::nullopt;
    }
    return out;
}

} // namespace

std::string seal(const transfer_key& key, std::string_view aad, std::string_view plain) {
    unsigned char nonce[gcm_nonce];
    if (RAND_bytes(nonce, sizeof nonce) != 1) {
        fail("no random bytes for a nonce");
    }
    cipher_ctx_ptr ctx{EVP_CIPHER_CTX_new()};
    int n = 0;
    std::string out(sizeof nonce + plain.size() + gcm_tag, '\0');
    auto* o = reinterpret_cast<unsigned char*>(out.data());
    std::memcpy(o, nonce, sizeof nonce);
    if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nonce) != 1 ||
        EVP_EncryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                          static_cast<int>(aad.size())) != 1 ||
        EVP_EncryptUpdate(ctx.get(), o + sizeof nonce, &n, reinterpret_cast<const unsigned char*>(plain.data()),
                          static_cast<int>(plain.size())) != 1 ||
        EVP_EncryptFinal_ex(ctx.get(), o + sizeof nonce + n, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, gcm_tag, o + sizeof nonce + plain.size()) != 1) {
        fail("cannot seal");
    }
    const std::string text = base64url(out);
    OPENSSL_cleanse(out.data(), out.size());
    return text;
}

std::optional<std::string> open_sealed(const transfer_key& key, std::string_view aad, std::string_view sealed) {
    auto raw = base64url_decode(sealed);
    if (!raw || raw->size() < gcm_nonce + gcm_tag) {
        return std::nullopt;
    }
    const auto* r = reinterpret_cast<const unsigned char*>(raw->data());
    const std::size_t length = raw->size() - gcm_nonce - gcm_tag;
    std::string plain(length, '\0');
    auto* p = reinterpret_cast<unsigned char*>(plain.data());
    cipher_ctx_ptr ctx{EVP_CIPHER_CTX_new()};
    int n = 0;
    const bool ok = ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), r) == 1 &&
                    EVP_DecryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                                      static_cast<int>(aad.size())) == 1 &&
                    EVP_DecryptUpdate(ctx.get(), p, &n, r + gcm_nonce, static_cast<int>(length)) == 1 &&
                    EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, gcm_tag,
                                        const_cast<unsigned char*>(r + gcm_nonce + length)) == 1 &&
                    EVP_DecryptFinal_ex(ctx.get(), p + n, &n) == 1;
    ERR_clear_error();
    if (!ok) {
        OPENSSL_cleanse(plain.data(), plain.size());
        return std::nullopt;
    }
    return plain;
}

// ------------------------------------------------------------------ files

void write_file_atomic(const std::string& path, std::string_view data, mode_t mode) {
    std::string temp = path + ".tmp.XXXXXX";
    fd_closer file{::mkostemp(temp.data(), O_CLOEXEC)};
    if (file.fd < 0) {
        throw cert_error("cannot create a temporary file beside " + path + ": " + errno_text(errno));
    }
    auto fail_file = [&](const std::string& what) {
        const std::string reason = errno_text(errno);
        ::unlink(temp.c_str());
        throw cert_error("cannot " + what + " " + path + ": " + reason);
    };
    if (::fchmod(file.fd, mode) != 0) {
        fail_file("set the mode of");
    }
    for (std::string_view rest = data; !rest.empty();) {
        const ssize_t n = ::write(file.fd, rest.data(), rest.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fail_file("write");
        }
        rest.remove_prefix(static_cast<std::size_t>(n));
    }
    if (::fsync(file.fd) != 0) {
        fail_file("sync");
    }
    const int fd = file.fd;
    file.fd = -1;
    if (::close(fd) != 0) {
        fail_file("write");
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) {
        fail_file("rename a temporary file to");
    }
    const auto slash = path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    fd_closer d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    if (d.fd < 0 || ::fsync(d.fd) != 0) {
        throw cert_error("cannot sync the directory of " + path + ": " + errno_text(errno));
    }
}

bool read_file(const std::string& path, std::string& out) {
    out.clear();
    fd_closer file{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
    if (file.fd < 0) {
        if (errno == ENOENT) {
            return false;
        }
        throw cert_error("cannot read " + path + ": " + errno_text(errno));
    }
    char buffer[8192];
    for (;;) {
        const ssize_t n = ::read(file.fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            throw cert_error("cannot read " + path + ": " + errno_text(errno));
        }
        if (n == 0) {
            return true;
        }
        out.append(buffer, static_cast<std::size_t>(n));
        if (out.size() > 1024 * 1024) {
            throw cert_error(path + " is larger than 1 MiB");
        }
    }
}

} // namespace rampart::certs::acme
