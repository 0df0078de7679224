#include "gateway/control/ha_link.hpp"

#include "gateway/log.hpp"
#include "gateway/signals.hpp"
#include "ha/peer.hpp"
#include "ha/status.hpp"

#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <istream>

namespace rampart::gateway {
namespace {

// Written whole under a temporary name, then renamed over the old file, so
// keepalived (which re-reads it on every inotify event) never sees half a value.
bool write_file_atomically(const std::string& path, const std::string& content, mode_t mode) {
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        return false;
    }
    const bool written = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
    ::close(fd);
    return written && ::rename(tmp.c_str(), path.c_str()) == 0;
}

std::uint64_t inode_of(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISFIFO(st.st_mode) ? static_cast<std::uint64_t>(st.st_ino) : 0;
}

} // namespace

ha_link::ha_link(net::io_context& io, std::function<bool(const config::snapshot&)> healthy, vrrp_info& info)
    : io_(io), healthy_(std::move(healthy)), info_(info) {}

ha_link::~ha_link() {
    ++epoch_;
    fifo_.reset();
}

// The sentinel: a child of the master that does nothing until the master
// dies (PR_SET_PDEATHSIG), then reports the node unhealthy through the track
// file, so that keepalived faults within milliseconds of a SIGKILL of the
// master, with no check forked on a timer. keepalived's track_process does
// the same from the kernel's process events, but only in the initial network
// namespace; the sentinel works in any. It never touches the io_context.
void ha_link::start_sentinel(const std::string& track_file) {
    stop_sentinel();
    const pid_t parent = ::getpid();
    signals_blocked blocked; // the child keeps every signal blocked; see signals.hpp
    const pid_t pid = ::fork();
    if (pid < 0) {
        log(log_level::error, std::string("ha: cannot start the sentinel: ") + std::strerror(errno));
        return;
    }
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        ::prctl(PR_SET_NAME, "rampart-ha-sent", 0, 0, 0);
        ::close_range(3, ~0U, 0);
        sigset_t term;
        ::sigemptyset(&term);
        ::sigaddset(&term, SIGTERM);
        int sig = 0;
        // The master may have died before PDEATHSIG was armed.
        if (::getppid() == parent) {
            ::sigwait(&term, &sig);
        }
        write_file_atomically(track_file, "1\n", 0644);
        ::_exit(0);
    }
    sentinel_ = pid;
}

// Reaped here, at once: it dies from SIGKILL within microseconds, and the
// master must not exit leaving it behind (ECHILD when reap() was first).
void ha_link::stop_sentinel() {
    if (sentinel_ > 0) {
        ::kill(sentinel_, SIGKILL);
        ::waitpid(sentinel_, nullptr, 0);
        sentinel_ = -1;
    }
}

