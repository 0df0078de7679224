#include "gateway/control/health.hpp"

#include "gateway/log.hpp"

#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <vector>

namespace rampart::gateway {

struct health_checker::state {
    net::io_context& io;
    config::snapshot_ptr cfg;
    shared_block& shared;
    slot_map slots;
    bool stopped = false;
    std::vector<std::unique_ptr<net::steady_timer>> timers;
};

net::awaitable<check_result> check_once(executor ex, const tcp::endpoint& to, const config::health_check& hc,
                                        const std::string& site) {
    tcp_socket socket(ex);
    net::steady_timer deadline(ex);
    bool timed_out = false;
    deadline.expires_after(hc.timeout);
    deadline.async_wait([&](const error_code& ec) {
        if (!ec) {
            timed_out = true;
            error_code ignored;
            socket.cancel(ignored);
        }
    });
    auto fail = [&](const error_code& ec) {
        deadline.cancel();
        return check_result{-1,
                            timed_out ? "timeout after " + std::to_string(hc.timeout.count()) + " ms" : ec.message()};
    };
    auto [cec] = co_await socket.async_connect(to);
    if (cec || timed_out) {
        co_return fail(cec);
    }
    http::request<http::empty_body> req{http::verb::get, hc.path, 11};
    req.set(http::field::host, hc.host.empty() ? site : hc.host);
    req.set(http::field::user_agent, "rampart-health-check");
    req.set(http::field::connection, "close");
    auto [wec, wn] = co_await http::async_write(socket, req, use_tuple);
    if (wec || timed_out) {
        co_return fail(wec);
    }
    beast::flat_buffer buffer;
    http::response_parser<http::empty_body> parser;
    parser.header_limit(16 * 1024);
    auto [rec, rn] = co_await http::async_read_header(socket, buffer, parser, use_tuple);
    if (rec || timed_out) {
        co_return fail(rec);
    }
    deadline.cancel();
    error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    co_return check_result{static_cast<int>(parser.get().result_int()), {}};
}

namespace {

net::awaitable<void> check_loop(std::shared_ptr<health_checker::state> st, net::steady_timer& timer, std::size_t server,
                                tcp::endpoint to, config::health_check hc) {
    const std::string& name = st->cfg->servers[server].name;
    server_health& s = st->shared.servers[st->slots.servers[server]];
    while (!st->stopped) {
        const check_result r = co_await check_once(st->io.get_executor(), to, hc, st->cfg->site);
        if (st->stopped) {
            co_return;
        }
        const bool ok = r.status == static_cast<int>(hc.expect_status);
        switch (s.on_check(ok, r.status, hc.rise, hc.fall, mono_now())) {
        case server_health::transition::up:
            log(log_level::info, "upstream " + name + " is UP (" + std::to_string(hc.rise) + " checks passed)");
            break;
        case server_health::transition::down:
            log(log_level::warn,
                "upstream " + name + " is DOWN (" + std::to_string(hc.fall) + " checks failed, last: " +
                    (r.status < 0
                         ? r.error
                         : "status " + std::to_string(r.status) + ", expected " + std::to_string(hc.expect_status)) +
                    ")");
            break;
        case server_health::transition::none:
            break;
        }
        timer.expires_after(hc.interval);
        co_await timer.async_wait(use_tuple);
    }
}

} // namespace

health_checker::health_checker(net::io_context& io, config::snapshot_ptr cfg, shared_block& shared, slot_map slots)
    : state_(std::make_shared<state>(state{io, std::move(cfg), shared, std::move(slots), false, {}})) {}

health_checker::~health_checker() {
    stop();
}

void health_checker::start() {
    const auto& cfg = *state_->cfg;
    std::vector<bool> checked(cfg.servers.size(), false);
    for (const auto& p : cfg.gw.pools) {
        if (!p.health) {
            continue;
        }
        for (const auto& m : p.members) {
            const std::size_t si = m.server; // resolved once, in config
            if (si >= cfg.servers.size() || checked[si]) {
                continue;
            }
            checked[si] = true;
            error_code ec;
            tcp::endpoint to(net::ip::make_address(m.address.host, ec), m.address.port);
            auto& timer = *state_->timers.emplace_back(std::make_unique<net::steady_timer>(state_->io));
            net::co_spawn(state_->io, check_loop(state_, timer, si, to, *p.health),
                          log_failure{"health check failed: "});
        }
    }
}

void health_checker::stop() {
    state_->stopped = true;
    for (auto& t : state_->timers) {
        t->cancel();
    }
}

} // namespace rampart::gateway
