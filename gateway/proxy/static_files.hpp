#pragma once
// The files of a `static:` route (config::route_static), served the way
// nginx's `alias` with gzip_static, brotli_static, etag and range served
// them: the route's path prefix is stripped and the rest of the path names a
// file under the route's root. Sans-I/O but for the file system: serve()
// opens and fstat()s, never reads a byte nor waits on anything; the caller
// sends the answer's bytes from its descriptor with pread. The tests, with
// the traversal attempts: tests/unit/gateway/static_files_test.cpp.
//
// Containment does not rest on the path checks alone. Every open is relative
// to the root's descriptor, with openat2(2) and RESOLVE_BENEATH (no absolute
// path, no absolute symlink, no ".." above the root, whether written or found
// in a symlink), RESOLVE_NO_MAGICLINKS (no /proc/self/fd jumps) and
// RESOLVE_NO_XDEV (no other mount, bind mounts included). Where openat2 is
// missing (kernels before 5.6, or a filter answering ENOSYS) the path is
// walked one component at a time with O_NOFOLLOW: no symlink at all, and no
// component on another device.

#include "config/config.hpp"

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace rampart::gateway {

/// An owned file descriptor, closed when it goes; -1 when empty.
class unique_fd {
public:
    unique_fd() = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& other) noexcept;
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    ~unique_fd();

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    /// Gives up ownership: the caller closes what is returned.
    int release() noexcept { return std::exchange(fd_, -1); }
    /// Closes the descriptor held, if any, and holds `fd`.
    void reset(int fd = -1) noexcept;

private:
    int fd_ = -1;
};

/// The root directory of one static route, opened once (O_PATH), with the
/// route's settings and path prefix. Shared by every request of that route;
/// serve() only reads it.
class static_root {
public:
    /// Opens `files.root` with O_PATH|O_DIRECTORY|O_CLOEXEC. `prefix` is the
    /// route's path (config::route::path), stripped from request paths.
    /// Throws std::runtime_error naming the root when it cannot be opened or
    /// `files.index` is not a plain file name. Start-up and reload only.
    static_root(const config::route_static& files, std::string prefix);

    static_root(static_root&&) noexcept = default;
    static_root& operator=(static_root&&) noexcept = default;
    static_root(const static_root&) = delete;
    static_root& operator=(const static_root&) = delete;
    ~static_root() = default;

    /// The root's O_PATH descriptor.
    int fd() const noexcept { return fd_.get(); }
    /// The device the root lives on (the walk refuses components elsewhere).
    dev_t device() const noexcept { return device_; }
    const std::string& prefix() const noexcept { return prefix_; }
    const config::route_static& settings() const noexcept { return settings_; }

    /// The media type of `file_name`: the route's `types`, then the built-in table.
    std::string_view content_type(std::string_view file_name) const;

    /// Whether files are opened by the component walk even where openat2 exists.
    bool walks() const noexcept { return walk_; }
    /// Forces the component walk (openat2's fallback), so that tests cover it.
    void use_walk_for_test(bool on) noexcept { walk_ = on; }

private:
    unique_fd fd_;
    dev_t device_ = 0;
    std::string prefix_;
    config::route_static settings_;
    bool walk_ = false;
};

/// What of a request a static answer depends on. Header values as received,
/// "" when absent (an empty value counts as absent); several lines of one
/// field joined with ", ". Views into the request, used during serve() only.
struct static_request {
    std::string_view method; ///< "GET", "HEAD", ... (methods are case-sensitive)
    std::string_view path;   ///< normalise_path() of the target: no query, no dot segment
    std::string_view query;  ///< the target's query without '?'; kept in a 301's Location
    std::string_view accept_encoding;
    std::string_view if_none_match;
    std::string_view if_modified_since;
    std::string_view range;
    std::string_view if_range;
};