void ha_link::configure(config::snapshot_ptr cfg) {
    const config::ha_node* self = nullptr;
    if (cfg->ha_pair) {
        self = cfg->ha_pair->node_with_address(ha::local_addresses());
        if (self == nullptr) {
            log(log_level::warn, "ha: none of the addresses of ha.nodes is on this host; not part of the pair");
        }
    }
    const bool same_node = info_.enabled && self != nullptr && self->name == info_.node && cfg_ &&
                           cfg_->ha_pair->state_dir == cfg->ha_pair->state_dir;
    ++epoch_;
    fifo_.reset();
    cfg_ = self != nullptr ? std::move(cfg) : nullptr;
    if (self == nullptr) {
        info_.enabled = false;
        stop_sentinel();
        return;
    }
    const config::ha& h = *cfg_->ha_pair;
    if (!same_node) {
        info_ = vrrp_info{};
        info_.node = self->name;
        info_.priority = self->priority;
        last_written_ = -1;
        // Until keepalived says otherwise: holding the VIP means MASTER.
        const auto local = ha::local_addresses();
        if (std::find(local.begin(), local.end(), h.vip.address) != local.end()) {
            info_.state = "MASTER";
        }
    }
    info_.enabled = true;
    std::error_code ec;
    std::filesystem::create_directories(h.state_dir, ec);
    if (ec) {
        log(log_level::error, "ha: cannot create " + h.state_dir + ": " + ec.message());
    }
    const std::string name = h.process_name(self->name);
    ::prctl(PR_SET_NAME, name.c_str(), 0, 0, 0);
    log(log_level::info, "ha: node " + self->name + " (priority " + std::to_string(self->priority) + ", peer " +
                             h.peer_of(self->name)->name + "); health in " + h.track_file(self->name) +
                             ", VRRP state from " + h.notify_fifo(self->name) + "; process name " + name);
    if (const auto warning = ha::track_process_warning(*cfg_); !warning.empty()) {
        log(log_level::warn, "ha: " + warning);
    }
    open_fifo();
    write_state_file();
    if (!same_node || sentinel_ < 0) {
        start_sentinel(h.track_file(self->name));
    }
    const std::string peer_name = h.peer_of(self->name)->name;
    if (!h.peer_check.enabled || info_.peer.node != peer_name) {
        info_.peer = peer_info{};
    }
    info_.peer.enabled = h.peer_check.enabled;
    info_.peer.node = peer_name;
    net::co_spawn(io_, write_health(epoch_), log_failure{"HA link: health writer failed: "});
    net::co_spawn(io_, read_notifications(epoch_), log_failure{"HA link: notification reader failed: "});
    if (h.peer_check.enabled) {
        net::co_spawn(io_, check_peer(epoch_), log_failure{"HA link: peer check failed: "});
    }
}

void ha_link::stop() {
    if (cfg_ && info_.enabled) {
        write_track_file(false);
        log(log_level::info, "ha: reported unhealthy so that the peer takes the VIP before the drain");
    }
    stop_sentinel();
    ++epoch_;
    fifo_.reset();
    cfg_ = nullptr;
}

// keepalived may create the FIFO itself (and remove it when it stops): it is
// made here when missing and reopened when the path stops naming the one
// this process holds. Opened read-write, so it never reads end-of-file while
// keepalived restarts.
void ha_link::open_fifo() {
    const std::string path = cfg_->ha_pair->notify_fifo(info_.node);
    if (inode_of(path) == 0) {
        ::unlink(path.c_str());
        if (::mkfifo(path.c_str(), 0600) != 0 && errno != EEXIST) {
            log(log_level::error, "ha: cannot create the notify FIFO " + path + ": " + std::strerror(errno));
            return;
        }
    }
    const int fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        log(log_level::error, "ha: cannot open the notify FIFO " + path + ": " + std::strerror(errno));
        return;
    }
    fifo_ = std::make_unique<net::posix::stream_descriptor>(io_, fd);
    fifo_inode_ = inode_of(path);
}

// A track file that cannot be written (a read-only or missing state
// directory) leaves keepalived with whatever it read last: the node is then
// reported unhealthy here (metrics, status page), logged once until writes
// succeed again, and tried again every health interval.
bool ha_link::write_track_file(bool healthy) {
    const std::string path = cfg_->ha_pair->track_file(info_.node);
    if (!write_file_atomically(path, healthy ? "0\n" : "1\n", 0644)) {
        const std::string error = "cannot write " + path + ": " + std::strerror(errno);
        if (error != info_.track_error) {
            log(log_level::error, "ha: " + error +
                                      "; keepalived cannot be told this node's health, which is "
                                      "reported as not able to serve until the file can be written");
        }
        info_.track_error = error;
        last_written_ = -1;
        return false;
    }
    if (!info_.track_error.empty()) {
        log(log_level::info, "ha: " + path + " written again");
        info_.track_error.clear();
    }
    last_written_ = healthy ? 0 : 1;
    return true;
}

