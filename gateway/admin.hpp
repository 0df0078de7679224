#pragma once
// The admin listener, served by the master: /healthz and /metrics (sums of
// the workers' shared counters). It never touches a client request.

#include "config/config.hpp"
#include "gateway/net.hpp"
#include "gateway/shared_state.hpp"
#include "gateway/status_page.hpp"

#include <string>

namespace rampart::gateway {

/// Prometheus text exposition of the shared counters.
std::string render_metrics(const config::snapshot& cfg, const shared_block& shared, unsigned workers);

/// The runtime API's server list: state and counters of every pooled server.
std::string servers_json(const config::snapshot& cfg, const shared_block& shared);

/// Accepts admin connections on `acceptor` until it is closed. Runs on the
/// master's io_context. NOTE: `extra` (the status page's master facts) is read
/// at each request and must outlive the listener.
net::awaitable<void> serve_admin(tcp_acceptor& acceptor, config::snapshot_ptr cfg, shared_block& shared,
                                 unsigned workers, const status_extra& extra);

}  // namespace rampart::gateway
