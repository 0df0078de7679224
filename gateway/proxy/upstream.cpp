#include "gateway/proxy/upstream.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

namespace rampart::gateway {

upstream_cache::upstream_cache(std::size_t servers, std::size_t max_idle_per_server,
                               std::chrono::milliseconds max_idle_time)
    : idle_(servers), max_idle_(max_idle_per_server), max_idle_time_(max_idle_time) {}

upstream_ptr upstream_cache::take(std::size_t server, bool verify) {
    auto& list = idle_[server];
    const auto now = std::chrono::steady_clock::now();
    while (!list.empty()) {
        upstream_ptr c = std::move(list.back());
        list.pop_back();
        if (now - c->idle_since > max_idle_time_) {
            continue; // destroyed: closes the socket
        }
        if (!verify) {
            return c;
        }
        // A backend that closed an idle keep-alive connection shows as EOF (or
        // an error) on a peek; reusing it would fail the request's first write
        // or read. EAGAIN means open and nothing unread, as expected.
        char byte;
        ssize_t n = ::recv(c->socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return c;
        }
    }
    return nullptr;
}

void upstream_cache::give_back(upstream_ptr c) {
    auto& list = idle_[c->server];
    if (list.size() >= max_idle_ || c->buffer.size() != 0) {
        return;
    }
    c->idle_since = std::chrono::steady_clock::now();
    c->buffer.clear();
    list.push_back(std::move(c));
}

std::size_t upstream_cache::sweep() {
    const auto now = std::chrono::steady_clock::now();
    std::size_t closed = 0;
    for (auto& list : idle_) {
        const auto dead = std::remove_if(list.begin(), list.end(), [&](const upstream_ptr& c) {
            if (now - c->idle_since > max_idle_time_) {
                return true;
            }
            char byte;
            ssize_t n = ::recv(c->socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
            return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        });
        closed += static_cast<std::size_t>(list.end() - dead);
        list.erase(dead, list.end());
    }
    return closed;
}

void upstream_cache::clear() {
    for (auto& list : idle_) {
        list.clear();
    }
}

net::awaitable<error_code> connect_upstream(tcp_socket& socket, const tcp::endpoint& to) {
    auto [ec] = co_await socket.async_connect(to);
    if (!ec) {
        socket.set_option(tcp::no_delay(true), ec);
    }
    co_return ec;
}

} // namespace rampart::gateway
