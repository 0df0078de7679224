// The access log: JSON escaping, the line format, and the ring with its
// writer thread (through a pipe: whole lines, nothing lost at stop, drops
// counted when the ring is full).

#include "gateway/proxy/access_log.hpp"

// Boost.JSON compiled into this test only, to check that every line parses.
#include <boost/json/src.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace rampart::gateway;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

std::string escaped(std::string_view text, std::size_t max = 1 << 20) {
    std::string out;
    append_json_string(out, text, max);
    return out;
}

/// `escaped` decoded back by a JSON parser.
std::string round_trip(std::string_view text) {
    const auto v = json::parse("\"" + escaped(text) + "\"");
    return std::string(v.as_string());
}

access_record sample() {
    access_record r;
    r.time = std::chrono::sys_days{std::chrono::year{2024} / 5 / 1} + 12h + 34min + 56s + 789ms;
    r.client = "192.0.2.7";
    r.method = "GET";
    r.host = "www.foobar.com";
    r.path = "/a?b=1";
    r.status = 200;
    r.bytes_sent = 1234;
    r.bytes_received = 56;
    r.request_time = 12'345'678ns;
    r.upstream = "app1";
    r.upstream_time = 2'500'000ns;
    r.tls_version = "TLSv1.3";
    r.cipher = "TLS_AES_256_GCM_SHA384";
    r.resumed = true;
    r.protocol = "h2";
    r.request_id = "0123456789abcdef0123456789abcdef";
    r.retries = 1;
    return r;
}

std::string line_of(const access_record& r) {
    std::string out;
    format_access_line(r, out);
    return out;
}

/// Everything readable from `fd` until `want` bytes arrived or 5 s passed.
std::string read_pipe(int fd, std::size_t want) {
    std::string out;
    const auto end = std::chrono::steady_clock::now() + 5s;
    char buf[65536];
    while (out.size() < want && std::chrono::steady_clock::now() < end) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) {
            continue;
        }
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::size_t at = 0;
    while (at < text.size()) {
        const auto nl = text.find('\n', at);
        REQUIRE(nl != std::string::npos);
        out.push_back(text.substr(at, nl - at));
        at = nl + 1;
    }
    return out;
}

} // namespace

TEST_CASE("JSON strings: quotes, backslashes and control characters are escaped", "[unit][gateway][access_log]") {
    CHECK(escaped("plain /path?a=1&b=2") == "plain /path?a=1&b=2");
    CHECK(escaped("say \"hi\"\\") == "say \\\"hi\\\"\\\\");
    CHECK(escaped("a\nb\rc\td\be\ff") == "a\\nb\\rc\\td\\be\\ff");
    CHECK(escaped(std::string_view("\x00\x01\x1b[31m\x7f", 8)) == "\\u0000\\u0001\\u001b[31m\\u007f");
    CHECK(round_trip("say \"hi\"\\\n\x1b") == "say \"hi\"\\\n\x1b");
}