// "MASTER 150", and with the peer check a second line for `rampart ha
// status`: "peer BACKUP vip-not-held 1765000000" (the time of its last
// verified answer; 0 for none).
void ha_link::write_state_file() {
    const std::string path = cfg_->ha_pair->state_file(info_.node);
    std::string content = info_.state + " " + std::to_string(info_.priority) + "\n";
    if (info_.peer.enabled) {
        content += "peer " + info_.peer.state + (info_.peer.vip_held ? " vip-held " : " vip-not-held ") +
                   std::to_string(info_.peer.answered_unix) + "\n";
    }
    if (!write_file_atomically(path, content, 0644)) {
        log(log_level::warn, "ha: cannot write " + path + ": " + std::strerror(errno));
    }
}

// keepalived's VRRP process gone (a SIGKILL, a crash) while the VIP is on
// an interface here: nothing removes it, the peer takes over after three
// adverts, and both would hold it until keepalived came back. The master is
// the only one left who can, and removes it (and the IPv6 one) once the
// peer has had the time to take over (four adverts without keepalived). Only once keepalived was seen running
// through its pid file: a pid file never found (keepalived not started yet,
// or kept elsewhere) changes nothing.
void ha_link::guard_vip() {
    const config::ha& h = *cfg_->ha_pair;
    const auto local = ha::local_addresses();
    const auto here = [&](const config::network& n) {
        return std::find(local.begin(), local.end(), n.address) != local.end();
    };
    info_.vip_held = here(h.vip);
    const auto now = std::chrono::steady_clock::now();
    if (ha::keepalived_running(ha::keepalived_pid_files(h, info_.node))) {
        keepalived_seen_ = true;
        keepalived_missing_since_.reset();
        return;
    }
    if (!keepalived_seen_) {
        return;
    }
    if (!keepalived_missing_since_) {
        keepalived_missing_since_ = now;
    }
    // The peer takes over after three adverts and a skew (under one more):
    // until then this node keeps serving through the VIP it still holds.
    if (now - *keepalived_missing_since_ < 4 * h.advert_int) {
        return;
    }
    const config::ha_node* self = h.find_node(info_.node);
    const std::string ifname = self != nullptr && !self->interface.empty() ? self->interface : h.interface;
    std::vector<config::network> vips{h.vip};
    if (h.vip6) {
        vips.push_back(*h.vip6);
    }
    for (const auto& vip : vips) {
        if (!here(vip)) {
            continue;
        }
        const std::string error = ha::remove_address(ifname, vip);
        if (error.empty()) {
            ++info_.vip_removals;
            log(log_level::warn, "ha: keepalived is not running and " + vip.to_string() + " was still on " + ifname +
                                     ": removed it, so that only the peer holds it");
        } else {
            log(log_level::error, "ha: keepalived is not running and " + vip.to_string() + " is still on " + ifname +
                                      "; cannot remove it: " + error);
        }
    }
    const auto after = ha::local_addresses();
    info_.vip_held = std::find(after.begin(), after.end(), h.vip.address) != after.end();
}

// The track file is rewritten when the health changes, and once a second
// anyway (keepalived's init_file or an operator may have replaced it).
net::awaitable<void> ha_link::write_health(std::uint64_t epoch) {
    net::steady_timer timer(io_);
    auto last_full = std::chrono::steady_clock::time_point{};
    while (epoch == epoch_) {
        const bool ok = healthy_(*cfg_);
        const auto now = std::chrono::steady_clock::now();
        if (ok != info_.healthy || last_written_ != (ok ? 0 : 1) || now - last_full >= std::chrono::seconds(1)) {
            if (ok != info_.healthy && last_written_ != -1) {
                log(ok ? log_level::info : log_level::warn, std::string("ha: ") +
                                                                (ok ? "able to serve again" : "not able to serve") +
                                                                "; keepalived told through the track file");
            }
            info_.healthy = write_track_file(ok) && ok;
            last_full = now;
            if (fifo_ && inode_of(cfg_->ha_pair->notify_fifo(info_.node)) != fifo_inode_) {
                log(log_level::info, "ha: the notify FIFO was replaced; reopening it");
                fifo_.reset();
                open_fifo();
                if (fifo_) {
                    net::co_spawn(io_, read_notifications(epoch_),
                                  log_failure{"HA link: notification reader failed: "});
                }
            }
        }
        guard_vip();
        note_holders();
        timer.expires_after(cfg_->ha_pair->health.interval);
        co_await timer.async_wait(use_tuple);
    }
}

