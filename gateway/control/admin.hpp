#pragma once
// The admin listener, served by the master: /healthz and /metrics (sums of
// the workers' shared counters). It never touches a client request.

#include "config/config.hpp"
#include "gateway/control/acme.hpp"
#include "gateway/control/ha_link.hpp"
#include "gateway/control/history.hpp"
#include "gateway/control/status_page.hpp"
#include "gateway/net.hpp"
#include "gateway/shared_state.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace rampart::gateway {

/// What the admin listener serves from, owned by the master and updated by
/// a reload (the master's io_context runs both, so no locking).
struct admin_state {
    explicit admin_state(shared_block& b) : shared(b) {}

    config::snapshot_ptr cfg;
    slot_map slots;
    shared_block& shared;
    /// Entries of shared_block::workers ever used: every one is summed, so
    /// counters of workers that exited (reload, crash) stay in the totals.
    unsigned worker_slots = 0;
    std::uint64_t generation = 1;
    std::string last_reload = "none"; ///< "ok", "failed: <reason>" or "none"
    std::uint64_t reloads_ok = 0;
    std::uint64_t reloads_failed = 0;
    std::uint64_t worker_restarts = 0;
    /// Runs a reload now (the runtime API's POST /api/reload). Returns
    /// whether it went live, and a message (the errors when not).
    std::function<std::pair<bool, std::string>()> reload;
    /// POST /api/ha/release: report unhealthy to keepalived (the peer takes
    /// the VIP) while still serving; /api/ha/resume ends it.
    bool ha_released = false;
    /// What the status page shows that only the master knows.
    status_extra status;
    /// The HA pair as the master's ha_link knows it.
    vrrp_info vrrp;
    /// The certificates ACME manages (the master's acme_manager); null
    /// before it starts.
    const std::vector<acme_certificate_status>* acme = nullptr;
    const acme_transfer_counts* acme_transfers = nullptr;
    /// GET /api/ha/acme, the peer's question (acme_manager::serve_transfer).
    std::function<http::response<http::string_body>(const http::request<http::empty_body>&)> acme_transfer;
    /// Session-ticket keys derived from ha.ticket_secret_file (shared by the
    /// pair) rather than made by this process.
    bool ticket_keys_shared = false;
    /// The last 15 minutes for the status page's charts; the master samples
    /// into it every history_step.
    metrics_history history;
    /// POST /api/maintenance: what is in maintenance, by route name, kept
    /// across reloads (publish_maintenance writes it into the shared block).
    struct maintenance_state {
        bool site = false;
        std::vector<std::string> routes; ///< sorted names
        unsigned retry_after = 120;      ///< seconds, the Retry-After of the 503s
    } maintenance;
};

/// Writes `a.maintenance` into the shared block for a.cfg's routes (by their
/// index) and into the status; forgets routes the configuration no longer
/// names. Master only: after each change and each reload.
void publish_maintenance(admin_state& a);

/// Ready to serve (/readyz, and the HA health): every pool a route uses
/// (default_pool without routes) has an available server.
bool ready(const admin_state& a);

/// The counters the history samples, summed now.
history_totals history_now(const admin_state& a);

/// Prometheus text exposition of the shared counters.
std::string render_metrics(const admin_state& a);

/// The runtime API's server list: state and counters of every pooled server.
std::string servers_json(const admin_state& a);

/// Accepts admin connections on `acceptor` until it is closed. Runs on the
/// master's io_context.
net::awaitable<void> serve_admin(tcp_acceptor& acceptor, admin_state& state);

} // namespace rampart::gateway
