#include "gateway/proxy/proxy_attempt.hpp"

#include "gateway/proxy/exchange_host.hpp"
#include "gateway/proxy/http1_writer.hpp"
#include "gateway/proxy/worker.hpp"

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <memory>

namespace rampart::gateway {

namespace {

/// Interim responses (100 Continue, 103 Early Hints) consumed before the
/// final one; more than this and the server is broken.
constexpr int max_interim = 8;

bool closed_by_server(const error_code& ec) {
    return ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset;
}

} // namespace

net::awaitable<attempt_result> proxy_attempt::run(std::size_t server, retry_policy& policy, upstream_ptr& up,
                                                  std::optional<response_parser>& rp) {
    attempt_result r;
    // At most two connections: the second only when the first was a reused
    // keep-alive connection the server had closed (the policy decides).
    for (int connection = 0; connection < 2; ++connection) {
        // A request that may be resent skips the liveness peek: if the
        // server closed this keep-alive connection, the failure comes
        // before any response byte and the policy resends it on a new one.
        up = w_.upstreams.take(server, !policy.resendable() || policy.stale_resend_used());
        const bool reused = up != nullptr;
        if (!up) {
            up = std::make_unique<upstream_connection>(w_.io.get_executor());
            up->server = server;
        }
        conn_.use_upstream(&up->socket);
        if (!reused) {
            conn_.arm(phase::upstream_connect);
            if (error_code ec = co_await connect_upstream(up->socket, w_.server_endpoints[server])) {
                r.failure = attempt_failure_facts{attempt_stage::connect, conn_.take_timeout()};
                r.ec = ec;
            }
        }
        if (!r.failure) {
            std::uint64_t sent = 0;
            auto [ok, ec] = co_await send(up->socket, sent, r.client_failed);
            r.body_sent = std::max(r.body_sent, sent);
            if (r.client_failed) {
                // The client's body failed: too large, malformed, too slow or gone.
                r.ec = ec;
                up.reset();
                conn_.use_upstream(nullptr);
                co_return r;
            }
            if (!ok) {
                r.failure = attempt_failure_facts{attempt_stage::send, conn_.take_timeout(), reused};
                r.ec = ec;
            }
        }
        if (!r.failure) {
            conn_.arm(phase::upstream_response);
            error_code ec;
            for (int interim = 0; interim < max_interim; ++interim) {
                rp.emplace();
                rp->header_limit(64 * 1024);
                rp->body_limit(boost::none);
                if (head_) {
                    rp->skip(true);
                }
                auto [hec, hn] = co_await http::async_read_header(up->socket, up->buffer, *rp, use_tuple);
                ec = hec;
                const unsigned status = ec ? 0 : rp->get().result_int();
                if (ec || status / 100 != 1 || (status == 101 && upgrade_)) {
                    break;
                }
            }
            if (ec) {
                r.failure = attempt_failure_facts{attempt_stage::response_head, conn_.take_timeout(), reused,
                                                  closed_by_server(ec)};
                r.ec = ec;
            } else if (const unsigned status = rp->get().result_int();
                       status / 100 == 1 && !(status == 101 && upgrade_)) {
                // A 101 nobody asked for, or an endless run of interim responses.
                r.failure = attempt_failure_facts{attempt_stage::response_head};
                r.ec = http::error::bad_status;
            }
        }
        if (!r.failure) {
            co_return r;
        }
        up.reset();
        rp.reset();
        conn_.use_upstream(nullptr);
        r.decision = policy.on_failure(*r.failure, w_.draining);
        if (r.decision.action != retry_action::resend_new_connection) {
            co_return r;
        }
        r.failure.reset();
    }
    co_return r;
}

// Writes the request head and body to the server: the head with the first
// piece (one write for a small request), then each piece as it comes from
// the client, holding at most one piece in memory. The deadline is renewed
// for each read and each write: it bounds inactivity, not the transfer.
net::awaitable<std::pair<bool, error_code>> proxy_attempt::send(tcp_socket& socket, std::uint64_t& sent,
                                                                bool& client_failed) {
    const auto& req = down_.request();
    http1_writer writer;
    writer.start(req.base(), req.chunked());
    bool pending_prefix = !body_prefix_.empty();
    bool ended = false;
    std::unique_ptr<char[]> chunk;
    do {
        net::const_buffer piece;
        if (pending_prefix) {
            pending_prefix = false;
            piece = net::buffer(body_prefix_);
        } else if (!down_.request_done()) {
            if (!chunk) {
                chunk.reset(new char[relay_chunk]);
            }
            conn_.arm(phase::request_body);
            auto got = co_await down_.read_body(net::buffer(chunk.get(), relay_chunk));
            if (got.ec) {
                client_failed = true;
                co_return std::pair{false, got.ec};
            }
            piece = net::buffer(chunk.get(), got.bytes);
        }
        ended = down_.request_done();
        const auto buffers = writer.piece(piece, ended);
        if (net::buffer_size(buffers) != 0) {
            conn_.arm(phase::upstream_send);
            auto [ec, n] = co_await net::async_write(socket, buffers, use_tuple);
            if (ec) {
                co_return std::pair{false, ec};
            }
        }
        sent += piece.size();
    } while (!ended);
    co_return std::pair{true, error_code{}};
}

} // namespace rampart::gateway
