// privileges.hpp without privileges: the worker sandbox in forked children
// (what it allows, that it kills on anything else, log and off modes), and
// sd_notify datagrams to a socket of our own. Capability dropping as root is
// tested against the real gateway (tests/integration/test_privileges.py).

#include "gateway/control/privileges.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

namespace gw = rampart::gateway;
using rampart::config::seccomp_mode;

namespace {

// Sanitizer runtimes make system calls of their own (thread start-up, deadly
// signals), so those checks are left to the plain build.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif

/// Runs `body` in a forked child, after sandbox_worker(mode); returns the
/// wait status. The child's return value is its exit code; it leaves with
/// exit_group, so no Catch2 or sanitizer exit handler runs in it.
int in_sandbox(seccomp_mode mode, const std::function<int()>& body, bool serve_files = false) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        // Catch2's fatal-signal handlers would report in the child.
        for (int sig : {SIGABRT, SIGSEGV, SIGSYS}) {
            ::signal(sig, SIG_DFL);
        }
        gw::sandbox_worker(mode, serve_files);
        // exit_group directly: sanitizers intercept _exit() to run their
        // leak check, which forks a tracer.
        ::syscall(SYS_exit_group, body());
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return status;
}

bool exited_ok(int status) {
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
bool killed_by(int status, int sig) {
    return WIFSIGNALED(status) && WTERMSIG(status) == sig;
}

/// What a worker does all day, in miniature.
int worker_like_calls() {
    const int event = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    std::uint64_t one_event = 1;
    if (event < 0 || ::write(event, &one_event, sizeof one_event) != sizeof one_event) {
        return 1;
    }
    std::uint64_t got = 0;
    if (::read(event, &got, sizeof got) != sizeof got || got != 1) {
        return 2;
    }
    ::close(event);
    for (int family : {AF_INET, AF_INET6}) {
        const int s = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s < 0) {
            return 3;
        }
        int one = 1;
        ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ::close(s);
    }
    void* p = ::mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || ::mprotect(p, 4096, PROT_NONE) != 0 || ::munmap(p, 1 << 20) != 0) {
        return 4;
    }
    std::array<unsigned char, 32> random{};
    if (::getrandom(random.data(), random.size(), 0) != static_cast<ssize_t>(random.size())) {
        return 5;
    }
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    // A free()d large block goes back with munmap, a small one may trim the heap.
    std::string big(8 << 20, 'x');
    big.clear();
    big.shrink_to_fit();
    return 0;
}

/// The capability sets of this process, through capget.
bool no_capabilities() {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3> data{};
    if (::syscall(SYS_capget, &header, data.data()) != 0) {
        return false;
    }
    for (const auto& d : data) {
        if (d.effective != 0 || d.permitted != 0 || d.inheritable != 0) {
            return false;
        }
    }
    return true;
}

/// A datagram socket bound at `address` (its length `len`), receiving.
int bound_datagram_socket(const sockaddr_un& address, socklen_t len) {
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&address), len) == 0);
    return fd;
}

std::string receive(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 2000) != 1) {
        return "(nothing within 2 s)";
    }
    std::array<char, 512> buffer{};
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    return n < 0 ? "(recv failed)" : std::string(buffer.data(), static_cast<std::size_t>(n));
}

} // namespace

