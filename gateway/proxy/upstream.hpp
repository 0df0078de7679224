#pragma once
// Per-worker upstream connections: a keep-alive cache of idle connections per
// server, and connecting new ones. Single-threaded: used only on its worker's
// io_context, so no locks.

#include "config/config.hpp"
#include "gateway/net.hpp"

#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

namespace rampart::gateway {

/// One connection to an upstream server, with its read buffer.
struct upstream_connection {
    explicit upstream_connection(executor ex) : socket(ex) {}
    tcp_socket socket;
    beast::flat_buffer buffer;
    std::size_t server = 0; ///< index in snapshot::servers
    std::chrono::steady_clock::time_point idle_since{};
};
using upstream_ptr = std::unique_ptr<upstream_connection>;

class upstream_cache {
public:
    /// `servers` is the number of entries in snapshot::servers; at most
    /// `max_idle_per_server` idle connections are kept per server, each for
    /// at most `max_idle_time`.
    upstream_cache(std::size_t servers, std::size_t max_idle_per_server, std::chrono::milliseconds max_idle_time);

    /// An idle connection to `server`, or null. With `verify`, one the kernel
    /// still holds open (a non-blocking peek, one syscall); without, the
    /// caller must be able to replay the request on a new connection if the
    /// backend had closed it. Stale ones are closed.
    upstream_ptr take(std::size_t server, bool verify);
    /// Returns a connection that finished a response cleanly and may be reused.
    void give_back(upstream_ptr c);
    /// Closes every idle connection (drain).
    void clear();
    /// Closes idle connections that expired or that the backend closed (a
    /// non-blocking peek per connection), so none lingers in CLOSE_WAIT until
    /// the next request to its server. Returns how many were closed.
    std::size_t sweep();

private:
    std::vector<std::vector<upstream_ptr>> idle_;
    std::size_t max_idle_;
    std::chrono::milliseconds max_idle_time_;
};

/// Connects a new socket to `to`. Runs on the caller's executor; the caller's
/// deadline cancels it (socket.cancel()).
net::awaitable<error_code> connect_upstream(tcp_socket& socket, const tcp::endpoint& to);

} // namespace rampart::gateway
