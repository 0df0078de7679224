#include "gateway/proxy/basic_auth.hpp"

#include "config/htpasswd.hpp"

#include <boost/asio/post.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <sys/prctl.h>

#include <cstring>
#include <new>
#include <stdexcept>

namespace rampart::gateway {
namespace {

int base64_value(char c) {
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

// Strict base64 (RFC 4648 4): length a multiple of 4, '=' only at the end.
std::optional<std::string> base64_decode(std::string_view in) {
    if (in.empty() || in.size() % 4 != 0) {
        return std::nullopt;
    }
    std::string out;
    out.reserve(in.size() / 4 * 3);
    for (std::size_t i = 0; i < in.size(); i += 4) {
        const bool last = i + 4 == in.size();
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; ++k) {
            const char c = in[i + static_cast<std::size_t>(k)];
            if (c == '=' && last && k >= 2) {
                v[k] = 0;
                ++pad;
                continue;
            }
            if (pad != 0) {
                return std::nullopt; // data after padding
            }
            v[k] = base64_value(c);
            if (v[k] < 0) {
                return std::nullopt;
            }
        }
        const unsigned n = (static_cast<unsigned>(v[0]) << 18) | (static_cast<unsigned>(v[1]) << 12) |
                           (static_cast<unsigned>(v[2]) << 6) | static_cast<unsigned>(v[3]);
        out.push_back(static_cast<char>((n >> 16) & 0xff));
        if (pad < 2) {
            out.push_back(static_cast<char>((n >> 8) & 0xff));
        }
        if (pad < 1) {
            out.push_back(static_cast<char>(n & 0xff));
        }
    }
    return out;
}

std::array<unsigned char, 32> sha256(std::string_view text) {
    std::array<unsigned char, 32> d{};
    SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), d.data());
    return d;
}

} // namespace

std::optional<basic_credentials> parse_basic_authorization(std::string_view value) {
    if (value.size() < 6 || value.size() > 4096) {
        return std::nullopt;
    }
    constexpr std::string_view scheme = "basic";
    for (std::size_t i = 0; i < scheme.size(); ++i) {
        const char c = value[i];
        if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c) != scheme[i]) {
            return std::nullopt;
        }
    }
    std::size_t at = scheme.size();
    if (value[at] != ' ') {
        return std::nullopt;
    }
    while (at < value.size() && value[at] == ' ') {
        ++at;
    }
    auto decoded = base64_decode(value.substr(at));
    if (!decoded) {
        return std::nullopt;
    }
    const auto colon = decoded->find(':');
    if (colon == std::string::npos) {
        return std::nullopt;
    }
    for (const char c : *decoded) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            OPENSSL_cleanse(decoded->data(), decoded->size());
            return std::nullopt; // RFC 7617 2: no control characters
        }
    }
    basic_credentials c{decoded->substr(0, colon), decoded->substr(colon + 1)};
    OPENSSL_cleanse(decoded->data(), decoded->size());
    return c;
}

std::string basic_challenge(std::string_view realm) {
    return "Basic realm=\"" + std::string(realm) + "\", charset=\"UTF-8\"";
}

route_guard::route_guard(const config::route_access& a) : allow(a.allow), deny(a.deny) {
    if (a.auth) {
        auth = &*a.auth;
        for (const auto& u : a.auth->users) {
            name_digests.push_back(sha256(u.name));
        }
    }
}

bool route_guard::admits(const client_address& a) const {
    if (!deny.empty() && deny.contains(a)) {
        return false;
    }
    return allow.empty() || allow.contains(a);
}

std::optional<std::size_t> route_guard::find_user(std::string_view name) const {
    const auto d = sha256(name);
    std::size_t found = 0;
    unsigned char any = 0;
    for (std::size_t i = 0; i < name_digests.size(); ++i) {
        // No early exit and no branch on the comparison: every name costs the same.
        const unsigned char same = CRYPTO_memcmp(d.data(), name_digests[i].data(), d.size()) == 0 ? 1 : 0;
        const std::size_t mask = static_cast<std::size_t>(0) - same;
        found = (found & ~mask) | (i & mask);
        any |= same;
    }
    if (any == 0) {
        return std::nullopt;
    }
    return found;
}

