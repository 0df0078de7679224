#include "certs/certs.hpp"
#include "certs/acme.hpp"
#include "certs/openssl_util.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>

namespace rampart::certs {

namespace detail {

/// Drains the calling thread's OpenSSL error queue into one line.
std::string openssl_errors() {
    std::string out;
    const char* data = nullptr;
    int flags = 0;
    while (unsigned long code = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
        char text[256];
        ERR_error_string_n(code, text, sizeof text);
        if (!out.empty()) {
            out += "; ";
        }
        out += text;
        if ((flags & ERR_TXT_STRING) != 0 && data != nullptr && *data != '\0') {
            out += " (";
            out += data;
            out += ')';
        }
    }
    return out.empty() ? "no OpenSSL error reported" : out;
}

[[noreturn]] void fail(const std::string& what) {
    throw cert_error(what + ": " + openssl_errors());
}

std::string pem_of(const std::function<int(BIO*)>& write, const std::string& what) {
    bio_ptr bio{BIO_new(BIO_s_mem())};
    if (!bio || write(bio.get()) != 1) {
        fail("cannot encode " + what);
    }
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(length));
}

pkey_ptr generate_key(bool rsa) {
    pkey_ptr key{rsa ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(2048))
                     : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")};
    if (!key) {
        fail(rsa ? "cannot generate an RSA key" : "cannot generate an ECDSA key");
    }
    return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    x509_ext_ptr ext{X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str())};
    if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
        fail(std::string("cannot add extension ") + OBJ_nid2sn(nid) + " = " + value);
    }
}

/// An unsigned certificate for `key`, issued by `issuer` (self-issued when null).
x509_ptr make_certificate(EVP_PKEY* key, const std::string& common_name, long days, X509* issuer) {
    x509_ptr cert{X509_new()};
    if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
        fail("cannot create a certificate");
    }
    bignum_ptr serial{BN_new()};
    // 128 random bits with the top one set: positive, non-zero, 17 DER bytes
    // at most (RFC 5280 allows 20), and unpredictable as the CA/B rules ask.
    if (!serial || BN_rand(serial.get(), 128, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) != 1 ||
        BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
        fail("cannot make a serial number");
    }
    // Back-dated one hour for clock skew, with notAfter moved back as well so
    // that the whole period stays exactly `days` (Apple refuses server
    // certificates valid for more than 825 days).
    if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
        X509_time_adj_ex(X509_getm_notAfter(cert.get()), static_cast<int>(days), -3600, nullptr) == nullptr) {
        fail("cannot set validity");
    }
    X509_NAME* subject = X509_get_subject_name(cert.get());
    if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0) != 1 ||
        X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : subject) != 1 ||
        X509_set_pubkey(cert.get(), key) != 1) {
        fail("cannot set certificate names");
    }
    return cert;
}

void sign(X509* cert, EVP_PKEY* issuer_key) {
    if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0) {
        fail("cannot sign certificate");
    }
}

void hkdf_sha256(const unsigned char* secret, std::size_t secret_length, const unsigned char* info,
                 std::size_t info_length, unsigned char* out, std::size_t out_length) {
    kdf_ptr kdf{EVP_KDF_fetch(nullptr, "HKDF", nullptr)};
    kdf_ctx_ptr ctx{kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr};
    if (!ctx) {
        fail("HKDF unavailable");
    }
    // OSSL_PARAM is not const-correct; OpenSSL only reads these buffers.
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<unsigned char*>(secret), secret_length),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<unsigned char*>(info), info_length),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_KDF_derive(ctx.get(), out, out_length, params) != 1) {
        fail("HKDF derivation failed");
    }
}

} // namespace detail

using namespace detail;

namespace {

// Every context gets these. OpenSSL copies most settings (protocol range,
// cipher list, groups, options, modes) from the *initial* context into the SSL
// at SSL_new, and SSL_set_SSL_CTX on SNI only swaps certificates, the session
// id context and the context whose ALPN callback runs; so all contexts must be
// configured identically or behaviour would depend on which name was asked for.
constexpr const char* tls12_ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                      "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
// TLS 1.3 in the same spirit as the 1.2 list: AES-128-GCM first. It is the
// security level of the P-256 and X25519 key exchange (AES-256 buys nothing
// above it), costs 10 AES rounds instead of 14 per block and keys its schedule
// with SHA-256, which the CPU's SHA extensions accelerate (SHA-384 has none).
// OpenSSL's default puts AES-256 first. With PRIORITIZE_CHACHA a client that
// lists ChaCha20 first (a phone without AES instructions) still gets it.
constexpr const char* tls13_suites = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384";
constexpr const char* groups = "X25519:P-256:P-384";
constexpr std::string_view session_id_context = "rampart";
constexpr std::string_view ticket_info_label = "rampart ticket key";

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c); });
    return out;
}