TEST_CASE("a sandboxed worker keeps what it needs and has no capabilities", "[unit][gateway][privileges]") {
    CHECK(exited_ok(in_sandbox(seccomp_mode::enforce, worker_like_calls)));
    CHECK(exited_ok(in_sandbox(seccomp_mode::enforce, [] {
        // clone3 answers ENOSYS, so that glibc falls back to clone, whose
        // flags the filter can check (CLONE_THREAD only).
        errno = 0;
        const long rc = ::syscall(SYS_clone3, nullptr, 0);
        return rc == -1 && errno == ENOSYS ? 0 : 1;
    })));
    // Static routes: a root opened O_PATH, a file beneath it by openat2 (or
    // read-only openat), its size by fstat, its bytes by pread.
    const auto dir = std::filesystem::temp_directory_path() / ("rampart-sandbox-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    {
        std::FILE* f = std::fopen((dir / "file.txt").c_str(), "w");
        REQUIRE(f != nullptr);
        std::fputs("static", f);
        std::fclose(f);
    }
    CHECK(exited_ok(in_sandbox(
        seccomp_mode::enforce,
        [&dir] {
            const int root = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (root < 0) {
                return 1;
            }
            open_how how{};
            how.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
            how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
            long fd = ::syscall(SYS_openat2, root, "file.txt", &how, sizeof how);
            if (fd < 0 && errno == ENOSYS) {
                fd = ::openat(root, "file.txt", O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW);
            }
            struct stat st {};
            std::array<char, 6> bytes{};
            if (fd < 0 || ::fstat(static_cast<int>(fd), &st) != 0 || st.st_size != 6 ||
                ::pread(static_cast<int>(fd), bytes.data(), bytes.size(), 0) != 6 ||
                std::string(bytes.data(), bytes.size()) != "static") {
                return 2;
            }
            ::close(static_cast<int>(fd));
            const int plain = ::openat(root, "file.txt", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (plain < 0) {
                return 3;
            }
            ::close(plain);
            ::close(root);
            return 0;
        },
        true)));
    // Without a static route, not even a read-only open.
    CHECK(killed_by(in_sandbox(seccomp_mode::enforce,
                               [&dir] { return ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC) >= 0 ? 0 : 1; }),
                    SIGSYS));
    std::filesystem::remove_all(dir);
    if (!sanitized) {
        CHECK(exited_ok(in_sandbox(seccomp_mode::enforce, [] {
            int value = 0;
            std::thread t([&] { value = worker_like_calls() == 0 ? 42 : 1; });
            t.join();
            return value == 42 ? 0 : 1;
        })));
    }
}

TEST_CASE("the sandbox kills a worker for a call outside its list", "[unit][gateway][privileges]") {
    SECTION("opening a file for writing, or creating one") {
        // Reading is allowed with a static route; nothing else, even then.
        for (const int flags : {O_WRONLY, O_RDWR, O_RDONLY | O_CREAT, O_RDONLY | O_TRUNC, O_WRONLY | O_APPEND}) {
            INFO("flags " << flags);
            CHECK(killed_by(in_sandbox(
                                seccomp_mode::enforce,
                                [flags] { return ::open("/dev/null", flags | O_CLOEXEC, 0600) >= 0 ? 0 : 1; }, true),
                            SIGSYS));
        }
#ifdef SYS_open
        // The old open(2) system call stays out altogether.
        CHECK(killed_by(in_sandbox(
                            seccomp_mode::enforce,
                            [] { return ::syscall(SYS_open, "/dev/null", O_RDONLY | O_CLOEXEC) >= 0 ? 0 : 1; }, true),
                        SIGSYS));
#endif
    }
    SECTION("starting a process") {
        CHECK(killed_by(in_sandbox(seccomp_mode::enforce, [] { return ::fork() >= 0 ? 0 : 1; }), SIGSYS));
    }
    SECTION("a socket that is not TCP/IP") {
        CHECK(killed_by(
            in_sandbox(seccomp_mode::enforce, [] { return ::socket(AF_UNIX, SOCK_STREAM, 0) >= 0 ? 0 : 1; }), SIGSYS));
        CHECK(killed_by(
            in_sandbox(seccomp_mode::enforce, [] { return ::socket(AF_NETLINK, SOCK_RAW, 0) >= 0 ? 0 : 1; }), SIGSYS));
    }
    SECTION("executable memory") {
        CHECK(killed_by(in_sandbox(seccomp_mode::enforce,
                                   [] {
                                       void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_EXEC,
                                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                                       return p != MAP_FAILED ? 0 : 1;
                                   }),
                        SIGSYS));
    }
    SECTION("signalling another process") {
        const pid_t parent = ::getpid();
        CHECK(
            killed_by(in_sandbox(seccomp_mode::enforce, [parent] { return ::kill(parent, 0) == 0 ? 0 : 1; }), SIGSYS));
    }
    SECTION("abort() still reads as SIGABRT") {
        // Sanitizer runtimes take over deadly signals (sigaltstack and more).
        if (!sanitized) {
            CHECK(killed_by(in_sandbox(seccomp_mode::enforce, []() -> int { std::abort(); }), SIGABRT));
        }
    }
}

