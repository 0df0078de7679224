// certs/: key permissions, certificate loading and grouping, SNI selection,
// ticket keys, and real TLS handshakes between two in-memory SSL objects.

#include "certs/certs.hpp"
#include "certs/openssl_util.hpp"
#include "certs/record_pool.hpp"
#include "tests/unit/support.hpp"

#include <catch2/catch.hpp>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace certs = rampart::certs;
namespace config = rampart::config;

namespace {

using rampart::certs::detail::openssl_deleter;
using rampart::test::temp_dir;
using ssl_ptr = std::unique_ptr<SSL, openssl_deleter<SSL_free>>;
using session_ptr = std::unique_ptr<SSL_SESSION, openssl_deleter<SSL_SESSION_free>>;
using x509_ptr = std::unique_ptr<X509, openssl_deleter<X509_free>>;
using bio_ptr = std::unique_ptr<BIO, openssl_deleter<BIO_free_all>>;

/// Two development certificate sets, made once: RSA key generation dominates
/// the run time. Each set has its own CA.
struct dev_sets {
    temp_dir dir;
    std::string main = dir.path + "/main";
    std::string api = dir.path + "/api";
    dev_sets() {
        certs::make_dev_certificates(main, {"www.foobar.com", "foobar.com"});
        certs::make_dev_certificates(api, {"api.example.test", "*.wild.example.test"});
    }
};

const dev_sets& dev() {
    static const dev_sets sets;
    return sets;
}

config::certificate pair_of(const std::string& cert_file, const std::string& key_file) {
    config::certificate c;
    c.cert_file = cert_file;
    c.key_file = key_file;
    return c;
}

config::certificate cert(const std::string& dir, const std::string& type) {
    return pair_of(dir + "/" + type + ".pem", dir + "/" + type + ".key");
}

/// ECDSA + RSA for www.foobar.com (the default), ECDSA + RSA for the api names.
config::tls standard_settings() {
    config::tls settings;
    settings.certificates = {cert(dev().main, "ecdsa"), cert(dev().main, "rsa"), cert(dev().api, "ecdsa"),
                             cert(dev().api, "rsa")};
    settings.session_tickets = true;
    settings.ticket_rotation = std::chrono::hours(12);
    return settings;
}

std::array<unsigned char, 32> secret_of(unsigned char fill) {
    std::array<unsigned char, 32> secret{};
    secret.fill(fill);
    return secret;
}

std::shared_ptr<const certs::ticket_key_source> shared_keys(unsigned char fill) {
    return std::make_shared<certs::derived_ticket_keys>(std::chrono::hours(12), secret_of(fill));
}

std::string drain_errors() {
    std::string out;
    while (unsigned long code = ERR_get_error()) {
        char text[256];
        ERR_error_string_n(code, text, sizeof text);
        out += out.empty() ? "" : "; ";
        out += text;
    }
    return out;
}

/// What a test client asks for.
struct client_options {
    std::string server_name = "www.foobar.com"; ///< SNI; empty sends none
    std::string verify_host;                    ///< defaults to server_name
    int min_version = 0;
    int max_version = TLS1_3_VERSION;
    std::string sigalgs;
    std::string ciphers;            ///< TLS 1.2 list
    std::string suites;             ///< TLS 1.3 suites offered, in the client's order
    std::string alpn = "http/1.1";  ///< protocols offered, comma-separated in order; empty offers no ALPN
    bool legacy = false;            ///< security level 0, so TLS 1.0/1.1 can be offered
    SSL_SESSION* session = nullptr; ///< to resume
};

struct connection {
    ssl_ptr client;
    ssl_ptr server;
    bool ok = false;
    std::string error;
};

/// A TLS client trusting both development CAs.
certs::ssl_ctx_ptr client_context(const client_options& options) {
    certs::ssl_ctx_ptr ctx{SSL_CTX_new(TLS_client_method())};
    REQUIRE(ctx);
    REQUIRE(SSL_CTX_load_verify_locations(ctx.get(), (dev().main + "/ca.pem").c_str(), nullptr) == 1);
    REQUIRE(SSL_CTX_load_verify_locations(ctx.get(), (dev().api + "/ca.pem").c_str(), nullptr) == 1);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    if (options.legacy) {
        SSL_CTX_set_security_level(ctx.get(), 0);
        REQUIRE(SSL_CTX_set_cipher_list(ctx.get(), "DEFAULT:@SECLEVEL=0") == 1);
    }
    REQUIRE(SSL_CTX_set_min_proto_version(ctx.get(), options.min_version) == 1);
    REQUIRE(SSL_CTX_set_max_proto_version(ctx.get(), options.max_version) == 1);
    if (!options.sigalgs.empty()) {
        REQUIRE(SSL_CTX_set1_sigalgs_list(ctx.get(), options.sigalgs.c_str()) == 1);
    }
    if (!options.suites.empty()) {
        REQUIRE(SSL_CTX_set_ciphersuites(ctx.get(), options.suites.c_str()) == 1);
    }
    if (!options.ciphers.empty()) {
        REQUIRE(SSL_CTX_set_cipher_list(ctx.get(), options.ciphers.c_str()) == 1);
    }
    return ctx;
}

/// Runs a full handshake between a client and a server SSL made from
/// `server_ctx`, joined by an in-memory BIO pair; bounded in steps.
connection handshake(SSL_CTX* server_ctx, const client_options& options = {}) {
    certs::ssl_ctx_ptr client_ctx = client_context(options);
    connection c;
    c.client.reset(SSL_new(client_ctx.get())); // the SSL holds its own reference to the context
    c.server.reset(SSL_new(server_ctx));
    REQUIRE(c.client);
    REQUIRE(c.server);

    BIO* client_end = nullptr;
    BIO* server_end = nullptr;
    REQUIRE(BIO_new_bio_pair(&client_end, 0, &server_end, 0) == 1);
    SSL_set_bio(c.client.get(), client_end, client_end);
    SSL_set_bio(c.server.get(), server_end, server_end);
    SSL_set_connect_state(c.client.get());
    SSL_set_accept_state(c.server.get());

    if (!options.server_name.empty()) {
        REQUIRE(SSL_set_tlsext_host_name(c.client.get(), options.server_name.c_str()) == 1);
    }
    const std::string& host = options.verify_host.empty() ? options.server_name : options.verify_host;
    REQUIRE(SSL_set1_host(c.client.get(), host.c_str()) == 1);
    if (!options.alpn.empty()) {
        std::string wire;
        for (std::size_t at = 0; at <= options.alpn.size();) {
            const auto comma = std::min(options.alpn.find(',', at), options.alpn.size());
            wire += static_cast<char>(comma - at);
            wire += options.alpn.substr(at, comma - at);
            at = comma + 1;
        }
        // Unlike almost every other OpenSSL setter, this one returns 0 on success.
        REQUIRE(SSL_set_alpn_protos(c.client.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                                    static_cast<unsigned>(wire.size())) == 0);
    }
    if (options.session != nullptr) {
        REQUIRE(SSL_set_session(c.client.get(), options.session) == 1);
    }

    bool client_done = false;
    bool server_done = false;
    auto step = [&c](SSL* ssl, bool& done, const char* side) {
        if (done) {
            return true;
        }
        const int rc = SSL_do_handshake(ssl);
        if (rc == 1) {
            done = true;
            return true;
        }
        const int error = SSL_get_error(ssl, rc);
        if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
            return true;
        }
        c.error += std::string(c.error.empty() ? "" : " | ") + side + ": " + drain_errors();
        return false;
    };
    for (int i = 0; i < 50 && !(client_done && server_done); ++i) {
        const bool client_ok = step(c.client.get(), client_done, "client");
        const bool server_ok = step(c.server.get(), server_done, "server");
        if (!client_ok || !server_ok) {
            // Let the other side read the alert that was just sent.
            if (client_ok) {
                step(c.client.get(), client_done, "client");
            }
            if (server_ok) {
                step(c.server.get(), server_done, "server");
            }
            return c;
        }
    }
    c.ok = client_done && server_done;
    return c;
}