std::string asn1_to_string(const ASN1_STRING* s) {
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<std::size_t>(ASN1_STRING_length(s)));
}

// ---------------------------------------------------------------------------
// Reading certificates

struct leaf_info {
    std::vector<std::string> names; ///< lower case, in certificate order
    std::string key_type;
    std::string issuer; ///< the issuer's CN, else its whole name
    std::chrono::system_clock::time_point not_after;
};

std::vector<std::string> dns_names(X509* cert) {
    std::vector<std::string> names;
    general_names_ptr sans{static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr))};
    if (sans) {
        for (int i = 0; i < sk_GENERAL_NAME_num(sans.get()); ++i) {
            const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), i);
            if (gn->type != GEN_DNS) {
                continue;
            }
            std::string name = asn1_to_string(gn->d.dNSName);
            // An embedded NUL would let "a.com\0.evil" pass as "a.com" in C code.
            if (!name.empty() && name.find('\0') == std::string::npos) {
                names.push_back(lower(name));
            }
        }
    }
    if (!names.empty()) {
        return names;
    }
    const X509_NAME* subject = X509_get_subject_name(cert);
    int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (index >= 0) {
        const ASN1_STRING* cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
        unsigned char* utf8 = nullptr;
        int length = ASN1_STRING_to_UTF8(&utf8, cn);
        if (length > 0) {
            std::string name(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
            if (name.find('\0') == std::string::npos) {
                names.push_back(lower(name));
            }
        }
        OPENSSL_free(utf8);
    }
    return names;
}

std::chrono::system_clock::time_point to_time_point(const ASN1_TIME* t, const std::string& file) {
    std::tm tm{};
    if (ASN1_TIME_to_tm(t, &tm) != 1) {
        fail("certificate " + file + ": unreadable notAfter");
    }
    using namespace std::chrono;
    const sys_days date =
        year{tm.tm_year + 1900} / month{static_cast<unsigned>(tm.tm_mon + 1)} / day{static_cast<unsigned>(tm.tm_mday)};
    return time_point_cast<system_clock::duration>(date + hours{tm.tm_hour} + minutes{tm.tm_min} + seconds{tm.tm_sec});
}

/// Reads the leaf (first) certificate of a PEM chain file.
leaf_info read_leaf(const std::string& file) {
    bio_ptr bio{BIO_new_file(file.c_str(), "r")};
    if (!bio) {
        fail("certificate " + file + ": cannot open");
    }
    x509_ptr cert{PEM_read_bio_X509(bio.get(), nullptr, no_password, nullptr)};
    if (!cert) {
        fail("certificate " + file + ": no PEM certificate found");
    }
    leaf_info info;
    info.names = dns_names(cert.get());
    const EVP_PKEY* key = X509_get0_pubkey(cert.get());
    if (key == nullptr) {
        fail("certificate " + file + ": unreadable public key");
    }
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_EC:
        info.key_type = "ECDSA";
        break;
    case EVP_PKEY_RSA:
        info.key_type = "RSA";
        break;
    default:
        throw cert_error("certificate " + file + ": unsupported key type " +
                         std::string(EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "?") +
                         " (use ECDSA or RSA)");
    }
    info.not_after = to_time_point(X509_get0_notAfter(cert.get()), file);
    info.issuer = acme::issuer_name(cert.get());
    return info;
}

// ---------------------------------------------------------------------------
// Callbacks

/// ex_data slot of every SSL_CTX holding its `const ticket_key_source*`.
int keys_index() {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

// SNI: runs after the ClientHello extensions are parsed; switching the SSL's
// context swaps in that context's certificates (both ECDSA and RSA slots).
// tls-alpn-01 (RFC 8737): a ClientHello that offers ALPN "acme-tls/1" gets
// the validation certificate published for its SNI name, and nothing else.

acme_alpn_lookup acme_lookup = nullptr;

int acme_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

bool is_acme_validation(SSL* ssl) {
    return SSL_get_ex_data(ssl, acme_index()) != nullptr;
}

/// The host_name of a ClientHello's server_name extension (RFC 6066).
std::string hello_server_name(SSL* ssl) {
    const unsigned char* p = nullptr;
    std::size_t n = 0;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &n) != 1 || n < 5) {
        return {};
    }
    const std::size_t list = (std::size_t{p[0]} << 8) | p[1];
    if (list + 2 != n || p[2] != TLSEXT_NAMETYPE_host_name) {
        return {};
    }
    const std::size_t length = (std::size_t{p[3]} << 8) | p[4];
    if (length == 0 || length + 5 > n) {
        return {};
    }
    return lower(std::string_view(reinterpret_cast<const char*>(p + 5), length));
}

