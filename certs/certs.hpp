#pragma once
// OpenSSL server contexts built from the configuration: certificate chains,
// SNI selection (exact and wildcard names), ECDSA + RSA pairs served by client
// capability, safe protocol defaults, ALPN and session-ticket keys.
//
// This module exposes RAII OpenSSL handles, never Asio types: the gateway's
// tls_socket makes one SSL per connection from the SSL_CTX (SSL_new).

#include "config/config.hpp"

#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace rampart::certs {

struct ssl_ctx_deleter {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using ssl_ctx_ptr = std::unique_ptr<SSL_CTX, ssl_ctx_deleter>;

/// Thrown at start-up for an unusable certificate or key; the message names the
/// file and the reason (never any key material).
struct cert_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// A session-ticket key: 16-byte name, 32-byte AES key, 32-byte HMAC key.
struct ticket_key {
    std::array<unsigned char, 16> name{};
    std::array<unsigned char, 32> aes_key{};
    std::array<unsigned char, 32> hmac_key{};
};

/// Where session-ticket keys come from. The gateway asks for the key that
/// encrypts new tickets and for the keys still accepted for decryption.
/// Implementations must be deterministic functions of time so that every
/// worker process (and later both gateways of an HA pair) agree without
/// talking to each other.
class ticket_key_source {
public:
    virtual ~ticket_key_source() = default;
    /// The key that encrypts tickets issued at `now`.
    virtual ticket_key encrypting_key(std::chrono::system_clock::time_point now) const = 0;
    /// The keys accepted at `now` (the encrypting key first, then older ones).
    virtual std::vector<ticket_key> accepted_keys(std::chrono::system_clock::time_point now) const = 0;
};

/// Keys derived from a 32-byte secret and the rotation epoch:
/// key(epoch) = HKDF-SHA256(secret, "rampart ticket key" || epoch). A key
/// decrypts one period before it encrypts (clock skew between the gateways
/// of a pair), encrypts for one period and is accepted for one more. Processes holding the
/// same secret derive the same keys; the secret lives in memory only.
class derived_ticket_keys final : public ticket_key_source {
public:
    /// A fresh random secret.
    explicit derived_ticket_keys(std::chrono::milliseconds rotation);
    /// A given secret: processes constructed with the same one share keys.
    derived_ticket_keys(std::chrono::milliseconds rotation, const std::array<unsigned char, 32>& secret);
    /// Wipes the secret.
    ~derived_ticket_keys() override;
    ticket_key encrypting_key(std::chrono::system_clock::time_point now) const override;
    std::vector<ticket_key> accepted_keys(std::chrono::system_clock::time_point now) const override;
    /// The key of rotation period `epoch` (milliseconds since 1970 / rotation).
    ticket_key key_for_epoch(std::uint64_t epoch) const;
    std::chrono::milliseconds rotation() const { return rotation_; }

private:
    /// The keys of `epoch` and `epoch - 1`, derived once per rotation period:
    /// HKDF through OpenSSL 3 fetches its algorithm on every call, too slow
    /// for every handshake.
    std::array<ticket_key, 3> keys_at(std::uint64_t epoch) const;
    std::uint64_t epoch_of(std::chrono::system_clock::time_point now) const;

