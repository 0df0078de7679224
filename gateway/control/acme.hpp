#pragma once
// Certificates from an ACME server (RFC 8555), issued and renewed by the
// master on its own io_context: directory, nonces (badNonce retried),
// account, order, the authorizations' http-01 or tls-alpn-01 challenges
// (answers published to the workers through the shared block), finalize with
// a CSR under a fresh key, the chain's download. The chain and its key go
// into one file under the state directory (atomic rename), and the master's
// reload puts it live. A failure never stops service: the current
// certificate keeps serving and the next attempt waits retry_min, doubled
// per failure up to retry_max, with jitter.
//
// The HTTPS client is Beast over asio::ssl with the server's certificate
// verified (ca_file, else the system's roots) and its name checked; each
// request has a deadline and a bounded response (1 MiB, 16 KiB of header),
// and a redirect is an error.

#include "config/config.hpp"
#include "gateway/net.hpp"
#include "gateway/shared_state.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rampart::gateway {

/// One managed certificate as /metrics, /api/status and `rampart certs
/// status` show it.
struct acme_certificate_status {
    std::string key_type; ///< "ecdsa" or "rsa"
    std::string file;
    std::string issuer;
    std::string serial;
    std::int64_t not_after = 0; ///< seconds since 1970; 0: no certificate yet
    bool placeholder = true;    ///< the self-signed stand-in until the first issuance
    std::int64_t next_attempt = 0;
    std::uint64_t consecutive_failures = 0;
    std::uint64_t failures_total = 0;
    std::uint64_t issued_total = 0;
    std::string last_error; ///< empty after a success
};

class acme_manager {
public:
    /// `reload` puts new files live (the master's reload); `may_order` says
    /// whether this node orders now (an HA pair: only the VIP's holder).
    acme_manager(net::io_context& io, shared_block& block,
                 std::function<std::pair<bool, std::string>(const std::string&)> reload,
                 std::function<bool()> may_order);
    ~acme_manager();
    acme_manager(const acme_manager&) = delete;
    acme_manager& operator=(const acme_manager&) = delete;

    /// Makes the state directory (0700) and, for each key type without a
    /// file yet, a self-signed placeholder (0600) so that the https listener
    /// starts before the first issuance. Run before certificates load.
    /// Throws std::runtime_error with the reason.
    static void prepare(const config::acme& settings);

    /// The settings to work with from now on (none: stop ordering).
    void configure(const config::snapshot_ptr& cfg);
    /// Orders and renews until `stopping`.
    net::awaitable<void> run(const bool& stopping);
    /// Ends a wait early (a new configuration, the VIP taken over, stop).
    void wake();

    const std::vector<acme_certificate_status>& status() const { return status_; }

private:
    struct session;
    net::awaitable<void> attempt(std::size_t index);
    void refresh_status(std::size_t index);

    net::io_context& io_;
    shared_block& block_;
    std::function<std::pair<bool, std::string>(const std::string&)> reload_;
    std::function<bool()> may_order_;
    std::optional<config::acme> settings_;
    std::vector<acme_certificate_status> status_;
    net::steady_timer wake_;
};

} // namespace rampart::gateway
