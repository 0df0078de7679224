#include "gateway/proxy/access_log.hpp"

#include "gateway/log.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <csignal>
#include <cstring>
#include <ctime>
#include <stdexcept>

namespace rampart::gateway {

// ---------------------------------------------------------------- formatting

namespace {

void append_u64(std::string& out, std::uint64_t v) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, end);
}

/// Milliseconds with three decimals (microsecond resolution): "12.345".
void append_ms(std::string& out, std::chrono::nanoseconds d) {
    const std::uint64_t us = static_cast<std::uint64_t>(std::max<std::int64_t>(0, d.count() / 1000));
    append_u64(out, us / 1000);
    const unsigned frac = static_cast<unsigned>(us % 1000);
    out += '.';
    out += static_cast<char>('0' + frac / 100);
    out += static_cast<char>('0' + frac / 10 % 10);
    out += static_cast<char>('0' + frac % 10);
}

void append_digits(std::string& out, unsigned v, int width) {
    char buf[8];
    for (int i = width - 1; i >= 0; --i) {
        buf[i] = static_cast<char>('0' + v % 10);
        v /= 10;
    }
    out.append(buf, static_cast<std::size_t>(width));
}

/// Length of the valid UTF-8 sequence at the start of `s`, or 0 (RFC 3629:
/// no overlong forms, no surrogates, nothing above U+10FFFF).
std::size_t utf8_sequence(std::string_view s) {
    const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    const auto cont = [&](std::size_t i) { return i < s.size() && (b(i) & 0xc0) == 0x80; };
    const unsigned char c = b(0);
    if (c >= 0xc2 && c <= 0xdf) {
        return cont(1) ? 2 : 0;
    }
    if (c >= 0xe0 && c <= 0xef) {
        if (!cont(1) || !cont(2)) {
            return 0;
        }
        if ((c == 0xe0 && b(1) < 0xa0) || (c == 0xed && b(1) > 0x9f)) {
            return 0;
        }
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (!cont(1) || !cont(2) || !cont(3)) {
            return 0;
        }
        if ((c == 0xf0 && b(1) < 0x90) || (c == 0xf4 && b(1) > 0x8f)) {
            return 0;
        }
        return 4;
    }
    return 0;
}

void append_string_field(std::string& out, std::string_view key, std::string_view value, std::size_t max) {
    out += ",\"";
    out += key;
    out += "\":\"";
    append_json_string(out, value, max);
    out += '"';
}

void append_cstring_or_null(std::string& out, std::string_view key, const char* value) {
    if (value == nullptr) {
        out += ",\"";
        out += key;
        out += "\":null";
    } else {
        append_string_field(out, key, value, 64);
    }
}

} // namespace

void append_json_string(std::string& out, std::string_view text, std::size_t max) {
    static constexpr char hex[] = "0123456789abcdef";
    std::size_t used = 0;
    std::size_t i = 0;
    while (i < text.size()) {
        const auto c = static_cast<unsigned char>(text[i]);
        char escaped[6];
        std::size_t n = 0;
        std::size_t consumed = 1;
        const char* raw = nullptr;
        if (c == '"' || c == '\\') {
            escaped[0] = '\\';
            escaped[1] = static_cast<char>(c);
            n = 2;
        } else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') {
            escaped[0] = '\\';
            escaped[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : c == '\b' ? 'b' : 'f';
            n = 2;
        } else if (c >= 0x20 && c < 0x7f) {
            raw = text.data() + i;
            n = 1;
        } else {
            const std::size_t len = c >= 0x80 ? utf8_sequence(text.substr(i)) : 0;
            // U+0080..U+009F (C2 80..C2 9F) are the C1 controls: some
            // terminals act on them, so they are escaped like C0 ones.
            const bool c1 = len == 2 && c == 0xc2 && static_cast<unsigned char>(text[i + 1]) < 0xa0;
            if (len > 0 && !c1) {
                raw = text.data() + i;
                n = len;
                consumed = len;
            } else {
                // A control character, DEL, or a byte outside valid UTF-8:
                // \u00XX, as if the byte were a Latin-1 character.
                unsigned v = c;
                if (c1) {
                    v = static_cast<unsigned char>(text[i + 1]);
                    consumed = 2;
                }
                std::memcpy(escaped, "\\u00", 4);
                escaped[4] = hex[v >> 4];
                escaped[5] = hex[v & 0xf];
                n = 6;
            }
        }
        if (used + n > max) {
            return;
        }
        out.append(raw != nullptr ? raw : escaped, n);
        used += n;
        i += consumed;
    }
}