/// TLS 1.3 tickets arrive after the handshake; the client has to read to see them.
session_ptr resumable_session(SSL* client) {
    char byte = 0;
    const int rc = SSL_read(client, &byte, 1);
    REQUIRE(rc <= 0);
    REQUIRE(SSL_get_error(client, rc) == SSL_ERROR_WANT_READ);
    session_ptr session{SSL_get1_session(client)};
    REQUIRE(session);
    return session;
}

std::string peer_key_type(SSL* client) {
    X509* peer = SSL_get0_peer_certificate(client);
    REQUIRE(peer != nullptr);
    switch (EVP_PKEY_get_base_id(X509_get0_pubkey(peer))) {
    case EVP_PKEY_EC:
        return "ECDSA";
    case EVP_PKEY_RSA:
        return "RSA";
    default:
        return "other";
    }
}

bool peer_has_name(SSL* client, const std::string& name) {
    X509* peer = SSL_get0_peer_certificate(client);
    REQUIRE(peer != nullptr);
    return X509_check_host(peer, name.c_str(), name.size(), 0, nullptr) == 1;
}

std::string selected_alpn(SSL* ssl) {
    const unsigned char* data = nullptr;
    unsigned int length = 0;
    SSL_get0_alpn_selected(ssl, &data, &length);
    return std::string(reinterpret_cast<const char*>(data), length);
}

mode_t file_mode(const std::string& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

mode_t current_umask() {
    const mode_t mask = ::umask(0);
    ::umask(mask);
    return mask;
}

x509_ptr read_certificate(const std::string& path) {
    bio_ptr bio{BIO_new_file(path.c_str(), "r")};
    REQUIRE(bio);
    x509_ptr cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)};
    REQUIRE(cert);
    return cert;
}

/// Ticket keys set by hand, counting how often a new ticket is encrypted.
struct manual_keys final : certs::ticket_key_source {
    std::vector<certs::ticket_key> keys; ///< [0] encrypts, all decrypt
    mutable int encryptions = 0;