net::awaitable<void> ha_link::read_notifications(std::uint64_t epoch) {
    if (!fifo_) {
        co_return;
    }
    net::posix::stream_descriptor* fifo = fifo_.get();
    net::streambuf buffer(4096);
    while (epoch == epoch_ && fifo == fifo_.get()) {
        auto [ec, n] = co_await net::async_read_until(*fifo, buffer, '\n', use_tuple);
        if (ec || epoch != epoch_ || fifo != fifo_.get()) {
            // Closed by configure/stop, or a line longer than the buffer (not keepalived's).
            if (ec == net::error::not_found) {
                buffer.consume(buffer.size());
                continue;
            }
            co_return;
        }
        std::istream in(&buffer);
        std::string line;
        std::getline(in, line);
        on_line(line);
    }
}

// The peer check: every ha.peer_check.interval, the peer's admin listener
// is asked who holds the VIP. A failed check marks the peer down (state
// unknown) at once: what is exported is what was verified last interval,
// never an older answer.
net::awaitable<void> ha_link::check_peer(std::uint64_t epoch) {
    net::steady_timer timer(io_);
    while (epoch == epoch_) {
        const config::snapshot_ptr cfg = cfg_;
        const auto started = std::chrono::steady_clock::now();
        co_await ask_peer(*cfg);
        if (epoch != epoch_) {
            co_return;
        }
        timer.expires_at(started + cfg->ha_pair->peer_check.interval);
        co_await timer.async_wait(use_tuple);
    }
}

// One request, bounded by ha.peer_check.timeout from connect to the last
// byte of the answer; the result goes to info_.peer.
net::awaitable<void> ha_link::ask_peer(const config::snapshot& cfg) {
    const config::ha& h = *cfg.ha_pair;
    const config::ha_node* peer = h.peer_of(info_.node);
    error_code ec;
    const auto address = net::ip::make_address(peer->address, ec);
    if (ec || !cfg.gw.listen.admin) {
        peer_answered("the peer's address " + peer->address + " is not an IP address", "bad_answer");
        co_return;
    }
    const tcp::endpoint to(address, cfg.gw.listen.admin->port);
    tcp_socket socket(io_.get_executor());
    bool timed_out = false;
    net::steady_timer deadline(io_);
    deadline.expires_after(h.peer_check.timeout);
    deadline.async_wait([&](const error_code& e) {
        if (!e) {
            timed_out = true;
            error_code ignored;
            socket.close(ignored);
        }
    });
    const auto failed = [&](const std::string& what, const error_code& e) {
        if (timed_out) {
            peer_answered("no answer from " + peer->address + ":" + std::to_string(to.port()) + " within " +
                              std::to_string(h.peer_check.timeout.count()) + "ms" + " (" + what + ")",
                          "timeout");
        } else {
            peer_answered(what + " " + peer->address + ":" + std::to_string(to.port()) + ": " + e.message(),
                          what == "cannot connect to" ? "refused" : "bad_answer");
        }
    };
    auto [connect_ec] = co_await socket.async_connect(to);
    if (connect_ec) {
        failed("cannot connect to", connect_ec);
        co_return;
    }
    const std::string nonce = ha::random_nonce();
    const auto unix_now = ha::unix_seconds();
    http::request<http::empty_body> req{http::verb::get, "/api/ha/peer", 11};
    req.set(http::field::host, peer->address);
    req.set(ha::peer_auth_header, ha::sign_peer_request(h.peer_check.secret, info_.node, unix_now, nonce));
    req.keep_alive(false);
    auto [write_ec, written] = co_await http::async_write(socket, req, use_tuple);
    if (write_ec) {
        failed("cannot send to", write_ec);
        co_return;
    }
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(4096);
    parser.header_limit(4096);
    auto [read_ec, read] = co_await http::async_read(socket, buffer, parser, use_tuple);
    deadline.cancel();
    if (read_ec) {
        failed("no whole answer from", read_ec);
        co_return;
    }
    const auto& res = parser.get();
    if (res.result() == http::status::unauthorized) {
        peer_answered("the peer refused this node's proof (is ha.peer_check.secret_file the same on both nodes?)",
                      "unauthorized");
        co_return;
    }
    const auto view = ha::parse_peer_answer(res.body());
    if (res.result() != http::status::ok ||
        !ha::same_mac(res[ha::peer_mac_header], ha::sign_peer_answer(h.peer_check.secret, nonce, res.body()))) {
        peer_answered("the answer from " + peer->address + " (status " + std::to_string(res.result_int()) +
                          ") does not carry a valid proof",
                      "bad_answer");
        co_return;
    }
    if (!view || view->node != peer->name) {
        peer_answered("the answer from " + peer->address + " is not one of node " + peer->name, "bad_answer");
        co_return;
    }
    peer_info& p = info_.peer;
    if (p.up && view->state != p.state) {
        log(log_level::info, "ha: peer " + p.node + " VRRP " + p.state + " -> " + view->state);
    }
    const bool changed = !p.up || view->state != p.state || view->vip_held != p.vip_held;
    p.state = view->state;
    p.vip_held = view->vip_held;
    p.healthy = view->healthy;
    p.priority = view->priority;
    p.answered_at = std::chrono::steady_clock::now();
    p.answered_unix = unix_now;
    peer_answered("", "ok");
    note_holders();
    if (changed) {
        write_state_file();
    }
}

