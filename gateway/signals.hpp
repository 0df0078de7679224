// Forking a process that handles signals through Asio.
#pragma once

#include <pthread.h>

#include <csignal>

namespace rampart::gateway {

/// Blocks every signal in the calling thread until restore() or the end of
/// its scope. Hold it around fork(): the child starts with the master's Asio
/// signal handlers, which write into the master's signal pipe until the
/// child's io_context::notify_fork(fork_child) gives it a pipe of its own. A
/// signal sent to the child in that window (the master's SIGTERM to a worker
/// it just started, when a reload follows at once) would reach the master's
/// handlers and stop the master. Blocked, it stays pending until the child
/// is ready and restores the mask.
class signals_blocked {
public:
    signals_blocked() {
        sigset_t all;
        sigfillset(&all);
        ::pthread_sigmask(SIG_BLOCK, &all, &saved_);
    }
    ~signals_blocked() { restore(); }
    signals_blocked(const signals_blocked&) = delete;
    signals_blocked& operator=(const signals_blocked&) = delete;

    /// The mask from before, now (once).
    void restore() {
        if (!restored_) {
            ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr);
            restored_ = true;
        }
    }

private:
    sigset_t saved_{};
    bool restored_ = false;
};

} // namespace rampart::gateway