void append_rfc3339(std::string& out, std::chrono::system_clock::time_point t) {
    using namespace std::chrono;
    const auto ms = floor<milliseconds>(t);
    const auto day = floor<days>(ms);
    const year_month_day ymd{day};
    const hh_mm_ss<milliseconds> hms{ms - day};
    append_digits(out, static_cast<unsigned>(static_cast<int>(ymd.year())), 4);
    out += '-';
    append_digits(out, static_cast<unsigned>(ymd.month()), 2);
    out += '-';
    append_digits(out, static_cast<unsigned>(ymd.day()), 2);
    out += 'T';
    append_digits(out, static_cast<unsigned>(hms.hours().count()), 2);
    out += ':';
    append_digits(out, static_cast<unsigned>(hms.minutes().count()), 2);
    out += ':';
    append_digits(out, static_cast<unsigned>(hms.seconds().count()), 2);
    out += '.';
    append_digits(out, static_cast<unsigned>(hms.subseconds().count()), 3);
    out += 'Z';
}

// The bounded fields add up to well under access_line_max: path 2048, host
// 256, request id 128 (validated), method 32, client and upstream 64 each,
// TLS names 64 each, the basic_auth user 256, numbers and keys about 340.
void format_access_line(const access_record& r, std::string& out) {
    out += "{\"time\":\"";
    append_rfc3339(out, r.time);
    out += '"';
    append_string_field(out, "client", r.client, 64);
    append_string_field(out, "method", r.method, 32);
    append_string_field(out, "host", r.host, access_host_max);
    append_string_field(out, "path", r.path, access_path_max);
    out += ",\"status\":";
    append_u64(out, r.status);
    out += ",\"bytes_sent\":";
    append_u64(out, r.bytes_sent);
    out += ",\"bytes_received\":";
    append_u64(out, r.bytes_received);
    out += ",\"request_time_ms\":";
    append_ms(out, r.request_time);
    append_string_field(out, "upstream", r.upstream, 64);
    out += ",\"upstream_time_ms\":";
    if (r.upstream_time) {
        append_ms(out, *r.upstream_time);
    } else {
        out += "null";
    }
    append_cstring_or_null(out, "protocol", r.protocol);
    append_cstring_or_null(out, "tls_version", r.tls_version);
    append_cstring_or_null(out, "cipher", r.cipher);
    out += ",\"resumed\":";
    out += r.tls_version == nullptr ? "null" : r.resumed ? "true" : "false";
    append_string_field(out, "request_id", r.request_id, 128);
    out += ",\"retries\":";
    append_u64(out, r.retries);
    if (!r.user.empty()) {
        append_string_field(out, "user", r.user, 256); // a configured name: printable ASCII, at most 255
    }
    out += "}\n";
}

namespace {

// nginx's escaping of its log variables: '"', '\\', control characters and
// bytes from 0x7f become \xHH. At most `max` bytes of output, never cut
// inside an escape; "-" for an empty value when `dash`.
void append_escaped(std::string& out, std::string_view text, std::size_t max, bool dash = true) {
    if (text.empty() && dash) {
        out += '-';
        return;
    }
    static constexpr char hex[] = "0123456789ABCDEF";
    std::size_t used = 0;
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        const bool plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
        const std::size_t need = plain ? 1 : 4;
        if (used + need > max) {
            return;
        }
        if (plain) {
            out += ch;
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        }
        used += need;
    }
}

constexpr const char* month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

} // namespace