    certs::ticket_key encrypting_key(std::chrono::system_clock::time_point) const override {
        ++encryptions;
        return keys.front();
    }
    std::vector<certs::ticket_key> accepted_keys(std::chrono::system_clock::time_point) const override { return keys; }
};

certs::ticket_key key_of(unsigned char fill) {
    certs::ticket_key key;
    key.name.fill(fill);
    key.aes_key.fill(static_cast<unsigned char>(fill + 1));
    key.hmac_key.fill(static_cast<unsigned char>(fill + 2));
    return key;
}

} // namespace

TEST_CASE("make_dev_certificates writes a CA and ECDSA and RSA server certificates", "[unit][certs]") {
    const std::string& dir = dev().main;
    for (const char* key : {"/ca.key", "/ecdsa.key", "/rsa.key"}) {
        CHECK(file_mode(dir + key) == 0600);
    }
    for (const char* pem : {"/ca.pem", "/ecdsa.pem", "/rsa.pem"}) {
        CHECK(file_mode(dir + pem) == 0644);
    }

    x509_ptr ca = read_certificate(dir + "/ca.pem");
    CHECK(X509_check_ca(ca.get()) == 1);
    for (const char* pem : {"/ecdsa.pem", "/rsa.pem"}) {
        x509_ptr leaf = read_certificate(dir + pem);
        CHECK(X509_verify(leaf.get(), X509_get0_pubkey(ca.get())) == 1);
        CHECK(X509_check_ca(leaf.get()) == 0);
        CHECK(X509_check_host(leaf.get(), "www.foobar.com", 0, 0, nullptr) == 1);
        CHECK(X509_check_host(leaf.get(), "foobar.com", 0, 0, nullptr) == 1);
        CHECK(X509_check_purpose(leaf.get(), X509_PURPOSE_SSL_SERVER, 0) == 1);
        const auto days = [](const ASN1_TIME* from, const ASN1_TIME* to) {
            int d = 0;
            int s = 0;
            REQUIRE(ASN1_TIME_diff(&d, &s, from, to) == 1);
            return d + (s != 0 ? 1 : 0);
        };
        CHECK(days(X509_get0_notBefore(leaf.get()), X509_get0_notAfter(leaf.get())) == 825);
    }
}

TEST_CASE("make_dev_certificates takes host names and IP literals only", "[unit][certs]") {
    temp_dir dir;
    CHECK_THROWS_AS(certs::make_dev_certificates(dir.path + "/x", {}), certs::cert_error);
    CHECK_THROWS_AS(certs::make_dev_certificates(dir.path + "/x", {"a.test,DNS:evil.test"}), certs::cert_error);
    CHECK_THROWS_AS(certs::make_dev_certificates(dir.path + "/x", {"a.test:443"}), certs::cert_error);
    CHECK_FALSE(std::filesystem::exists(dir.path + "/x"));

    certs::make_dev_certificates(dir.path + "/nested/ip", {"localhost", "127.0.0.1", "::1"});
    x509_ptr leaf = read_certificate(dir.path + "/nested/ip/ecdsa.pem");
    CHECK(X509_check_host(leaf.get(), "localhost", 0, 0, nullptr) == 1);
    CHECK(X509_check_ip_asc(leaf.get(), "127.0.0.1", 0) == 1);
    CHECK(X509_check_ip_asc(leaf.get(), "::1", 0) == 1);
    CHECK(file_mode(dir.path + "/nested/ip") == (0755 & ~current_umask()));
}

TEST_CASE("check_key_permissions refuses keys open to group or others", "[unit][certs]") {
    temp_dir dir;
    const std::string key = dir.path + "/server.key";
    std::filesystem::copy_file(dev().main + "/ecdsa.key", key);

    REQUIRE(::chmod(key.c_str(), 0644) == 0);
    try {
        certs::check_key_permissions(key);
        FAIL("a 0644 key was accepted");
    } catch (const certs::cert_error& e) {
        const std::string message = e.what();
        CHECK_THAT(message, Catch::Contains(key));
        CHECK_THAT(message, Catch::Contains("0644"));
        CHECK_THAT(message, Catch::Contains("chmod 600 " + key));
        CHECK_THAT(message, !Catch::Contains("PRIVATE KEY"));
    }

    REQUIRE(::chmod(key.c_str(), 0620) == 0);
    CHECK_THROWS_AS(certs::check_key_permissions(key), certs::cert_error);
    REQUIRE(::chmod(key.c_str(), 0604) == 0);
    CHECK_THROWS_AS(certs::check_key_permissions(key), certs::cert_error);

    REQUIRE(::chmod(key.c_str(), 0600) == 0);
    CHECK_NOTHROW(certs::check_key_permissions(key));
    REQUIRE(::chmod(key.c_str(), 0400) == 0);
    CHECK_NOTHROW(certs::check_key_permissions(key));

    CHECK_THROWS_WITH(certs::check_key_permissions(dir.path + "/missing.key"), Catch::Contains("missing.key"));
    CHECK_THROWS_WITH(certs::check_key_permissions(dir.path), Catch::Contains("not a regular file"));
}

