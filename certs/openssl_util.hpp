#pragma once
// OpenSSL handles and helpers shared by the certificate modules (certs.cpp,
// acme.cpp). Internal to certs/: not part of its interface.

#include "certs/certs.hpp"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <unistd.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>

namespace rampart::certs::detail {

template <auto Free> struct openssl_deleter {
    template <typename T> void operator()(T* p) const { Free(p); }
};

using bio_ptr = std::unique_ptr<BIO, openssl_deleter<BIO_free_all>>;
using x509_ptr = std::unique_ptr<X509, openssl_deleter<X509_free>>;
using x509_ext_ptr = std::unique_ptr<X509_EXTENSION, openssl_deleter<X509_EXTENSION_free>>;
using general_names_ptr = std::unique_ptr<GENERAL_NAMES, openssl_deleter<GENERAL_NAMES_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY_free>>;
using bignum_ptr = std::unique_ptr<BIGNUM, openssl_deleter<BN_free>>;
using kdf_ptr = std::unique_ptr<EVP_KDF, openssl_deleter<EVP_KDF_free>>;
using kdf_ctx_ptr = std::unique_ptr<EVP_KDF_CTX, openssl_deleter<EVP_KDF_CTX_free>>;

/// OpenSSL's password callback that refuses: without it OpenSSL would prompt
/// on the controlling terminal for an encrypted key and block (the gateway
/// has nobody to type a passphrase).
inline int no_password(char*, int, int, void*) {
    return 0;
}

/// Closes the descriptor when it goes (-1: none).
struct fd_closer {
    int fd;
    ~fd_closer() {
        if (fd >= 0) {
            ::close(fd);
        }
    }
};

/// strerror(error) as a string.
inline std::string errno_text(int error) {
    return std::strerror(error);
}

/// Drains the calling thread's OpenSSL error queue into one line.
std::string openssl_errors();
/// Throws cert_error: `what`, then OpenSSL's errors.
[[noreturn]] void fail(const std::string& what);
/// What `write` wrote into a memory BIO (a PEM encoder, say).
std::string pem_of(const std::function<int(BIO*)>& write, const std::string& what);
/// A fresh P-256 key, or RSA 2048.
pkey_ptr generate_key(bool rsa);
/// Adds an X.509v3 extension given in OpenSSL's configuration syntax.
void add_extension(X509* cert, X509* issuer, int nid, const std::string& value);
/// An unsigned certificate for `key`, issued by `issuer` (self-issued when
/// null), valid for `days` from an hour ago, with a random 128-bit serial.
x509_ptr make_certificate(EVP_PKEY* key, const std::string& common_name, long days, X509* issuer);
/// Signs with SHA-256.
void sign(X509* cert, EVP_PKEY* issuer_key);
/// HKDF-SHA256 (RFC 5869), no salt: `out_length` bytes from `secret` and `info`.
void hkdf_sha256(const unsigned char* secret, std::size_t secret_length, const unsigned char* info,
                 std::size_t info_length, unsigned char* out, std::size_t out_length);

} // namespace rampart::certs::detail
