#pragma once
// L7 -> L3: the master reads the per-client violation counts the workers
// keep in shared memory (rate-limit rejections, malformed or timed-out
// requests, failed handshakes, connections over the per-client cap) and
// pushes a client that reaches gateway.abuse.threshold within the window
// into the firewall's blocklist set, so the kernel drops its packets before
// a TLS handshake is paid for. Loopback and allow-listed networks (the
// abuse allow list and firewall.admin_networks) are never blocked.

#include "config/config.hpp"
#include "gateway/net.hpp"
#include "gateway/shared_state.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace rampart::gateway {

class abuse_guard {
public:
    /// Adds addresses to the blocklist for a time; throws std::exception on failure.
    using block_function = std::function<void(const std::vector<std::string>&, std::chrono::milliseconds)>;

    /// `block`: how addresses reach the firewall's blocklist (control_links,
    /// filled in by cmd/); null: clients are counted, never blocked.
    abuse_guard(config::snapshot_ptr cfg, shared_block& shared, block_function block = {});

    /// One pass over the client table at `now`: moves each client's new
    /// violations into its history, blocks the clients with `threshold` or
    /// more in the last window, frees slots of clients gone quiet. Returns
    /// the addresses it blocked.
    std::vector<std::string> sweep(mono_ns now);

    /// Runs sweep() on the caller's io_context until `stop`: within 100 ms
    /// of a new violation, and every second otherwise.
    net::awaitable<void> run(const bool& stop);

    /// A reloaded configuration: new settings and allow lists from now on.
    void set_config(config::snapshot_ptr cfg);

    /// Never blocked: loopback and the allow lists.
    bool allowed(const client_address& a) const;

private:
    void block(const std::vector<std::string>& addresses);

    config::snapshot_ptr cfg_;
    shared_block& shared_;
    block_function block_;
    network_set allow_;
    mono_ns last_error_log_ = 0;

    // A sliding window, in tenths: per client slot, the violations the
    // sweeps found in each of the last ten tenths of `window` plus the
    // current one, so the sum covers at least the whole window (at most 10 %
    // more) wherever a burst falls. Master-private; the shared counter holds
    // only what workers added since the last sweep. Tenths are numbered from
    // the first sweep; an entry is brought up to date only when its client
    // has something to count, and the table comes from calloc (untouched
    // pages cost no memory), so only clients with violations take RSS.
    static constexpr unsigned tenths = 11;
    struct window_entry {
        std::uint64_t tenth; ///< the tenth `counts` was last brought up to
        std::array<std::uint32_t, tenths> counts;
    };
    struct free_deleter {
        void operator()(window_entry* p) const { std::free(p); }
    };
    std::unique_ptr<window_entry[], free_deleter> windows_; ///< client_slots entries, zeroed
    mono_ns first_sweep_ = 0;
};

} // namespace rampart::gateway