    std::chrono::milliseconds rotation_;
    std::array<unsigned char, 32> secret_;
    mutable std::mutex cache_mutex_;
    mutable std::uint64_t cached_epoch_ = ~std::uint64_t{0};
    mutable std::array<ticket_key, 3> cached_{}; ///< epoch, epoch - 1, epoch + 1
};

/// One configured certificate after loading: its names (SAN DNS entries, or
/// the CN when there is no SAN), key type and expiry.
struct loaded_certificate {
    std::string cert_file;
    std::vector<std::string> names;
    std::string key_type; ///< "ECDSA" or "RSA"
    std::chrono::system_clock::time_point not_after;
    std::string issuer; ///< the issuer's CN, else its whole name
};

/// All server-side TLS state of the gateway. Built once by the master before
/// workers fork; workers use it read-only. Not copyable.
class server_tls {
public:
    /// Loads every certificate of `settings`, checks key permissions (a key
    /// readable by group or others is refused), groups certificates with the
    /// same names into one SSL_CTX (so an ECDSA and an RSA certificate for one
    /// name are both offered and OpenSSL picks by the client's signature
    /// algorithms), and installs SNI, ALPN and ticket callbacks.
    /// Throws cert_error with a clear message. With session tickets on and
    /// `keys` null, a derived_ticket_keys with a fresh secret is used.
    ///
    /// NOTE: the contexts call back into this object (SNI) and into `keys`
    /// (tickets); it must outlive every SSL made from them, including contexts
    /// the gateway kept alive with SSL_CTX_up_ref. The destructor unhooks the
    /// callbacks so that a straggler falls back to the default certificate and
    /// full handshakes instead of touching freed memory.
    server_tls(const config::tls& settings, std::shared_ptr<const ticket_key_source> keys);
    ~server_tls();
    server_tls(const server_tls&) = delete;
    server_tls& operator=(const server_tls&) = delete;

    /// The context handshakes start on (the default certificate's). SNI
    /// switches the connection to the matching context.
    SSL_CTX* default_context() const;
    /// The context serving `host_name` (exact match first, then a wildcard
    /// `*.example.com` matching exactly one label, else the default).
    SSL_CTX* select(const std::string& host_name) const;
    /// Every configured certificate, in configuration order.
    const std::vector<loaded_certificate>& certificates() const { return loaded_; }

private:
    struct entry;
    std::vector<std::unique_ptr<entry>> entries_;
    std::vector<loaded_certificate> loaded_;
    std::shared_ptr<const ticket_key_source> keys_;
    /// Lower-case name -> context; the first configured certificate wins.
    std::unordered_map<std::string, SSL_CTX*> exact_;
    /// "example.com" for a certificate name "*.example.com".
    std::unordered_map<std::string, SSL_CTX*> wildcard_;
};

/// ALPN of the tls-alpn-01 challenge (RFC 8737).
inline constexpr std::string_view acme_tls_protocol = "acme-tls/1";

/// Fills the DER certificate and key that answer a tls-alpn-01 validation
/// of `name`; false when none is pending.
using acme_alpn_lookup = bool (*)(const std::string& name, std::string& cert_der, std::string& key_der);

/// Where the contexts find validation certificates (a worker: its shared
/// block). Process-wide; null (the default) refuses every acme-tls/1 hello.
void set_acme_alpn_lookup(acme_alpn_lookup lookup);

/// Whether the handshake of `ssl` was a tls-alpn-01 validation: the
/// connection must close once it is done, serving nothing.
bool is_acme_tls(SSL* ssl);

/// Reads the shared session-ticket secret of an HA pair (ha.ticket_secret_file):
/// 32 raw bytes or 64 hex digits, in a file not readable by group or others.
/// Throws cert_error naming the file (never its content).
std::array<unsigned char, 32> load_ticket_secret(const std::string& path);

/// Checks that `key_file` exists and is not readable or writable by group or
/// others. Throws cert_error naming the file and its mode otherwise.
void check_key_permissions(const std::string& key_file);

/// Writes a development CA and server certificates for `names` into `dir`:
/// ca.pem, ca.key, ecdsa.pem, ecdsa.key (P-256), rsa.pem, rsa.key (RSA 2048).
/// Keys are written with mode 0600. `names` are host names, "*.host" wildcards
/// or IP literals (which become IP subject alternative names); the first is
/// also the CN. Existing files are replaced. For the demo and the tests only.
void make_dev_certificates(const std::string& dir, const std::vector<std::string>& names);

} // namespace rampart::certs