void format_combined_line(const access_record& r, std::string& out) {
    using namespace std::chrono;
    append_escaped(out, r.client, 64);
    out += " - ";
    append_escaped(out, r.user, 256);
    const auto s = floor<seconds>(r.time);
    const auto day = floor<days>(s);
    const year_month_day ymd{day};
    const hh_mm_ss<seconds> hms{s - day};
    out += " [";
    append_digits(out, static_cast<unsigned>(ymd.day()), 2);
    out += '/';
    out += month_names[static_cast<unsigned>(ymd.month()) - 1];
    out += '/';
    append_digits(out, static_cast<unsigned>(static_cast<int>(ymd.year())), 4);
    out += ':';
    append_digits(out, static_cast<unsigned>(hms.hours().count()), 2);
    out += ':';
    append_digits(out, static_cast<unsigned>(hms.minutes().count()), 2);
    out += ':';
    append_digits(out, static_cast<unsigned>(hms.seconds().count()), 2);
    out += " +0000] \"";
    if (r.method.empty()) {
        out += '-';
    } else {
        append_escaped(out, r.method, 32);
        out += ' ';
        append_escaped(out, r.path, access_path_max);
        out += ' ';
        const std::string_view protocol = r.protocol;
        out += protocol == "h2" ? "HTTP/2.0" : protocol == "http/1.0" ? "HTTP/1.0" : "HTTP/1.1";
    }
    out += "\" ";
    append_u64(out, r.status);
    out += ' ';
    append_u64(out, r.bytes_sent);
    out += " \"";
    append_escaped(out, r.referer, 512);
    out += "\" \"";
    append_escaped(out, r.user_agent, 512);
    out += "\"\n";
}

void append_syslog_header(std::string& out, unsigned facility, std::chrono::system_clock::time_point now,
                          std::string_view hostname, long pid) {
    out += '<';
    append_u64(out, facility * 8 + 6);
    out += ">1 ";
    append_rfc3339(out, now);
    out += ' ';
    out += hostname.empty() ? std::string_view("-") : hostname.substr(0, 255);
    out += " rampart ";
    append_u64(out, static_cast<std::uint64_t>(pid));
    out += " access - ";
}

int open_access_log(const config::access_log& settings) {
    if (!settings.enabled) {
        return -1;
    }
    if (settings.path == "syslog") {
        // A datagram socket, connected now (the workers' sandbox allows no
        // new AF_UNIX socket; it allows connect() again, when the syslog
        // daemon was restarted). One message per line.
        sockaddr_un to{};
        to.sun_family = AF_UNIX;
        if (settings.syslog_socket.size() >= sizeof to.sun_path) {
            throw std::runtime_error("access log: syslog socket path too long: " + settings.syslog_socket);
        }
        std::memcpy(to.sun_path, settings.syslog_socket.c_str(), settings.syslog_socket.size() + 1);
        const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
            const std::string why = std::strerror(errno);
            if (fd >= 0) {
                ::close(fd);
            }
            throw std::runtime_error("access log: cannot reach syslog at " + settings.syslog_socket + ": " + why);
        }
        return fd;
    }
    if (settings.path == "stdout") {
        const int fd = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
            throw std::runtime_error(std::string("access log: cannot use stdout: ") + std::strerror(errno));
        }
        return fd;
    }
    const int fd = ::open(settings.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0) {
        throw std::runtime_error("access log: cannot open " + settings.path + ": " + std::strerror(errno));
    }
    return fd;
}

// ---------------------------------------------------------------- the ring

namespace {

long futex(std::atomic<std::uint32_t>& word, int op, std::uint32_t value, const timespec* timeout) {
    static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
    return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, value, timeout, nullptr, 0);
}

/// While lines keep coming, the writer looks at the ring this often.
constexpr std::chrono::milliseconds flush_interval{50};
/// stop() waits this long for the last lines to be written.
constexpr std::chrono::seconds stop_timeout{3};
/// Bytes per write to a regular file (whole lines); a pipe or terminal gets
/// at most PIPE_BUF, so lines from several workers never mix.
constexpr std::size_t file_batch = 256 * 1024;

