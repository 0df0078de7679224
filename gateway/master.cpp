#include "gateway/master.hpp"

#include "certs/certs.hpp"
#include "gateway/abuse.hpp"
#include "gateway/admin.hpp"
#include "gateway/health.hpp"
#include "gateway/log.hpp"
#include "gateway/net.hpp"
#include "gateway/privileges.hpp"
#include "gateway/shared_state.hpp"
#include "gateway/worker.hpp"

#include <boost/asio/signal_set.hpp>

#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace rampart::gateway {
namespace {

/// A bound, listening socket, closed by the destructor.
class listen_fd {
public:
    listen_fd() = default;
    explicit listen_fd(int fd) : fd_(fd) {}
    listen_fd(listen_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    listen_fd& operator=(listen_fd&& o) noexcept {
        reset();
        fd_ = std::exchange(o.fd_, -1);
        return *this;
    }
    ~listen_fd() { reset(); }
    void reset() {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    int get() const { return fd_; }

private:
    int fd_ = -1;
};

[[noreturn]] void fail_errno(const std::string& what) {
    throw std::runtime_error(what + ": " + std::strerror(errno));
}

// Each worker gets its own SO_REUSEPORT socket on the same address: the kernel
// spreads new connections across them, so workers never contend for one
// accept queue (no thundering herd). The master keeps every socket so a
// replaced worker inherits the same one.
listen_fd bind_listener(const config::endpoint& ep, bool reuse_port) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family = AF_INET;
    if (ep.host.find(':') != std::string::npos) {
        family = AF_INET6;
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(ep.port);
        if (::inet_pton(AF_INET6, ep.host.c_str(), &a->sin6_addr) != 1) {
            throw std::runtime_error("invalid address " + ep.host);
        }
        len = sizeof(sockaddr_in6);
    } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(ep.port);
        if (::inet_pton(AF_INET, ep.host.c_str(), &a->sin_addr) != 1) {
            throw std::runtime_error("invalid address " + ep.host);
        }
        len = sizeof(sockaddr_in);
    }
    listen_fd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) {
        fail_errno("socket for " + ep.to_string());
    }
    int one = 1;
    int zero = 0;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuse_port) {
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    }
    if (family == AF_INET6) {
        // "[::]:443" serves IPv4 too, whatever net.ipv6.bindv6only says.
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    }
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        fail_errno("cannot listen on " + ep.to_string());
    }
    if (::listen(fd.get(), 4096) != 0) {
        fail_errno("listen on " + ep.to_string());
    }
    return fd;
}

/// The user workers switch to; resolved in the master, before any fork,
/// because NSS lookups are not safe in a child of a process with threads.
struct unprivileged_user {
    bool change = false;
    uid_t uid = 0;
    gid_t gid = 0;
};

unprivileged_user resolve_user(const std::string& name) {
    unprivileged_user u;
    if (name.empty() || ::geteuid() != 0) {
        return u;
    }
    struct passwd* pw = ::getpwnam(name.c_str());
    if (pw == nullptr) {
        throw std::runtime_error("gateway.user: no such user '" + name + "'");
    }
    u.change = true;
    u.uid = pw->pw_uid;
    u.gid = pw->pw_gid;
    return u;
}

void drop_privileges(const unprivileged_user& u) {
    if (u.change) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(u.gid) != 0 || ::setuid(u.uid) != 0) {
            log(log_level::error, std::string("cannot drop privileges: ") + std::strerror(errno));
            ::_exit(70);
        }
    }
    // No way back to privileges through setuid binaries; not dumpable, so the
    // keys in this process's memory are not readable through ptrace or core
    // files by the unprivileged user.
    ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

