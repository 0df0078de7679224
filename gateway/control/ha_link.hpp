#pragma once
// The master's side of the HA pair: tells keepalived whether this gateway can
// serve (the track file, rewritten on a timer) and learns the VRRP state from
// keepalived's notify FIFO (logged in order, exposed in /metrics and the
// status page). keepalived.conf itself comes from `rampart ha render`.

#include "config/config.hpp"
#include "gateway/net.hpp"

#include <boost/asio/posix/stream_descriptor.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include <optional>
#include <string>
#include <sys/types.h>

namespace rampart::gateway {

/// What the peer check (ha.peer_check) last learned of the other node.
struct peer_info {
    bool enabled = false;          ///< ha.peer_check is configured
    std::string node;              ///< the peer's name
    bool up = false;               ///< its last answer arrived and verified
    std::string state = "unknown"; ///< its VRRP state as it answered; unknown while it does not
    bool vip_held = false;
    bool healthy = false;
    unsigned priority = 0;
    std::string error; ///< why the last check failed ("" after an answer)
    std::optional<std::chrono::steady_clock::time_point> answered_at; ///< the last verified answer
    std::int64_t answered_unix = 0;                                   ///< the same, wall clock (for the state file)
    /// Checks by result: ok, refused (no connection), timeout, unauthorized, bad_answer.
    std::uint64_t ok = 0, refused = 0, timeout = 0, unauthorized = 0, bad_answer = 0;
    /// Requests from the peer this node refused (a proof that did not verify).
    std::uint64_t requests_refused = 0;
    std::optional<std::chrono::steady_clock::time_point> refusal_logged_at;
};

/// What the master knows of the pair; owned by the master, read by the admin listener.
struct vrrp_info {
    bool enabled = false; ///< the file has `ha:` and one of its nodes is this host
    std::string node;
    std::string state = "unknown"; ///< MASTER, BACKUP, FAULT, STOP or unknown
    unsigned priority = 0;         ///< as keepalived last reported it (configured until then)
    std::uint64_t transitions = 0;
    bool healthy = false;           ///< what the track file says now (false while it cannot be written)
    std::string track_error;        ///< why the track file cannot be written; "" when it can
    bool vip_held = false;          ///< the VIP is on an interface of this host (looked at every health interval)
    std::uint64_t vip_removals = 0; ///< VIPs removed because keepalived was gone (guard_vip)
    peer_info peer;
    /// Nodes known to hold the VIP: this one, and the peer while it answers.
    unsigned vip_holders() const { return (vip_held ? 1U : 0U) + (peer.up && peer.vip_held ? 1U : 0U); }
};

/// Runs on the master's io_context; never blocks (the FIFO is non-blocking,
/// the track file a few bytes written with rename).
class ha_link {
public:
    /// `healthy` is asked every ha.health.interval; `info` is where the
    /// state goes (it outlives this object).
    ha_link(net::io_context& io, std::function<bool(const config::snapshot&)> healthy, vrrp_info& info);
    ~ha_link();
    ha_link(const ha_link&) = delete;
    ha_link& operator=(const ha_link&) = delete;

    /// Starts or follows a (re)loaded configuration. The node is the one
    /// whose address is on this host; a reload that keeps the node keeps the
    /// VRRP state and its counters. Sets the master's process name to the
    /// one keepalived's track_process follows. Without `ha:` (or no local
    /// node) it stops.
    void configure(config::snapshot_ptr cfg);

    /// Reports unhealthy at once (so the peer takes the VIP before this
    /// gateway drains its connections) and stops reading.
    void stop();

private:
    net::awaitable<void> write_health(std::uint64_t epoch);
    net::awaitable<void> read_notifications(std::uint64_t epoch);
    net::awaitable<void> check_peer(std::uint64_t epoch);
    net::awaitable<void> ask_peer(const config::snapshot& cfg);
    void peer_answered(const std::string& error, const char* result);
    void note_holders();
    void open_fifo();
    bool write_track_file(bool healthy);
    void guard_vip();
    void write_state_file();
    void on_line(const std::string& line);
    void start_sentinel(const std::string& track_file);
    void stop_sentinel();

    net::io_context& io_;
    std::function<bool(const config::snapshot&)> healthy_;
    vrrp_info& info_;
    config::snapshot_ptr cfg_;
    std::uint64_t epoch_ = 0; ///< bumped by configure/stop: older loops end
    std::unique_ptr<net::posix::stream_descriptor> fifo_;
    std::uint64_t fifo_inode_ = 0;
    int last_written_ = -1;
    bool keepalived_seen_ = false; ///< keepalived's VRRP process was found running once
    std::optional<std::chrono::steady_clock::time_point> keepalived_missing_since_; ///< gone since
    pid_t sentinel_ = -1;         ///< writes "1" to the track file when the master dies
    unsigned logged_holders_ = 0; ///< VIP holders as last logged (note_holders)
};

} // namespace rampart::gateway
