#pragma once
// What every client connection has, whatever it speaks: its deadline and the
// watchdog that enforces it (exchange_host), its place in the worker's
// connection set (for the drain), and its count in the shared connection
// limits.

#include "gateway/net.hpp"
#include "gateway/proxy/exchange_host.hpp"
#include "gateway/shared_state.hpp"

#include <chrono>
#include <memory>

namespace rampart::gateway {

struct worker_context;

class connection_base : public exchange_host, public std::enable_shared_from_this<connection_base> {
public:
    connection_base(worker_context& w, admission a);
    ~connection_base() override;

    /// How long an idle keep-alive connection may still send one request
    /// once the worker drains.
    static constexpr std::chrono::milliseconds drain_grace{1000};

    /// Drain: a busy connection closes after its current response; an idle
    /// one after one more request or `drain_grace` of silence; a tunnel when
    /// the drain deadline passes (terminate). An HTTP/2 connection sends
    /// GOAWAY and closes once its streams are done.
    virtual void drain();
    /// Drain deadline passed: abort whatever is in flight.
    virtual void terminate();

    void violation() override;
    const admission& admitted() const override { return admission_; }
    bool closing() const override { return closing_; }

protected:
    /// Starts the watchdog; call once from the derived class's start().
    void start_watchdog() { exchange_host::start_watchdog(shared_from_this()); }

    admission admission_;
    bool idle_ = false;
    bool closing_ = false;
};

} // namespace rampart::gateway