class master {
public:
    explicit master(config::snapshot_ptr cfg) : cfg_(std::move(cfg)), workers_(cfg_->effective_workers()) {
        check_fits(*cfg_);
        const auto& gw = cfg_->gw;
        if (gw.listen.https) {
            keys_ = std::make_shared<certs::derived_ticket_keys>(gw.tls_settings.ticket_rotation);
            tls_ = std::make_unique<certs::server_tls>(gw.tls_settings, keys_);
            for (const auto& c : tls_->certificates()) {
                log(log_level::info, "certificate " + c.cert_file + " (" + c.key_type + ")");
            }
        }
        user_ = resolve_user(gw.user);
        slots_.resize(workers_);
        for (auto& slot : slots_) {
            if (gw.listen.https) {
                slot.https = bind_listener(*gw.listen.https, true);
            }
            if (gw.listen.http) {
                slot.http = bind_listener(*gw.listen.http, true);
            }
        }
        if (gw.listen.admin) {
            admin_fd_ = bind_listener(*gw.listen.admin, false);
        }
        // Sockets bound: from here on the master keeps only the capabilities
        // it uses (privileges.hpp).
        restrict_master_capabilities(*cfg_);
    }

    int run() {
        net::signal_set signals(io_, SIGTERM, SIGINT);
        signals.add(SIGCHLD);
        signals.add(SIGHUP);
        std::optional<tcp_acceptor> admin;
        if (admin_fd_.get() >= 0) {
            admin.emplace(io_);
            int fd = ::dup(admin_fd_.get());
            admin_fd_.reset();
            bool v6 = cfg_->gw.listen.admin->host.find(':') != std::string::npos;
            admin->assign(v6 ? tcp::v6() : tcp::v4(), fd);
            net::co_spawn(io_, serve_admin(*admin, cfg_, region_.block(), workers_), net::detached);
        }
        health_checker health(io_, cfg_, region_.block());
        health.start();
        abuse_guard abuse(cfg_, region_.block());
        net::co_spawn(io_, abuse.run(stopping_), net::detached);
        for (unsigned i = 0; i < workers_; ++i) {
            spawn(i);
        }
        log(log_level::info, "serving " + cfg_->site + " with " + std::to_string(workers_) + " workers");
        // Type=notify: the unit is started. (A configuration reload sends
        // reloading_state() when it begins and READY=1 again when it is done.)
        notify_systemd("READY=1");
        std::function<void(const error_code&, int)> on_signal = [&](const error_code& ec, int sig) {
            if (ec) {
                return;
            }
            if (sig == SIGCHLD) {
                reap();
            } else if (sig == SIGHUP) {
                log(log_level::warn, "SIGHUP: configuration reload is not supported yet; ignoring");
            } else if (!stopping_) {
                stopping_ = true;
                log(log_level::info, "stopping: draining workers");
                notify_systemd("STOPPING=1");
                health.stop();
                error_code ignored;
                if (admin) {
                    admin->close(ignored);
                }
                // Close the master's copies of the listening sockets so the
                // kernel refuses new connections once the workers close theirs.
                for (auto& slot : slots_) {
                    slot.https.reset();
                    slot.http.reset();
                }
                for (auto& slot : slots_) {
                    if (slot.pid > 0) {
                        ::kill(slot.pid, SIGTERM);
                    }
                }
                arm_kill_timer();
            }
            if (stopping_ && live_workers() == 0) {
                io_.stop();
                return;
            }
            signals.async_wait(on_signal);
        };
        signals.async_wait(on_signal);
        io_.run();
        return exit_code_;
    }

private:
    struct worker_slot {
        listen_fd https;
        listen_fd http;
        pid_t pid = -1;
        std::chrono::steady_clock::time_point started;
        unsigned quick_deaths = 0;
    };

    unsigned live_workers() const {
        unsigned n = 0;
        for (const auto& s : slots_) {
            n += s.pid > 0 ? 1 : 0;
        }
        return n;
    }

    void spawn(unsigned index) {
        io_.notify_fork(net::execution_context::fork_prepare);
        pid_t pid = ::fork();
        if (pid < 0) {
            io_.notify_fork(net::execution_context::fork_parent);
            log(log_level::error, std::string("fork failed: ") + std::strerror(errno));
            return;
        }
        if (pid == 0) {
            io_.notify_fork(net::execution_context::fork_child);
            ::_exit(worker_main(index));
        }
        io_.notify_fork(net::execution_context::fork_parent);
        slots_[index].pid = pid;
        slots_[index].started = std::chrono::steady_clock::now();
    }

