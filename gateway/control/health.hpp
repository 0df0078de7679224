#pragma once
// Active health checks, run by the master on its io_context (DESIGN.md):
// per checked server, an HTTP/1.1 GET of the pool's health path every
// interval, with HAProxy's rise/fall hysteresis. Results go to the server's
// shared state, which every worker's balancer reads.

#include "config/config.hpp"
#include "gateway/net.hpp"
#include "gateway/shared_state.hpp"

#include <memory>
#include <string>

namespace rampart::gateway {

/// The outcome of one check: the status line's code, or why there was none.
struct check_result {
    int status = -1;   ///< HTTP status; -1 when no response header arrived
    std::string error; ///< "connection refused", "timeout", ... when status is -1
};

/// One check of `to`: connect, send GET `hc.path`, read the response header,
/// all within hc.timeout. Host is hc.host, else `site`.
net::awaitable<check_result> check_once(executor ex, const tcp::endpoint& to, const config::health_check& hc,
                                        const std::string& site);

class health_checker {
public:
    /// Checks every member of every pool that has `health`; a server in
    /// several such pools is checked once, with the first pool's settings.
    health_checker(net::io_context& io, config::snapshot_ptr cfg, shared_block& shared, slot_map slots);
    ~health_checker();
    health_checker(const health_checker&) = delete;
    health_checker& operator=(const health_checker&) = delete;

    void start();
    /// Ends every check loop (they finish their current check first).
    void stop();

    struct state; ///< shared with the check loops, which may outlive the checker

private:
    std::shared_ptr<state> state_;
};

} // namespace rampart::gateway