bool offers_acme_tls(SSL* ssl) {
    const unsigned char* p = nullptr;
    std::size_t n = 0;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p, &n) != 1 || n < 2) {
        return false;
    }
    for (std::size_t at = 2; at < n;) {
        const std::size_t length = p[at];
        if (length == 0 || at + 1 + length > n) {
            return false;
        }
        if (std::string_view(reinterpret_cast<const char*>(p + at + 1), length) == acme_tls_protocol) {
            return true;
        }
        at += 1 + length;
    }
    return false;
}

int on_client_hello(SSL* ssl, int* alert, void*) {
    if (acme_lookup == nullptr || !offers_acme_tls(ssl)) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    try {
        const std::string name = hello_server_name(ssl);
        std::string cert_der;
        std::string key_der;
        if (!name.empty() && acme_lookup(name, cert_der, key_der) &&
            SSL_use_certificate_ASN1(ssl, reinterpret_cast<const unsigned char*>(cert_der.data()),
                                     static_cast<int>(cert_der.size())) == 1 &&
            SSL_use_PrivateKey_ASN1(EVP_PKEY_EC, ssl, reinterpret_cast<const unsigned char*>(key_der.data()),
                                    static_cast<long>(key_der.size())) == 1) {
            OPENSSL_cleanse(key_der.data(), key_der.size());
            SSL_set_ex_data(ssl, acme_index(), ssl); // any non-null mark
            return SSL_CLIENT_HELLO_SUCCESS;
        }
        OPENSSL_cleanse(key_der.data(), key_der.size());
    } catch (...) {
        // No exception may cross OpenSSL's C frames.
    }
    ERR_clear_error();
    // acme-tls/1 for a name with no validation pending: nothing to serve.
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
}

int on_server_name(SSL* ssl, int* alert, void* arg) {
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == nullptr || arg == nullptr || is_acme_validation(ssl)) {
        // A validation keeps the certificate on_client_hello set.
        return SSL_TLSEXT_ERR_NOACK;
    }
    try {
        SSL_CTX* wanted = static_cast<const server_tls*>(arg)->select(name);
        if (wanted == SSL_get_SSL_CTX(ssl) || SSL_set_SSL_CTX(ssl, wanted) != nullptr) {
            return SSL_TLSEXT_ERR_OK;
        }
    } catch (...) {
        // No exception may cross OpenSSL's C frames; treat it like a failed switch.
    }
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

// ALPN: the protocols of gateway.tls.alpn, in the server's order of
// preference (h2 before http/1.1 by default, whatever order the client
// lists them in). A client that offers ALPN with none of them would speak a
// protocol we do not, so it gets no_application_protocol (RFC 7301 section
// 3.2) rather than a silent fallback. http/1.1 includes http/1.0 (what
// `curl --http1.0` offers; nginx accepts it too). The callback's argument is
// one of the static orders below, so no context ever points into freed memory.
struct alpn_order {
    std::array<std::string_view, 3> protocols;
    std::size_t count;
};
constexpr alpn_order alpn_h2_first{{"h2", "http/1.1", "http/1.0"}, 3};
constexpr alpn_order alpn_http11_first{{"http/1.1", "http/1.0", "h2"}, 3};
constexpr alpn_order alpn_h2_only{{"h2", "", ""}, 1};
constexpr alpn_order alpn_http11_only{{"http/1.1", "http/1.0", ""}, 2};

const alpn_order* alpn_order_of(const std::vector<std::string>& alpn) {
    const bool h2 = std::find(alpn.begin(), alpn.end(), "h2") != alpn.end();
    const bool http11 = std::find(alpn.begin(), alpn.end(), "http/1.1") != alpn.end();
    if (h2 && http11) {
        return alpn.front() == "h2" ? &alpn_h2_first : &alpn_http11_first;
    }
    return h2 ? &alpn_h2_only : &alpn_http11_only;
}

