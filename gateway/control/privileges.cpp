#include "gateway/control/privileges.hpp"

#include "gateway/log.hpp"

#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace rampart::gateway {
namespace {

// ---------------------------------------------------------------------------
// Capabilities, through the raw system calls (glibc has no wrappers and
// libcap would add a dependency for four calls).
// ---------------------------------------------------------------------------

struct capability_sets {
    std::uint64_t effective = 0;
    std::uint64_t permitted = 0;
    std::uint64_t inheritable = 0;
};

bool get_capabilities(capability_sets& out) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3> data{};
    if (::syscall(SYS_capget, &header, data.data()) != 0) {
        return false;
    }
    out.effective = data[0].effective | std::uint64_t{data[1].effective} << 32;
    out.permitted = data[0].permitted | std::uint64_t{data[1].permitted} << 32;
    out.inheritable = data[0].inheritable | std::uint64_t{data[1].inheritable} << 32;
    return true;
}

bool set_capabilities(const capability_sets& sets) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3> data{};
    data[0].effective = static_cast<std::uint32_t>(sets.effective);
    data[1].effective = static_cast<std::uint32_t>(sets.effective >> 32);
    data[0].permitted = static_cast<std::uint32_t>(sets.permitted);
    data[1].permitted = static_cast<std::uint32_t>(sets.permitted >> 32);
    data[0].inheritable = static_cast<std::uint32_t>(sets.inheritable);
    data[1].inheritable = static_cast<std::uint32_t>(sets.inheritable >> 32);
    return ::syscall(SYS_capset, &header, data.data()) == 0;
}

/// The highest capability this kernel knows (PR_CAPBSET_READ says EINVAL past it).
int last_capability() {
    int cap = 0;
    while (cap < 63 && ::prctl(PR_CAPBSET_READ, cap + 1, 0, 0, 0) >= 0) {
        ++cap;
    }
    return cap;
}

/// Drops every capability not in `keep` from the bounding set (needs CAP_SETPCAP).
bool drop_bounding(std::uint64_t keep) {
    const int last = last_capability();
    for (int cap = 0; cap <= last; ++cap) {
        if ((keep & capability_bit(cap)) == 0 && ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1 &&
            ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            return false;
        }
    }
    return true;
}

std::string capability_names(std::uint64_t mask) {
    static constexpr std::array<std::pair<int, const char*>, 6> names{{
        {CAP_KILL, "kill"},
        {CAP_SETGID, "setgid"},
        {CAP_SETUID, "setuid"},
        {CAP_SETPCAP, "setpcap"},
        {CAP_NET_BIND_SERVICE, "net_bind_service"},
        {CAP_NET_ADMIN, "net_admin"},
    }};
    std::string out;
    for (const auto& [cap, name] : names) {
        if ((mask & capability_bit(cap)) != 0) {
            out += (out.empty() ? "" : ",");
            out += name;
        }
    }
    return out.empty() ? "none" : out;
}

/// Whether this process (uid 0, no CAP_DAC_*) can read `path` by its
/// permission bits alone; true when it cannot even tell (missing file).
bool readable_without_override(const std::string& path) {
    struct stat st {};
    if (path.empty() || ::stat(path.c_str(), &st) != 0) {
        return true;
    }
    if (st.st_uid == ::geteuid()) {
        return (st.st_mode & S_IRUSR) != 0;
    }
    if (st.st_gid == ::getegid()) {
        return (st.st_mode & S_IRGRP) != 0;
    }
    return (st.st_mode & S_IROTH) != 0;
}

void warn_unreadable_files(const config::snapshot& cfg) {
    std::vector<std::string> files{cfg.source_file};
    for (const auto& c : cfg.gw.tls_settings.certificates) {
        files.push_back(c.cert_file);
        files.push_back(c.key_file);
    }
    for (const auto& f : files) {
        if (readable_without_override(f)) {
            continue;
        }
        std::string message = f + " is not readable by its permission bits for uid 0 (owned by another user?)";
        message += "; without CAP_DAC_READ_SEARCH a reload could not read it again: chown root " + f;
        log(log_level::warn, message);
    }
}

