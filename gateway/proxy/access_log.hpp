#pragma once
// The access log: one JSON line per request, written without ever blocking a
// worker's io_context.
//
// The worker formats a line and copies it into a single-producer /
// single-consumer byte ring (two atomic positions, no lock); a writer thread
// of the same worker process drains the ring with write(2)/writev(2) to a
// descriptor the master opened before the fork (so a worker running as
// `nobody` can write a file only root may open). A line that does not fit in
// the ring is dropped and counted (`rampart_access_log_dropped_total`), never
// waited for. The writer wakes on its own every few tens of milliseconds
// while lines flow, and the worker wakes it (one futex call) only when it was
// asleep with nothing to do or when the ring is a quarter full.
//
// Lines never interleave between workers: every line is at most PIPE_BUF
// bytes, a pipe or terminal gets whole lines in writes of at most PIPE_BUF,
// and a regular file is opened with O_APPEND and gets whole lines per write.

#include "config/config.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

namespace rampart::gateway {

/// One request as the access log records it. The views must stay valid
/// until access_log::write() returns.
struct access_record {
    std::chrono::system_clock::time_point time; ///< when the request's first byte was read
    std::string_view client;                    ///< address, no port
    std::string_view method;                    ///< "" when the request line could not be read
    std::string_view host;
    std::string_view path; ///< the target, query included
    unsigned status = 0;
    std::uint64_t bytes_sent = 0;                          ///< response body bytes written to the client
    std::uint64_t bytes_received = 0;                      ///< request body bytes read from the client
    std::chrono::nanoseconds request_time{0};              ///< first request byte to last response byte
    std::string_view upstream;                             ///< server name; "" when no server was tried
    std::optional<std::chrono::nanoseconds> upstream_time; ///< connect + response header; none without one
    const char* protocol = "http/1.1";                     ///< "http/1.0", "http/1.1" or "h2"
    const char* tls_version = nullptr;                     ///< null on the plain-HTTP listener
    const char* cipher = nullptr;
    bool resumed = false;
    std::string_view request_id;
    unsigned retries = 0;
    std::string_view user;       ///< the basic_auth user; "" when the route asks for none
    std::string_view referer;    ///< the Referer header (combined format)
    std::string_view user_agent; ///< the User-Agent header (combined format)
};

/// No line is longer: PIPE_BUF, so a line written to a pipe is never split.
constexpr std::size_t access_line_max = 4096;
/// Output bytes of the escaped path (longer paths are cut) and of the host.
constexpr std::size_t access_path_max = 2048;
constexpr std::size_t access_host_max = 256;

/// Appends `text` as the inside of a JSON string, at most `max` bytes of
/// output (cut between characters, never inside an escape or a UTF-8
/// sequence). '"' and '\' are escaped, control characters (and DEL and the
/// C1 controls U+0080..U+009F) become \n, \t ... or \u00XX, valid UTF-8 is
/// kept, and every byte that is not part of valid UTF-8 becomes \u00XX.
void append_json_string(std::string& out, std::string_view text, std::size_t max);

/// Appends `t` as RFC 3339 UTC with milliseconds: 2024-05-01T12:00:00.123Z.
void append_rfc3339(std::string& out, std::chrono::system_clock::time_point t);

/// Appends the record as one JSON object and a '\n'; never more than
/// access_line_max bytes.
void format_access_line(const access_record& r, std::string& out);

/// Appends the record in the Apache/nginx "combined" format and a '\n':
/// client - user [07/Dec/2026:20:52:54 +0000] "GET /path HTTP/1.1" 200 153
/// "referer" "user agent". The time is UTC; "-" stands for an empty user,
/// referer or agent, and for a request line that could not be read. Bytes
/// nginx would escape (", \, control characters, bytes >= 0x7f) become \xHH;
/// the path is cut at 2,048 bytes of output, referer and agent at 512.
void format_combined_line(const access_record& r, std::string& out);

/// Appends an RFC 5424 header for an access log message: <PRI>1 TIMESTAMP
/// HOSTNAME rampart PROCID access - (PRI: facility * 8 + 6, informational).
void append_syslog_header(std::string& out, unsigned facility, std::chrono::system_clock::time_point now,
                          std::string_view hostname, long pid);

/// Opens where the access log goes, in the master before any worker forks:
/// a duplicate of stdout, the file (O_WRONLY | O_APPEND | O_CREAT, mode
/// 0640), or a datagram socket connected to settings.syslog_socket for
/// `path: syslog`. Returns -1 when the log is off. Throws std::runtime_error with the
/// path and the reason when the file cannot be opened.
int open_access_log(const config::access_log& settings);

/// A worker's access log: the ring and its writer thread.
///
/// write() runs on the worker's io_context thread only and never blocks;
/// start() and stop() run there too. System calls, as strace shows them
/// (glibc 2.36): the writer thread makes writev and futex, newfstatat once
/// (fstat), prctl once (its name), write and getpid only to report a failed
/// write on stderr, and what starting and ending a thread costs
/// (set_robust_list, rseq, rt_sigprocmask, mmap, munmap, mprotect, madvise,
/// exit). The worker's thread adds clone3 (clone where clone3 is refused
/// with ENOSYS), mmap and mprotect for the stack, rt_sigprocmask, and futex
/// (wake, and the waits of stop() and join).
class access_log {
public:
    /// Takes ownership of `fd`. `capacity` is rounded up to a power of two
    /// (at least access_line_max). Lines dropped, by a full ring or a failed
    /// write, are added to `dropped`. `mid_line` is shared by every writer of
    /// the same file (the workers'): set when a short write (a full disk) left
    /// the file ending inside a line, so that the next writer to succeed
    /// first ends that line; null: this log's own.
    /// `settings` (null: JSON lines to a stream or file) says the format
    /// and, for `path: syslog`, that each line leaves as one datagram with
    /// an RFC 5424 header.
    access_log(int fd, std::size_t capacity, std::atomic<std::uint64_t>& dropped,
               std::atomic<std::uint32_t>* mid_line = nullptr, const config::access_log* settings = nullptr);
    ~access_log();
    access_log(const access_log&) = delete;
    access_log& operator=(const access_log&) = delete;

    /// Starts the writer thread. Call once, in the worker process (never in
    /// the master before fork: a forked child has no copy of the thread).
    void start();
    /// Formats the record and queues it; drops and counts it when the ring
    /// is full. Never blocks, never throws.
    void write(const access_record& r);
    /// Writes everything queued and ends the writer thread (waits at most a
    /// few seconds for a stuck descriptor, then leaves the thread to the
    /// process exit). Later write() calls are dropped and counted.
    void stop();

    /// Lines dropped so far by this log.
    std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

    struct ring; ///< shared with the writer thread (defined in access_log.cpp)

private:
    std::shared_ptr<ring> ring_;
    std::atomic<std::uint64_t>& dropped_;
    std::string line_; ///< reused for formatting
    config::access_log_format format_ = config::access_log_format::json;
    bool syslog_ = false;
    unsigned facility_ = 23;
    std::string hostname_;
    long pid_ = 0;
    std::thread thread_;
    bool started_ = false;
    bool stopped_ = false;
};

} // namespace rampart::gateway