    // Runs in the child. Never returns into the master's code: the caller
    // _exit()s with the result, so no master destructor runs twice.
    int worker_main(unsigned index) {
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        ::prctl(PR_SET_NAME, "rampart-worker", 0, 0, 0);
        // Keep only this worker's sockets.
        worker_sockets mine;
        for (unsigned i = 0; i < slots_.size(); ++i) {
            if (i == index) {
                mine.https = slots_[i].https.get() >= 0 ? ::dup(slots_[i].https.get()) : -1;
                mine.http = slots_[i].http.get() >= 0 ? ::dup(slots_[i].http.get()) : -1;
            }
            ::close(slots_[i].https.get());
            ::close(slots_[i].http.get());
        }
        clear_bounding_set();  // privileges.hpp: before setuid, which takes CAP_SETPCAP away
        drop_privileges(user_);
        sandbox_worker(cfg_->gw.seccomp);  // no capabilities, seccomp: before any connection
        try {
            worker w(cfg_, tls_ ? tls_->default_context() : nullptr, region_.block(), index, mine);
            w.run();
        } catch (const std::exception& e) {
            log(log_level::error, std::string("worker failed: ") + e.what());
            return 1;
        }
        return 0;
    }

    void reap() {
        for (;;) {
            int status = 0;
            pid_t pid = ::waitpid(-1, &status, WNOHANG);
            if (pid <= 0) {
                return;
            }
            for (unsigned i = 0; i < slots_.size(); ++i) {
                if (slots_[i].pid != pid) {
                    continue;
                }
                slots_[i].pid = -1;
                bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                if (stopping_) {
                    if (!clean) {
                        exit_code_ = 1;
                    }
                    break;
                }
                log(log_level::error, "worker " + std::to_string(pid) + " died (" + describe(status) +
                                          "); starting a replacement");
                respawn(i);
                break;
            }
        }
    }

    // A worker that keeps dying at start (bad environment, not bad traffic)
    // must not turn the master into a fork loop: after 5 deaths within a
    // second of starting, replacements wait a second.
    void respawn(unsigned index) {
        auto& s = slots_[index];
        bool quick = std::chrono::steady_clock::now() - s.started < std::chrono::seconds(1);
        s.quick_deaths = quick ? s.quick_deaths + 1 : 0;
        if (s.quick_deaths < 5) {
            spawn(index);
            return;
        }
        auto timer = std::make_shared<net::steady_timer>(io_, std::chrono::seconds(1));
        timer->async_wait([this, index, timer](const error_code& ec) {
            if (!ec && !stopping_) {
                spawn(index);
            }
        });
    }

    static std::string describe(int status) {
        if (WIFSIGNALED(status)) {
            return std::string("signal ") + strsignal(WTERMSIG(status));
        }
        return "exit " + std::to_string(WEXITSTATUS(status));
    }

    void arm_kill_timer() {
        kill_timer_.expires_after(cfg_->gw.timeouts_settings.drain + std::chrono::seconds(5));
        kill_timer_.async_wait([this](const error_code& ec) {
            if (ec) {
                return;
            }
            for (auto& s : slots_) {
                if (s.pid > 0) {
                    log(log_level::error, "worker " + std::to_string(s.pid) + " ignored the drain; killing it");
                    ::kill(s.pid, SIGKILL);
                    exit_code_ = 1;
                }
            }
        });
    }

    config::snapshot_ptr cfg_;
    unsigned workers_;
    std::shared_ptr<certs::derived_ticket_keys> keys_;
    std::unique_ptr<certs::server_tls> tls_;
    unprivileged_user user_;
    shared_region region_;
    std::vector<worker_slot> slots_;
    listen_fd admin_fd_;
    net::io_context io_{1};
    net::steady_timer kill_timer_{io_};
    bool stopping_ = false;
    int exit_code_ = 0;
};

}  // namespace

int run_master(config::snapshot_ptr cfg) {
    ::signal(SIGPIPE, SIG_IGN);
    // Every client connection is a descriptor, and a backend connection
    // another: the soft limit (often 1024) would cap the gateway long before
    // limits.max_connections does. Raised to the hard limit, inherited by
    // the workers.
    rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &files);
    }
    master m(std::move(cfg));
    return m.run();
}

}  // namespace rampart::gateway