[[noreturn]] void worker_fails(const std::string& what) {
    log(log_level::error, "worker sandbox: " + what + ": " + std::strerror(errno));
    ::_exit(70);
}

// ---------------------------------------------------------------------------
// The worker's seccomp filter.
//
// Found by running the whole integration suite with every worker under
// `strace -f` (and again in `log` mode), plus the code paths the suite does
// not reach (large allocations, abort, threads for an access log).
// Everything else kills the worker: a worker opens files only to read them
// (static routes), never execs, never forks, never creates a socket but TCP,
// never maps executable memory, never signals another process, never sleeps.
// ---------------------------------------------------------------------------

/// System calls allowed with any arguments, one group per reason. Seen in
/// the suite's traces unless marked "(path)": on a worker's code path that
/// the suite happens not to reach.
constexpr std::array allowed_syscalls{
    // the event loop: Asio's epoll reactor, its eventfd interrupter and timerfd;
    // poll checks a non-blocking connect's completion
    SCMP_SYS(epoll_create1),
    SCMP_SYS(epoll_ctl),
    SCMP_SYS(epoll_wait),
    SCMP_SYS(eventfd2),
    SCMP_SYS(timerfd_create),
    SCMP_SYS(timerfd_settime),
    SCMP_SYS(poll),
    // clients and app servers: accept (accept4: path), connect, shutdown, addresses, options
    SCMP_SYS(accept),
    SCMP_SYS(accept4),
    SCMP_SYS(connect),
    SCMP_SYS(shutdown),
    SCMP_SYS(getsockname),
    SCMP_SYS(getpeername),
    SCMP_SYS(setsockopt),
    SCMP_SYS(getsockopt),
    // data both ways: TLS records, bodies, the eventfd, stderr (readv, writev, recvmsg:
    // path, Asio's buffer sequences), and closing what is done
    SCMP_SYS(read),
    SCMP_SYS(write),
    SCMP_SYS(readv),
    SCMP_SYS(writev),
    SCMP_SYS(recvfrom),
    SCMP_SYS(sendto),
    SCMP_SYS(recvmsg),
    SCMP_SYS(sendmsg),
    SCMP_SYS(close),
    // memory: malloc's heap; large blocks and thread stacks (path; mmap and
    // mprotect are below, never executable)
    SCMP_SYS(brk),
    SCMP_SYS(munmap),
    SCMP_SYS(mremap),
    SCMP_SYS(madvise),
    // signals: the SIGTERM that starts a drain; signal_set and abort() masks (path)
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(rt_sigaction),
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(restart_syscall),
    // randomness (OpenSSL reseeds after fork), identity (log lines); clocks (path: the
    // vDSO answers them unless the clock source forces a real system call)
    SCMP_SYS(getrandom),
    SCMP_SYS(getpid),
    SCMP_SYS(gettid),
    SCMP_SYS(clock_gettime),
    SCMP_SYS(gettimeofday),
    // threads (path: an access-log writer): wait/wake, glibc's per-thread state, exit
    SCMP_SYS(futex),
    SCMP_SYS(set_robust_list),
    SCMP_SYS(rseq),
    SCMP_SYS(exit),
    // the end of the worker
    SCMP_SYS(exit_group),
    // a descriptor opened before the sandbox (path: glibc stdio asks its block size)
    SCMP_SYS(fstat),
};

struct filter_deleter {
    void operator()(void* ctx) const { seccomp_release(ctx); }
};
using filter_ptr = std::unique_ptr<void, filter_deleter>;

/// Adds one rule; errno-style failure from libseccomp becomes a worker exit.
void add_rule(const filter_ptr& filter, std::uint32_t action, int nr, std::initializer_list<scmp_arg_cmp> args = {}) {
    const int rc = seccomp_rule_add_array(filter.get(), action, nr, static_cast<unsigned>(args.size()),
                                          args.size() == 0 ? nullptr : args.begin());
    if (rc != 0) {
        errno = -rc;
        char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
        const std::string what = "seccomp rule for " + std::string(name != nullptr ? name : std::to_string(nr));
        std::free(name);
        worker_fails(what);
    }
}