int on_alpn(SSL* ssl, const unsigned char** out, unsigned char* out_length, const unsigned char* in,
            unsigned int in_length, void* arg) {
    static constexpr alpn_order acme_order{{acme_tls_protocol, "", ""}, 1};
    const auto* order = is_acme_validation(ssl) ? &acme_order
                        : arg != nullptr        ? static_cast<const alpn_order*>(arg)
                                                : &alpn_http11_only;
    for (std::size_t i = 0; i < order->count; ++i) {
        const std::string_view wanted = order->protocols[i];
        unsigned int at = 0;
        while (at < in_length) {
            const unsigned int length = in[at];
            if (length == 0 || length > in_length - at - 1) {
                break;
            }
            const std::string_view offered(reinterpret_cast<const char*>(in + at + 1), length);
            if (offered == wanted) {
                *out = in + at + 1; // points into the ClientHello, which OpenSSL keeps until it copies it
                *out_length = static_cast<unsigned char>(length);
                return SSL_TLSEXT_ERR_OK;
            }
            at += 1 + length;
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

// The ticket cipher, fetched from the provider once: OpenSSL 3.0 looks a
// legacy EVP_aes_256_cbc() up again by name (name map, method store lock)
// on every EVP_CipherInit_ex, twice per resumed connection.
const EVP_CIPHER* ticket_cipher() {
    static EVP_CIPHER* fetched = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
    return fetched != nullptr ? fetched : EVP_aes_256_cbc();
}

bool init_ticket_crypto(const ticket_key& key, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int enc) {
    if (EVP_CipherInit_ex(cipher, ticket_cipher(), nullptr, key.aes_key.data(), iv, enc) != 1) {
        return false;
    }
    // OSSL_PARAM is not const-correct; OpenSSL only reads these buffers.
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key.hmac_key.data()),
                                          key.hmac_key.size()),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(mac, params) == 1;
}

// Session tickets (RFC 5077 format, OpenSSL's own layout): OpenSSL calls this
// to encrypt a new ticket (enc = 1) or to find the key of a presented one
// (enc = 0). Returns 1 = done (encrypting), 2 = decrypted, issue a fresh
// ticket, 0 = unknown key (full handshake), -1 = error.
// Runs on the handshake path: no exception may escape into OpenSSL's C code.
int on_ticket_key(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac,
                  int enc) {
    const auto* source = static_cast<const ticket_key_source*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), keys_index()));
    if (source == nullptr) {
        return 0;
    }
    const auto now = std::chrono::system_clock::now();
    try {
        if (enc == 1) {
            ticket_key key = source->encrypting_key(now);
            std::memcpy(key_name, key.name.data(), key.name.size());
            const bool ok = RAND_bytes(iv, EVP_CIPHER_get_iv_length(ticket_cipher())) == 1 &&
                            init_ticket_crypto(key, iv, cipher, mac, 1);
            OPENSSL_cleanse(&key, sizeof key);
            return ok ? 1 : -1;
        }
        std::vector<ticket_key> accepted = source->accepted_keys(now);
        int result = 0;
        for (std::size_t i = 0; i < accepted.size(); ++i) {
            if (std::memcmp(key_name, accepted[i].name.data(), accepted[i].name.size()) == 0) {
                // 2 = "renew": OpenSSL issues a fresh ticket on this resumed
                // connection. TLS 1.3 clients use a ticket once, so without
                // a fresh one every other connection would be a full handshake.
                result = !init_ticket_crypto(accepted[i], iv, cipher, mac, 0) ? -1 : 2;
                break;
            }
        }
        OPENSSL_cleanse(accepted.data(), accepted.size() * sizeof(ticket_key));
        return result;
    } catch (...) {
        return -1;
    }
}

// ---------------------------------------------------------------------------
// Context set-up