TEST_CASE("JSON strings: valid UTF-8 is kept, other bytes become \\u00XX", "[unit][gateway][access_log]") {
    CHECK(escaped("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    CHECK(escaped("\xff\xfe") == "\\u00ff\\u00fe");
    CHECK(escaped("\xc3") == "\\u00c3");                                  // truncated sequence
    CHECK(escaped("\xc0\xaf") == "\\u00c0\\u00af");                       // overlong '/'
    CHECK(escaped("\xed\xa0\x80") == "\\u00ed\\u00a0\\u0080");            // a surrogate
    CHECK(escaped("\xf4\x90\x80\x80") == "\\u00f4\\u0090\\u0080\\u0080"); // above U+10FFFF
    CHECK(escaped("\xc2\x9b") == "\\u009b");                              // C1 control (CSI) as one escape
    CHECK(escaped("\xc2\xa0") == "\xc2\xa0");                             // U+00A0 is not a control
    // Whatever the bytes, the result is a JSON string.
    std::string all;
    for (int c = 0; c < 256; ++c) {
        all += static_cast<char>(c);
    }
    CHECK_NOTHROW(json::parse("\"" + escaped(all) + "\""));
}

TEST_CASE("JSON strings are cut at the limit, never inside an escape", "[unit][gateway][access_log]") {
    CHECK(escaped("abcdef", 4) == "abcd");
    CHECK(escaped("ab\ncd", 3) == "ab"); // "\n" needs 2 more: cut before it
    CHECK(escaped("ab\ncd", 4) == "ab\\n");
    CHECK(escaped("a\x01", 6) == "a");         // "\u0001" needs 6 more
    CHECK(escaped("a\xe2\x82\xac", 3) == "a"); // the euro sign needs 3 more
    CHECK(escaped("a\xe2\x82\xac", 4) == "a\xe2\x82\xac");
}

TEST_CASE("RFC 3339 times in UTC with milliseconds", "[unit][gateway][access_log]") {
    std::string out;
    append_rfc3339(out, std::chrono::sys_days{std::chrono::year{2024} / 2 / 29} + 23h + 59min + 59s + 7ms);
    CHECK(out == "2024-02-29T23:59:59.007Z");
    out.clear();
    append_rfc3339(out, std::chrono::system_clock::time_point{});
    CHECK(out == "1970-01-01T00:00:00.000Z");
}

TEST_CASE("an access line is one JSON object with every field", "[unit][gateway][access_log]") {
    const std::string line = line_of(sample());
    REQUIRE(line.back() == '\n');
    CHECK(line.find('\n') == line.size() - 1);
    CHECK(line ==
          "{\"time\":\"2024-05-01T12:34:56.789Z\",\"client\":\"192.0.2.7\",\"method\":\"GET\","
          "\"host\":\"www.foobar.com\",\"path\":\"/a?b=1\",\"status\":200,\"bytes_sent\":1234,"
          "\"bytes_received\":56,\"request_time_ms\":12.345,\"upstream\":\"app1\",\"upstream_time_ms\":2.500,"
          "\"protocol\":\"h2\",\"tls_version\":\"TLSv1.3\",\"cipher\":\"TLS_AES_256_GCM_SHA384\",\"resumed\":true,"
          "\"request_id\":\"0123456789abcdef0123456789abcdef\",\"retries\":1}\n");
    const auto v = json::parse(line).as_object();
    CHECK(v.at("status").as_int64() == 200);
    CHECK(v.at("request_time_ms").to_number<double>() == Approx(12.345));
}

TEST_CASE("an access line without upstream or TLS has nulls there", "[unit][gateway][access_log]") {
    access_record r = sample();
    r.upstream = {};
    r.upstream_time.reset();
    r.tls_version = nullptr;
    r.cipher = nullptr;
    r.status = 301;
    const auto v = json::parse(line_of(r)).as_object();
    CHECK(v.at("upstream").as_string() == "");
    CHECK(v.at("upstream_time_ms").is_null());
    CHECK(v.at("tls_version").is_null());
    CHECK(v.at("cipher").is_null());
    CHECK(v.at("resumed").is_null());
}

TEST_CASE("hostile fields still give one short JSON line", "[unit][gateway][access_log]") {
    access_record r = sample();
    const std::string path(100'000, '\x01'); // each byte escapes to six
    const std::string host(10'000, '"');
    const std::string method(1'000, 'M');
    const std::string id(1'000, '\\');
    r.path = path;
    r.host = host;
    r.method = method;
    r.request_id = id;
    r.bytes_sent = UINT64_MAX;
    r.request_time = std::chrono::nanoseconds::max();
    const std::string line = line_of(r);
    CHECK(line.size() <= access_line_max);
    CHECK(line.find('\n') == line.size() - 1);
    const auto v = json::parse(line).as_object();
    CHECK(v.at("path").as_string().size() == access_path_max / 6);
    CHECK(v.at("bytes_sent").to_number<std::uint64_t>() == UINT64_MAX);
}

TEST_CASE("the writer thread writes every queued line, whole, by stop", "[unit][gateway][access_log]") {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    std::atomic<std::uint64_t> dropped{0};
    std::string expected;
    {
        // 200 lines are about 66 KB: the ring holds them all even before
        // the writer thread first runs.
        access_log log(fds[1], 128 * 1024, dropped);
        log.start();
        access_record r = sample();
        std::string id;
        for (int i = 0; i < 200; ++i) {
            id = "req-" + std::to_string(i);
            r.request_id = id;
            log.write(r);
            expected += line_of(r);
        }
        // The pipe holds 64 KiB: read while the writer writes, then stop.
        std::string got = read_pipe(fds[0], expected.size() / 2);
        log.stop();
        got += read_pipe(fds[0], expected.size() - got.size());
        CHECK(got == expected);
        CHECK(dropped.load() == 0);
        log.write(r); // after stop: dropped, counted
        CHECK(dropped.load() == 1);
    }
    ::close(fds[0]);
}

TEST_CASE("a full ring drops lines and counts them, never blocks", "[unit][gateway][access_log]") {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    std::atomic<std::uint64_t> dropped{0};
    const std::string one = line_of(sample());
    {
        access_log log(fds[1], 4096, dropped); // not started: nothing drains the ring
        const std::size_t fit = 4096 / one.size();
        for (std::size_t i = 0; i < fit + 10; ++i) {
            log.write(sample());
        }
        CHECK(dropped.load() == 10);
        CHECK(log.dropped() == 10);
        // Started late, it still writes what the ring held.
        log.start();
        const std::string got = read_pipe(fds[0], fit * one.size());
        log.stop();
        CHECK(got.size() == fit * one.size());
        for (const auto& l : lines_of(got)) {
            CHECK_NOTHROW(json::parse(l));
        }
    }
    ::close(fds[0]);
}

TEST_CASE("open_access_log: off, stdout, a file opened for appending", "[unit][gateway][access_log]") {
    rampart::config::access_log settings;
    CHECK(open_access_log(settings) == -1);
    settings.enabled = true;
    const int out = open_access_log(settings);
    CHECK(out > 2);
    ::close(out);

    char dir[] = "/tmp/rampart-alog-XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    settings.path = std::string(dir) + "/access.log";
    {
        const int fd = ::open(settings.path.c_str(), O_WRONLY | O_CREAT, 0600);
        REQUIRE(::write(fd, "old\n", 4) == 4);
        ::close(fd);
    }
    std::atomic<std::uint64_t> dropped{0};
    {
        access_log log(open_access_log(settings), 64 * 1024, dropped);
        log.start();
        log.write(sample());
        log.stop();
    }
    char buf[8192] = {};
    const int fd = ::open(settings.path.c_str(), O_RDONLY);
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    CHECK(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))) == "old\n" + line_of(sample()));
    ::unlink(settings.path.c_str());

    settings.path = std::string(dir) + "/missing/access.log";
    CHECK_THROWS_WITH(open_access_log(settings), Catch::Matchers::Contains("cannot open " + settings.path));
    ::rmdir(dir);
}

TEST_CASE("under a flood, every line arrives whole or is counted as dropped", "[unit][gateway][access_log]") {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    std::atomic<std::uint64_t> dropped{0};
    constexpr int total = 100'000;
    std::string received;
    std::thread reader([&] { received = read_pipe(fds[0], SIZE_MAX); });
    {
        access_log log(fds[1], 16 * 1024, dropped); // small: it wraps and fills often
        log.start();
        access_record r = sample();
        std::string id;
        for (int i = 0; i < total; ++i) {
            id = std::to_string(i);
            r.request_id = id;
            log.write(r);
        }
        log.stop();
    } // closes the write end: the reader sees EOF
    reader.join();
    ::close(fds[0]);
    const auto lines = lines_of(received);
    CHECK(lines.size() + dropped.load() == total);
    int previous = -1;
    bool ordered = true;
    for (const auto& l : lines) {
        const auto v = json::parse(l).as_object();
        const int id = std::stoi(std::string(v.at("request_id").as_string()));
        ordered = ordered && id > previous;
        previous = id;
    }
    CHECK(ordered);
    INFO("dropped " << dropped.load() << " of " << total);
    CHECK(lines.size() > 0);
}

namespace {

std::string combined_of(const access_record& r) {
    std::string out;
    format_combined_line(r, out);
    return out;
}

/// A datagram socket bound at `path` (removed first), with a receive timeout.
int bound_datagram_socket(const std::string& path) {
    ::unlink(path.c_str());
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

std::string receive(int fd) {
    char buf[8192];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

} // namespace

TEST_CASE("the combined format is Apache's and nginx's, in UTC", "[unit][gateway][access_log]") {
    access_record r = sample();
    r.referer = "https://www.foobar.com/";
    r.user_agent = "curl/7.88.1";
    CHECK(combined_of(r) == "192.0.2.7 - - [01/May/2024:12:34:56 +0000] \"GET /a?b=1 HTTP/2.0\" 200 1234 "
                            "\"https://www.foobar.com/\" \"curl/7.88.1\"\n");
    r.user = "alice";
    r.protocol = "http/1.0";
    r.referer = "";
    r.user_agent = "";
    CHECK(combined_of(r) ==
          "192.0.2.7 - alice [01/May/2024:12:34:56 +0000] \"GET /a?b=1 HTTP/1.0\" 200 1234 \"-\" \"-\"\n");
    r.method = "";
    r.status = 400;
    r.bytes_sent = 0;
    CHECK(combined_of(r) == "192.0.2.7 - alice [01/May/2024:12:34:56 +0000] \"-\" 400 0 \"-\" \"-\"\n");
}

TEST_CASE("combined lines escape what would break a log parser", "[unit][gateway][access_log]") {
    access_record r = sample();
    r.path = "/a\"b\\c\x01\x7f\xc3\xa9";
    r.user_agent = "x\" \"y\r\nz";
    const std::string line = combined_of(r);
    CHECK(line == "192.0.2.7 - - [01/May/2024:12:34:56 +0000] \"GET /a\\x22b\\x5Cc\\x01\\x7F\\xC3\\xA9 HTTP/2.0\" 200 "
                  "1234 \"-\" \"x\\x22 \\x22y\\x0D\\x0Az\"\n");
    const std::string quotes(10000, '"'); // the record's views point here
    const std::string long_referer(10000, 'r');
    const std::string long_agent(10000, 'a');
    r.path = quotes;
    r.referer = long_referer;
    r.user_agent = long_agent;
    const std::string longest = combined_of(r);
    CHECK(longest.size() < access_line_max - 400); // room for a syslog header
    CHECK(std::count(longest.begin(), longest.end(), '\n') == 1);
}

TEST_CASE("syslog: an RFC 5424 header per message", "[unit][gateway][access_log]") {
    std::string out;
    append_syslog_header(out, 16, sample().time, "gw1", 4242);
    CHECK(out == "<134>1 2024-05-01T12:34:56.789Z gw1 rampart 4242 access - ");
    out.clear();
    append_syslog_header(out, 23, sample().time, "", 1);
    CHECK(out == "<190>1 2024-05-01T12:34:56.789Z - rampart 1 access - ");
}

TEST_CASE("syslog: one datagram per line, and again after the daemon's restart", "[unit][gateway][access_log]") {
    char dir[] = "/tmp/rampart-syslog-XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    rampart::config::access_log settings;
    settings.enabled = true;
    settings.path = "syslog";
    settings.syslog_socket = std::string(dir) + "/log";
    settings.facility = 16;
    settings.hostname = "gw1";
    settings.format = rampart::config::access_log_format::combined;
    int daemon = bound_datagram_socket(settings.syslog_socket);
    std::atomic<std::uint64_t> dropped{0};
    {
        access_log log(open_access_log(settings), 64 * 1024, dropped, nullptr, &settings);
        log.start();
        access_record r = sample();
        r.user_agent = "first";
        log.write(r);
        const std::string got = receive(daemon);
        CHECK_THAT(got, Catch::Matchers::StartsWith("<134>1 "));
        CHECK_THAT(got, Catch::Matchers::Contains(" gw1 rampart " + std::to_string(::getpid()) +
                                                  " access - 192.0.2.7 - - "
                                                  "[01/May/2024:12:34:56 +0000] \"GET /a?b=1 HTTP/2.0\""));
        CHECK_THAT(got, Catch::Matchers::EndsWith("\"first\"")); // no newline inside the message
        // The daemon restarts: a new socket under the same name.
        ::close(daemon);
        daemon = bound_datagram_socket(settings.syslog_socket);
        r.user_agent = "second";
        log.write(r);
        r.user_agent = "third";
        log.write(r);
        CHECK_THAT(receive(daemon), Catch::Matchers::EndsWith("\"second\""));
        CHECK_THAT(receive(daemon), Catch::Matchers::EndsWith("\"third\""));
        log.stop();
    }
    CHECK(dropped.load() == 0);
    ::close(daemon);
    ::unlink(settings.syslog_socket.c_str());
    settings.syslog_socket = std::string(dir) + "/nobody-listens";
    CHECK_THROWS_WITH(open_access_log(settings),
                      Catch::Matchers::Contains("cannot reach syslog at " + settings.syslog_socket));
    ::rmdir(dir);
}