void install_filter(config::seccomp_mode mode, bool serve_files) {
    const std::uint32_t deny = mode == config::seccomp_mode::log ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
    filter_ptr filter(seccomp_init(deny));
    if (!filter) {
        errno = ENOMEM;
        worker_fails("seccomp_init");
    }
    // Another architecture's system-call table (int 0x80, x32) is never
    // legitimate here, in either mode.
    seccomp_attr_set(filter.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    // Every thread, should one exist already.
    seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_TSYNC, 1);
    // A binary tree instead of a linear list: the hot calls are not all first.
    seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2);

    const std::uint32_t allow = SCMP_ACT_ALLOW;
    for (const int nr : allowed_syscalls) {
        add_rule(filter, allow, nr);
    }
    // Sockets: TCP over IPv4 and IPv6 only (app servers); no netlink, no AF_UNIX.
    add_rule(filter, allow, SCMP_SYS(socket), {SCMP_A0(SCMP_CMP_EQ, AF_INET)});
    add_rule(filter, allow, SCMP_SYS(socket), {SCMP_A0(SCMP_CMP_EQ, AF_INET6)});
    // ioctl: Asio's non-blocking switch only.
    add_rule(filter, allow, SCMP_SYS(ioctl), {SCMP_A1(SCMP_CMP_EQ, FIONBIO)});
    // Memory may be mapped and protected, never executable (W^X: no code
    // can be injected and run).
    add_rule(filter, allow, SCMP_SYS(mmap), {SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)});
    add_rule(filter, allow, SCMP_SYS(mprotect), {SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)});
    // fstat() of an open descriptor (glibc sends it as newfstatat with
    // AT_EMPTY_PATH); stat of a path name stays out.
    add_rule(filter, allow, SCMP_SYS(newfstatat), {SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH)});
    // openat (glibc's open(): a static route's root, and the walk that
    // replaces openat2 on old kernels) for reading only: no O_WRONLY, O_RDWR,
    // O_CREAT or O_TRUNC (O_TMPFILE needs write access). openat2 takes its
    // flags in a struct in memory, out of a filter's reach like clone3's, so
    // it is in the list above whole; RESOLVE_BENEATH in static_files.cpp,
    // not this filter, keeps what it opens under a root. Either way a worker
    // can read what gateway.user can read.
    // Only a worker whose configuration has a static route (or
    // gateway.tls.acme_webroot) opens files.
    if (serve_files) {
        add_rule(filter, allow, SCMP_SYS(openat2));
        add_rule(filter, allow, SCMP_SYS(pread64));
        add_rule(filter, allow, SCMP_SYS(openat),
                 {SCMP_A2(SCMP_CMP_MASKED_EQ, O_WRONLY | O_RDWR | O_CREAT | O_TRUNC, 0)});
    }
    // Threads, never processes: clone only with CLONE_THREAD. clone3 passes
    // its flags in memory, out of a filter's reach, so it fails with ENOSYS
    // and glibc falls back to clone.
    add_rule(filter, allow, SCMP_SYS(clone), {SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)});
    add_rule(filter, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3));
    // The access-log writer thread names itself (visible in top -H, ps -L).
    add_rule(filter, allow, SCMP_SYS(prctl), {SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME)});
    // abort() (a failed assert, std::terminate) signals its own process: let it, so
    // the death reads SIGABRT, not SIGSYS.
    add_rule(filter, allow, SCMP_SYS(tgkill), {SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(::getpid()))});

    if (const int rc = seccomp_load(filter.get()); rc != 0) {
        errno = -rc;
        worker_fails("loading the seccomp filter");
    }
}

} // namespace

std::uint64_t master_effective_capabilities() {
    return capability_bit(CAP_NET_BIND_SERVICE) | capability_bit(CAP_NET_ADMIN) | capability_bit(CAP_SETUID) |
           capability_bit(CAP_SETGID) | capability_bit(CAP_KILL);
}

std::uint64_t master_permitted_capabilities() {
    return master_effective_capabilities() | capability_bit(CAP_SETPCAP);
}