void configure_context(SSL_CTX* ctx, const config::tls& settings, server_tls* owner, const ticket_key_source* keys) {
    auto check = [](bool ok, const char* what) {
        if (!ok) {
            fail(std::string("TLS context: ") + what);
        }
    };
    check(SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1, "minimum version");
    check(SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1, "maximum version");
    // Pinned rather than inherited from the system openssl.cnf: refuses RSA
    // keys under 2048 bits and SHA-1 signatures whatever the host says.
    SSL_CTX_set_security_level(ctx, 2);
    check(SSL_CTX_set_cipher_list(ctx, tls12_ciphers) == 1, "TLS 1.2 cipher list");
    check(SSL_CTX_set_ciphersuites(ctx, tls13_suites) == 1, "TLS 1.3 suites");
    check(SSL_CTX_set1_groups_list(ctx, groups) == 1, "groups");

    // NO_RENEGOTIATION also refuses client-initiated renegotiation;
    // NO_CLIENT_RENEGOTIATION is not defined by 3.0, only by later releases. PRIORITIZE_CHACHA keeps
    // server preference but honours a client (typically a phone without AES
    // instructions) that lists ChaCha20 first.
    std::uint64_t options =
        SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA;
#ifdef SSL_OP_NO_CLIENT_RENEGOTIATION
    options |= SSL_OP_NO_CLIENT_RENEGOTIATION;
#endif
    // Each idle keep-alive connection would otherwise hold ~34 KiB of buffers.
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, const_cast<alpn_order*>(alpn_order_of(settings.alpn)));
    SSL_CTX_set_client_hello_cb(ctx, on_client_hello, nullptr);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_server_name);
    SSL_CTX_set_tlsext_servername_arg(ctx, owner);

    // One session id context for all contexts. OpenSSL stamps a new session
    // with the SSL's value before the SNI callback runs, so every session
    // carries the default context's value anyway: per-name values would keep
    // nothing apart.
    // NOTE: so a ticket issued under one name resumes under another (RFC 6066
    // section 3 says a TLS 1.2 server MUST NOT). Requests are routed by Host,
    // not SNI, so this grants nothing a full handshake would not; keeping
    // names apart would mean switching contexts in SSL_CTX_set_client_hello_cb,
    // which runs before the session lookup, with one id context per name set.
    check(SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const unsigned char*>(session_id_context.data()),
                                         static_cast<unsigned int>(session_id_context.size())) == 1,
          "session id context");
    // Stateless tickets only: a server-side cache would live in one worker
    // process and make resumption depend on which worker accepted.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (settings.session_tickets) {
        // ex_data slots are void*; the callback only reads through it.
        check(SSL_CTX_set_ex_data(ctx, keys_index(), const_cast<ticket_key_source*>(keys)) == 1, "ex_data");
        check(SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key) == 1, "ticket callback");
        check(ticket_cipher() != nullptr, "ticket cipher"); // fetched here, before any worker's sandbox
        check(SSL_CTX_set_num_tickets(ctx, 1) == 1, "ticket count");
        // A ticket encrypted at t is accepted until at least t + rotation (its
        // key encrypts for one period and decrypts for one more); the session
        // lifetime is set to match, within TLS 1.3's 7-day maximum.
        const auto rotation = std::chrono::duration_cast<std::chrono::seconds>(settings.ticket_rotation).count();
        SSL_CTX_set_timeout(ctx, static_cast<long>(std::clamp<long long>(rotation, 1, 7 * 24 * 3600)));
    } else {
        options |= SSL_OP_NO_TICKET;
        // With NO_TICKET, TLS 1.3 would still send stateful tickets that the
        // disabled cache can never honour.
        check(SSL_CTX_set_num_tickets(ctx, 0) == 1, "ticket count");
    }
    SSL_CTX_set_options(ctx, options);
}

// ---------------------------------------------------------------------------
// Files

// The file is removed first and recreated exclusively with its final mode, so
// no reader can hold a descriptor opened under older, wider permissions, and
// fchmod undoes a restrictive umask for certificates.
void write_file(const std::string& path, std::string_view data, mode_t mode) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        throw cert_error("cannot replace " + path + ": " + errno_text(errno));
    }
    fd_closer file{::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)};
    if (file.fd < 0) {
        throw cert_error("cannot create " + path + ": " + errno_text(errno));
    }
    if (::fchmod(file.fd, mode) != 0) {
        throw cert_error("cannot chmod " + path + ": " + errno_text(errno));
    }
    while (!data.empty()) {
        const ssize_t n = ::write(file.fd, data.data(), data.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            throw cert_error("cannot write " + path + ": " + errno_text(errno));
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    const int fd = file.fd;
    file.fd = -1;
    if (::close(fd) != 0) {
        throw cert_error("cannot write " + path + ": " + errno_text(errno));
    }
}

// ---------------------------------------------------------------------------
// Development certificates

bool is_ip_literal(const std::string& name) {
    unsigned char buffer[16];
    return ::inet_pton(AF_INET, name.c_str(), buffer) == 1 || ::inet_pton(AF_INET6, name.c_str(), buffer) == 1;
}

/// A host name (optionally "*." + host name) or an IP literal. Anything else
/// could inject entries into the "DNS:a,DNS:b" extension text.
bool valid_dev_name(const std::string& name) {
    if (is_ip_literal(name)) {
        return true;
    }
    const std::string_view rest = name.starts_with("*.") ? std::string_view(name).substr(2) : name;
    return !rest.empty() && rest.size() <= 253 && std::all_of(rest.begin(), rest.end(), [](unsigned char c) {
        return std::isalnum(c) != 0 || c == '-' || c == '.';
    });
}

} // namespace

