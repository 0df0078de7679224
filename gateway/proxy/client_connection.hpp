#pragma once
// Starting a client connection accepted by a worker.

#include "gateway/net.hpp"
#include "gateway/proxy/connection_base.hpp"

namespace rampart::gateway {

struct worker_context;

/// Serves an HTTPS client connection: the TLS handshake, then HTTP/1.1
/// requests (http1_connection) until the client closes, a deadline passes
/// or the worker drains.
void start_tls_connection(worker_context& w, tcp_socket socket, admission a);
/// Serves a plain HTTP client connection: every request gets 301 to https.
void start_redirect_connection(worker_context& w, tcp_socket socket, admission a);

} // namespace rampart::gateway