TEST_CASE("server_tls refuses unsafe or inconsistent certificates", "[unit][certs]") {
    config::tls settings;
    settings.session_tickets = false;

    SECTION("no certificate at all") {
        CHECK_THROWS_AS(certs::server_tls(settings, nullptr), certs::cert_error);
    }
    SECTION("a key readable by others") {
        temp_dir dir;
        const std::string key = dir.path + "/ecdsa.key";
        std::filesystem::copy_file(dev().main + "/ecdsa.key", key);
        REQUIRE(::chmod(key.c_str(), 0644) == 0);
        settings.certificates = {pair_of(dev().main + "/ecdsa.pem", key)};
        CHECK_THROWS_WITH(certs::server_tls(settings, nullptr), Catch::Contains(key));
    }
    SECTION("a key of another type than the certificate") {
        settings.certificates = {pair_of(dev().main + "/ecdsa.pem", dev().main + "/rsa.key")};
        CHECK_THROWS_WITH(certs::server_tls(settings, nullptr), Catch::Contains("rsa.key"));
    }
    SECTION("a key of the same type that belongs to another certificate") {
        settings.certificates = {pair_of(dev().main + "/ecdsa.pem", dev().api + "/ecdsa.key")};
        CHECK_THROWS_WITH(certs::server_tls(settings, nullptr), Catch::Contains("does not match"));
    }
    SECTION("two certificates of one key type for the same names") {
        settings.certificates = {cert(dev().main, "ecdsa"), cert(dev().main, "rsa"), cert(dev().main, "ecdsa")};
        CHECK_THROWS_WITH(certs::server_tls(settings, nullptr), Catch::Contains("second ECDSA"));
    }
    SECTION("a missing certificate file") {
        settings.certificates = {pair_of(dev().main + "/missing.pem", dev().main + "/ecdsa.key")};
        CHECK_THROWS_WITH(certs::server_tls(settings, nullptr), Catch::Contains("missing.pem"));
    }
}

TEST_CASE("server_tls reports what it loaded", "[unit][certs]") {
    const certs::server_tls tls(standard_settings(), shared_keys(1));
    const auto& loaded = tls.certificates();
    REQUIRE(loaded.size() == 4);
    CHECK(loaded[0].key_type == "ECDSA");
    CHECK(loaded[1].key_type == "RSA");
    CHECK(loaded[0].names == std::vector<std::string>{"www.foobar.com", "foobar.com"});
    CHECK(loaded[3].names == std::vector<std::string>{"api.example.test", "*.wild.example.test"});
    CHECK(loaded[2].cert_file == dev().api + "/ecdsa.pem");

    const auto expected = std::chrono::system_clock::now() + std::chrono::hours(24 * 825);
    CHECK(loaded[0].not_after < expected);
    CHECK(loaded[0].not_after > expected - std::chrono::hours(2));
}

TEST_CASE("server_tls::select picks contexts by exact name, then one-label wildcard, else default", "[unit][certs]") {
    const certs::server_tls tls(standard_settings(), shared_keys(1));
    SSL_CTX* main = tls.default_context();
    SSL_CTX* api = tls.select("api.example.test");

    CHECK(api != main);
    CHECK(tls.select("www.foobar.com") == main);
    CHECK(tls.select("foobar.com") == main);
    CHECK(tls.select("a.wild.example.test") == api);
    CHECK(tls.select("A.Wild.Example.TEST") == api);
    CHECK(tls.select("API.EXAMPLE.TEST") == api);
    CHECK(tls.select("api.example.test.") == api);
    CHECK(tls.select("a.wild.example.test.") == api);

    CHECK(tls.select("a.b.wild.example.test") == main); // a wildcard covers one label only
    CHECK(tls.select("wild.example.test") == main);     // and not the bare parent
    CHECK(tls.select(".wild.example.test") == main);    // nor an empty label
    CHECK(tls.select("unknown.example.org") == main);
    CHECK(tls.select("") == main);
    CHECK(tls.select(".") == main);
}

TEST_CASE("derived_ticket_keys are a deterministic function of secret and epoch", "[unit][certs]") {
    using namespace std::chrono;
    const auto rotation = hours(12);
    const certs::derived_ticket_keys a(rotation, secret_of(7));
    const certs::derived_ticket_keys b(rotation, secret_of(7));
    const certs::derived_ticket_keys other(rotation, secret_of(8));
    const certs::derived_ticket_keys random_secret(rotation);

    const auto same = [](const certs::ticket_key& x, const certs::ticket_key& y) {
        return x.name == y.name && x.aes_key == y.aes_key && x.hmac_key == y.hmac_key;
    };

    CHECK(same(a.key_for_epoch(100), b.key_for_epoch(100)));
    CHECK_FALSE(same(a.key_for_epoch(100), a.key_for_epoch(101)));
    CHECK(a.key_for_epoch(100).name != a.key_for_epoch(101).name);
    CHECK_FALSE(same(a.key_for_epoch(100), other.key_for_epoch(100)));
    CHECK_FALSE(same(a.key_for_epoch(100), random_secret.key_for_epoch(100)));
    CHECK(a.key_for_epoch(100).aes_key != a.key_for_epoch(100).hmac_key);

    const system_clock::time_point start_of_epoch{hours(12 * 40000)};
    const auto now = start_of_epoch + hours(3);
    CHECK(same(a.encrypting_key(now), a.key_for_epoch(40000)));
    const auto accepted = a.accepted_keys(now);
    REQUIRE(accepted.size() == 3);
    CHECK(same(accepted[0], a.key_for_epoch(40000)));
    CHECK(same(accepted[1], a.key_for_epoch(39999)));
    // The next period's key decrypts before anyone encrypts with it (a peer's clock ahead).
    CHECK(same(accepted[2], a.key_for_epoch(40001)));

    // The last millisecond of an epoch still encrypts with it.
    CHECK(same(a.encrypting_key(start_of_epoch + rotation - milliseconds(1)), a.key_for_epoch(40000)));
    CHECK(same(a.encrypting_key(start_of_epoch + rotation), a.key_for_epoch(40001)));

    CHECK_THROWS_AS(certs::derived_ticket_keys(milliseconds(0)), certs::cert_error);
}

