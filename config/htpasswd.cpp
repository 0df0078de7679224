#include "config/htpasswd.hpp"

#include <crypt.h>
#include <string.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

namespace rampart::config {
namespace {

bool crypt_alphabet(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '/';
}

// What OpenSSL's CRYPTO_memcmp does, without linking libcrypto into the
// `rampart` command: the time does not depend on where the bytes differ.
bool same_bytes(const char* a, const char* b, std::size_t n) {
    volatile unsigned char diff = 0;
    for (std::size_t i = 0; i < n; ++i) {
        diff = static_cast<unsigned char>(diff | (static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i])));
    }
    return diff == 0;
}

const char* const make_one = "make one with htpasswd -B, mkpasswd -m yescrypt or rampart passwd";

} // namespace

std::string check_password_hash(std::string_view hash) {
    const auto weak = [&](std::string_view scheme) {
        return std::string(scheme) + " hashes are not accepted (too fast to guess against); " + make_one;
    };
    if (hash.starts_with("$apr1$") || hash.starts_with("$1$") || hash.starts_with("$md5")) {
        return weak("MD5");
    }
    if (hash.starts_with("{SHA}") || hash.starts_with("{SSHA}")) {
        return weak("SHA-1");
    }
    if (hash.starts_with("$5$") || hash.starts_with("$6$")) {
        return weak("SHA-crypt");
    }
    if (hash.starts_with("$2a$") || hash.starts_with("$2x$")) {
        return "old bcrypt variants ($2a$, $2x$) are not accepted; " + std::string(make_one);
    }
    const bool bcrypt = hash.starts_with("$2b$") || hash.starts_with("$2y$");
    const bool yescrypt = hash.starts_with("$y$");
    if (!bcrypt && !yescrypt) {
        return "expected a bcrypt ($2y$, $2b$) or yescrypt ($y$) hash, not plain text or another scheme; " +
               std::string(make_one);
    }
    if (bcrypt) {
        // $2y$NN$ + 22 characters of salt + 31 of hash; cost 04..31.
        const bool shape = hash.size() == 60 && hash[6] == '$' && hash[4] >= '0' && hash[4] <= '3' && hash[5] >= '0' &&
                           hash[5] <= '9' && std::all_of(hash.begin() + 7, hash.end(), crypt_alphabet);
        const int cost = shape ? (hash[4] - '0') * 10 + (hash[5] - '0') : 0;
        if (!shape || cost < 4 || cost > 31) {
            return "a bcrypt hash is $2y$ (or $2b$), a cost of two digits, '$' and 53 characters of ./0-9A-Za-z";
        }
    } else {
        // $y$ params $ salt $ hash
        const std::string_view rest = hash.substr(3);
        const auto p = rest.find('$');
        const auto s = p == std::string_view::npos ? p : rest.find('$', p + 1);
        const bool shape = p != std::string_view::npos && p > 0 && s != std::string_view::npos && s > p + 1 &&
                           s + 1 < rest.size() && rest.find('$', s + 1) == std::string_view::npos &&
                           std::all_of(rest.begin(), rest.end(), [](char c) { return c == '$' || crypt_alphabet(c); });
        if (!shape) {
            return "a yescrypt hash is $y$, its parameters, '$', the salt, '$' and the hash";
        }
    }
    const std::string text(hash);
    if (crypt_checksalt(text.c_str()) != CRYPT_SALT_OK) {
        return "libcrypt refuses this hash's parameters";
    }
    return {};
}

std::variant<std::vector<auth_user>, htpasswd_error> parse_htpasswd(std::string_view text) {
    std::vector<auth_user> users;
    int line_no = 0;
    while (!text.empty()) {
        ++line_no;
        const auto end = text.find('\n');
        std::string_view line = text.substr(0, end);
        text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
        if (!line.empty() && line.back() == '\r') {
            line.remove_suffix(1);
        }
        if (line.empty() || line.front() == '#') {
            continue;
        }
        const auto colon = line.find(':');
        if (colon == std::string_view::npos) {
            return htpasswd_error{line_no, 1, "expected name:hash"};
        }
        const std::string_view name = line.substr(0, colon);
        const std::string_view hash = line.substr(colon + 1);
        if (name.empty() || name.size() > 255) {
            return htpasswd_error{line_no, 1, "expected a user name of 1 to 255 characters before ':'"};
        }
        for (std::size_t i = 0; i < name.size(); ++i) {
            if (name[i] <= 0x20 || name[i] >= 0x7f) {
                return htpasswd_error{line_no, static_cast<int>(i) + 1,
                                      "a user name is printable ASCII without spaces"};
            }
        }
        if (auto why = check_password_hash(hash); !why.empty()) {
            return htpasswd_error{line_no, static_cast<int>(colon) + 2, "user " + std::string(name) + ": " + why};
        }
        if (std::any_of(users.begin(), users.end(), [&](const auth_user& u) { return u.name == name; })) {
            return htpasswd_error{line_no, 1, "user " + std::string(name) + " appears twice"};
        }
        users.push_back(auth_user{std::string(name), std::string(hash)});
    }
    if (users.empty()) {
        return htpasswd_error{std::max(line_no, 1), 1, "no user in the file"};
    }
    return users;
}

std::string make_password_hash(std::string_view password, bool bcrypt) {
    if (password.find('\0') != std::string_view::npos) {
        throw std::runtime_error("a password cannot hold a NUL byte");
    }
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn(bcrypt ? "$2b$" : "$y$", bcrypt ? 12 : 0, nullptr, 0, setting, sizeof setting) == nullptr) {
        throw std::runtime_error(std::string("libcrypt could not make a salt: ") + std::strerror(errno));
    }
    auto data = std::make_unique<crypt_data>();
    const std::string phrase(password);
    const char* out = crypt_rn(phrase.c_str(), setting, data.get(), sizeof(crypt_data));
    if (out == nullptr || out[0] == '*') {
        throw std::runtime_error(std::string("libcrypt could not hash the password: ") + std::strerror(errno));
    }
    std::string hash(out);
    ::explicit_bzero(data.get(), sizeof(crypt_data));
    return hash;
}

bool verify_password_hash(std::string_view password, const std::string& hash) {
    auto data = std::make_unique<crypt_data>();
    const std::string phrase(password);
    const char* out = crypt_rn(phrase.c_str(), hash.c_str(), data.get(), sizeof(crypt_data));
    const bool ok = out != nullptr && std::strlen(out) == hash.size() && same_bytes(out, hash.data(), hash.size());
    ::explicit_bzero(data.get(), sizeof(crypt_data));
    return ok;
}

} // namespace rampart::config
