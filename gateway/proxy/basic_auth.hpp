#pragma once
// HTTP Basic authentication of a route (RFC 7617) and the allow/deny lists
// checked before it.
//
// Verifying a bcrypt or yescrypt hash takes milliseconds of CPU on purpose,
// which a worker's event loop must not spend: each worker hands the hashing
// to one thread of its own (started on first use) and awaits the verdict.
// At most `max_pending` verifications wait; beyond that the request gets 503
// with Retry-After, so a flood of guesses cannot queue without bound. A
// verified user:password is remembered per worker (as an HMAC under a key
// made at start, never the password itself), so a browser sending the same
// credentials with every request costs one hash, not one per request;
// failures are never remembered and each one counts as a violation of the
// client (L7 -> L3 blocking).
//
// Which user is asked for does not show in the timing: the name is compared
// with every configured name in constant time, and an unknown name is
// hashed against a real user's hash all the same.

#include "config/config.hpp"
#include "gateway/net.hpp"
#include "gateway/shared_state.hpp"

#include <array>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

namespace rampart::gateway {

struct basic_credentials {
    std::string user;
    std::string password;
};

/// The credentials of an `Authorization: Basic <base64 of user:password>`
/// value: scheme in any case, one or more spaces, strict base64 (padding
/// required), a user without ':' and a password of any bytes but control
/// characters. None when the value is anything else.
std::optional<basic_credentials> parse_basic_authorization(std::string_view value);

/// The WWW-Authenticate value of a 401 for `realm`: Basic realm="...",
/// charset="UTF-8" (RFC 7617 2.1).
std::string basic_challenge(std::string_view realm);

/// A route's access rules, prepared once per worker.
struct route_guard {
    route_guard() = default;
    explicit route_guard(const config::route_access& a);

    network_set allow;
    network_set deny;
    const config::basic_auth* auth = nullptr;                ///< null: no authentication
    std::vector<std::array<unsigned char, 32>> name_digests; ///< SHA-256 of each user's name
    std::uint64_t name_key = 0; ///< route_name_key of the route's name; 0 without one (maintenance)

    /// deny, then allow (empty: anyone)
    bool admits(const client_address& a) const;
    /// The index in auth->users of `name`, compared with every name in
    /// constant time; none when unknown.
    std::optional<std::size_t> find_user(std::string_view name) const;
};

class credential_checker {
public:
    enum class verdict { ok, wrong, busy };
    static constexpr std::size_t max_pending = 32;
    static constexpr std::size_t max_remembered = 4096;

    explicit credential_checker(net::io_context& io);
    ~credential_checker();
    credential_checker(const credential_checker&) = delete;
    credential_checker& operator=(const credential_checker&) = delete;

    /// Whether `c` are the credentials of a user of `guard` (route number
    /// `route`). Completes on the io_context.
    net::awaitable<verdict> check(const route_guard& guard, std::size_t route, const basic_credentials& c);

    /// Verifications done by the thread (not answered from memory).
    std::uint64_t hashed() const { return hashed_; }

private:
    using digest = std::array<unsigned char, 32>;
    struct digest_hash {
        std::size_t operator()(const digest& d) const;
    };
    struct job {
        std::string hash;
        std::string password;
        std::function<void(bool)> done;
    };

    digest remember_key(std::size_t route, const basic_credentials& c) const;
    bool enqueue(job j);
    void run();

    net::io_context& io_;
    std::array<unsigned char, 32> key_{};
    std::unordered_set<digest, digest_hash> verified_;
    std::uint64_t hashed_ = 0;

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<job> jobs_;
    std::size_t pending_ = 0; ///< queued or being hashed (io thread's count)
    bool stop_ = false;
    std::optional<std::thread> thread_;
};

} // namespace rampart::gateway