TEST_CASE("handshake: TLS 1.3, ALPN http/1.1 and the ECDSA certificate by default", "[unit][certs]") {
    const certs::server_tls tls(standard_settings(), shared_keys(1));
    connection c = handshake(tls.default_context());
    INFO(c.error);
    REQUIRE(c.ok);
    CHECK(SSL_version(c.client.get()) == TLS1_3_VERSION);
    CHECK(selected_alpn(c.client.get()) == "http/1.1");
    CHECK(selected_alpn(c.server.get()) == "http/1.1");
    CHECK(SSL_get_verify_result(c.client.get()) == X509_V_OK);
    CHECK(peer_key_type(c.client.get()) == "ECDSA");
    CHECK(peer_has_name(c.client.get(), "www.foobar.com"));
}

TEST_CASE("handshake: SNI selects the certificate", "[unit][certs]") {
    const certs::server_tls tls(standard_settings(), shared_keys(1));
    client_options options;

    SECTION("exact name") {
        options.server_name = "api.example.test";
    }
    SECTION("exact name in another case") {
        options.server_name = "API.example.TEST";
        options.verify_host = "api.example.test";
    }
    SECTION("one label under a wildcard") {
        options.server_name = "x.wild.example.test";
    }
    connection c = handshake(tls.default_context(), options);
    INFO(c.error);
    REQUIRE(c.ok);
    CHECK(peer_has_name(c.client.get(), "api.example.test"));
    CHECK(SSL_get_SSL_CTX(c.server.get()) == tls.select("api.example.test"));
    CHECK(peer_key_type(c.client.get()) == "ECDSA");
}

TEST_CASE("handshake: unknown or absent SNI gets the default certificate", "[unit][certs]") {
    const certs::server_tls tls(standard_settings(), shared_keys(1));
    client_options options;
    options.verify_host = "www.foobar.com";
    SECTION("unknown name") {
        options.server_name = "unknown.example.org";
    }
    SECTION("two labels under a wildcard") {
        options.server_name = "a.b.wild.example.test";
    }
    SECTION("no SNI") {
        options.server_name.clear();
    }
    connection c = handshake(tls.default_context(), options);
    INFO(c.error);
    REQUIRE(c.ok);
    CHECK(peer_has_name(c.client.get(), "www.foobar.com"));
    CHECK_FALSE(peer_has_name(c.client.get(), "api.example.test"));
}

TEST_CASE("handshake: a client limited to RSA signatures gets the RSA certificate", "[unit][certs]") {
    const certs::server_tls tls(standard_settings(), shared_keys(1));
    client_options options;
    options.sigalgs = "RSA-PSS+SHA256:RSA+SHA256";

    SECTION("TLS 1.3") {
        connection c = handshake(tls.default_context(), options);
        INFO(c.error);
        REQUIRE(c.ok);
        CHECK(SSL_version(c.client.get()) == TLS1_3_VERSION);
        CHECK(peer_key_type(c.client.get()) == "RSA");
    }
    SECTION("TLS 1.2 with an ECDHE-RSA suite, for a name reached by SNI") {
        options.max_version = TLS1_2_VERSION;
        options.ciphers = "ECDHE-RSA-AES128-GCM-SHA256";
        options.server_name = "api.example.test";
        connection c = handshake(tls.default_context(), options);
        INFO(c.error);
        REQUIRE(c.ok);
        CHECK(SSL_version(c.client.get()) == TLS1_2_VERSION);
        CHECK(std::string(SSL_get_cipher_name(c.client.get())) == "ECDHE-RSA-AES128-GCM-SHA256");
        CHECK(peer_key_type(c.client.get()) == "RSA");
        CHECK(peer_has_name(c.client.get(), "api.example.test"));
    }
}