timespec to_timespec(std::chrono::nanoseconds d) {
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(d.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(d.count() % 1'000'000'000);
    return ts;
}

} // namespace

// Positions count bytes since the start and only grow; `head - tail` is the
// fill. The worker writes head (release) after copying a line in; the writer
// writes tail (release) after the bytes reached the kernel. Each side reads
// the other's position with acquire, so the bytes between them are settled.
struct access_log::ring {
    ring(int fd_, std::size_t capacity, std::atomic<std::uint64_t>& dropped_, std::atomic<std::uint32_t>* mid_line_,
         std::string syslog_socket_)
        : fd(fd_), size(capacity), mask(capacity - 1), data(new char[capacity]), dropped(&dropped_),
          mid_line(mid_line_ != nullptr ? mid_line_ : &own_mid_line), syslog_socket(std::move(syslog_socket_)) {}
    ~ring() {
        if (fd >= 0) {
            ::close(fd);
        }
    }

    const int fd;
    const std::size_t size;
    const std::size_t mask;
    const std::unique_ptr<char[]> data;
    std::atomic<std::uint64_t>* const dropped;
    std::atomic<std::uint32_t> own_mid_line{0};
    std::atomic<std::uint32_t>* const mid_line; ///< 1: the file ends inside a line (see the constructor)
    const std::string syslog_socket;            ///< "" unless each line is a datagram to this socket

    alignas(64) std::atomic<std::uint64_t> head{0}; ///< written by the worker
    alignas(64) std::atomic<std::uint64_t> tail{0}; ///< written by the writer thread
    alignas(64) std::atomic<std::uint32_t> wake{0}; ///< futex word: bumped to wake the writer
    std::atomic<bool> sleeping{false};              ///< the writer waits with no timeout
    std::atomic<bool> stopping{false};
    std::atomic<std::uint32_t> done{0}; ///< futex word: 1 once the writer returned

    bool failing = false;        ///< writer thread only: the last write failed (reported once)
    bool ended_mid_line = false; ///< writer thread only: its last write stopped inside a line (short)

    void wake_writer() {
        wake.fetch_add(1, std::memory_order_seq_cst);
        futex(wake, FUTEX_WAKE_PRIVATE, 1, nullptr);
    }

    // Producer side (the worker's thread). Returns false when the line does
    // not fit: it is dropped, never waited for.
    bool push(std::string_view line) {
        const std::uint64_t h = head.load(std::memory_order_relaxed);
        const std::uint64_t t = tail.load(std::memory_order_acquire);
        const std::size_t fill = static_cast<std::size_t>(h - t);
        if (line.size() > size - fill) {
            return false;
        }
        const std::size_t at = static_cast<std::size_t>(h) & mask;
        const std::size_t first = std::min(line.size(), size - at);
        std::memcpy(data.get() + at, line.data(), first);
        std::memcpy(data.get(), line.data() + first, line.size() - first);
        head.store(h + line.size(), std::memory_order_seq_cst);
        // Wake the writer when it sleeps with nothing to do, or when this
        // line filled a quarter of the ring (three quarters stay free for
        // the time the writer takes to be scheduled): otherwise it comes by
        // on its own.
        const bool crossed = fill < size / 4 && fill + line.size() >= size / 4;
        if (crossed || (sleeping.load(std::memory_order_seq_cst) && sleeping.exchange(false))) {
            wake_writer();
        }
        return true;
    }

    enum class drained { nothing, emptied, more };

    // Writer side, path: syslog: each line (without its '\n') is one
    // datagram. A syslog daemon that was restarted has a new socket under
    // the same name: the descriptor connects to it again, once per line.
    drained send_datagrams(int rounds) {
        bool wrote = false;
        for (int round = 0; round < rounds * 64; ++round) {
            const std::uint64_t h = head.load(std::memory_order_acquire);
            const std::uint64_t t = tail.load(std::memory_order_relaxed);
            if (h == t) {
                return wrote ? drained::emptied : drained::nothing;
            }
            std::size_t n = 0; // every pushed line ends with '\n'
            while (n < h - t && data[static_cast<std::size_t>(t + n) & mask] != '\n') {
                ++n;
            }
            const std::size_t at = static_cast<std::size_t>(t) & mask;
            const std::size_t first = std::min(n, size - at);
            iovec iov[2] = {{data.get() + at, first}, {data.get(), n - first}};
            msghdr message{};
            message.msg_iov = iov;
            message.msg_iovlen = n > first ? 2 : 1;
            ssize_t w = -1;
            bool reconnected = false;
            for (int attempt = 0; attempt < 8; ++attempt) { // bounded: EINTR, one reconnection
                // Never waits: a syslog daemon that stopped reading costs
                // lines (counted), not a worker that cannot finish its drain.
                w = ::sendmsg(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w >= 0) {
                    break;
                }
                if (errno == EINTR) {
                    continue;
                }
                if ((errno == ECONNREFUSED || errno == ENOTCONN) && !reconnected) {
                    reconnected = true;
                    sockaddr_un to{};
                    to.sun_family = AF_UNIX;
                    std::memcpy(to.sun_path, syslog_socket.c_str(),
                                std::min(syslog_socket.size() + 1, sizeof to.sun_path - 1));
                    if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) {
                        continue;
                    }
                }
                break;
            }
            if (w < 0) {
                if (!failing) {
                    failing = true;
                    log(log_level::error, "access log: syslog at " + syslog_socket + ": " + std::strerror(errno) +
                                              "; lines are dropped and counted until it takes them");
                }
                dropped->fetch_add(1, std::memory_order_relaxed);
            } else {
                if (failing) {
                    failing = false;
                    log(log_level::info, "access log: syslog takes lines again");
                }
                wrote = true;
            }
            tail.store(t + n + 1, std::memory_order_release);
        }
        return drained::more;
    }

    // Writer side. Writes what the ring holds, in at most `rounds` batches
    // so that a busy worker cannot keep the writer from checking `stopping`.
    // nothing: the ring was empty; emptied: it was written out; more: the
    // rounds ran out with lines left.
    drained drain(bool regular_file, int rounds) {
        bool wrote = false;
        for (int round = 0; round < rounds; ++round) {
            const std::uint64_t h = head.load(std::memory_order_acquire);
            const std::uint64_t t = tail.load(std::memory_order_relaxed);
            if (h == t) {
                return wrote ? drained::emptied : drained::nothing;
            }
            std::size_t n = static_cast<std::size_t>(h - t);
            const std::size_t batch = regular_file ? file_batch : PIPE_BUF;
            if (n > batch) {
                // Whole lines only: cut after the last '\n' within the batch
                // (there is one: no line is longer than PIPE_BUF).
                std::size_t cut = batch;
                while (cut > 0 && data[static_cast<std::size_t>(t + cut - 1) & mask] != '\n') {
                    --cut;
                }
                n = cut > 0 ? cut : batch;
            }
            const std::size_t at = static_cast<std::size_t>(t) & mask;
            const std::size_t first = std::min(n, size - at);
            iovec iov[2] = {{data.get() + at, first}, {data.get(), n - first}};
            if (mid_line->load(std::memory_order_acquire) != 0 && ::write(fd, "\n", 1) == 1) {
                // The file ends inside a line a full disk cut short (this
                // writer's or another worker's): end it, so the lines written
                // from now on each stand alone.
                mid_line->store(0, std::memory_order_release);
            }
            const ssize_t w = ::writev(fd, iov, n > first ? 2 : 1);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                // A non-blocking descriptor that is full: come back later.
                const timespec ts = to_timespec(std::chrono::milliseconds(10));
                futex(wake, FUTEX_WAIT_PRIVATE, wake.load(), &ts);
                continue;
            }
            if (w < 0) {
                if (ended_mid_line) {
                    // The rest of a line a short write began is lost with
                    // these: the file ends inside that line.
                    mid_line->store(1, std::memory_order_release);
                    ended_mid_line = false;
                }
                // The lines are lost (disk full, a closed pipe): count them,
                // say so once, and keep the ring moving.
                if (!failing) {
                    failing = true;
                    log(log_level::error, std::string("access log: write failed: ") + std::strerror(errno) +
                                              "; lines are dropped and counted until writes succeed");
                }
                std::uint64_t lines = 0;
                for (std::size_t i = 0; i < n; ++i) {
                    lines += data[static_cast<std::size_t>(t + i) & mask] == '\n' ? 1 : 0;
                }
                dropped->fetch_add(lines, std::memory_order_relaxed);
                tail.store(t + n, std::memory_order_release);
                continue;
            }
            if (failing) {
                failing = false;
                log(log_level::info, "access log: writes succeed again");
            }
            ended_mid_line = data[static_cast<std::size_t>(t + static_cast<std::uint64_t>(w) - 1) & mask] != '\n';
            tail.store(t + static_cast<std::uint64_t>(w), std::memory_order_release);
            wrote = true;
        }
        return drained::more;
    }

    void run() {
        ::prctl(PR_SET_NAME, "rampart-alog", 0, 0, 0);
        struct stat st {};
        const bool regular_file = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
        const timespec interval = to_timespec(flush_interval);
        for (;;) {
            const std::uint32_t seen = wake.load(std::memory_order_seq_cst);
            const bool datagrams = !syslog_socket.empty();
            const drained result = datagrams ? send_datagrams(64) : drain(regular_file, 64);
            if (stopping.load(std::memory_order_acquire)) {
                // The worker pushes nothing after setting stopping: this
                // drain sees every line it queued.
                for (int i = 0; i < 1024 && head.load(std::memory_order_acquire) != tail.load(); ++i) {
                    datagrams ? send_datagrams(64) : drain(regular_file, 64);
                }
                break;
            }
            if (result == drained::more) {
                continue; // more than one drain's worth: go on at once
            }
            if (result == drained::emptied) {
                // Lines are flowing: come back in a moment rather than wake
                // for each one (the worker wakes this wait early when the
                // ring fills a quarter).
                futex(wake, FUTEX_WAIT_PRIVATE, seen, &interval);
                continue;
            }
            // Nothing written and nothing queued: sleep until the worker
            // queues a line. Announce it first, then look once more (the
            // worker reads `sleeping` after publishing head).
            sleeping.store(true, std::memory_order_seq_cst);
            if (head.load(std::memory_order_seq_cst) != tail.load(std::memory_order_relaxed) ||
                stopping.load(std::memory_order_seq_cst)) {
                sleeping.store(false, std::memory_order_relaxed);
                continue;
            }
            futex(wake, FUTEX_WAIT_PRIVATE, seen, nullptr);
            sleeping.store(false, std::memory_order_relaxed);
        }
        done.store(1, std::memory_order_release);
        futex(done, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr);
    }
};