/// What to answer. The strings are owned: the answer may outlive the request
/// and the static_root.
struct static_answer {
    /// 200, 206, 301, 304, 400, 404, 405, 416, or 503 (out of descriptors or memory).
    unsigned status = 404;
    /// Open for reading exactly when there are bytes to send: GET, 200 or 206, length > 0.
    unique_fd file;
    std::uint64_t offset = 0;          ///< the first byte of `file` to send
    std::uint64_t length = 0;          ///< Content-Length of a 200 or 206 (for HEAD: what GET would send)
    std::uint64_t size = 0;            ///< the representation's full size (200, 206, 416)
    std::string content_type;          ///< 200, 206, 416
    std::string etag;                  ///< strong, quoted; 200, 206, 304
    std::string last_modified;         ///< IMF-fixdate; 200, 206, 304
    std::string_view content_encoding; ///< "", "br" or "gzip": which precompressed sibling is sent
    std::string content_range;         ///< 206: "bytes FIRST-LAST/SIZE"; 416: "bytes */SIZE"
    bool vary_accept_encoding = false; ///< the representation depends on Accept-Encoding (precompressed on)
    std::string cache_control;         ///< the route's cache_control; 200, 206, 304
    std::string location;              ///< 301: the path with '/' appended, and the query
    std::string_view allow;            ///< 405: "GET, HEAD"
    int error = 0;                     ///< the errno behind a 404 or 503 from the file system, for the log
};

/// The answer to `req` from `root`. Only GET and HEAD (405 otherwise). The
/// path after the prefix is refused with 400 when it hides structure (an
/// empty segment, ".", "..", NUL, '\\', '%', a control byte) and with 404
/// when a segment starts with '.' (unless `hidden`), when it names nothing
/// openable beneath the root (symlinks out, other mounts, no permission),
/// or something that is neither a regular file nor a directory. A directory
/// answers its index when the path ends in '/', otherwise a 301 to the path
/// with '/'; never a listing. Then precompressed siblings, the conditional
/// headers (RFC 9110 13.2.2 order: If-None-Match, else If-Modified-Since)
/// and a single byte range (If-Range honoured). Never throws, never blocks:
/// files are opened O_NONBLOCK (a FIFO cannot hold the open), nothing is read.
static_answer serve(const static_root& root, const static_request& req);

/// What a Range header asks of a representation.
enum class range_outcome {
    ignore,        ///< no range, another unit, several ranges, or bad syntax: send all of it (200)
    partial,       ///< one satisfiable range: [first, last] (206)
    unsatisfiable, ///< first byte past the end, or an empty suffix (416)
};

struct byte_range {
    range_outcome outcome = range_outcome::ignore;
    std::uint64_t first = 0; ///< partial: the first byte
    std::uint64_t last = 0;  ///< partial: the last byte, inclusive, < size
};

/// A Range header's value against a representation of `size` bytes: one
/// "bytes=" range "a-b", "a-" or "-n" (suffix). Several ranges are ignored,
/// which RFC 9110 14.2 allows, so no multipart answer is ever built.
byte_range parse_range(std::string_view header, std::uint64_t size);

/// The quality (0..1000) an Accept-Encoding value gives `coding` (lower
/// case): its own entry, else "*"'s, else 0. "x-gzip" counts as gzip; an
/// entry with a malformed q-value is skipped.
unsigned encoding_quality(std::string_view accept_encoding, std::string_view coding);

/// Whether `coding` may be sent: encoding_quality() > 0 (q=0 means "not this").
bool accepts_encoding(std::string_view accept_encoding, std::string_view coding);

/// Seconds since the epoch of an HTTP-date: IMF-fixdate ("Sun, 06 Nov 1994
/// 08:49:37 GMT"), or the obsolete RFC 850 ("Sunday, 06-Nov-94 08:49:37 GMT";
/// years 70..99 are 19xx, 00..69 20xx) and asctime ("Sun Nov  6 08:49:37
/// 1994") forms. nullopt for anything else (the header is then ignored).
std::optional<std::int64_t> parse_http_date(std::string_view text);

/// IMF-fixdate of `unix_seconds`; "" for a time outside the years 1..9999.
std::string format_http_date(std::int64_t unix_seconds);

/// The media type of `file_name` by its extension, compared in lower case:
/// `types` (extension without dot, lower case -> media type) first, then the
/// built-in table of web types (text types with "; charset=utf-8"), else
/// application/octet-stream. NOTE: the view points into `types` or into
/// static storage; it lives as long as `types` does.
std::string_view content_type_for(std::string_view file_name,
                                  std::span<const std::pair<std::string, std::string>> types = {});

/// The strong entity tag nginx gives a file: "<mtime seconds hex>-<size hex>",
/// with `suffix` ("-br", "-gz") before the closing quote.
std::string make_etag(std::int64_t mtime_seconds, std::uint64_t size, std::string_view suffix = {});

/// Whether an If-None-Match value matches `etag` (weak comparison: W/
/// ignored on either side; "*" matches any).
bool if_none_match_matches(std::string_view header, std::string_view etag);

} // namespace rampart::gateway