TEST_CASE("handshake: a TLS 1.2 client offering everything gets ECDSA and an AEAD suite", "[unit][certs]") {
    const certs::server_tls tls(standard_settings(), shared_keys(1));
    client_options options;
    options.max_version = TLS1_2_VERSION;
    connection c = handshake(tls.default_context(), options);
    INFO(c.error);
    REQUIRE(c.ok);
    CHECK(SSL_version(c.client.get()) == TLS1_2_VERSION);
    CHECK(peer_key_type(c.client.get()) == "ECDSA");
    CHECK(std::string(SSL_get_cipher_name(c.client.get())) == "ECDHE-ECDSA-AES128-GCM-SHA256");
}

TEST_CASE("handshake: TLS 1.3 picks AES-128-GCM in the server's order, ChaCha20 for a client that asks first",
          "[unit][certs]") {
    const certs::server_tls tls(standard_settings(), shared_keys(1));
    struct row {
        std::string offered; ///< the client's order
        std::string chosen;
    };
    const std::vector<row> rows{
        // OpenSSL's own default offer (wrk, curl, Python): AES-256 first, yet AES-128 is chosen.
        {"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"},
        {"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"},
        // A client without AES instructions lists ChaCha20 first and gets it.
        {"TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"},
        {"TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"},
    };
    for (const row& r : rows) {
        client_options options;
        options.suites = r.offered;
        connection c = handshake(tls.default_context(), options);
        INFO(r.offered << ": " << c.error);
        REQUIRE(c.ok);
        CHECK(SSL_version(c.client.get()) == TLS1_3_VERSION);
        CHECK(std::string(SSL_get_cipher_name(c.client.get())) == r.chosen);
    }
}

TEST_CASE("handshake: ALPN picks in the server's order of gateway.tls.alpn", "[unit][certs]") {
    struct row {
        std::vector<std::string> server;
        std::string client;
        std::string chosen; ///< "" = refused (no_application_protocol)
    };
    const std::vector<row> rows{
        {{"h2", "http/1.1"}, "http/1.1,h2", "h2"},
        {{"h2", "http/1.1"}, "h2", "h2"},
        {{"h2", "http/1.1"}, "http/1.1", "http/1.1"},
        {{"http/1.1", "h2"}, "h2,http/1.1", "http/1.1"},
        {{"http/1.1"}, "h2,http/1.1", "http/1.1"},
        {{"http/1.1"}, "h2", ""},
        {{"h2"}, "http/1.1", ""},
        {{"h2", "http/1.1"}, "spdy/3.1,h2c", ""},
        {{"h2", "http/1.1"}, "http/1.0", "http/1.0"},
        {{"h2"}, "http/1.0", ""},
    };
    for (const auto& r : rows) {
        config::tls settings = standard_settings();
        settings.alpn = r.server;
        const certs::server_tls tls(settings, shared_keys(1));
        client_options options;
        options.alpn = r.client;
        connection c = handshake(tls.default_context(), options);
        INFO("server " << settings.alpn.front() << " first (" << settings.alpn.size() << "), client " << r.client);
        if (r.chosen.empty()) {
            CHECK_FALSE(c.ok);
            CHECK_THAT(c.error, Catch::Contains("no application protocol"));
        } else {
            REQUIRE(c.ok);
            CHECK(selected_alpn(c.server.get()) == r.chosen);
            CHECK(selected_alpn(c.client.get()) == r.chosen);
        }
    }
}

TEST_CASE("handshake: refused for old protocols, CBC-only TLS 1.2 and ALPN without a protocol of ours",
          "[unit][certs]") {
    const certs::server_tls tls(standard_settings(), shared_keys(1));
    client_options options;
    std::string expected_server_error;

    SECTION("TLS 1.1 at most") {
        options.legacy = true;
        options.max_version = TLS1_1_VERSION;
        expected_server_error = "unsupported protocol";
    }
    SECTION("TLS 1.2 with CBC suites only") {
        options.max_version = TLS1_2_VERSION;
        options.ciphers = "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA";
        expected_server_error = "no shared cipher";
    }
    SECTION("ALPN h2c and spdy only") {
        options.alpn = "h2c,spdy/3.1";
        expected_server_error = "no application protocol";
    }
    connection c = handshake(tls.default_context(), options);
    CHECK_FALSE(c.ok);
    CHECK_THAT(c.error, Catch::Contains("server: ") && Catch::Contains(expected_server_error));
}

TEST_CASE("handshake: a client without ALPN is served without it", "[unit][certs]") {
    const certs::server_tls tls(standard_settings(), shared_keys(1));
    client_options options;
    options.alpn.clear();
    connection c = handshake(tls.default_context(), options);
    INFO(c.error);
    REQUIRE(c.ok);
    CHECK(selected_alpn(c.server.get()).empty());
}

