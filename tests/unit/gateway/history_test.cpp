#include "gateway/control/history.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <string>

using namespace rampart::gateway;
using std::chrono::seconds;

namespace {

const auto epoch = std::chrono::system_clock::time_point{} + seconds(1'800'000'000);

/// The JSON array after `"key":` in `json` (the first one), brackets included.
std::string column_of(const std::string& json, const std::string& key) {
    const auto at = json.find("\"" + key + "\":[");
    REQUIRE(at != std::string::npos);
    const auto open = json.find('[', at);
    return json.substr(open, json.find(']', open) - open + 1);
}

} // namespace

TEST_CASE("latency quantiles interpolate inside the bucket, like histogram_quantile") {
    std::uint64_t b[latency_buckets + 1] = {};
    CHECK(latency_quantile_us(b, 0.5) == -1); // no request: no latency
    b[0] = 100;                               // all under 1 ms
    CHECK(latency_quantile_us(b, 0.5) == 500);
    b[0] = 98;
    b[3] = 2; // 5 to 10 ms
    CHECK(latency_quantile_us(b, 0.5) == 510);
    CHECK(latency_quantile_us(b, 0.99) == 7'500); // rank 99: half-way into the 5-10 ms bucket
    std::uint64_t slow[latency_buckets + 1] = {};
    slow[latency_buckets] = 4; // over the last bound (10 s): the bound itself, nothing invented above it
    CHECK(latency_quantile_us(slow, 0.99) == 10'000'000);
}

TEST_CASE("each point holds what changed in its interval") {
    metrics_history h;
    history_totals t;
    t.responses[2] = 1000; // before the history started: not in any point
    t.handshakes_full = 50;
    t.servers = {{7, 500, 2}};
    h.add(t, epoch);
    CHECK(h.size() == 0); // the first sample is the baseline

    t.responses[2] += 10;
    t.responses[5] += 3;
    t.latency[0] += 13;
    t.handshakes_full += 4;
    t.handshakes_resumed += 6;
    t.handshake_failures += 1;
    t.connections_open = 9;
    t.servers = {{7, 512, 5}};
    h.add(t, epoch + seconds(2));
    REQUIRE(h.size() == 1);

    const std::string j = h.json({{"app1", 7}, {"app9", 99}});
    CHECK(column_of(j, "t") == "[1800000002000]");
    CHECK(column_of(j, "2xx") == "[10]");
    CHECK(column_of(j, "5xx") == "[3]");
    CHECK(column_of(j, "1xx") == "[0]");
    CHECK(column_of(j, "p50") == "[500]");
    CHECK(column_of(j, "connections") == "[9]");
    CHECK(column_of(j, "full") == "[4]");
    CHECK(column_of(j, "resumed") == "[6]");
    CHECK(column_of(j, "failed") == "[1]");
    CHECK(j.find(R"({"name":"app1","requests":[12],"failures":[3]})") != std::string::npos);
    // A server the history never saw: zeros, not an error.
    CHECK(j.find(R"({"name":"app9","requests":[0],"failures":[0]})") != std::string::npos);
    CHECK(j.find(R"("step_ms":2000)") != std::string::npos);

    // No request in an interval: no latency (null), not 0 µs.
    h.add(t, epoch + seconds(4));
    CHECK(column_of(h.json({}), "p50") == "[500,null]");
}

TEST_CASE("a server that appears later has zeros before, and counters never go negative") {
    metrics_history h;
    history_totals t;
    h.add(t, epoch);
    h.add(t, epoch + seconds(2));
    t.servers = {{3, 100, 0}}; // a reload added it: its totals so far are its baseline
    h.add(t, epoch + seconds(4));
    t.servers = {{3, 104, 1}};
    h.add(t, epoch + seconds(6));
    t.servers = {{3, 90, 0}}; // cannot happen (slots keep their sums); counted as no change
    t.responses[2] = 0;
    h.add(t, epoch + seconds(8));
    const std::string j = h.json({{"app3", 3}});
    CHECK(j.find(R"({"name":"app3","requests":[0,0,4,0],"failures":[0,0,1,0]})") != std::string::npos);
}

TEST_CASE("the ring keeps 15 minutes and its memory stays flat, however long it runs") {
    metrics_history h;
    REQUIRE(h.capacity() == 450);
    history_totals t;
    t.servers = {{0, 0, 0}, {1, 0, 0}};
    auto add = [&](int i) {
        t.responses[2] += 7;
        t.latency[1] += 7;
        t.servers[0].requests += 4;
        t.servers[1].requests += 3;
        h.add(t, epoch + seconds(2 * i));
    };
    for (int i = 0; i <= 450; ++i) {
        add(i);
    }
    REQUIRE(h.size() == 450);
    const std::size_t full = h.memory_bytes();
    // 450 points of the totals, 450 of each server, the marks: what the README states.
    CHECK(full < 40'000);
    // Five and a half hours more at 2 s (an accelerated clock).
    for (int i = 451; i <= 10'000; ++i) {
        add(i);
    }
    CHECK(h.size() == 450);
    CHECK(h.memory_bytes() == full);
    const std::string j = h.json({{"app1", 0}, {"app2", 1}});
    const std::string times = column_of(j, "t");
    // Oldest first: the first point is 449 steps before the last.
    CHECK(times.starts_with("[" + std::to_string((1'800'000'000LL + 2 * (10'000 - 449)) * 1000) + ","));
    CHECK(times.ends_with("," + std::to_string((1'800'000'000LL + 2 * 10'000) * 1000) + "]"));
    CHECK(column_of(j, "requests").starts_with("[4,4,4"));
}

TEST_CASE("VRRP state changes become marks inside the window") {
    metrics_history h(10); // 10 points: 20 s
    history_totals t;
    t.vrrp = true;
    t.vrrp_state = "unknown";
    h.add(t, epoch);
    t.vrrp_state = "BACKUP";
    t.vrrp_transitions = 1;
    h.add(t, epoch + seconds(2));
    h.add(t, epoch + seconds(4)); // no change: no mark
    t.vrrp_state = "MASTER";
    t.vrrp_transitions = 2;
    h.add(t, epoch + seconds(6));
    CHECK(h.json({}).find(R"("ha":[{"t":1800000002000,"state":"BACKUP"},{"t":1800000006000,"state":"MASTER"}])") !=
          std::string::npos);
    // MASTER -> BACKUP -> MASTER between two samples: one mark, the state it ended in.
    t.vrrp_transitions = 4;
    h.add(t, epoch + seconds(8));
    CHECK(h.json({}).find(R"({"t":1800000008000,"state":"MASTER"}])") != std::string::npos);
    // Once the window has moved past them, the marks are not sent.
    for (int i = 5; i < 20; ++i) {
        h.add(t, epoch + seconds(2 * i));
    }
    CHECK(h.json({}).find(R"("ha":[])") != std::string::npos);
    // Without a pair, no mark ever.
    metrics_history alone;
    history_totals a;
    alone.add(a, epoch);
    a.vrrp_state = "MASTER";
    a.vrrp_transitions = 1;
    alone.add(a, epoch + seconds(2));
    CHECK(alone.json({}).find(R"("ha":[])") != std::string::npos);
}
