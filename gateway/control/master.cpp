#include "gateway/control/master.hpp"

#include "certs/certs.hpp"
#include "gateway/control/abuse.hpp"
#include "gateway/control/acme.hpp"
#include "gateway/control/admin.hpp"
#include "gateway/control/health.hpp"
#include "gateway/control/privileges.hpp"
#include "gateway/log.hpp"
#include "gateway/net.hpp"
#include "gateway/proxy/access_log.hpp"
#include "gateway/proxy/worker.hpp"
#include "gateway/shared_state.hpp"
#include "gateway/signals.hpp"

#include <boost/asio/signal_set.hpp>

#include <openssl/crypto.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace rampart::gateway {
namespace {

/// The signals that ask a running master for work (SIGHUP reload, SIGUSR1
/// reopen): blocked while the gateway starts, handled once run() listens.
const sigset_t& reload_signals() {
    static const sigset_t set = [] {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGHUP);
        sigaddset(&s, SIGUSR1);
        return s;
    }();
    return set;
}

/// A descriptor (a listening socket, a pipe end), closed by the destructor.
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

/// Closes every descriptor of the process except those in `keep`.
void close_all_but(std::vector<int> keep) {
    std::sort(keep.begin(), keep.end());
    unsigned next = 0;
    for (const int fd : keep) {
        if (fd < 0 || static_cast<unsigned>(fd) < next) {
            continue;
        }
        if (static_cast<unsigned>(fd) > next) {
            ::close_range(next, static_cast<unsigned>(fd) - 1, 0);
        }
        next = static_cast<unsigned>(fd) + 1;
    }
    ::close_range(next, ~0U, 0);
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

/// The stat() identity of a file: a change means a new certificate or key.
struct file_stamp {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    std::int64_t mtime_ns = 0;
    bool operator==(const file_stamp&) const = default;
};

file_stamp stamp_of(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return {};
    }
    return {st.st_dev, st.st_ino, st.st_size,
            static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
}

/// One configuration and everything built from it: what a set of workers
/// serves. A reload builds a new generation beside the running one.
struct generation {
    std::uint64_t id = 1;
    config::snapshot_ptr cfg;
    std::unique_ptr<certs::server_tls> tls;
    slot_map slots;
    unsigned workers = 1;
    unprivileged_user user;
    listen_fd access_log;                ///< the access log's descriptor (-1 when off); each worker gets a copy
    std::vector<cert_info> certificates; ///< for the status page
    std::vector<std::pair<std::string, file_stamp>> watched; ///< certificate and key files
    /// ACME in a pair: the key the nodes' certificates travel under.
    std::optional<certs::acme::transfer_key> acme_transfer_key;

    generation() = default;
    generation(const generation&) = delete;
    generation& operator=(const generation&) = delete;
    ~generation() {
        if (acme_transfer_key) {
            OPENSSL_cleanse(acme_transfer_key->data(), acme_transfer_key->size());
        }
    }
};

class master {
public:
    master(config::snapshot_ptr cfg, control_links links) : links_(std::move(links)), admin_(region_.block()) {
        // The master's life line to its workers: it holds the write end and
        // never writes; each worker watches the read end, which reads EOF the
        // moment the master is gone, however it ended (worker_main).
        int life[2];
        if (::pipe2(life, O_CLOEXEC) != 0) {
            fail_errno("pipe");
        }
        life_read_ = listen_fd(life[0]);
        life_write_ = listen_fd(life[1]);
        const auto& gw = cfg->gw;
        current_ = build(std::move(cfg), 1);
        if (gw.listen.admin) {
            admin_fd_ = bind_listener(*gw.listen.admin, false);
            admin_endpoint_ = gw.listen.admin->to_string();
        }
        // Sockets bound: from here on the master keeps only the capabilities
        // it uses (privileges.hpp).
        restrict_master_capabilities(*current_->cfg);
    }

    int run() {
        net::signal_set signals(io_, SIGTERM, SIGINT);
        signals.add(SIGCHLD);
        signals.add(SIGHUP);
        signals.add(SIGUSR1);
        // Handled from here on: a SIGHUP or SIGUSR1 that came while the
        // gateway started (blocked in run_master, so not fatal) is delivered now.
        ::sigprocmask(SIG_UNBLOCK, &reload_signals(), nullptr);
        std::optional<tcp_acceptor> admin;
        publish_admin_state();
        admin_.reload = [this] { return reload("admin API"); };
        if (admin_fd_.get() >= 0) {
            admin.emplace(io_);
            int fd = ::dup(admin_fd_.get());
            admin_fd_.reset();
            bool v6 = current_->cfg->gw.listen.admin->host.find(':') != std::string::npos;
            admin->assign(v6 ? tcp::v6() : tcp::v4(), fd);
            net::co_spawn(io_, serve_admin(*admin, admin_), log_failure{"admin API failed: "});
        }
        health_ = std::make_unique<health_checker>(io_, current_->cfg, region_.block(), current_->slots);
        health_->start();
        ha_ = std::make_unique<ha_link>(
            io_, [this](const config::snapshot& cfg) { return able_to_serve(cfg); }, admin_.vrrp);
        ha_->configure(current_->cfg);
        abuse_ = std::make_unique<abuse_guard>(current_->cfg, region_.block(), links_.block);
        net::co_spawn(io_, abuse_->run(stopping_), log_failure{"abuse watcher failed: "});
        if (!links_.can_block || !links_.can_block()) {
            // Both fail at the moment they matter, quietly until then: said at start.
            if (current_->cfg->gw.abuse_settings.block) {
                log(log_level::warn, "no CAP_NET_ADMIN: abusive clients are counted but cannot be blocked in the "
                                     "firewall; run as root (the unit does) or set gateway.abuse.block: false");
            }
            if (current_->cfg->ha_pair) {
                log(log_level::warn, "ha: no CAP_NET_ADMIN: a VIP a dead keepalived left on this node cannot be "
                                     "removed");
            }
        }
        net::co_spawn(io_, watch_certificates(), log_failure{"certificate watcher failed: "});
        // ACME: only the VIP's holder of a pair orders (the validation
        // requests reach the VIP); a single gateway always does.
        acme_ = std::make_unique<acme_manager>(
            io_, region_.block(),
            [this](const std::string& why) {
                if (stopping_) {
                    // Draining: no new generation (its workers would outlive the stop).
                    return std::pair<bool, std::string>{false, "stopping"};
                }
                return reload(why, current_->cfg);
            },
            [this] { return !current_->cfg->ha_pair || admin_.vrrp.vip_held; });
        acme_->configure(current_->cfg, acme_pair());
        admin_.acme = &acme_->status();
        admin_.acme_transfers = &acme_->transfers();
        admin_.acme_transfer = [this](const http::request<http::empty_body>& req) {
            return acme_->serve_transfer(req);
        };
        net::co_spawn(io_, acme_->run(stopping_), log_failure{"acme failed: "});
        net::co_spawn(io_, sample_history(), log_failure{"history sampler failed: "});
        for (unsigned i = 0; i < current_->workers; ++i) {
            spawn(*current_, i);
        }
        log(log_level::info,
            "serving " + current_->cfg->site + " with " + std::to_string(current_->workers) + " workers");
        // Type=notify: the unit is started. A reload sends RELOADING=1 when
        // it begins and READY=1 again when it is done.
        notify_systemd("READY=1");
        std::function<void(const error_code&, int)> on_signal = [&](const error_code& ec, int sig) {
            if (ec) {
                return;
            }
            if (sig == SIGCHLD) {
                reap();
            } else if (sig == SIGHUP) {
                if (!stopping_) {
                    reload("SIGHUP");
                }
            } else if (sig == SIGUSR1) {
                if (!stopping_) {
                    reopen_logs();
                }
            } else if (!stopping_) {
                stopping_ = true;
                if (acme_) {
                    acme_->wake();
                }
                log(log_level::info, "stopping: draining workers");
                notify_systemd("STOPPING=1");
                ha_->stop();
                health_->stop();
                error_code ignored;
                if (admin) {
                    admin->close(ignored);
                }
                listeners_.clear();
                for (auto& w : workers_) {
                    if (w.pid > 0) {
                        ::kill(w.pid, SIGTERM);
                    }
                }
                arm_kill_timer(0);
            }
            if (stopping_ && live_workers() == 0) {
                io_.stop();
                return;
            }
            signals.async_wait(on_signal);
        };
        signals.async_wait(on_signal);
        io_.run();
        // Done. Tearing down the signal_set restores the default action, so
        // a second SIGTERM (a supervisor insisting) would kill the master
        // with a signal status between here and exit: blocked, it stays
        // pending and the exit code stands.
        sigset_t late;
        sigemptyset(&late);
        sigaddset(&late, SIGTERM);
        sigaddset(&late, SIGINT);
        sigaddset(&late, SIGHUP);
        sigaddset(&late, SIGUSR1);
        ::sigprocmask(SIG_BLOCK, &late, nullptr);
        return exit_code_;
    }

private:
    struct worker_slot {
        pid_t pid = -1;
        std::uint64_t generation = 0;
        unsigned index = 0;        ///< position within its generation (which sockets it serves)
        unsigned counter_slot = 0; ///< its entry in shared_block::workers
        std::chrono::steady_clock::time_point started;
        unsigned quick_deaths = 0;
    };

    /// Validates and builds everything a configuration needs, without
    /// touching what runs: certificates, slots, listening sockets (bound
    /// beside the running ones). Throws with the reason.
    std::unique_ptr<generation> build(config::snapshot_ptr cfg, std::uint64_t id) {
        check_fits(*cfg);
        auto g = std::make_unique<generation>();
        g->id = id;
        g->workers = cfg->effective_workers();
        const auto& gw = cfg->gw;
        if (gw.listen.https) {
            if (gw.tls_settings.acme_settings) {
                // The state directory, and a stand-in for each certificate
                // not issued yet, before the certificates load.
                acme_manager::prepare(*gw.tls_settings.acme_settings);
                if (cfg->ha_pair && !cfg->ha_pair->ticket_secret_file.empty()) {
                    auto secret = certs::load_ticket_secret(cfg->ha_pair->ticket_secret_file);
                    g->acme_transfer_key = certs::acme::derive_transfer_key(secret);
                    OPENSSL_cleanse(secret.data(), secret.size());
                }
            }
            const std::string secret_file = cfg->ha_pair ? cfg->ha_pair->ticket_secret_file : "";
            if (!keys_ || keys_->rotation() != gw.tls_settings.ticket_rotation || secret_file != keys_secret_file_) {
                // Same rotation and secret: the same keys, so tickets issued
                // before the reload still resume on the new workers. With
                // ha.ticket_secret_file both gateways of the pair derive the
                // same keys, so a ticket from one resumes on the other.
                if (secret_file.empty()) {
                    keys_ = std::make_shared<certs::derived_ticket_keys>(gw.tls_settings.ticket_rotation);
                } else {
                    auto secret = certs::load_ticket_secret(secret_file);
                    keys_ = std::make_shared<certs::derived_ticket_keys>(gw.tls_settings.ticket_rotation, secret);
                    OPENSSL_cleanse(secret.data(), secret.size());
                    log(log_level::info, "session-ticket keys derived from " + secret_file);
                }
                keys_secret_file_ = secret_file;
            }
            g->tls = std::make_unique<certs::server_tls>(gw.tls_settings, keys_);
            for (const auto& c : g->tls->certificates()) {
                log(log_level::info, "certificate " + c.cert_file + " (" + c.key_type + ")");
                cert_info info;
                info.file = c.cert_file;
                info.key_type = c.key_type;
                info.names = c.names;
                info.not_after_unix =
                    std::chrono::duration_cast<std::chrono::seconds>(c.not_after.time_since_epoch()).count();
                info.issuer = c.issuer;
                g->certificates.push_back(std::move(info));
            }
            for (const auto& c : gw.tls_settings.certificates) {
                g->watched.emplace_back(c.cert_file, stamp_of(c.cert_file));
                g->watched.emplace_back(c.key_file, stamp_of(c.key_file));
            }
        }
        g->user = resolve_user(gw.user);
        // Opened here, with the master's privileges, before any worker forks.
        g->access_log = listen_fd(open_access_log(gw.access_log_settings));
        if (current_ && gw.listen.admin && gw.listen.admin->to_string() != admin_endpoint_) {
            log(log_level::warn, "gateway.listen.admin changed: the admin listener moves only on restart");
        }
        // Listening sockets per endpoint: at least one per worker; existing
        // ones are kept, so connections waiting in their accept queues are
        // taken by the new workers instead of being reset.
        for (const auto& ep : {gw.listen.https, gw.listen.http}) {
            if (!ep) {
                continue;
            }
            auto& fds = listeners_[ep->to_string()];
            while (fds.size() < g->workers) {
                fds.push_back(bind_listener(*ep, true));
            }
        }
        g->slots = assign_slots(region_.block(), *cfg);
        g->cfg = std::move(cfg);
        return g;
    }

    // Reload: the new configuration and certificates are loaded and checked;
    // if anything is wrong nothing changes. Otherwise new workers start on
    // the same listening sockets, then the old ones drain: they stop
    // accepting, finish what is in flight and exit.
    /// SIGUSR1, after logrotate moved the access log away: a new generation
    /// of workers from the running configuration (the file is not read
    /// again) writing to the file opened anew at its path, while the old
    /// generation finishes its lines in the moved file and drains, as on a
    /// reload. Workers are sandboxed and cannot open files, so the new file
    /// comes with new workers.
    void reopen_logs() {
        const auto& settings = current_->cfg->gw.access_log_settings;
        if (!settings.enabled || settings.path == "stdout") {
            log(log_level::info, "SIGUSR1: no access log file to reopen");
            return;
        }
        reload("SIGUSR1, reopening " + settings.path, current_->cfg);
    }

    /// Starts a new generation from the configuration file (or from `same`,
    /// the running configuration, when given) and drains the old one; on any
    /// error nothing changes.
    std::pair<bool, std::string> reload(const std::string& why, config::snapshot_ptr same = nullptr) {
        const std::string path = current_->cfg->source_file;
        notify_systemd_reloading();
        auto fail = [&](const std::string& message) {
            ++admin_.reloads_failed;
            admin_.last_reload = "failed: " + message;
            log(log_level::error, "reload (" + why + ") failed; still serving generation " +
                                      std::to_string(current_->id) + ": " + message);
            notify_systemd_ready();
            return std::pair{false, message};
        };
        config::snapshot_ptr cfg = std::move(same);
        if (!cfg) {
            auto loaded = config::load(path);
            if (!loaded) {
                std::string errors;
                for (const auto& e : loaded.errors) {
                    errors += (errors.empty() ? "" : "\n") + e.to_string();
                }
                return fail(errors);
            }
            cfg = loaded.config;
        }
        // Draining generations still hold their workers' counter slots: a
        // burst of reloads or reopens must be refused, not run out of them.
        if (live_workers() + cfg->effective_workers() > max_workers) {
            return fail("too many workers still draining from earlier reloads (" + std::to_string(live_workers()) +
                        " running); try again when they have finished");
        }
        std::unique_ptr<generation> next;
        const auto listeners_before = listener_names();
        try {
            next = build(cfg, current_->id + 1);
        } catch (const std::exception& e) {
            prune_listeners(listeners_before);
            return fail(e.what());
        }
        auto old = std::move(current_);
        current_ = std::move(next);
        for (unsigned i = 0; i < current_->workers; ++i) {
            spawn(*current_, i);
        }
        for (auto& w : workers_) {
            if (w.pid > 0 && w.generation == old->id) {
                ::kill(w.pid, SIGTERM);
            }
        }
        arm_kill_timer(old->id);
        prune_listeners(listener_names_of(*current_->cfg));
        health_->stop();
        health_ = std::make_unique<health_checker>(io_, current_->cfg, region_.block(), current_->slots);
        health_->start();
        abuse_->set_config(current_->cfg);
        ++admin_.reloads_ok;
        admin_.last_reload = "ok";
        publish_admin_state();
        ha_->configure(current_->cfg);
        if (acme_) {
            acme_->configure(current_->cfg, acme_pair());
        }
        log(log_level::info, "reload (" + why + "): generation " + std::to_string(current_->id) + " serving with " +
                                 std::to_string(current_->workers) + " workers; generation " + std::to_string(old->id) +
                                 " draining");
        notify_systemd_ready();
        return {true, "generation " + std::to_string(current_->id)};
    }

    static std::set<std::string> listener_names_of(const config::snapshot& cfg) {
        std::set<std::string> names;
        for (const auto& ep : {cfg.gw.listen.https, cfg.gw.listen.http}) {
            if (ep) {
                names.insert(ep->to_string());
            }
        }
        return names;
    }

    std::set<std::string> listener_names() const {
        std::set<std::string> names;
        for (const auto& [name, fds] : listeners_) {
            names.insert(name);
        }
        return names;
    }

    /// Closes the master's copies of sockets for endpoints no longer
    /// configured (workers still draining keep their own copies).
    void prune_listeners(const std::set<std::string>& keep) {
        std::erase_if(listeners_, [&](const auto& entry) { return !keep.contains(entry.first); });
    }

    void publish_admin_state() {
        admin_.cfg = current_->cfg;
        admin_.slots = current_->slots;
        admin_.generation = current_->id;
        admin_.worker_slots = std::max<unsigned>(admin_.worker_slots, counter_slots_used_);
        admin_.status.generation = current_->id;
        admin_.status.last_reload = admin_.last_reload;
        admin_.status.certificates = current_->certificates;
        admin_.status.workers = current_->workers;
        admin_.ticket_keys_shared = !keys_secret_file_.empty();
        publish_maintenance(admin_); // route names to the new configuration's indexes
        if (admin_.status.started_unix == 0) {
            admin_.status.started_unix =
                std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                    .count();
        }
    }

    // Certificates renewed on disk (certbot, an operator's copy) go live by
    // themselves: a changed certificate or key file triggers a reload.
    net::awaitable<void> watch_certificates() {
        net::steady_timer timer(io_);
        while (!stopping_) {
            timer.expires_after(std::chrono::seconds(5));
            co_await timer.async_wait(use_tuple);
            if (stopping_) {
                co_return;
            }
            for (auto& [path, seen] : current_->watched) {
                const file_stamp now = stamp_of(path);
                if (now != seen) {
                    seen = now; // a broken new file is reported once, not every 5 s
                    reload("certificate file " + path + " changed");
                    break;
                }
            }
        }
    }

    // The status page's charts: the shared counters every history_step,
    // on a steady schedule (a late wake-up does not shift the later ones).
    net::awaitable<void> sample_history() {
        net::steady_timer timer(io_);
        auto next = std::chrono::steady_clock::now();
        while (!stopping_) {
            admin_.history.add(history_now(admin_), std::chrono::system_clock::now());
            next += history_step;
            const auto now = std::chrono::steady_clock::now();
            if (next < now) {
                next = now + history_step; // asleep for over a step (suspended): start again from now
            }
            timer.expires_at(next);
            co_await timer.async_wait(use_tuple);
        }
    }

    /// The peer of a pair whose nodes share ACME certificates, once the HA
    /// link knows which node this is.
    std::optional<acme_pair_link> acme_pair() const {
        const config::snapshot& cfg = *current_->cfg;
        if (!current_->acme_transfer_key || !cfg.ha_pair || !admin_.vrrp.enabled || !cfg.gw.listen.admin) {
            return std::nullopt;
        }
        const config::ha_node* peer = cfg.ha_pair->peer_of(admin_.vrrp.node);
        if (peer == nullptr) {
            return std::nullopt;
        }
        return acme_pair_link{admin_.vrrp.node, peer->name, peer->address, cfg.gw.listen.admin->port,
                              *current_->acme_transfer_key};
    }

    unsigned live_workers() const {
        unsigned n = 0;
        for (const auto& w : workers_) {
            n += w.pid > 0 ? 1 : 0;
        }
        return n;
    }

    /// A free entry of shared_block::workers: one whose worker has exited.
    /// Its counters keep their values and the new worker adds to them, so
    /// the sums /metrics shows never go down.
    unsigned free_counter_slot() {
        std::vector<bool> used(max_workers, false);
        for (const auto& w : workers_) {
            if (w.pid > 0) {
                used[w.counter_slot] = true;
            }
        }
        for (unsigned i = 0; i < max_workers; ++i) {
            if (!used[i]) {
                counter_slots_used_ = std::max(counter_slots_used_, i + 1);
                admin_.worker_slots = counter_slots_used_;
                return i;
            }
        }
        throw std::runtime_error("no free worker counter slot");
    }

    void spawn(const generation& g, unsigned index, std::optional<unsigned> counter_slot = std::nullopt) {
        worker_slot slot;
        slot.generation = g.id;
        slot.index = index;
        slot.counter_slot = counter_slot ? *counter_slot : free_counter_slot();
        // A worker that died left its in-flight gauge behind.
        region_.block().workers[slot.counter_slot].connections_active.store(0, std::memory_order_relaxed);
        region_.block().workers[slot.counter_slot].h2_connections_active.store(0, std::memory_order_relaxed);
        // ... and its tunnels' places under limits.tunnels.
        const auto tunnels = region_.block().workers[slot.counter_slot].tunnels_active.exchange(0);
        region_.block().tunnels_open.fetch_sub(static_cast<std::uint32_t>(tunnels), std::memory_order_relaxed);
        const pid_t master_pid = ::getpid();
        signals_blocked blocked; // until the child has its own signal handling (signals.hpp)
        io_.notify_fork(net::execution_context::fork_prepare);
        pid_t pid = ::fork();
        if (pid < 0) {
            io_.notify_fork(net::execution_context::fork_parent);
            log(log_level::error, std::string("fork failed: ") + std::strerror(errno));
            return;
        }
        if (pid == 0) {
            // The child never runs the master's io_context (no fork_child:
            // worker_main closes its descriptors) and keeps every signal
            // blocked until worker_main has set up its own.
            ::_exit(worker_main(g, slot, master_pid));
        }
        io_.notify_fork(net::execution_context::fork_parent);
        blocked.restore();
        slot.pid = pid;
        slot.started = std::chrono::steady_clock::now();
        auto it = std::find_if(workers_.begin(), workers_.end(), [](const worker_slot& w) { return w.pid <= 0; });
        if (it != workers_.end()) {
            *it = slot;
        } else {
            workers_.push_back(slot);
        }
    }

    int worker_main(const generation& g, const worker_slot& slot, pid_t master_pid) {
        ::prctl(PR_SET_NAME, "rampart-worker", 0, 0, 0);
        // Signals, all still blocked (spawn): the master's Asio handlers are
        // installed in this copy and write into the master's signal pipe, so
        // none may run here. SIGTERM and SIGINT (drain) stay blocked and are
        // read from a signalfd; a reload or reopen signal sent to a worker is
        // ignored; the rest get their default action back and are unblocked.
        for (const int sig : {SIGHUP, SIGUSR1}) {
            ::signal(sig, SIG_IGN);
        }
        for (const int sig : {SIGTERM, SIGINT, SIGCHLD}) {
            ::signal(sig, SIG_DFL);
        }
        sigset_t drain;
        sigemptyset(&drain);
        sigaddset(&drain, SIGTERM);
        sigaddset(&drain, SIGINT);
        worker_sockets mine;
        mine.signals = ::signalfd(-1, &drain, SFD_NONBLOCK | SFD_CLOEXEC);
        if (mine.signals < 0) {
            log(log_level::error, std::string("worker: signalfd: ") + std::strerror(errno));
            return 1;
        }
        ::sigprocmask(SIG_SETMASK, &drain, nullptr);
        // This worker's share of each listener's sockets, its access log,
        // the read end of the master's life line, the standard descriptors:
        // every other descriptor of the master's (the admin listener, the
        // HA notify FIFO, health-check and netlink sockets, the life line's
        // write end, the master's reactor) is closed.
        auto take = [&](const std::optional<config::endpoint>& ep, std::vector<int>& out) {
            if (!ep) {
                return;
            }
            const auto& fds = listeners_.at(ep->to_string());
            for (std::size_t j = slot.index; j < fds.size(); j += g.workers) {
                out.push_back(fds[j].get());
            }
        };
        take(g.cfg->gw.listen.https, mine.https);
        take(g.cfg->gw.listen.http, mine.http);
        mine.access_log = g.access_log.get();
        mine.master_alive = life_read_.get();
        std::vector<int> keep{0, 1, 2, mine.signals, mine.master_alive};
        keep.insert(keep.end(), mine.https.begin(), mine.https.end());
        keep.insert(keep.end(), mine.http.begin(), mine.http.end());
        if (mine.access_log >= 0) {
            keep.push_back(mine.access_log);
        }
        close_all_but(keep);
        clear_bounding_set(); // privileges.hpp: before setuid, which takes CAP_SETPCAP away
        drop_privileges(g.user);
        // setuid and setgid clear the parent-death signal: armed after the
        // last credential change, then checked against a master that died
        // before it was armed. The life line covers every case this misses.
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != master_pid) {
            return 0;
        }
        // Static routes and certbot's webroot open files (read-only).
        const bool serve_files = !g.cfg->gw.tls_settings.acme_webroot.empty() ||
                                 std::any_of(g.cfg->gw.routes.begin(), g.cfg->gw.routes.end(),
                                             [](const config::route& r) { return r.files.has_value(); });
        sandbox_worker(g.cfg->gw.seccomp, serve_files); // no capabilities, seccomp: before any connection
        try {
            worker w(g.cfg, g.tls ? g.tls->default_context() : nullptr, region_.block(), g.slots, slot.counter_slot,
                     mine);
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
            for (auto& w : workers_) {
                if (w.pid != pid) {
                    continue;
                }
                w.pid = -1;
                bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                if (w.generation != current_->id || stopping_) {
                    // A drained worker of an old generation, or the shutdown.
                    if (!clean) {
                        log(log_level::warn, "worker " + std::to_string(pid) + " of generation " +
                                                 std::to_string(w.generation) + " ended with " + describe(status));
                        if (stopping_) {
                            exit_code_ = 1;
                        }
                    }
                    break;
                }
                ++admin_.worker_restarts;
                log(log_level::error,
                    "worker " + std::to_string(pid) + " died (" + describe(status) + "); starting a replacement");
                respawn(w);
                break;
            }
        }
    }

    void respawn(worker_slot dead) {
        bool quick = std::chrono::steady_clock::now() - dead.started < std::chrono::seconds(1);
        unsigned deaths = quick ? dead.quick_deaths + 1 : 0;
        auto start = [this, dead, deaths] {
            if (stopping_ || dead.generation != current_->id) {
                return;
            }
            spawn(*current_, dead.index, dead.counter_slot);
            for (auto& w : workers_) {
                if (w.pid > 0 && w.counter_slot == dead.counter_slot) {
                    w.quick_deaths = deaths;
                }
            }
        };
        if (deaths < 5) {
            start();
            return;
        }
        auto timer = std::make_shared<net::steady_timer>(io_, std::chrono::seconds(1));
        timer->async_wait([start, timer](const error_code& ec) {
            if (!ec) {
                start();
            }
        });
    }

    static std::string describe(int status) {
        if (WIFSIGNALED(status)) {
            return std::string("signal ") + strsignal(WTERMSIG(status));
        }
        return "exit " + std::to_string(WEXITSTATUS(status));
    }

    // After the drain deadline (and 5 s more), workers that still run are
    // killed: all of them on shutdown (`gen` 0), those of `gen` after a reload.
    void arm_kill_timer(std::uint64_t gen) {
        auto timer = std::make_shared<net::steady_timer>(io_);
        timer->expires_after(current_->cfg->gw.timeouts_settings.drain + std::chrono::seconds(5));
        timer->async_wait([this, gen, timer](const error_code& ec) {
            if (ec) {
                return;
            }
            for (auto& w : workers_) {
                if (w.pid > 0 && (gen == 0 || w.generation == gen)) {
                    log(log_level::error, "worker " + std::to_string(w.pid) + " ignored the drain; killing it");
                    ::kill(w.pid, SIGKILL);
                    if (gen == 0) {
                        exit_code_ = 1;
                    }
                }
            }
        });
    }

    /// What the HA track file says: workers run and, unless the policy
    /// says otherwise, some pool has an available server.
    bool able_to_serve(const config::snapshot& cfg) const {
        if (stopping_ || live_workers() == 0) {
            return false;
        }
        if (admin_.ha_released) {
            return false; // maintenance: let the peer hold the VIP
        }
        return !cfg.ha_pair || !cfg.ha_pair->health.require_backend || ready(admin_);
    }

    static void notify_systemd_reloading() { notify_systemd(reloading_state()); }
    static void notify_systemd_ready() { notify_systemd("READY=1"); }

    control_links links_; ///< the firewall, as cmd/ wired it
    shared_region region_;
    admin_state admin_;
    std::shared_ptr<certs::derived_ticket_keys> keys_;
    std::string keys_secret_file_; ///< where keys_'s secret came from; "" = random
    std::unique_ptr<generation> current_;
    std::map<std::string, std::vector<listen_fd>> listeners_; ///< endpoint -> its SO_REUSEPORT sockets
    std::vector<worker_slot> workers_;
    unsigned counter_slots_used_ = 0;
    listen_fd admin_fd_;
    listen_fd life_read_;  ///< the life line's read end, for the workers
    listen_fd life_write_; ///< held open, never written, until the master exits
    std::string admin_endpoint_;
    net::io_context io_{1};
    std::unique_ptr<health_checker> health_;
    std::unique_ptr<abuse_guard> abuse_;
    std::unique_ptr<acme_manager> acme_;
    std::unique_ptr<ha_link> ha_; ///< kept across reloads: the VRRP state outlives generations
    bool stopping_ = false;
    int exit_code_ = 0;
};

} // namespace

int run_master(config::snapshot_ptr cfg, control_links links) {
    // SIGHUP and SIGUSR1 end a process by default: a reload or a logrotate
    // reopen sent while the gateway starts must wait instead (run()
    // unblocks them once it handles them).
    ::sigprocmask(SIG_BLOCK, &reload_signals(), nullptr);
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
    master m(std::move(cfg), std::move(links));
    return m.run();
}

} // namespace rampart::gateway