// ---------------------------------------------------------------------------
// check_key_permissions

void check_key_permissions(const std::string& key_file) {
    struct stat st {};
    if (::stat(key_file.c_str(), &st) != 0) {
        throw cert_error("key " + key_file + ": " + errno_text(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        throw cert_error("key " + key_file + " is not a regular file");
    }
    if ((st.st_mode & 077) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        throw cert_error("key " + key_file + " is readable or writable by group or others (mode " + mode +
                         "); run: chmod 600 " + key_file);
    }
}

// ---------------------------------------------------------------------------
// derived_ticket_keys

derived_ticket_keys::derived_ticket_keys(std::chrono::milliseconds rotation) : rotation_(rotation), secret_{} {
    if (rotation_.count() <= 0) {
        throw cert_error("ticket key rotation must be positive");
    }
    if (RAND_bytes(secret_.data(), static_cast<int>(secret_.size())) != 1) {
        fail("cannot generate the ticket key secret");
    }
}

derived_ticket_keys::derived_ticket_keys(std::chrono::milliseconds rotation,
                                         const std::array<unsigned char, 32>& secret)
    : rotation_(rotation), secret_(secret) {
    if (rotation_.count() <= 0) {
        throw cert_error("ticket key rotation must be positive");
    }
}

derived_ticket_keys::~derived_ticket_keys() {
    OPENSSL_cleanse(secret_.data(), secret_.size());
    OPENSSL_cleanse(cached_.data(), sizeof cached_);
}

ticket_key derived_ticket_keys::key_for_epoch(std::uint64_t epoch) const {
    // info = label || epoch as 8 big-endian bytes, so that keys depend on the
    // period alone and every holder of the secret derives the same ones.
    std::array<unsigned char, ticket_info_label.size() + 8> info{};
    std::copy(ticket_info_label.begin(), ticket_info_label.end(), info.begin());
    for (int i = 0; i < 8; ++i) {
        info[ticket_info_label.size() + static_cast<std::size_t>(i)] =
            static_cast<unsigned char>(epoch >> (56 - 8 * i));
    }
    std::array<unsigned char, 80> out{};
    hkdf_sha256(secret_.data(), secret_.size(), info.data(), info.size(), out.data(), out.size());
    ticket_key key;
    const unsigned char* at = out.data();
    std::memcpy(key.name.data(), at, key.name.size());
    at += key.name.size();
    std::memcpy(key.aes_key.data(), at, key.aes_key.size());
    at += key.aes_key.size();
    std::memcpy(key.hmac_key.data(), at, key.hmac_key.size());
    OPENSSL_cleanse(out.data(), out.size());
    return key;
}

std::uint64_t derived_ticket_keys::epoch_of(std::chrono::system_clock::time_point now) const {
    const auto since = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch());
    return static_cast<std::uint64_t>(since / rotation_);
}

std::array<ticket_key, 3> derived_ticket_keys::keys_at(std::uint64_t epoch) const {
    std::lock_guard lock(cache_mutex_);
    if (cached_epoch_ != epoch) {
        cached_[0] = key_for_epoch(epoch);
        cached_[1] = epoch > 0 ? key_for_epoch(epoch - 1) : cached_[0];
        cached_[2] = key_for_epoch(epoch + 1);
        cached_epoch_ = epoch;
    }
    return cached_;
}

ticket_key derived_ticket_keys::encrypting_key(std::chrono::system_clock::time_point now) const {
    return keys_at(epoch_of(now))[0];
}

// The next period's key decrypts already: a gateway whose clock is a little
// behind its peer's resumes tickets the peer issued under the new key.
std::vector<ticket_key> derived_ticket_keys::accepted_keys(std::chrono::system_clock::time_point now) const {
    const auto epoch = epoch_of(now);
    auto keys = keys_at(epoch);
    if (epoch == 0) {
        return {keys[0], keys[2]};
    }
    return {keys[0], keys[1], keys[2]};
}

std::array<unsigned char, 32> load_ticket_secret(const std::string& path) {
    check_key_permissions(path);
    std::ifstream in(path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
        throw cert_error("cannot read the ticket secret file " + path);
    }
    std::array<unsigned char, 32> secret{};
    const auto is_hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
    std::string trimmed = text;
    while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == '\r')) {
        trimmed.pop_back();
    }
    if (trimmed.size() == 64 && std::all_of(trimmed.begin(), trimmed.end(), is_hex)) {
        for (std::size_t i = 0; i < secret.size(); ++i) {
            secret[i] = static_cast<unsigned char>(std::stoul(trimmed.substr(2 * i, 2), nullptr, 16));
        }
    } else if (text.size() == secret.size()) {
        std::memcpy(secret.data(), text.data(), secret.size());
    } else {
        OPENSSL_cleanse(text.data(), text.size());
        OPENSSL_cleanse(trimmed.data(), trimmed.size());
        throw cert_error("the ticket secret file " + path +
                         " must hold 32 random bytes or 64 hex digits (make one with: openssl rand -hex 32)");
    }
    OPENSSL_cleanse(text.data(), text.size());
    OPENSSL_cleanse(trimmed.data(), trimmed.size());
    if (std::all_of(secret.begin(), secret.end(), [&](unsigned char b) { return b == secret[0]; })) {
        throw cert_error("the ticket secret in " + path + " is one repeated byte; make one with: openssl rand -hex 32");
    }
    return secret;
}

