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

#include "certs/acme.hpp"
#include "config/config.hpp"
#include "gateway/net.hpp"
#include "gateway/shared_state.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
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

/// The other node of an HA pair: where its admin listener is, and the key
/// the two nodes' ACME files travel under (derived from ha.ticket_secret_file).
struct acme_pair_link {
    std::string node; ///< this node
    std::string peer; ///< the other node's name
    std::string peer_address;
    unsigned short admin_port = 0;
    certs::acme::transfer_key key{};
};

/// What came from the peer so far.
struct acme_transfer_counts {
    std::uint64_t installed = 0; ///< certificates taken from the peer
    std::uint64_t refused = 0;   ///< answers that did not open or verify
    std::uint64_t failed = 0;    ///< no answer (the peer down, a timeout)
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

    /// The settings to work with from now on (none: stop ordering), and the
    /// peer of a pair (none: a single gateway).
    void configure(const config::snapshot_ptr& cfg, std::optional<acme_pair_link> pair);
    /// GET /api/ha/acme?have=TYPE:SERIAL,...: this node's issued files,
    /// sealed for the peer (200), or 304 when the peer has the same ones.
    http::response<http::string_body> serve_transfer(const http::request<http::empty_body>& req) const;
    /// Orders and renews until `stopping`.
    net::awaitable<void> run(const bool& stopping);
    /// Ends a wait early (a new configuration, the VIP taken over, stop).
    void wake();

    const std::vector<acme_certificate_status>& status() const { return status_; }
    const acme_transfer_counts& transfers() const { return transfers_; }

private:
    struct session;
    net::awaitable<void> attempt(std::size_t index);
    void refresh_status(std::size_t index);
    /// Asks the peer for newer files every few seconds and installs them.
    net::awaitable<void> follow_peer(const bool& stopping);
    net::awaitable<void> ask_peer(acme_pair_link pair);
    /// Checks the files of a peer's answer; true when one was installed.
    bool install_from_peer(const acme_pair_link& pair, std::string_view bundle);
    std::string have_list() const;

    net::io_context& io_;
    shared_block& block_;
    std::function<std::pair<bool, std::string>(const std::string&)> reload_;
    std::function<bool()> may_order_;
    std::optional<config::acme> settings_;
    std::optional<acme_pair_link> pair_;
    std::vector<acme_certificate_status> status_;
    acme_transfer_counts transfers_;
    std::chrono::steady_clock::time_point refusal_logged_at_{};
    net::steady_timer wake_;
};

} // namespace rampart::gateway
