#pragma once
// The users file of a route's basic_auth, in the htpasswd format nginx and
// Apache read: one `name:hash` per line; blank lines and lines starting with
// '#' are skipped. Only slow, salted hashes are accepted: bcrypt ($2b$, $2y$,
// as `htpasswd -B` writes) and yescrypt ($y$, as `mkpasswd -m yescrypt` or
// `rampart passwd` write). MD5 ($apr1$, $1$), SHA-1 ({SHA}), the SHA-2
// crypts ($5$, $6$), DES crypt and plain text are refused by name.
//
// Sans-I/O: the checker reads the file and hands its text here.

#include "config/config.hpp"

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace rampart::config {

/// Where a users file is wrong: 1-based line and column, and why.
struct htpasswd_error {
    int line = 0;
    int column = 0;
    std::string what;
};

/// The users of `text`, or the first problem in it. At least one user;
/// names unique, at most 255 bytes of printable ASCII other than ':'.
std::variant<std::vector<auth_user>, htpasswd_error> parse_htpasswd(std::string_view text);

/// Empty when `hash` is a bcrypt or yescrypt hash libcrypt can verify;
/// otherwise why not (naming the scheme when it is a known weak one).
std::string check_password_hash(std::string_view hash);

/// A new hash of `password` with a fresh random salt: yescrypt (libcrypt's
/// default cost), or bcrypt with cost 12 when `bcrypt`. Throws
/// std::runtime_error when libcrypt cannot make one.
std::string make_password_hash(std::string_view password, bool bcrypt = false);

/// Whether `password` matches `hash` (constant-time comparison of the result).
bool verify_password_hash(std::string_view password, const std::string& hash);

} // namespace rampart::config