// ---------------------------------------------------------------------------
// server_tls

/// One SSL_CTX serving one set of names, with at most one certificate per key type.
struct server_tls::entry {
    ssl_ctx_ptr ctx;
    std::vector<std::string> names; ///< sorted, unique, lower case
    bool has_ecdsa = false;
    bool has_rsa = false;
};

server_tls::server_tls(const config::tls& settings, std::shared_ptr<const ticket_key_source> keys)
    : keys_(std::move(keys)) {
    if (settings.certificates.empty()) {
        throw cert_error("no TLS certificate configured");
    }
    if (settings.session_tickets && !keys_) {
        keys_ = std::make_shared<derived_ticket_keys>(settings.ticket_rotation);
    }
    ERR_clear_error(); // so that messages below carry only our own failures

    for (const config::certificate& configured : settings.certificates) {
        const std::string& cert_file = configured.cert_file;
        const std::string& key_file = configured.key_file;
        check_key_permissions(key_file);
        leaf_info leaf = read_leaf(cert_file);

        std::vector<std::string> name_set = leaf.names;
        std::sort(name_set.begin(), name_set.end());
        name_set.erase(std::unique(name_set.begin(), name_set.end()), name_set.end());

        auto found = std::find_if(entries_.begin(), entries_.end(),
                                  [&](const std::unique_ptr<entry>& e) { return e->names == name_set; });
        entry* target = nullptr;
        if (found != entries_.end()) {
            target = found->get();
        } else {
            auto created = std::make_unique<entry>();
            created->ctx.reset(SSL_CTX_new(TLS_server_method()));
            if (!created->ctx) {
                fail("cannot create a TLS context");
            }
            configure_context(created->ctx.get(), settings, this, keys_.get());
            created->names = name_set;
            target = created.get();
            entries_.push_back(std::move(created));
        }

        bool& slot = leaf.key_type == "ECDSA" ? target->has_ecdsa : target->has_rsa;
        if (slot) {
            throw cert_error("certificate " + cert_file + ": a second " + leaf.key_type +
                             " certificate for the same names; only one per key type is served");
        }
        // The context keeps one certificate slot per key type; loading picks
        // the slot from the key and makes it current, so the key loaded next
        // and check_private_key apply to this certificate.
        if (SSL_CTX_use_certificate_chain_file(target->ctx.get(), cert_file.c_str()) != 1) {
            fail("certificate " + cert_file + ": cannot load chain");
        }
        if (SSL_CTX_use_PrivateKey_file(target->ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
            fail("key " + key_file + ": cannot load it or it does not match " + cert_file);
        }
        if (SSL_CTX_check_private_key(target->ctx.get()) != 1) {
            fail("key " + key_file + " does not match certificate " + cert_file);
        }
        slot = true;

        loaded_.push_back(loaded_certificate{cert_file, std::move(leaf.names), leaf.key_type, leaf.not_after,
                                             std::move(leaf.issuer)});
    }

    for (const auto& e : entries_) {
        for (const std::string& name : e->names) {
            if (name.starts_with("*.")) {
                wildcard_.try_emplace(name.substr(2), e->ctx.get());
            } else {
                exact_.try_emplace(name, e->ctx.get());
            }
        }
    }
}

server_tls::~server_tls() {
    for (const auto& e : entries_) {
        SSL_CTX_set_tlsext_servername_arg(e->ctx.get(), nullptr);
        SSL_CTX_set_ex_data(e->ctx.get(), keys_index(), nullptr);
    }
}

SSL_CTX* server_tls::default_context() const {
    return entries_.front()->ctx.get();
}

SSL_CTX* server_tls::select(const std::string& host_name) const {
    std::string name = lower(host_name);
    if (!name.empty() && name.back() == '.') {
        name.pop_back();
    }
    if (auto it = exact_.find(name); it != exact_.end()) {
        return it->second;
    }
    // "*.example.com" covers exactly one extra, non-empty leftmost label.
    if (const auto dot = name.find('.'); dot != std::string::npos && dot > 0) {
        if (auto it = wildcard_.find(name.substr(dot + 1)); it != wildcard_.end()) {
            return it->second;
        }
    }
    return default_context();
}

// ---------------------------------------------------------------------------
// make_dev_certificates

void make_dev_certificates(const std::string& dir, const std::vector<std::string>& names) {
    if (names.empty()) {
        throw cert_error("development certificates need at least one name");
    }
    for (const std::string& name : names) {
        if (!valid_dev_name(name)) {
            throw cert_error("invalid name for a development certificate: '" + name + "'");
        }
    }
    const std::filesystem::path path(dir);
    std::error_code ec;
    if (path.has_parent_path()) {
        std::filesystem::create_directories(path.parent_path(), ec);
    }
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
        throw cert_error("cannot create " + dir + ": " + errno_text(errno));
    }
    if (!std::filesystem::is_directory(path, ec)) {
        throw cert_error(dir + " is not a directory");
    }
    ERR_clear_error();

    pkey_ptr ca_key = generate_key(false);
    x509_ptr ca = make_certificate(ca_key.get(), "Rampart Development CA", 3650, nullptr);
    add_extension(ca.get(), ca.get(), NID_basic_constraints, "critical,CA:TRUE");
    add_extension(ca.get(), ca.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
    add_extension(ca.get(), ca.get(), NID_subject_key_identifier, "hash");
    sign(ca.get(), ca_key.get());

    std::string san;
    for (const std::string& name : names) {
        if (!san.empty()) {
            san += ',';
        }
        san += is_ip_literal(name) ? "IP:" : "DNS:";
        san += name;
    }

    const std::string base = path.string() + "/";
    auto private_key_pem = [](EVP_PKEY* key) {
        return pem_of(
            [key](BIO* bio) { return PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr); },
            "a private key");
    };
    auto certificate_pem = [](X509* cert) {
        return pem_of([cert](BIO* bio) { return PEM_write_bio_X509(bio, cert); }, "a certificate");
    };

    for (const bool rsa : {false, true}) {
        pkey_ptr key = generate_key(rsa);
        x509_ptr cert = make_certificate(key.get(), names.front(), 825, ca.get());
        add_extension(cert.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE");
        // RSA key exchange is not offered (ECDHE only), but TLS 1.2 clients
        // that check keyUsage still expect keyEncipherment on RSA certificates.
        add_extension(cert.get(), ca.get(), NID_key_usage,
                      rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature");
        add_extension(cert.get(), ca.get(), NID_ext_key_usage, "serverAuth");
        add_extension(cert.get(), ca.get(), NID_subject_alt_name, san);
        add_extension(cert.get(), ca.get(), NID_subject_key_identifier, "hash");
        add_extension(cert.get(), ca.get(), NID_authority_key_identifier, "keyid:always");
        sign(cert.get(), ca_key.get());

        const std::string stem = base + (rsa ? "rsa" : "ecdsa");
        write_file(stem + ".key", private_key_pem(key.get()), 0600);
        write_file(stem + ".pem", certificate_pem(cert.get()), 0644);
    }
    write_file(base + "ca.key", private_key_pem(ca_key.get()), 0600);
    write_file(base + "ca.pem", certificate_pem(ca.get()), 0644);
}

void set_acme_alpn_lookup(acme_alpn_lookup lookup) {
    acme_lookup = lookup;
}

bool is_acme_tls(SSL* ssl) {
    return is_acme_validation(ssl);
}

} // namespace rampart::certs