namespace {
std::size_t ring_size(std::size_t wanted) {
    std::size_t size = access_line_max;
    while (size < wanted && size < (std::size_t{1} << 30)) {
        size <<= 1;
    }
    return size;
}
} // namespace

access_log::access_log(int fd, std::size_t capacity, std::atomic<std::uint64_t>& dropped,
                       std::atomic<std::uint32_t>* mid_line, const config::access_log* settings)
    : ring_(std::make_shared<ring>(fd, ring_size(capacity), dropped, mid_line,
                                   settings != nullptr && settings->path == "syslog" ? settings->syslog_socket
                                                                                     : std::string())),
      dropped_(dropped) {
    line_.reserve(access_line_max);
    if (settings != nullptr) {
        format_ = settings->format;
        syslog_ = settings->path == "syslog";
        facility_ = settings->facility;
        hostname_ = settings->hostname;
        pid_ = static_cast<long>(::getpid());
    }
}

access_log::~access_log() {
    stop();
}

void access_log::start() {
    if (started_ || stopped_) {
        return;
    }
    // The thread starts with every signal blocked: SIGTERM, SIGINT and the
    // rest stay with the worker's io_context thread.
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    try {
        thread_ = std::thread([r = ring_] { r->run(); });
        started_ = true;
    } catch (const std::exception& e) {
        log(log_level::error, std::string("access log: cannot start the writer thread: ") + e.what());
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

void access_log::write(const access_record& r) {
    line_.clear();
    if (syslog_) {
        append_syslog_header(line_, facility_, std::chrono::system_clock::now(), hostname_, pid_);
    }
    if (format_ == config::access_log_format::combined) {
        format_combined_line(r, line_);
    } else {
        format_access_line(r, line_);
    }
    if (stopped_ || !ring_->push(line_)) {
        dropped_.fetch_add(1, std::memory_order_relaxed);
    }
}

void access_log::stop() {
    if (stopped_) {
        return;
    }
    stopped_ = true;
    if (!started_) {
        return;
    }
    ring_->stopping.store(true, std::memory_order_seq_cst);
    ring_->wake_writer();
    const auto end = std::chrono::steady_clock::now() + stop_timeout;
    while (ring_->done.load(std::memory_order_acquire) == 0) {
        const auto left = end - std::chrono::steady_clock::now();
        if (left <= std::chrono::nanoseconds(0)) {
            break;
        }
        const timespec ts = to_timespec(std::chrono::duration_cast<std::chrono::nanoseconds>(left));
        futex(ring_->done, FUTEX_WAIT_PRIVATE, 0, &ts);
    }
    if (ring_->done.load(std::memory_order_acquire) != 0) {
        thread_.join();
        return;
    }
    // A descriptor that blocks for good (a pipe nobody reads): the thread
    // keeps its reference to the ring and ends with the process.
    const std::uint64_t left = ring_->head.load() - ring_->tail.load();
    log(log_level::warn,
        "access log: " + std::to_string(left) + " bytes not written at exit (the log descriptor blocks)");
    thread_.detach();
}

} // namespace rampart::gateway
