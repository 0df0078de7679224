#include "gateway/proxy/static_files.hpp"

#include "gateway/proxy/http_rules.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace rampart::gateway {
namespace {

using namespace std::string_view_literals;

// ---------------------------------------------------------------------------
// Text helpers
// ---------------------------------------------------------------------------

char lower_char(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string_view trim(std::string_view s) {
    return trim_ows(s);
}

bool all_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A run of digits; a value past 64 bits saturates (a first byte that large
// is past any end, a last byte that large means the end).
std::optional<std::uint64_t> saturating_number(std::string_view s) {
    if (!all_digits(s)) {
        return std::nullopt;
    }
    constexpr auto max = std::numeric_limits<std::uint64_t>::max();
    std::uint64_t value = 0;
    for (const char c : s) {
        const auto digit = static_cast<std::uint64_t>(c - '0');
        if (value > (max - digit) / 10) {
            return max;
        }
        value = value * 10 + digit;
    }
    return value;
}

// ---------------------------------------------------------------------------
// Media types
// ---------------------------------------------------------------------------

struct type_entry {
    std::string_view extension;
    std::string_view type;
};

// What a web site serves; sorted by extension for the binary search.
constexpr auto builtin_types = std::to_array<type_entry>({
    {"7z", "application/x-7z-compressed"},
    {"aac", "audio/aac"},
    {"apng", "image/apng"},
    {"atom", "application/atom+xml"},
    {"avif", "image/avif"},
    {"bmp", "image/bmp"},
    {"cjs", "text/javascript; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"eot", "application/vnd.ms-fontobject"},
    {"flac", "audio/flac"},
    {"gif", "image/gif"},
    {"gz", "application/gzip"},
    {"htm", "text/html; charset=utf-8"},
    {"html", "text/html; charset=utf-8"},
    {"ico", "image/x-icon"},
    {"ics", "text/calendar; charset=utf-8"},
    {"jpeg", "image/jpeg"},
    {"jpg", "image/jpeg"},
    {"js", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"jsonld", "application/ld+json"},
    {"m4a", "audio/mp4"},
    {"map", "application/json"},
    {"md", "text/markdown; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"mov", "video/quicktime"},
    {"mp3", "audio/mpeg"},
    {"mp4", "video/mp4"},
    {"oga", "audio/ogg"},
    {"ogg", "audio/ogg"},
    {"ogv", "video/ogg"},
    {"opus", "audio/ogg"},
    {"otf", "font/otf"},
    {"pdf", "application/pdf"},
    {"png", "image/png"},
    {"rss", "application/rss+xml"},
    {"svg", "image/svg+xml"},
    {"tar", "application/x-tar"},
    {"tif", "image/tiff"},
    {"tiff", "image/tiff"},
    {"ttf", "font/ttf"},
    {"txt", "text/plain; charset=utf-8"},
    {"vtt", "text/vtt; charset=utf-8"},
    {"wasm", "application/wasm"},
    {"wav", "audio/wav"},
    {"weba", "audio/webm"},
    {"webm", "video/webm"},
    {"webmanifest", "application/manifest+json"},
    {"webp", "image/webp"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"xml", "text/xml; charset=utf-8"},
    {"zip", "application/zip"},
});
static_assert(std::is_sorted(builtin_types.begin(), builtin_types.end(),
                             [](const type_entry& a, const type_entry& b) { return a.extension < b.extension; }));

constexpr std::string_view default_type = "application/octet-stream";

// ---------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------

constexpr std::array<std::string_view, 12> month_names{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
constexpr std::array<std::string_view, 7> day_names{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr std::array<std::string_view, 7> long_day_names{"Sunday",   "Monday", "Tuesday", "Wednesday",
                                                         "Thursday", "Friday", "Saturday"};

// 1..12, or 0 when `s` names no month (case-sensitive, as HTTP-date is).
unsigned month_number(std::string_view s) {
    const auto it = std::find(month_names.begin(), month_names.end(), s);
    return it == month_names.end() ? 0 : static_cast<unsigned>(it - month_names.begin()) + 1;
}

bool is_day_name(std::string_view s) {
    return std::find(day_names.begin(), day_names.end(), s) != day_names.end();
}

// "HH:MM:SS" into seconds of the day; a leap second (60) is accepted.
std::optional<int> time_of_day(std::string_view s) {
    if (s.size() != 8 || s[2] != ':' || s[5] != ':' || !all_digits(s.substr(0, 2)) || !all_digits(s.substr(3, 2)) ||
        !all_digits(s.substr(6, 2))) {
        return std::nullopt;
    }
    const int h = (s[0] - '0') * 10 + (s[1] - '0');
    const int m = (s[3] - '0') * 10 + (s[4] - '0');
    const int sec = (s[6] - '0') * 10 + (s[7] - '0');
    if (h > 23 || m > 59 || sec > 60) {
        return std::nullopt;
    }
    return h * 3600 + m * 60 + sec;
}

std::optional<std::int64_t> unix_time(int year, unsigned month, unsigned day, int seconds_of_day) {
    using namespace std::chrono;
    const year_month_day date{std::chrono::year{year}, std::chrono::month{month}, std::chrono::day{day}};
    if (!date.ok()) {
        return std::nullopt;
    }
    return std::int64_t{sys_days{date}.time_since_epoch().count()} * 86400 + seconds_of_day;
}

int number(std::string_view digits) {
    int value = 0;
    for (const char c : digits) {
        value = value * 10 + (c - '0');
    }
    return value;
}

// ---------------------------------------------------------------------------
// Opening beneath the root
// ---------------------------------------------------------------------------

// Non-blocking, so that opening a FIFO (or a device that would wait) cannot
// hold the worker; O_NOCTTY in case a terminal sits in the tree. Devices
// should not: a root on a `nodev` mount keeps one from opening at all.
constexpr int file_flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;

// Set once openat2 answered ENOSYS: the kernel, or a filter around the
// process, will not have it later either.
std::atomic<bool> openat2_missing{false};

// The component walk, openat2's fallback. `rel` has been checked (no empty,
// "." or ".." segment, no leading '/'); each component is opened with
// O_NOFOLLOW (a symlink anywhere is ELOOP or ENOTDIR) and must live on the
// root's device. A bind mount of the root's own file system is not told
// apart here, as RESOLVE_NO_XDEV would.
unique_fd walk_beneath(const static_root& root, std::string_view rel, int& error) {
    unique_fd dir;
    std::string name;
    for (;;) {
        const auto slash = rel.find('/');
        const bool last = slash == std::string_view::npos;
        name.assign(rel.substr(0, slash));
        if (name.empty() || name == "." || name == "..") {
            error = ENOENT;
            return {};
        }
        const int flags = last ? file_flags | O_NOFOLLOW : O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
        unique_fd next(::openat(dir ? dir.get() : root.fd(), name.c_str(), flags));
        if (!next) {
            error = errno;
            return {};
        }
        struct stat st {};
        if (::fstat(next.get(), &st) != 0) {
            error = errno;
            return {};
        }
        if (st.st_dev != root.device()) {
            error = EXDEV;
            return {};
        }
        if (last) {
            return next;
        }
        if (!S_ISDIR(st.st_mode)) {
            error = ENOTDIR;
            return {};
        }
        dir = std::move(next);
        rel.remove_prefix(slash + 1);
    }
}

// Opens `rel` (checked, relative, no trailing '/') beneath the root for
// reading; on failure returns an empty descriptor and sets `error`.
unique_fd open_beneath(const static_root& root, const std::string& rel, int& error) {
    if (!root.walks() && !openat2_missing.load(std::memory_order_relaxed)) {
        open_how how{};
        how.flags = static_cast<std::uint64_t>(file_flags);
        how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
        // EAGAIN: a rename or mount raced with the lookup and the kernel
        // could not vouch for it; worth a few more tries.
        for (int attempt = 0; attempt < 4; ++attempt) {
            const long fd = ::syscall(SYS_openat2, root.fd(), rel.c_str(), &how, sizeof how);
            if (fd >= 0) {
                return unique_fd(static_cast<int>(fd));
            }
            error = errno;
            if (error != EAGAIN && error != EINTR) {
                break;
            }
        }
        if (error != ENOSYS) {
            return {};
        }
        openat2_missing.store(true, std::memory_order_relaxed);
    }
    return walk_beneath(root, rel, error);
}

// ---------------------------------------------------------------------------
// serve() steps
// ---------------------------------------------------------------------------

// What of the request path names a file: `rel` (relative to the root, no
// trailing '/') and whether the path ends in '/'. 0 when usable, else the
// status to answer. normalise_path() has removed dot segments and refused
// control bytes and backslashes, so those arrive here only by a bug or a bypass;
// it keeps runs of '/' and the escapes of reserved and non-ASCII bytes,
// which do arrive and are refused here as well. The checks are deliberately
// blunt: openat2 is the containment, this is the first fence.
unsigned relative_path(const static_root& root, std::string_view path, std::string_view& rel, bool& directory) {
    const std::string_view prefix = root.prefix().empty() ? "/"sv : std::string_view(root.prefix());
    // The route's prefix, matched as the router does (segment by segment).
    if (!path.starts_with(prefix) ||
        !(prefix.ends_with('/') || path.size() == prefix.size() || path[prefix.size()] == '/')) {
        return 404;
    }
    std::string_view rest = path.substr(prefix.size());
    if (!prefix.ends_with('/') && !rest.empty()) {
        rest.remove_prefix(1);
    }
    directory = path.ends_with('/');
    // '%': normalise_path() decoded every unreserved character, so what is
    // left encodes something else (a reserved or non-ASCII byte); file names
    // are matched without decoding, and such names are not served.
    for (const char c : rest) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f || c == '\\' || c == '%') {
            return 400;
        }
    }
    bool hidden = false;
    // Room for "/" + index + ".br" after it, within what openat2 accepts.
    bool too_long = rest.size() + root.settings().index.size() + 8 >= PATH_MAX;
    std::string_view segments = rest;
    for (;;) {
        const auto slash = segments.find('/');
        const std::string_view seg = segments.substr(0, slash);
        const bool last = slash == std::string_view::npos;
        // Only the last segment may be empty: the root itself, or a path ending in '/'.
        if ((seg.empty() && !last) || seg == "." || seg == "..") {
            return 400;
        }
        // Dot files (.git, .env, .htpasswd) are private unless the route says
        // otherwise; .well-known is one of them and needs `hidden: true` too.
        hidden = hidden || seg.starts_with('.');
        too_long = too_long || seg.size() > NAME_MAX;
        if (last) {
            break;
        }
        segments.remove_prefix(slash + 1);
    }
    if ((hidden && !root.settings().hidden) || too_long) {
        return 404;
    }
    rel = directory && !rest.empty() ? rest.substr(0, rest.size() - 1) : rest;
    return 0;
}

// An open or fstat that failed: 503 when the worker ran out of something
// (descriptors, memory, a lookup that kept racing), 404 for everything else.
// EACCES is 404 rather than 403: a file the workers' user cannot read is not
// part of the site, and a 403 would tell a prober that it exists.
void fail(static_answer& a, int error) {
    a.error = error;
    a.status = error == EMFILE || error == ENFILE || error == ENOMEM || error == EAGAIN || error == EINTR ? 503 : 404;
}

// Opens `rel` beneath the root and fstat()s it; false (with `a` answered)
// when either fails.
bool open_and_stat(const static_root& root, const std::string& rel, unique_fd& file, struct stat& st,
                   static_answer& a) {
    file = open_beneath(root, rel, a.error);
    if (!file) {
        fail(a, a.error);
        return false;
    }
    if (::fstat(file.get(), &st) != 0) {
        fail(a, errno);
        return false;
    }
    return true;
}

// The If-Range validator lets the Range through: an entity tag equal to
// ours by strong comparison, or a date equal to Last-Modified.
bool if_range_allows(std::string_view if_range, std::string_view etag, std::int64_t mtime) {
    const std::string_view v = trim(if_range);
    if (v.empty()) {
        return true;
    }
    if (v.starts_with("W/")) {
        return false;
    }
    if (v.starts_with('"')) {
        return v == etag;
    }
    const auto date = parse_http_date(v);
    return date && *date == mtime;
}

} // namespace

// ---------------------------------------------------------------------------
// unique_fd, static_root
// ---------------------------------------------------------------------------

unique_fd& unique_fd::operator=(unique_fd&& other) noexcept {
    if (this != &other) {
        reset(other.release());
    }
    return *this;
}

unique_fd::~unique_fd() {
    reset();
}

void unique_fd::reset(int fd) noexcept {
    if (fd_ >= 0) {
        ::close(fd_);
    }
    fd_ = fd;
}

static_root::static_root(const config::route_static& files, std::string prefix)
    : prefix_(std::move(prefix)), settings_(files) {
    const std::string& index = settings_.index;
    if (index == "." || index == ".." || index.find('/') != std::string::npos ||
        index.find('\0') != std::string::npos) {
        throw std::runtime_error("static root " + settings_.root + ": the index must be a file name, got \"" + index +
                                 "\"");
    }
    fd_.reset(::open(settings_.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd_) {
        throw std::runtime_error("cannot open the static root " + settings_.root + ": " + std::strerror(errno));
    }
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) {
        throw std::runtime_error("cannot stat the static root " + settings_.root + ": " + std::strerror(errno));
    }
    device_ = st.st_dev;
    for (auto& [extension, type] : settings_.types) {
        std::transform(extension.begin(), extension.end(), extension.begin(), lower_char);
    }
}

std::string_view static_root::content_type(std::string_view file_name) const {
    return content_type_for(file_name, settings_.types);
}

// ---------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------

std::string_view content_type_for(std::string_view file_name,
                                  std::span<const std::pair<std::string, std::string>> types) {
    const auto dot = file_name.rfind('.');
    // ".htaccess" has no extension, "a." an empty one.
    if (dot == std::string_view::npos || dot == 0 || dot + 1 == file_name.size() || file_name.size() - dot > 33) {
        return default_type;
    }
    std::array<char, 32> buffer{};
    const std::string_view raw = file_name.substr(dot + 1);
    std::transform(raw.begin(), raw.end(), buffer.begin(), lower_char);
    const std::string_view extension(buffer.data(), raw.size());
    for (const auto& [ext, type] : types) {
        if (ext == extension) {
            return type;
        }
    }
    const auto it = std::lower_bound(builtin_types.begin(), builtin_types.end(), extension,
                                     [](const type_entry& e, std::string_view x) { return e.extension < x; });
    return it != builtin_types.end() && it->extension == extension ? it->type : default_type;
}

byte_range parse_range(std::string_view header, std::uint64_t size) {
    const std::string_view h = trim(header);
    if (h.size() < 6 || !iequals(h.substr(0, 6), "bytes=")) {
        return {};
    }
    const std::string_view spec = trim(h.substr(6));
    const auto dash = spec.find('-');
    if (spec.find(',') != std::string_view::npos || dash == std::string_view::npos) {
        return {};
    }
    const std::string_view first_text = spec.substr(0, dash);
    const std::string_view last_text = spec.substr(dash + 1);
    if (first_text.empty()) {
        const auto suffix = saturating_number(last_text);
        if (!suffix) {
            return {};
        }
        if (*suffix == 0 || size == 0) {
            return {range_outcome::unsatisfiable};
        }
        return {range_outcome::partial, *suffix >= size ? 0 : size - *suffix, size - 1};
    }
    const auto first = saturating_number(first_text);
    const auto last =
        last_text.empty() ? std::optional(std::numeric_limits<std::uint64_t>::max()) : saturating_number(last_text);
    if (!first || !last || *last < *first) {
        return {};
    }
    if (*first >= size) {
        return {range_outcome::unsatisfiable};
    }
    return {range_outcome::partial, *first, std::min(*last, size - 1)};
}

unsigned encoding_quality(std::string_view accept_encoding, std::string_view coding) {
    std::optional<unsigned> own;
    std::optional<unsigned> any;
    std::string_view rest = accept_encoding;
    while (!rest.empty()) {
        const auto comma = rest.find(',');
        const std::string_view element = rest.substr(0, comma);
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
        const auto semicolon = element.find(';');
        const std::string_view name = trim(element.substr(0, semicolon));
        if (name.empty()) {
            continue;
        }
        // The parameters: only q matters; a malformed one drops the element.
        std::optional<unsigned> q = 1000;
        std::string_view params = semicolon == std::string_view::npos ? std::string_view{} : element.substr(semicolon);
        while (q && !params.empty()) {
            params.remove_prefix(1); // the ';'
            const auto next = params.find(';');
            const std::string_view param = trim(params.substr(0, next));
            params = next == std::string_view::npos ? std::string_view{} : params.substr(next);
            if (param.size() < 2 || lower_char(param[0]) != 'q' || param[1] != '=') {
                continue;
            }
            // qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
            const std::string_view v = param.substr(2);
            const std::string_view fraction = v.size() > 2 ? v.substr(2) : std::string_view{};
            const bool shape = (v.size() == 1 || (v.size() >= 2 && v[1] == '.')) && v.size() <= 5 &&
                               (fraction.empty() || all_digits(fraction));
            if (!shape || (v[0] != '0' && v[0] != '1')) {
                q.reset();
            } else if (v[0] == '1') {
                q = std::all_of(fraction.begin(), fraction.end(), [](char c) { return c == '0'; })
                        ? std::optional(1000u)
                        : std::nullopt;
            } else {
                unsigned thousandths = 0;
                for (std::size_t i = 0; i < 3; ++i) {
                    thousandths =
                        thousandths * 10 + (i < fraction.size() ? static_cast<unsigned>(fraction[i] - '0') : 0);
                }
                q = thousandths;
            }
        }
        if (!q) {
            continue;
        }
        if (iequals(name, coding) || (coding == "gzip" && iequals(name, "x-gzip"))) {
            own = own.value_or(*q);
        } else if (name == "*") {
            any = any.value_or(*q);
        }
    }
    return own ? *own : any.value_or(0);
}

bool accepts_encoding(std::string_view accept_encoding, std::string_view coding) {
    return encoding_quality(accept_encoding, coding) > 0;
}

std::optional<std::int64_t> parse_http_date(std::string_view text) {
    const std::string_view t = trim(text);
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    if (t.size() == 29 && t[3] == ',' && t[4] == ' ' && t[7] == ' ' && t[11] == ' ' && t[16] == ' ' && t[25] == ' ' &&
        t.substr(26) == "GMT" && is_day_name(t.substr(0, 3)) && all_digits(t.substr(5, 2)) &&
        all_digits(t.substr(12, 4))) {
        const auto seconds = time_of_day(t.substr(17, 8));
        const unsigned month = month_number(t.substr(8, 3));
        if (!seconds || month == 0) {
            return std::nullopt;
        }
        return unix_time(number(t.substr(12, 4)), month, static_cast<unsigned>(number(t.substr(5, 2))), *seconds);
    }
    // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
    if (const auto comma = t.find(", "); comma != std::string_view::npos && comma > 3) {
        const std::string_view day = t.substr(0, comma);
        const std::string_view rest = t.substr(comma + 2);
        if (std::find(long_day_names.begin(), long_day_names.end(), day) == long_day_names.end() || rest.size() != 22 ||
            rest[2] != '-' || rest[6] != '-' || rest[9] != ' ' || rest[18] != ' ' || rest.substr(19) != "GMT" ||
            !all_digits(rest.substr(0, 2)) || !all_digits(rest.substr(7, 2))) {
            return std::nullopt;
        }
        const auto seconds = time_of_day(rest.substr(10, 8));
        const unsigned month = month_number(rest.substr(3, 3));
        if (!seconds || month == 0) {
            return std::nullopt;
        }
        const int yy = number(rest.substr(7, 2));
        return unix_time(yy < 70 ? 2000 + yy : 1900 + yy, month, static_cast<unsigned>(number(rest.substr(0, 2))),
                         *seconds);
    }
    // asctime: "Sun Nov  6 08:49:37 1994"
    if (t.size() == 24 && t[3] == ' ' && t[7] == ' ' && t[10] == ' ' && t[19] == ' ' && is_day_name(t.substr(0, 3)) &&
        all_digits(t.substr(20, 4)) && (all_digits(t.substr(8, 2)) || (t[8] == ' ' && all_digits(t.substr(9, 1))))) {
        const auto seconds = time_of_day(t.substr(11, 8));
        const unsigned month = month_number(t.substr(4, 3));
        if (!seconds || month == 0) {
            return std::nullopt;
        }
        const std::string_view day = t[8] == ' ' ? t.substr(9, 1) : t.substr(8, 2);
        return unix_time(number(t.substr(20, 4)), month, static_cast<unsigned>(number(day)), *seconds);
    }
    return std::nullopt;
}

std::string format_http_date(std::int64_t unix_seconds) {
    // 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: four digits of year,
    // and within what std::chrono::year holds.
    if (unix_seconds < -62135596800 || unix_seconds > 253402300799) {
        return {};
    }
    using namespace std::chrono;
    const sys_seconds t{seconds{unix_seconds}};
    const sys_days midnight = floor<days>(t);
    const year_month_day date{midnight};
    const int year = static_cast<int>(date.year());
    const hh_mm_ss time{t - midnight};
    std::array<char, 32> out{};
    const int n = std::snprintf(out.data(), out.size(), "%s, %02u %s %04d %02d:%02d:%02d GMT",
                                day_names[weekday{midnight}.c_encoding()].data(), static_cast<unsigned>(date.day()),
                                month_names[static_cast<unsigned>(date.month()) - 1].data(), year,
                                static_cast<int>(time.hours().count()), static_cast<int>(time.minutes().count()),
                                static_cast<int>(time.seconds().count()));
    return std::string(out.data(), static_cast<std::size_t>(n));
}

std::string make_etag(std::int64_t mtime_seconds, std::uint64_t size, std::string_view suffix) {
    // nginx's format, so that the tags clients hold from before stay valid.
    std::array<char, 48> out{};
    const int n = std::snprintf(out.data(), out.size(), "\"%llx-%llx", static_cast<unsigned long long>(mtime_seconds),
                                static_cast<unsigned long long>(size));
    std::string tag(out.data(), static_cast<std::size_t>(n));
    tag += suffix;
    tag += '"';
    return tag;
}

bool if_none_match_matches(std::string_view header, std::string_view etag) {
    const std::string_view h = trim(header);
    if (h == "*") {
        return true;
    }
    const std::string_view ours = etag.starts_with("W/") ? etag.substr(2) : etag;
    std::size_t i = 0;
    const auto skip_space = [&] {
        while (i < h.size() && (h[i] == ' ' || h[i] == '\t')) {
            ++i;
        }
    };
    while (i < h.size()) {
        skip_space();
        if (i < h.size() && h[i] == ',') {
            ++i;
            continue;
        }
        if (i >= h.size()) {
            break;
        }
        if (h.substr(i).starts_with("W/")) {
            i += 2;
        }
        // An entity tag is a quoted string without escapes; it may hold ','.
        if (i >= h.size() || h[i] != '"') {
            return false;
        }
        const auto close = h.find('"', i + 1);
        if (close == std::string_view::npos) {
            return false;
        }
        if (h.substr(i, close - i + 1) == ours) {
            return true;
        }
        i = close + 1;
        skip_space();
        if (i < h.size() && h[i] != ',') {
            return false;
        }
    }
    return false;
}

// ---------------------------------------------------------------------------
// serve()
// ---------------------------------------------------------------------------

static_answer serve(const static_root& root, const static_request& req) {
    static_answer a;
    const bool head = req.method == "HEAD";
    if (!head && req.method != "GET") {
        a.status = 405;
        a.allow = "GET, HEAD";
        return a;
    }
    std::string_view rest;
    bool directory = false;
    if (const unsigned refused = relative_path(root, req.path, rest, directory); refused != 0) {
        a.status = refused;
        return a;
    }

    // The file the path names, or the directory's index.
    std::string rel(rest);
    unique_fd file;
    struct stat st {};
    if (rel.empty()) {
        if (::fstat(root.fd(), &st) != 0) {
            fail(a, errno);
            return a;
        }
    } else {
        if (!open_and_stat(root, rel, file, st, a)) {
            return a;
        }
    }
    std::string_view name = std::string_view(rel).substr(rel.rfind('/') + 1);
    const std::string& index = root.settings().index;
    if (S_ISDIR(st.st_mode)) {
        if (!directory) {
            a.status = 301;
            a.location = std::string(req.path) + "/";
            const bool clean_query = std::all_of(req.query.begin(), req.query.end(), [](char c) {
                const auto u = static_cast<unsigned char>(c);
                return u > 0x20 && u != 0x7f;
            });
            if (!req.query.empty() && clean_query) {
                a.location += '?';
                a.location += req.query;
            }
            return a;
        }
        if (index.empty()) {
            return a; // 404: never a listing
        }
        rel = rel.empty() ? index : rel + "/" + index;
        if (!open_and_stat(root, rel, file, st, a)) {
            return a;
        }
        name = index;
        if (!S_ISREG(st.st_mode)) {
            return a;
        }
    } else if (!S_ISREG(st.st_mode) || directory) {
        // A FIFO, socket or device; or a file asked for as a directory ("a.css/").
        return a;
    }
    a.content_type = root.content_type(name);

    // A precompressed sibling, the client's preference first (br on a tie).
    std::string_view tag_suffix;
    if (root.settings().precompressed) {
        a.vary_accept_encoding = true;
        struct candidate {
            std::string_view coding;
            std::string_view extension;
            std::string_view tag;
            unsigned quality;
        };
        std::array<candidate, 2> candidates{{
            {"br", ".br", "-br", encoding_quality(req.accept_encoding, "br")},
            {"gzip", ".gz", "-gz", encoding_quality(req.accept_encoding, "gzip")},
        }};
        if (candidates[1].quality > candidates[0].quality) {
            std::swap(candidates[0], candidates[1]);
        }
        for (const auto& c : candidates) {
            if (c.quality == 0) {
                continue;
            }
            int ignored = 0;
            unique_fd sibling = open_beneath(root, rel + std::string(c.extension), ignored);
            struct stat sibling_st {};
            if (sibling && ::fstat(sibling.get(), &sibling_st) == 0 && S_ISREG(sibling_st.st_mode)) {
                file = std::move(sibling);
                st = sibling_st;
                a.content_encoding = c.coding;
                tag_suffix = c.tag;
                break;
            }
        }
    }

    const std::int64_t mtime = st.st_mtim.tv_sec;
    const auto size = static_cast<std::uint64_t>(st.st_size);
    a.etag = make_etag(mtime, size, tag_suffix);
    a.last_modified = format_http_date(mtime);
    a.cache_control = root.settings().cache_control;
    a.size = size;

    // Conditionals (RFC 9110 13.2.2): If-None-Match decides when present;
    // If-Modified-Since only without it.
    bool not_modified = false;
    if (!trim(req.if_none_match).empty()) {
        not_modified = if_none_match_matches(req.if_none_match, a.etag);
    } else if (!trim(req.if_modified_since).empty()) {
        const auto since = parse_http_date(req.if_modified_since);
        not_modified = since && mtime <= *since;
    }
    if (not_modified) {
        a.status = 304;
        a.content_type.clear();
        a.content_encoding = {};
        a.size = 0;
        return a;
    }

    a.status = 200;
    a.length = size;
    if (!head && !trim(req.range).empty() && if_range_allows(req.if_range, a.etag, mtime)) {
        const byte_range r = parse_range(req.range, size);
        if (r.outcome == range_outcome::unsatisfiable) {
            a.status = 416;
            a.length = 0;
            a.content_range = "bytes */" + std::to_string(size);
            return a;
        }
        if (r.outcome == range_outcome::partial) {
            a.status = 206;
            a.offset = r.first;
            a.length = r.last - r.first + 1;
            a.content_range =
                "bytes " + std::to_string(r.first) + "-" + std::to_string(r.last) + "/" + std::to_string(size);
        }
    }
    if (!head && a.length > 0) {
        a.file = std::move(file);
    }
    return a;
}

} // namespace rampart::gateway