// Why uid 0 stays and these capabilities are enough: the master re-reads the
// configuration and the keys on a reload. A key is 0600 or 0400 (certs
// refuses one readable by group or others); owned by root, its owner reads
// it without CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH (checked: 0600 root
// readable, 0600 nobody refused, with exactly these sets). So keeping uid 0
// keeps that ability, while a compromised master cannot read other users'
// files, load modules, trace processes or remount anything.
void restrict_master_capabilities(const config::snapshot& cfg) {
    if (::geteuid() != 0) {
        log(log_level::debug, "not running as root: capabilities left as they are");
        return;
    }
    capability_sets now;
    if (!get_capabilities(now)) {
        throw std::runtime_error(std::string("capget: ") + std::strerror(errno));
    }
    // A service manager may have handed us fewer (CapabilityBoundingSet=):
    // keep what is both wanted and held.
    const std::uint64_t permitted = now.permitted & master_permitted_capabilities();
    const std::uint64_t effective = now.permitted & master_effective_capabilities();
    if ((now.effective & capability_bit(CAP_SETPCAP)) != 0) {
        if (!drop_bounding(permitted)) {
            throw std::runtime_error(std::string("dropping capabilities from the bounding set: ") +
                                     std::strerror(errno));
        }
    } else {
        log(log_level::warn, "no CAP_SETPCAP: the capability bounding set stays as it is");
    }
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
        throw std::runtime_error(std::string("clearing ambient capabilities: ") + std::strerror(errno));
    }
    if (!set_capabilities({effective, permitted, 0})) {
        throw std::runtime_error(std::string("capset: ") + std::strerror(errno));
    }
    warn_unreadable_files(cfg);
    log(log_level::info, "master capabilities: " + capability_names(effective) +
                             ((permitted & ~effective) != 0 ? " (+" + capability_names(permitted & ~effective) +
                                                                  " permitted, for the workers' bounding set)"
                                                            : ""));
}

void clear_bounding_set() {
    capability_sets now;
    if (!get_capabilities(now) || (now.permitted & capability_bit(CAP_SETPCAP)) == 0) {
        return;
    }
    now.effective |= capability_bit(CAP_SETPCAP);
    if (!set_capabilities(now)) {
        worker_fails("raising CAP_SETPCAP");
    }
    if (!drop_bounding(0)) {
        worker_fails("emptying the capability bounding set");
    }
}

void sandbox_worker(config::seccomp_mode mode, bool serve_files) {
    // After setuid() away from root the kernel has already emptied the
    // permitted and effective sets; a worker that stays root (user "") loses
    // them here. Ambient goes with the permitted set; cleared explicitly all
    // the same.
    if (!set_capabilities({})) {
        worker_fails("capset");
    }
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
        worker_fails("clearing ambient capabilities");
    }
    capability_sets left;
    if (!get_capabilities(left) || left.effective != 0 || left.permitted != 0 || left.inheritable != 0) {
        worker_fails("capabilities left after capset");
    }
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        worker_fails("PR_SET_NO_NEW_PRIVS");
    }
    if (mode != config::seccomp_mode::off) {
        install_filter(mode, serve_files);
    }
}

void notify_systemd(std::string_view state) {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (path == nullptr || *path == '\0') {
        return;
    }
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    const std::size_t length = std::strlen(path);
    if ((path[0] != '/' && path[0] != '@') || length >= sizeof address.sun_path) {
        log(log_level::warn, "NOTIFY_SOCKET is not an AF_UNIX socket path; not notifying the service manager");
        return;
    }
    std::memcpy(address.sun_path, path, length);
    if (path[0] == '@') {
        address.sun_path[0] = '\0'; // abstract namespace
    }
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        log(log_level::warn, std::string("sd_notify socket: ") + std::strerror(errno));
        return;
    }
    const auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length);
    if (::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&address), size) !=
        static_cast<ssize_t>(state.size())) {
        log(log_level::warn, std::string("sd_notify to ") + path + ": " + std::strerror(errno));
    }
    ::close(fd);
}

std::string reloading_state() {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const auto usec = static_cast<unsigned long long>(now.tv_sec) * 1'000'000ULL +
                      static_cast<unsigned long long>(now.tv_nsec) / 1000ULL;
    return "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec);
}

} // namespace rampart::gateway