std::size_t credential_checker::digest_hash::operator()(const digest& d) const {
    std::size_t h = 0;
    std::memcpy(&h, d.data(), sizeof h);
    return h;
}

credential_checker::credential_checker(net::io_context& io) : io_(io) {
    if (RAND_bytes(key_.data(), static_cast<int>(key_.size())) != 1) {
        throw std::runtime_error("no random bytes for the credential memory's key");
    }
}

credential_checker::~credential_checker() {
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    wake_.notify_all();
    if (thread_ && thread_->joinable()) {
        thread_->join();
    }
    for (auto& j : jobs_) {
        OPENSSL_cleanse(j.password.data(), j.password.size());
    }
    OPENSSL_cleanse(key_.data(), key_.size());
}

credential_checker::digest credential_checker::remember_key(std::size_t route, const basic_credentials& c) const {
    digest out{};
    unsigned int length = 0;
    // route, user, a NUL (not in a user name), password
    std::string message(sizeof route, '\0');
    std::memcpy(message.data(), &route, sizeof route);
    message += c.user;
    message.push_back('\0');
    message += c.password;
    HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
         reinterpret_cast<const unsigned char*>(message.data()), message.size(), out.data(), &length);
    OPENSSL_cleanse(message.data(), message.size());
    return out;
}

bool credential_checker::enqueue(job j) {
    if (pending_ >= max_pending) {
        return false;
    }
    if (!thread_) {
        thread_.emplace([this] { run(); });
    }
    ++pending_;
    {
        std::lock_guard lock(mutex_);
        jobs_.push_back(std::move(j));
    }
    wake_.notify_one();
    return true;
}

void credential_checker::run() {
    ::prctl(PR_SET_NAME, "rampart-auth", 0, 0, 0); // for top -H
    for (;;) {
        job j;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
            if (stop_) {
                return;
            }
            j = std::move(jobs_.front());
            // A short password lives inside the string: the move copied it.
            OPENSSL_cleanse(jobs_.front().password.data(), jobs_.front().password.size());
            jobs_.pop_front();
        }
        const bool ok = config::verify_password_hash(j.password, j.hash);
        OPENSSL_cleanse(j.password.data(), j.password.size());
        net::post(io_, [done = std::move(j.done), ok] { done(ok); });
    }
}

net::awaitable<credential_checker::verdict> credential_checker::check(const route_guard& guard, std::size_t route,
                                                                      const basic_credentials& c) {
    if (guard.auth == nullptr || guard.auth->users.empty()) {
        co_return verdict::wrong;
    }
    const auto user = guard.find_user(c.user);
    const digest key = remember_key(route, c);
    if (user && verified_.contains(key)) {
        co_return verdict::ok;
    }
    // An unknown user is hashed against the first user's hash all the same.
    const std::string& hash = guard.auth->users[user.value_or(0)].hash;
    std::optional<bool> result;
    bool queued = true;
    co_await net::async_initiate<decltype(net::use_awaitable), void()>(
        [&](auto handler) {
            auto h = std::make_shared<decltype(handler)>(std::move(handler));
            queued = enqueue(job{hash, c.password, [&result, h](bool ok) {
                                     result = ok;
                                     (*h)();
                                 }});
            if (!queued) {
                net::post(io_, [h] { (*h)(); });
            }
        },
        net::use_awaitable);
    if (!queued) {
        co_return verdict::busy;
    }
    --pending_;
    ++hashed_;
    if (!user || !result.value_or(false)) {
        co_return verdict::wrong;
    }
    if (verified_.size() >= max_remembered) {
        verified_.clear();
    }
    verified_.insert(key);
    co_return verdict::ok;
}

} // namespace rampart::gateway