TEST_CASE("handshake: session tickets resume across server_tls instances sharing a secret", "[unit][certs]") {
    const certs::server_tls first(standard_settings(), shared_keys(1));
    const certs::server_tls second(standard_settings(), shared_keys(1));   // another worker or gateway
    const certs::server_tls stranger(standard_settings(), shared_keys(2)); // another secret

    SECTION("TLS 1.3") {
        connection initial = handshake(first.default_context());
        INFO(initial.error);
        REQUIRE(initial.ok);
        CHECK_FALSE(SSL_session_reused(initial.client.get()));
        session_ptr session = resumable_session(initial.client.get());
        REQUIRE(SSL_SESSION_is_resumable(session.get()) == 1);

        client_options options;
        options.session = session.get();
        connection again = handshake(second.default_context(), options);
        INFO(again.error);
        REQUIRE(again.ok);
        CHECK(SSL_session_reused(again.client.get()) == 1);
        CHECK(SSL_session_reused(again.server.get()) == 1);
        CHECK(selected_alpn(again.client.get()) == "http/1.1");

        connection refused = handshake(stranger.default_context(), options);
        INFO(refused.error);
        REQUIRE(refused.ok);
        CHECK(SSL_session_reused(refused.client.get()) == 0);
    }
    SECTION("TLS 1.3 on a name reached by SNI") {
        client_options options;
        options.server_name = "api.example.test";
        connection initial = handshake(first.default_context(), options);
        INFO(initial.error);
        REQUIRE(initial.ok);
        session_ptr session = resumable_session(initial.client.get());

        options.session = session.get();
        connection again = handshake(second.default_context(), options);
        INFO(again.error);
        REQUIRE(again.ok);
        CHECK(SSL_session_reused(again.server.get()) == 1);
        CHECK(SSL_get_SSL_CTX(again.server.get()) == second.select("api.example.test"));
    }
    SECTION("TLS 1.2") {
        client_options options;
        options.max_version = TLS1_2_VERSION;
        connection initial = handshake(first.default_context(), options);
        INFO(initial.error);
        REQUIRE(initial.ok);
        session_ptr session{SSL_get1_session(initial.client.get())};
        REQUIRE(SSL_SESSION_has_ticket(session.get()) == 1);

        options.session = session.get();
        connection again = handshake(second.default_context(), options);
        INFO(again.error);
        REQUIRE(again.ok);
        CHECK(SSL_version(again.client.get()) == TLS1_2_VERSION);
        CHECK(SSL_session_reused(again.server.get()) == 1);
    }
}

TEST_CASE("handshake: ticket keys rotate (current, older accepted, unknown)", "[unit][certs]") {
    // TLS 1.2 makes the renewal visible: every resumption gets a fresh ticket
    // (TLS 1.3 clients use a ticket once, so the server always renews), under
    // the current key even when the presented one was older.
    auto keys = std::make_shared<manual_keys>();
    keys->keys = {key_of(1)};
    const certs::server_tls tls(standard_settings(), keys);
    client_options options;
    options.max_version = TLS1_2_VERSION;

    connection initial = handshake(tls.default_context(), options);
    INFO(initial.error);
    REQUIRE(initial.ok);
    CHECK(keys->encryptions == 1);
    session_ptr session{SSL_get1_session(initial.client.get())};
    options.session = session.get();

    SECTION("current key: resumed, and a fresh ticket is issued") {
        connection again = handshake(tls.default_context(), options);
        REQUIRE(again.ok);
        CHECK(SSL_session_reused(again.server.get()) == 1);
        CHECK(keys->encryptions == 2);
    }
    SECTION("previous key: resumed and a ticket under the new key is issued") {
        keys->keys = {key_of(9), key_of(1)};
        connection again = handshake(tls.default_context(), options);
        REQUIRE(again.ok);
        CHECK(SSL_session_reused(again.server.get()) == 1);
        CHECK(keys->encryptions == 2);
    }
    SECTION("retired key: full handshake") {
        keys->keys = {key_of(9)};
        connection again = handshake(tls.default_context(), options);
        REQUIRE(again.ok);
        CHECK(SSL_session_reused(again.server.get()) == 0);
    }
}

TEST_CASE("handshake: no tickets when session tickets are off", "[unit][certs]") {
    config::tls settings = standard_settings();
    settings.session_tickets = false;
    const certs::server_tls tls(settings, nullptr);

    connection initial = handshake(tls.default_context());
    INFO(initial.error);
    REQUIRE(initial.ok);
    session_ptr session = resumable_session(initial.client.get());
    CHECK(SSL_SESSION_is_resumable(session.get()) == 0);
}

TEST_CASE("handshake: without a key source, one server_tls resumes its own tickets", "[unit][certs]") {
    const certs::server_tls tls(standard_settings(), nullptr);
    connection initial = handshake(tls.default_context());
    INFO(initial.error);
    REQUIRE(initial.ok);
    session_ptr session = resumable_session(initial.client.get());

    client_options options;
    options.session = session.get();
    connection again = handshake(tls.default_context(), options);
    INFO(again.error);
    REQUIRE(again.ok);
    CHECK(SSL_session_reused(again.server.get()) == 1);
}

