#include "gateway/admin.hpp"

#include "gateway/http_rules.hpp"

#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <sstream>

namespace rampart::gateway {
namespace {

void metric(std::ostringstream& out, const char* name, const char* type, const char* help) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
}

net::awaitable<void> serve_admin_connection(tcp_socket socket, config::snapshot_ptr cfg, shared_block& shared,
                                            unsigned workers) {
    beast::flat_buffer buffer;
    buffer.max_size(16 * 1024);
    http::request<http::empty_body> req;
    // One request per connection, bounded in time by the socket closing when
    // the peer is slow: the admin listener is on loopback or an admin network.
    net::steady_timer deadline(socket.get_executor());
    deadline.expires_after(std::chrono::seconds(5));
    deadline.async_wait([&socket](const error_code& ec) {
        if (!ec) {
            error_code ignored;
            socket.cancel(ignored);
        }
    });
    auto [ec, n] = co_await http::async_read(socket, buffer, req, use_tuple);
    if (ec) {
        deadline.cancel();
        co_return;
    }
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::server, "rampart");
    res.set(http::field::cache_control, "no-store");
    if (req.target() == "/healthz") {
        res.set(http::field::content_type, "text/plain");
        res.body() = "ok\n";
    } else if (req.target() == "/metrics") {
        res.set(http::field::content_type, "text/plain; version=0.0.4");
        res.body() = render_metrics(*cfg, shared, workers);
    } else {
        res = make_error_response(http::status::not_found, req.version(), "", true);
    }
    res.keep_alive(false);
    res.prepare_payload();
    co_await http::async_write(socket, res, use_tuple);
    deadline.cancel();
    error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
}

}  // namespace

std::string render_metrics(const config::snapshot& cfg, const shared_block& shared, unsigned workers) {
    std::ostringstream out;
    auto sum = [&](auto member) {
        std::uint64_t total = 0;
        for (unsigned w = 0; w < workers; ++w) {
            total += (shared.workers[w].*member).load(std::memory_order_relaxed);
        }
        return total;
    };
    metric(out, "rampart_connections_total", "counter", "Client connections accepted.");
    out << "rampart_connections_total " << sum(&worker_counters::connections_total) << '\n';
    metric(out, "rampart_connections_active", "gauge", "Client connections open.");
    out << "rampart_connections_active " << sum(&worker_counters::connections_active) << '\n';
    metric(out, "rampart_tls_handshakes_total", "counter", "Completed TLS handshakes.");
    out << "rampart_tls_handshakes_total{kind=\"full\"} " << sum(&worker_counters::handshakes_full) << '\n';
    out << "rampart_tls_handshakes_total{kind=\"resumed\"} " << sum(&worker_counters::handshakes_resumed) << '\n';
    metric(out, "rampart_tls_handshake_failures_total", "counter", "Failed TLS handshakes.");
    out << "rampart_tls_handshake_failures_total " << sum(&worker_counters::handshake_failures) << '\n';
    metric(out, "rampart_requests_total", "counter", "Requests read from clients.");
    out << "rampart_requests_total " << sum(&worker_counters::requests_total) << '\n';
    metric(out, "rampart_responses_total", "counter", "Responses sent, by status class.");
    for (unsigned c = 1; c <= 5; ++c) {
        std::uint64_t total = 0;
        for (unsigned w = 0; w < workers; ++w) {
            total += shared.workers[w].responses_by_class[c].load(std::memory_order_relaxed);
        }
        out << "rampart_responses_total{class=\"" << c << "xx\"} " << total << '\n';
    }
    metric(out, "rampart_upstream_requests_total", "counter", "Requests sent to each upstream server.");
    for (std::size_t i = 0; i < cfg.servers.size(); ++i) {
        out << "rampart_upstream_requests_total{server=\"" << cfg.servers[i].name << "\"} "
            << shared.servers[i].requests.load(std::memory_order_relaxed) << '\n';
    }
    metric(out, "rampart_upstream_active", "gauge", "Requests in flight to each upstream server.");
    for (std::size_t i = 0; i < cfg.servers.size(); ++i) {
        out << "rampart_upstream_active{server=\"" << cfg.servers[i].name << "\"} "
            << shared.servers[i].active.load(std::memory_order_relaxed) << '\n';
    }
    metric(out, "rampart_upstream_failures_total", "counter", "Connect, read and write failures per upstream server.");
    for (std::size_t i = 0; i < cfg.servers.size(); ++i) {
        out << "rampart_upstream_failures_total{server=\"" << cfg.servers[i].name << "\"} "
            << shared.servers[i].failures.load(std::memory_order_relaxed) << '\n';
    }
    return out.str();
}

net::awaitable<void> serve_admin(tcp_acceptor& acceptor, config::snapshot_ptr cfg, shared_block& shared,
                                 unsigned workers) {
    net::steady_timer backoff(acceptor.get_executor());
    for (;;) {
        auto [ec, socket] = co_await acceptor.async_accept();
        if (ec) {
            if (ec == net::error::operation_aborted || !acceptor.is_open()) {
                co_return;
            }
            // Out of descriptors or memory: back off instead of spinning.
            backoff.expires_after(std::chrono::milliseconds(100));
            co_await backoff.async_wait(use_tuple);
            continue;
        }
        net::co_spawn(acceptor.get_executor(), serve_admin_connection(tcp_socket(std::move(socket)), cfg, shared, workers),
                      net::detached);
    }
}

}  // namespace rampart::gateway