// Two holders, seen from here (this node, and the peer while it answers):
// logged when it starts, as an error, and when it ends. Called whenever
// either side's part may have changed.
void ha_link::note_holders() {
    const unsigned now = info_.vip_holders();
    if (now > 1 && logged_holders_ <= 1) {
        log(log_level::error, "ha: both nodes hold the VIP " + cfg_->ha_pair->vip.to_string() + " (this node " +
                                  info_.node + " is " + info_.state + ", peer " + info_.peer.node + " is " +
                                  info_.peer.state + "): VRRP adverts are not getting through between them");
    } else if (now <= 1 && logged_holders_ > 1) {
        log(log_level::info, "ha: one node holds the VIP again");
    }
    logged_holders_ = now;
}

// Records one check's result; logs when the peer goes from answering to not
// (with the reason) or back.
void ha_link::peer_answered(const std::string& error, const char* result) {
    peer_info& p = info_.peer;
    const std::string_view r = result;
    ++(r == "ok"             ? p.ok
       : r == "refused"      ? p.refused
       : r == "timeout"      ? p.timeout
       : r == "unauthorized" ? p.unauthorized
                             : p.bad_answer);
    const bool was_up = p.up;
    if (!error.empty()) {
        if (was_up || p.error != error) {
            log(log_level::warn, "ha: peer check of " + p.node + ": " + error);
        }
        p.up = false;
        p.state = "unknown";
        p.error = error;
        if (was_up) {
            write_state_file();
        }
        return;
    }
    if (!was_up) {
        log(log_level::info, "ha: peer " + p.node + " answers: " + p.state +
                                 (p.vip_held ? ", holds the VIP" : ", does not hold the VIP"));
    }
    p.up = true;
    p.error.clear();
}

void ha_link::on_line(const std::string& line) {
    const auto event = ha::parse_notify_line(line);
    if (!event || event->kind != "INSTANCE") {
        return;
    }
    info_.priority = event->priority;
    if (!event->state.empty() && event->state != info_.state) {
        log(event->state == "FAULT" ? log_level::warn : log_level::info,
            "ha: VRRP " + info_.state + " -> " + event->state + " (priority " + std::to_string(event->priority) + ")");
        info_.state = event->state;
        ++info_.transitions;
    }
    write_state_file();
}

} // namespace rampart::gateway
