#include "gateway/control/abuse.hpp"

#include "gateway/log.hpp"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>

namespace rampart::gateway {
namespace {

/// A slot untouched this long, with nothing open, goes back to the table.
constexpr mono_ns slot_idle = 10LL * 60 * 1'000'000'000;
/// Same, when the table is filling up.
constexpr mono_ns slot_idle_crowded = 30LL * 1'000'000'000;
/// How often the master looks for new violations: the most a client past
/// the threshold waits for its sweep.
constexpr auto poll_interval = std::chrono::milliseconds(100);
/// A sweep with no new violation (to free idle slots) runs this often.
constexpr mono_ns idle_sweep_interval = 1'000'000'000;

} // namespace

abuse_guard::abuse_guard(config::snapshot_ptr cfg, shared_block& shared, block_function block)
    : shared_(shared), block_(std::move(block)),
      windows_(static_cast<window_entry*>(std::calloc(client_slots, sizeof(window_entry)))) {
    if (!windows_) {
        throw std::bad_alloc();
    }
    set_config(std::move(cfg));
}

void abuse_guard::set_config(config::snapshot_ptr cfg) {
    cfg_ = std::move(cfg);
    std::vector<config::network> allow = cfg_->gw.abuse_settings.allow;
    if (cfg_->fw) {
        allow.insert(allow.end(), cfg_->fw->admin_networks.begin(), cfg_->fw->admin_networks.end());
    }
    // A trusted proxy carries everybody's traffic: never blocked itself (its
    // clients are, at layer 7).
    allow.insert(allow.end(), cfg_->gw.trusted_proxies.begin(), cfg_->gw.trusted_proxies.end());
    allow_ = network_set(allow);
}

bool abuse_guard::allowed(const client_address& a) const {
    return a.is_loopback() || (a.hi == 0 && a.lo == 0) || allow_.contains(a);
}

std::vector<std::string> abuse_guard::sweep(mono_ns now) {
    const auto& settings = cfg_->gw.abuse_settings;
    const mono_ns tenth = std::max<mono_ns>(to_ns(settings.window) / 10, 1);
    if (first_sweep_ == 0) {
        first_sweep_ = now;
    }
    const auto current = static_cast<std::uint64_t>((now - first_sweep_) / tenth);
    std::size_t used = 0;
    for (auto& s : shared_.clients) {
        used += s.key.load(std::memory_order_relaxed) != 0 ? 1 : 0;
    }
    const mono_ns idle_limit = used > client_slots / 2 ? slot_idle_crowded : slot_idle;
    std::vector<std::string> offenders;
    std::vector<std::string> behind_proxies; ///< blocked at layer 7 instead
    for (std::size_t i = 0; i < client_slots; ++i) {
        client_slot& s = shared_.clients[i];
        window_entry& w = windows_[i];
        std::uint64_t key = s.key.load(std::memory_order_acquire);
        if (key == 0) {
            continue;
        }
        const std::uint32_t v = s.violations.load(std::memory_order_relaxed);
        std::uint64_t in_window = 0;
        for (const auto n : w.counts) {
            in_window += n;
        }
        if (v != 0 || in_window != 0) {
            // Bring the entry up to the current tenth: the tenths passed since
            // its last update are empty. (After a reload that changed the
            // window the numbering changes scale; the entry then starts over.)
            if (w.tenth > current || current - w.tenth >= tenths) {
                w.counts.fill(0);
            } else {
                for (std::uint64_t t = w.tenth + 1; t <= current; ++t) {
                    w.counts[t % tenths] = 0;
                }
            }
            w.tenth = current;
            // fetch_sub, not a store of 0: a worker may be counting right now.
            s.violations.fetch_sub(v, std::memory_order_relaxed);
            auto& slot_now = w.counts[current % tenths];
            slot_now = v > UINT32_MAX - slot_now ? UINT32_MAX : slot_now + v;
            in_window = 0;
            for (const auto n : w.counts) {
                in_window += n;
            }
        }
        if (in_window != 0 && in_window >= settings.threshold) {
            w.counts.fill(0); // counted afresh once the block ends
            in_window = 0;
            client_address a{s.addr_hi.load(std::memory_order_relaxed), s.addr_lo.load(std::memory_order_relaxed)};
            if (!allowed(a)) {
                if (s.via_proxy.load(std::memory_order_relaxed) != 0) {
                    // Its packets come from the proxy: the firewall would
                    // block everybody behind it. The workers answer 403.
                    if (settings.block) {
                        s.blocked_until.store(now + to_ns(settings.block_for), std::memory_order_relaxed);
                    }
                    behind_proxies.push_back(a.to_string());
                } else {
                    offenders.push_back(a.to_string());
                }
            }
        }
        if (in_window == 0 && s.connections.load(std::memory_order_relaxed) == 0 &&
            s.violations.load(std::memory_order_relaxed) == 0 &&
            s.blocked_until.load(std::memory_order_relaxed) <= now &&
            now - s.last_seen.load(std::memory_order_relaxed) > idle_limit) {
            // Free the slot. A worker racing with this may count one
            // connection or token into a slot just freed: the limits are
            // approximate for that instant, never stuck.
            s.bucket.store(0, std::memory_order_relaxed);
            s.blocked_until.store(0, std::memory_order_relaxed);
            s.via_proxy.store(0, std::memory_order_relaxed);
            s.key.compare_exchange_strong(key, 0, std::memory_order_acq_rel);
        }
    }
    if (!offenders.empty()) {
        if (settings.block) {
            block(offenders);
        } else {
            for (const auto& a : offenders) {
                log(log_level::warn,
                    "client " + a + " reached " + std::to_string(settings.threshold) + " violations (blocking is off)");
            }
        }
    }
    for (const auto& a : behind_proxies) {
        if (settings.block) {
            log(log_level::warn, "blocked client " + a + " at layer 7 (403, it comes through a trusted proxy) for " +
                                     std::to_string(settings.block_for.count() / 1000) + " s (" +
                                     std::to_string(settings.threshold) + "+ violations within " +
                                     std::to_string(settings.window.count() / 1000) + " s)");
        } else {
            log(log_level::warn, "client " + a + " (through a trusted proxy) reached " +
                                     std::to_string(settings.threshold) + " violations (blocking is off)");
        }
    }
    if (settings.block) {
        shared_.l7_blocks.fetch_add(behind_proxies.size(), std::memory_order_relaxed);
        offenders.insert(offenders.end(), behind_proxies.begin(), behind_proxies.end());
        return offenders;
    }
    return {};
}

void abuse_guard::block(const std::vector<std::string>& addresses) {
    const auto& settings = cfg_->gw.abuse_settings;
    try {
        if (!block_) {
            throw std::runtime_error("this build has no firewall blocklist");
        }
        block_(addresses, settings.block_for);
        shared_.firewall_blocks.fetch_add(addresses.size(), std::memory_order_relaxed);
        for (const auto& a : addresses) {
            log(log_level::warn, "blocked client " + a + " in the firewall for " +
                                     std::to_string(settings.block_for.count() / 1000) + " s (" +
                                     std::to_string(settings.threshold) + "+ violations within " +
                                     std::to_string(settings.window.count() / 1000) + " s)");
        }
    } catch (const std::exception& e) {
        shared_.firewall_block_errors.fetch_add(1, std::memory_order_relaxed);
        const mono_ns now = mono_now();
        // Without the table (no firewall applied) or without CAP_NET_ADMIN
        // every attempt fails the same way: say so once a minute.
        if (now - last_error_log_ > 60LL * 1'000'000'000) {
            last_error_log_ = now;
            log(log_level::error, std::string("cannot block abusive clients in the firewall: ") + e.what());
        }
    }
}

net::awaitable<void> abuse_guard::run(const bool& stop) {
    // Every violation also bumps shared_.abuse_violations: a change there
    // since the last sweep means some client may have reached the threshold,
    // and the table is swept at once (within one poll). Quiet, it is swept
    // once a second for the idle slots. A sweep reads every client slot
    // (~1 ms for the whole table), so the poll costs the master one load of
    // a counter per tick when nothing happens.
    net::steady_timer tick(co_await net::this_coro::executor);
    std::uint64_t seen = shared_.abuse_violations.load(std::memory_order_relaxed);
    mono_ns last_sweep = mono_now();
    while (!stop) {
        tick.expires_after(poll_interval);
        co_await tick.async_wait(use_tuple);
        if (stop) {
            break;
        }
        const std::uint64_t total = shared_.abuse_violations.load(std::memory_order_relaxed);
        const mono_ns now = mono_now();
        if (total != seen || now - last_sweep >= idle_sweep_interval) {
            seen = total;
            last_sweep = now;
            sweep(now);
        }
    }
}

} // namespace rampart::gateway