TEST_CASE("seccomp log and off let every call through", "[unit][gateway][privileges]") {
    const auto open_for_writing = [] {
        const int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
        return fd >= 0 ? 0 : 1;
    };
    CHECK(exited_ok(in_sandbox(seccomp_mode::log, open_for_writing)));
    CHECK(exited_ok(in_sandbox(seccomp_mode::off, open_for_writing)));
    // Capabilities are gone in every mode (capget is outside the list, so
    // this is checked without the filter).
    CHECK(exited_ok(in_sandbox(seccomp_mode::off, [] { return no_capabilities() ? 0 : 1; })));
}

TEST_CASE("notify_systemd sends one datagram to NOTIFY_SOCKET", "[unit][gateway][privileges]") {
    SECTION("abstract namespace ('@')") {
        const std::string name = "rampart-notify-test-" + std::to_string(::getpid());
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::memcpy(address.sun_path + 1, name.data(), name.size());
        const int fd =
            bound_datagram_socket(address, static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size()));
        ::setenv("NOTIFY_SOCKET", ("@" + name).c_str(), 1);
        gw::notify_systemd("READY=1");
        CHECK(receive(fd) == "READY=1");
        gw::notify_systemd("STATUS=serving\nSTOPPING=1");
        CHECK(receive(fd) == "STATUS=serving\nSTOPPING=1");
        ::close(fd);
    }
    SECTION("a path") {
        const auto path =
            std::filesystem::temp_directory_path() / ("rampart-notify-test-" + std::to_string(::getpid()) + ".sock");
        std::filesystem::remove(path);
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        REQUIRE(path.string().size() < sizeof address.sun_path);
        std::memcpy(address.sun_path, path.c_str(), path.string().size());
        const int fd = bound_datagram_socket(address, sizeof address);
        ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
        const std::string reloading = gw::reloading_state();
        gw::notify_systemd(reloading);
        CHECK(receive(fd) == reloading);
        ::close(fd);
        std::filesystem::remove(path);
    }
    SECTION("no NOTIFY_SOCKET, or a useless one: nothing happens") {
        ::unsetenv("NOTIFY_SOCKET");
        gw::notify_systemd("READY=1");
        ::setenv("NOTIFY_SOCKET", "relative/path", 1);
        gw::notify_systemd("READY=1");
        ::setenv("NOTIFY_SOCKET", "/nonexistent/rampart-notify.sock", 1);
        gw::notify_systemd("READY=1");
    }
    ::unsetenv("NOTIFY_SOCKET");
}

TEST_CASE("reloading_state carries CLOCK_MONOTONIC in microseconds", "[unit][gateway][privileges]") {
    timespec before{};
    ::clock_gettime(CLOCK_MONOTONIC, &before);
    const std::string state = gw::reloading_state();
    timespec after{};
    ::clock_gettime(CLOCK_MONOTONIC, &after);
    const std::string prefix = "RELOADING=1\nMONOTONIC_USEC=";
    REQUIRE(state.rfind(prefix, 0) == 0);
    const unsigned long long usec = std::stoull(state.substr(prefix.size()));
    const auto to_usec = [](const timespec& t) {
        return static_cast<unsigned long long>(t.tv_sec) * 1'000'000ULL +
               static_cast<unsigned long long>(t.tv_nsec) / 1000ULL;
    };
    CHECK(usec >= to_usec(before));
    CHECK(usec <= to_usec(after));
}

TEST_CASE("the master's capability sets", "[unit][gateway][privileges]") {
    const std::uint64_t effective = gw::capability_bit(CAP_NET_BIND_SERVICE) | gw::capability_bit(CAP_NET_ADMIN) |
                                    gw::capability_bit(CAP_SETUID) | gw::capability_bit(CAP_SETGID) |
                                    gw::capability_bit(CAP_KILL);
    CHECK(gw::master_effective_capabilities() == effective);
    CHECK(gw::master_permitted_capabilities() == (effective | gw::capability_bit(CAP_SETPCAP)));
    // /proc/<pid>/status prints these masks in hex: the integration test's numbers.
    CHECK(effective == 0x14e0);
    // Not running as root: a no-op.
    if (::geteuid() != 0) {
        gw::restrict_master_capabilities(rampart::config::snapshot{});
    }
}
