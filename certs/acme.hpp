#pragma once
// The cryptography of an ACME client (RFC 8555), without I/O: account and
// certificate keys, the account's JWK and its thumbprint (RFC 7638), JWS
// requests signed ES256 (RFC 7515), key authorizations, CSRs, the tls-alpn-01
// validation certificate (RFC 8737), what a downloaded chain says, and the
// atomic file writes the client keeps its state with. The protocol itself
// (nonces, orders, polling) is in gateway/control/acme.cpp.

#include "certs/openssl_util.hpp"

#include <sys/types.h>

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rampart::certs::acme {

enum class key_type { ecdsa, rsa };

/// "ecdsa" or "rsa": file names and metric labels.
const char* key_type_name(key_type t);

/// A private key: the account's (always P-256: ES256) or a certificate's.
class private_key {
public:
    static private_key generate(key_type t);
    /// Parses a PEM private key; throws cert_error naming `what` (never the key).
    static private_key from_pem(std::string_view pem, const std::string& what);
    /// PKCS#8 PEM.
    std::string to_pem() const;
    EVP_PKEY* get() const { return key_.get(); }
    key_type type() const;

private:
    detail::pkey_ptr key_;
};

/// base64url without padding (RFC 7515 section 2).
std::string base64url(std::string_view bytes);

/// The account key's public JWK, members in the order RFC 7638 hashes them:
/// {"crv":"P-256","kty":"EC","x":"…","y":"…"}.
std::string jwk(const private_key& account);
/// base64url(SHA-256(jwk)).
std::string jwk_thumbprint(const private_key& account);

/// A JWS in the flattened JSON serialization, signed ES256 with the account
/// key. The protected header names the account by `kid` (its URL) or, when
/// `kid` is empty (newAccount), carries the `jwk`. An empty `payload` is a
/// POST-as-GET.
std::string sign_request(const private_key& account, std::string_view kid, std::string_view nonce, std::string_view url,
                         std::string_view payload);

/// token "." thumbprint (RFC 8555 section 8.1).
std::string key_authorization(std::string_view token, const private_key& account);

/// A challenge token as the server may send it: base64url characters only,
/// 16..128 of them (RFC 8555 asks for at least 128 bits, 22 characters;
/// Let's Encrypt sends 43; the shared block holds 128). Anything else (a
/// '/', a "..") is refused before it reaches a path or a response.
bool valid_token(std::string_view token);

/// A DER CSR for `names` (the first is also the CN), signed by `key`.
std::string make_csr(const private_key& key, const std::vector<std::string>& names);

/// The tls-alpn-01 validation certificate for `name` (RFC 8737): self-signed,
/// its only SAN `name`, and the critical acmeIdentifier extension holding
/// SHA-256(key authorization). DER certificate and DER (PKCS#8) key.
struct alpn_certificate {
    std::string cert_der;
    std::string key_der;
};
alpn_certificate make_alpn_certificate(const std::string& name, std::string_view key_authorization);

/// What the leaf of a PEM chain says. Throws cert_error when `pem` holds no
/// certificate.
struct chain_facts {
    std::chrono::system_clock::time_point not_before;
    std::chrono::system_clock::time_point not_after;
    std::string serial;             ///< hex
    std::string issuer;             ///< the issuer's CN (or its whole name when it has none)
    std::vector<std::string> names; ///< SAN DNS names
    std::size_t certificates = 0;   ///< in the chain
    std::string key_type;           ///< "ECDSA" or "RSA" (or "other")
};
chain_facts inspect_chain(std::string_view pem);

/// The issuer's CN of `cert`, else its whole name in one line.
std::string issuer_name(X509* cert);

/// The certificates of a PEM text (at most 10), re-encoded: whatever else it
/// holds (keys, comments, other blocks) is left out. Throws cert_error when
/// there is none, or more than 10.
std::string normalise_chain(std::string_view pem);

/// Whether each certificate of the chain is signed by the next one's key.
bool chain_links(std::string_view pem);

/// Whether `key` is the private key of the chain's leaf.
bool key_matches(std::string_view chain_pem, const private_key& key);

/// A self-signed certificate for `names`, valid for `days`, for a listener
/// that must start before the first certificate is issued; its issuer CN says
/// so ("Rampart placeholder").
std::string make_placeholder(const private_key& key, const std::vector<std::string>& names, long days);

/// The key that seals ACME files between the two nodes of a pair:
/// HKDF-SHA256(the pair's ticket secret, "rampart acme transfer v1"), a
/// label of its own so that it is never a session-ticket key.
using transfer_key = std::array<unsigned char, 32>;
transfer_key derive_transfer_key(const std::array<unsigned char, 32>& secret);

/// AES-256-GCM under `key`: a random 12-byte nonce, then the ciphertext and
/// its 16-byte tag, base64url; `aad` is authenticated, not sent.
std::string seal(const transfer_key& key, std::string_view aad, std::string_view plain);
/// The plaintext, or nullopt when `sealed` was not made by seal() under
/// `key` with `aad` (tampered, another secret, another header).
std::optional<std::string> open_sealed(const transfer_key& key, std::string_view aad, std::string_view sealed);

/// Writes `data` to `path` so that a crash leaves either the old file or the
/// new one, never a part: a temporary file beside it with `mode` from the
/// start, fsync, rename over `path`, fsync of the directory. Throws cert_error.
void write_file_atomic(const std::string& path, std::string_view data, mode_t mode);

/// The whole file (at most 1 MiB) into `out`; false, `out` empty, when it
/// does not exist. Throws cert_error for anything else.
bool read_file(const std::string& path, std::string& out);

} // namespace rampart::certs::acme
