#include "gateway/control/history.hpp"

#include "gateway/control/status_page.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

namespace rampart::gateway {
namespace {

std::uint64_t grown(std::uint64_t now, std::uint64_t before) {
    return now >= before ? now - before : 0;
}

std::uint32_t clamp32(std::uint64_t n) {
    return static_cast<std::uint32_t>(std::min<std::uint64_t>(n, std::numeric_limits<std::uint32_t>::max()));
}

void append_number(std::string& out, std::int64_t n) {
    out += std::to_string(n);
}

/// `"key":[v0,v1,...]` of the points' `get`, oldest first.
template <typename Get> void column(std::string& out, std::string_view key, std::size_t count, Get get) {
    out += '"';
    out += key;
    out += "\":[";
    for (std::size_t i = 0; i < count; ++i) {
        if (i > 0) {
            out += ',';
        }
        const std::int64_t v = get(i);
        if (v < 0) {
            out += "null";
        } else {
            append_number(out, v);
        }
    }
    out += ']';
}

} // namespace

std::int64_t latency_quantile_us(const std::uint64_t (&buckets)[latency_buckets + 1], double q) {
    std::uint64_t total = 0;
    for (const std::uint64_t n : buckets) {
        total += n;
    }
    if (total == 0) {
        return -1;
    }
    const double rank = q * static_cast<double>(total);
    std::uint64_t below = 0;
    for (std::size_t b = 0; b <= latency_buckets; ++b) {
        if (buckets[b] == 0 || static_cast<double>(below + buckets[b]) < rank) {
            below += buckets[b];
            continue;
        }
        const double lower = b == 0 ? 0.0 : static_cast<double>(latency_bounds_us[b - 1]);
        if (b == latency_buckets) {
            return static_cast<std::int64_t>(lower); // over the last bound: no upper edge to interpolate to
        }
        const double upper = static_cast<double>(latency_bounds_us[b]);
        const double into = (rank - static_cast<double>(below)) / static_cast<double>(buckets[b]);
        return static_cast<std::int64_t>(lower + (upper - lower) * std::clamp(into, 0.0, 1.0));
    }
    return static_cast<std::int64_t>(latency_bounds_us[latency_buckets - 1]);
}

metrics_history::metrics_history(std::size_t capacity) : points_(std::max<std::size_t>(capacity, 2)) {}

void metrics_history::add(const history_totals& now, std::chrono::system_clock::time_point t) {
    const std::int64_t t_ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
    if (now.vrrp && have_last_ && last_.vrrp &&
        (now.vrrp_state != last_.vrrp_state || now.vrrp_transitions != last_.vrrp_transitions)) {
        // A change of state since the last sample (several within 2 s show
        // as one, with the state they ended in): a mark at this sample.
        mark& m = marks_[marks_head_];
        m = mark{};
        m.t_ms = t_ms;
        std::strncpy(m.state, now.vrrp_state.c_str(), sizeof m.state - 1);
        marks_head_ = (marks_head_ + 1) % marks_.size();
        marks_count_ = std::min(marks_count_ + 1, marks_.size());
    }
    for (const auto& s : now.servers) {
        if (s.slot >= servers_.size()) {
            servers_.resize(s.slot + 1);
        }
        server_ring& r = servers_[s.slot];
        if (r.points.empty()) {
            r.points.resize(points_.size()); // once per server, zero before it existed
        }
    }
    if (have_last_) {
        point& p = points_[head_];
        p = point{};
        p.t_ms = t_ms;
        for (std::size_t c = 1; c <= 5; ++c) {
            p.responses[c - 1] = clamp32(grown(now.responses[c], last_.responses[c]));
        }
        std::uint64_t interval[latency_buckets + 1];
        for (std::size_t b = 0; b <= latency_buckets; ++b) {
            interval[b] = grown(now.latency[b], last_.latency[b]);
        }
        const auto cap = [](std::int64_t us) {
            return static_cast<std::int32_t>(std::min<std::int64_t>(us, std::numeric_limits<std::int32_t>::max()));
        };
        p.p50_us = cap(latency_quantile_us(interval, 0.5));
        p.p99_us = cap(latency_quantile_us(interval, 0.99));
        p.connections = clamp32(now.connections_open);
        p.handshakes[0] = clamp32(grown(now.handshakes_full, last_.handshakes_full));
        p.handshakes[1] = clamp32(grown(now.handshakes_resumed, last_.handshakes_resumed));
        p.handshakes[2] = clamp32(grown(now.handshake_failures, last_.handshake_failures));
        for (server_ring& r : servers_) {
            if (!r.points.empty()) {
                r.points[head_] = server_point{};
            }
        }
        for (const auto& s : now.servers) {
            server_ring& r = servers_[s.slot];
            if (r.seen) {
                r.points[head_] = {clamp32(grown(s.requests, r.last_requests)),
                                   clamp32(grown(s.failures, r.last_failures))};
            }
        }
        head_ = (head_ + 1) % points_.size();
        count_ = std::min(count_ + 1, points_.size());
    }
    for (const auto& s : now.servers) {
        server_ring& r = servers_[s.slot];
        r.last_requests = s.requests;
        r.last_failures = s.failures;
        r.seen = true;
    }
    last_ = now;
    last_.servers.clear(); // kept per server above; no copy held
    have_last_ = true;
}

std::string metrics_history::json(const std::vector<named_slot>& servers) const {
    std::string out;
    out.reserve(256 + count_ * 64 * (1 + servers.size()));
    out += "{\"step_ms\":";
    append_number(out, std::chrono::duration_cast<std::chrono::milliseconds>(history_step).count());
    out += ",\"capacity\":";
    append_number(out, static_cast<std::int64_t>(points_.size()));
    out += ",\"memory_bytes\":";
    append_number(out, static_cast<std::int64_t>(memory_bytes()));
    out += ',';
    column(out, "t", count_, [&](std::size_t i) { return points_[at(i)].t_ms; });
    out += ",\"responses\":{";
    for (std::size_t c = 0; c < 5; ++c) {
        if (c > 0) {
            out += ',';
        }
        const char key[] = {static_cast<char>('1' + c), 'x', 'x', '\0'};
        column(out, key, count_, [&](std::size_t i) { return points_[at(i)].responses[c]; });
    }
    out += "},\"latency_us\":{";
    column(out, "p50", count_, [&](std::size_t i) { return points_[at(i)].p50_us; });
    out += ',';
    column(out, "p99", count_, [&](std::size_t i) { return points_[at(i)].p99_us; });
    out += "},";
    column(out, "connections", count_, [&](std::size_t i) { return points_[at(i)].connections; });
    out += ",\"handshakes\":{";
    const char* kinds[] = {"full", "resumed", "failed"};
    for (std::size_t k = 0; k < 3; ++k) {
        if (k > 0) {
            out += ',';
        }
        column(out, kinds[k], count_, [&](std::size_t i) { return points_[at(i)].handshakes[k]; });
    }
    out += "},\"servers\":[";
    bool first = true;
    for (const auto& [name, slot] : servers) {
        if (!first) {
            out += ',';
        }
        first = false;
        out += "{\"name\":\"";
        out += json_string_body(name);
        out += "\",";
        const server_ring* r = slot < servers_.size() && !servers_[slot].points.empty() ? &servers_[slot] : nullptr;
        column(out, "requests", count_, [&](std::size_t i) { return r ? r->points[at(i)].requests : 0; });
        out += ',';
        column(out, "failures", count_, [&](std::size_t i) { return r ? r->points[at(i)].failures : 0; });
        out += '}';
    }
    out += "],\"ha\":[";
    const std::int64_t oldest = count_ > 0 ? points_[at(0)].t_ms : std::numeric_limits<std::int64_t>::max();
    first = true;
    for (std::size_t i = 0; i < marks_count_; ++i) {
        const mark& m = marks_[(marks_head_ + marks_.size() - marks_count_ + i) % marks_.size()];
        if (m.t_ms < oldest) {
            continue; // older than the charts
        }
        if (!first) {
            out += ',';
        }
        first = false;
        out += "{\"t\":";
        append_number(out, m.t_ms);
        out += ",\"state\":\"";
        out += json_string_body(m.state);
        out += "\"}";
    }
    out += "]}\n";
    return out;
}

std::size_t metrics_history::memory_bytes() const {
    std::size_t n = points_.capacity() * sizeof(point) + servers_.capacity() * sizeof(server_ring) + sizeof(marks_);
    for (const server_ring& r : servers_) {
        n += r.points.capacity() * sizeof(server_point);
    }
    return n;
}

} // namespace rampart::gateway