TEST_CASE("ha: two gateways loading one ticket secret file share keys and resume each other's sessions",
          "[unit][certs][ha]") {
    using namespace std::chrono;
    const auto dir = std::filesystem::temp_directory_path() / ("rampart-ticket-secret-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto hex_file = (dir / "ticket.secret").string();
    std::ofstream(hex_file) << "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
    std::filesystem::permissions(hex_file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);

    const auto secret = certs::load_ticket_secret(hex_file);
    CHECK(secret[0] == 0x00);
    CHECK(secret[1] == 0x11);
    CHECK(secret[31] == 0xff);
    // Two gateways, each constructing its own source from the same file.
    auto gw1 = std::make_shared<certs::derived_ticket_keys>(hours(12), certs::load_ticket_secret(hex_file));
    auto gw2 = std::make_shared<certs::derived_ticket_keys>(hours(12), certs::load_ticket_secret(hex_file));
    const auto now = system_clock::now();
    const auto same = [](const certs::ticket_key& x, const certs::ticket_key& y) {
        return x.name == y.name && x.aes_key == y.aes_key && x.hmac_key == y.hmac_key;
    };
    CHECK(same(gw1->encrypting_key(now), gw2->encrypting_key(now)));
    const auto a = gw1->accepted_keys(now);
    const auto b = gw2->accepted_keys(now);
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
        CHECK(same(a[i], b[i]));
    }
    // A peer whose clock already entered the next period: its new key is accepted here.
    CHECK(same(gw2->encrypting_key(now + hours(12)), a.back()));

    const certs::server_tls first(standard_settings(), gw1);
    const certs::server_tls second(standard_settings(), gw2);
    connection initial = handshake(first.default_context());
    INFO(initial.error);
    REQUIRE(initial.ok);
    session_ptr session = resumable_session(initial.client.get());
    client_options options;
    options.session = session.get();
    connection again = handshake(second.default_context(), options);
    INFO(again.error);
    REQUIRE(again.ok);
    CHECK(SSL_session_reused(again.server.get()) == 1);

    // 32 raw bytes work too; anything else, or a file open to others, does not.
    const auto raw_file = (dir / "raw.secret").string();
    {
        std::ofstream raw(raw_file, std::ios::binary);
        for (int i = 0; i < 32; ++i) {
            raw.put(static_cast<char>(i * 7 + 1));
        }
    }
    std::filesystem::permissions(raw_file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    CHECK(certs::load_ticket_secret(raw_file)[1] == 8);
    const auto short_file = (dir / "short.secret").string();
    std::ofstream(short_file) << "abcdef\n";
    std::filesystem::permissions(short_file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    CHECK_THROWS_WITH(certs::load_ticket_secret(short_file),
                      Catch::Contains("must hold 32 random bytes or 64 hex digits"));
    std::filesystem::permissions(hex_file, std::filesystem::perms::group_read, std::filesystem::perm_options::add);
    CHECK_THROWS_AS(certs::load_ticket_secret(hex_file), certs::cert_error);
    std::filesystem::remove_all(dir);
}

TEST_CASE("record pool: record-sized blocks are kept and reused, everything else is malloc", "[unit][certs]") {
    using namespace rampart::certs;
    REQUIRE(record_pool_held() == 0);
    // A read-buffer-sized block goes back to the pool and serves the next
    // request in the range, whatever its exact size.
    void* a = record_pool_malloc(16709 + 64, __FILE__, __LINE__);
    REQUIRE(a != nullptr);
    std::memset(a, 0x5a, record_pool_block); // the whole block is usable
    record_pool_free(a, __FILE__, __LINE__);
    CHECK(record_pool_held() == 1);
    void* b = record_pool_malloc(record_pool_min, __FILE__, __LINE__);
    CHECK(b == a);
    CHECK(record_pool_held() == 0);

    // Small and large blocks are not pooled.
    void* small = record_pool_malloc(100, __FILE__, __LINE__);
    void* large = record_pool_malloc(64 * 1024, __FILE__, __LINE__);
    record_pool_free(small, __FILE__, __LINE__);
    record_pool_free(large, __FILE__, __LINE__);
    CHECK(record_pool_held() == 0);

    // The pool is bounded: blocks beyond it are freed.
    std::vector<void*> many;
    for (std::size_t i = 0; i < record_pool_blocks + 4; ++i) {
        many.push_back(record_pool_malloc(record_pool_block, __FILE__, __LINE__));
    }
    many.push_back(b);
    for (void* p : many) {
        record_pool_free(p, __FILE__, __LINE__);
    }
    CHECK(record_pool_held() == record_pool_blocks);

    // realloc of a pooled block keeps its bytes; free(nullptr) is a no-op.
    void* c = record_pool_malloc(record_pool_min, __FILE__, __LINE__);
    std::memcpy(c, "record", 7);
    void* d = record_pool_realloc(c, 40 * 1024, __FILE__, __LINE__);
    REQUIRE(d != nullptr);
    CHECK(std::memcmp(d, "record", 7) == 0);
    record_pool_free(d, __FILE__, __LINE__);
    record_pool_free(nullptr, __FILE__, __LINE__);
    CHECK(record_pool_held() == record_pool_blocks - 1); // c left the pool; d, resized, is not pooled
    // Empties this thread's pool for the tests that follow.
    for (std::size_t i = record_pool_held(); i > 0; --i) {
        std::free(record_pool_malloc(record_pool_min, __FILE__, __LINE__));
    }
    CHECK(record_pool_held() == 0);
}
