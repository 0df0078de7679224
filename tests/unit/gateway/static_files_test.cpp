// Static files: a real tree under /tmp (files, a big one, precompressed
// siblings, directories with and without an index, dot files, symlinks in
// and out of the root, a FIFO, a socket), served through both ways of
// opening (openat2, and the O_NOFOLLOW walk that replaces it on old
// kernels); the escape attempts assert that no descriptor comes back, so
// nothing outside the root could be read.

#include "gateway/proxy/static_files.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace gw = rampart::gateway;
namespace config = rampart::config;
using Catch::Matchers::Contains;

namespace {

constexpr std::int64_t nov_1994 = 784111777; // Sun, 06 Nov 1994 08:49:37 GMT
constexpr std::size_t big_size = 100 * 1024;

void write_file(const std::string& path, const std::string& content) {
    std::ofstream out(path, std::ios::binary);
    out << content;
    REQUIRE(out.good());
}

void set_mtime(const std::string& path, std::int64_t seconds) {
    const timespec times[2] = {{static_cast<time_t>(seconds), 0}, {static_cast<time_t>(seconds), 0}};
    REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW) == 0);
}

std::string big_content() {
    std::string s(big_size, '\0');
    for (std::size_t i = 0; i < s.size(); ++i) {
        s[i] = static_cast<char>(i % 251);
    }
    return s;
}

/// A scratch tree, removed when the test ends however it ends:
///
///     BASE/secret                  "SECRET", beside the root
///     BASE/outside/file            "SECRET", a directory beside the root
///     BASE/root/                   index.html a.css big.bin app.js(.br,.gz) only-gz.js(.gz) UPPER.CSS noext
///                                  site.webmanifest data.foo sub/index.html sub/page.txt empty/
///                                  index-dir/index.html/ .hidden .git/config .well-known/security.txt
///                                  link-in.css -> a.css, link-abs-in -> BASE/root/a.css, link-out -> ../secret,
///                                  link-passwd -> /etc/passwd, link-outdir -> ../outside, fifo, sock
struct scratch_tree {
    std::string base;
    std::string root;

    scratch_tree() {
        char name[] = "/tmp/rampart-static-XXXXXX";
        REQUIRE(::mkdtemp(name) != nullptr);
        base = name;
        root = base + "/root";
        namespace fs = std::filesystem;
        fs::create_directories(root + "/sub");
        fs::create_directories(root + "/empty");
        fs::create_directories(root + "/index-dir/index.html");
        fs::create_directories(root + "/.git");
        fs::create_directories(root + "/.well-known");
        fs::create_directories(base + "/outside");
        write_file(base + "/secret", "SECRET");
        write_file(base + "/outside/file", "SECRET");
        write_file(root + "/index.html", "<h1>home</h1>");
        write_file(root + "/a.css", "body{}");
        write_file(root + "/big.bin", big_content());
        write_file(root + "/app.js", "console.log('identity');");
        write_file(root + "/app.js.br", "BROTLI");
        write_file(root + "/app.js.gz", "GZIP-BYTES");
        write_file(root + "/only-gz.js", "only gzip");
        write_file(root + "/only-gz.js.gz", "GZ");
        write_file(root + "/UPPER.CSS", "p{}");
        write_file(root + "/noext", "?");
        write_file(root + "/site.webmanifest", "{}");
        write_file(root + "/data.foo", "foo");
        write_file(root + "/sub/index.html", "<h1>sub</h1>");
        write_file(root + "/sub/page.txt", "page");
        write_file(root + "/.hidden", "hidden");
        write_file(root + "/.git/config", "[core]");
        write_file(root + "/.well-known/security.txt", "Contact: x");
        set_mtime(root + "/a.css", nov_1994);
        REQUIRE(::symlink("a.css", (root + "/link-in.css").c_str()) == 0);
        REQUIRE(::symlink((root + "/a.css").c_str(), (root + "/link-abs-in").c_str()) == 0);
        REQUIRE(::symlink("../secret", (root + "/link-out").c_str()) == 0);
        REQUIRE(::symlink("/etc/passwd", (root + "/link-passwd").c_str()) == 0);
        REQUIRE(::symlink("../outside", (root + "/link-outdir").c_str()) == 0);
        REQUIRE(::mkfifo((root + "/fifo").c_str(), 0644) == 0);
        const int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(s >= 0);
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        const std::string sock = root + "/sock";
        REQUIRE(sock.size() < sizeof address.sun_path);
        std::memcpy(address.sun_path, sock.c_str(), sock.size() + 1);
        const bool bound = ::bind(s, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
        ::close(s);
        REQUIRE(bound);
    }
    ~scratch_tree() {
        std::error_code ignored;
        std::filesystem::remove_all(base, ignored);
    }
    scratch_tree(const scratch_tree&) = delete;
    scratch_tree& operator=(const scratch_tree&) = delete;

    config::route_static settings() const {
        config::route_static s;
        s.root = root;
        return s;
    }
};

gw::static_request get(std::string_view path, std::string_view method = "GET") {
    gw::static_request r;
    r.method = method;
    r.path = path;
    return r;
}

/// The bytes an answer would send, read as the session reads them.
std::string body_of(const gw::static_answer& a) {
    REQUIRE(a.file);
    std::string out(a.length, '\0');
    std::size_t done = 0;
    while (done < out.size()) {
        const ssize_t n =
            ::pread(a.file.get(), out.data() + done, out.size() - done, static_cast<off_t>(a.offset + done));
        REQUIRE(n > 0);
        done += static_cast<std::size_t>(n);
    }
    return out;
}

bool openat2_available() {
    open_how how{};
    how.flags = O_RDONLY | O_CLOEXEC;
    const long fd = ::syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof how);
    if (fd >= 0) {
        ::close(static_cast<int>(fd));
        return true;
    }
    return errno != ENOSYS;
}

} // namespace

TEST_CASE("static files: media types by extension", "[unit][gateway][static]") {
    CHECK(gw::content_type_for("index.html") == "text/html; charset=utf-8");
    CHECK(gw::content_type_for("a.htm") == "text/html; charset=utf-8");
    CHECK(gw::content_type_for("a.css") == "text/css; charset=utf-8");
    CHECK(gw::content_type_for("a.js") == "text/javascript; charset=utf-8");
    CHECK(gw::content_type_for("a.mjs") == "text/javascript; charset=utf-8");
    CHECK(gw::content_type_for("a.json") == "application/json");
    CHECK(gw::content_type_for("a.js.map") == "application/json");
    CHECK(gw::content_type_for("a.txt") == "text/plain; charset=utf-8");
    CHECK(gw::content_type_for("a.xml") == "text/xml; charset=utf-8");
    CHECK(gw::content_type_for("a.svg") == "image/svg+xml");
    CHECK(gw::content_type_for("a.png") == "image/png");
    CHECK(gw::content_type_for("a.jpg") == "image/jpeg");
    CHECK(gw::content_type_for("a.jpeg") == "image/jpeg");
    CHECK(gw::content_type_for("a.gif") == "image/gif");
    CHECK(gw::content_type_for("a.webp") == "image/webp");
    CHECK(gw::content_type_for("a.avif") == "image/avif");
    CHECK(gw::content_type_for("favicon.ico") == "image/x-icon");
    CHECK(gw::content_type_for("a.woff") == "font/woff");
    CHECK(gw::content_type_for("a.woff2") == "font/woff2");
    CHECK(gw::content_type_for("a.ttf") == "font/ttf");
    CHECK(gw::content_type_for("a.otf") == "font/otf");
    CHECK(gw::content_type_for("a.pdf") == "application/pdf");
    CHECK(gw::content_type_for("a.wasm") == "application/wasm");
    CHECK(gw::content_type_for("a.mp4") == "video/mp4");
    CHECK(gw::content_type_for("a.webm") == "video/webm");
    CHECK(gw::content_type_for("a.mp3") == "audio/mpeg");
    CHECK(gw::content_type_for("a.ogg") == "audio/ogg");
    CHECK(gw::content_type_for("a.wav") == "audio/wav");
    CHECK(gw::content_type_for("a.zip") == "application/zip");
    CHECK(gw::content_type_for("a.csv") == "text/csv; charset=utf-8");
    CHECK(gw::content_type_for("README.md") == "text/markdown; charset=utf-8");
    CHECK(gw::content_type_for("site.webmanifest") == "application/manifest+json");
    // Any case; no extension, an empty one, a dot file, an unknown or absurdly long one.
    CHECK(gw::content_type_for("STYLE.CSS") == "text/css; charset=utf-8");
    CHECK(gw::content_type_for("Photo.JpG") == "image/jpeg");
    CHECK(gw::content_type_for("Makefile") == "application/octet-stream");
    CHECK(gw::content_type_for("a.") == "application/octet-stream");
    CHECK(gw::content_type_for(".htaccess") == "application/octet-stream");
    CHECK(gw::content_type_for("a.unknown") == "application/octet-stream");
    CHECK(gw::content_type_for("a." + std::string(40, 'x')) == "application/octet-stream");
    // The route's types first.
    const std::vector<std::pair<std::string, std::string>> types{{"foo", "application/x-foo"}, {"css", "text/css"}};
    CHECK(gw::content_type_for("a.FOO", types) == "application/x-foo");
    CHECK(gw::content_type_for("a.css", types) == "text/css");
    CHECK(gw::content_type_for("a.js", types) == "text/javascript; charset=utf-8");

    const scratch_tree tree;
    auto settings = tree.settings();
    settings.types = {{"FOO", "application/x-foo"}}; // lower-cased by static_root
    const gw::static_root root(settings, "/");
    CHECK(root.content_type("data.foo") == "application/x-foo");
    const auto a = gw::serve(root, get("/data.foo"));
    CHECK(a.status == 200);
    CHECK(a.content_type == "application/x-foo");
    CHECK(gw::serve(root, get("/UPPER.CSS")).content_type == "text/css; charset=utf-8");
    CHECK(gw::serve(root, get("/noext")).content_type == "application/octet-stream");
    CHECK(gw::serve(root, get("/site.webmanifest")).content_type == "application/manifest+json");
}

TEST_CASE("static files: a file with its validators; HEAD without a body", "[unit][gateway][static]") {
    const scratch_tree tree;
    auto settings = tree.settings();
    settings.cache_control = "public, max-age=3600";
    const gw::static_root root(settings, "/");

    const auto a = gw::serve(root, get("/a.css"));
    CHECK(a.status == 200);
    CHECK(a.content_type == "text/css; charset=utf-8");
    CHECK(a.offset == 0);
    CHECK(a.length == 6);
    CHECK(a.size == 6);
    CHECK(body_of(a) == "body{}");
    CHECK(a.etag == "\"2ebc98a1-6\""); // nginx's form: mtime and size in hex
    CHECK(a.etag == gw::make_etag(nov_1994, 6));
    CHECK(a.last_modified == "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK(a.cache_control == "public, max-age=3600");
    CHECK(a.content_encoding.empty());
    CHECK(a.content_range.empty());
    CHECK(a.location.empty());
    CHECK(a.vary_accept_encoding); // precompressed is on by default

    // The same file, the same validators, however often it is asked for.
    CHECK(gw::serve(root, get("/a.css")).etag == a.etag);
    CHECK(gw::serve(root, get("/a.css")).last_modified == a.last_modified);
    // Another size, another tag; a new mtime, another tag.
    const auto big = gw::serve(root, get("/big.bin"));
    CHECK(big.etag != a.etag);
    CHECK(big.length == big_size);
    CHECK(body_of(big) == big_content());
    set_mtime(tree.root + "/a.css", nov_1994 + 1);
    CHECK(gw::serve(root, get("/a.css")).etag == "\"2ebc98a2-6\"");

    const auto h = gw::serve(root, get("/big.bin", "HEAD"));
    CHECK(h.status == 200);
    CHECK_FALSE(h.file);
    CHECK(h.length == big_size); // Content-Length: what GET would send
    CHECK(h.etag == big.etag);

    // An empty file: 200, nothing to read.
    gw::static_answer empty;
    write_file(tree.root + "/empty.txt", "");
    empty = gw::serve(root, get("/empty.txt"));
    CHECK(empty.status == 200);
    CHECK(empty.length == 0);
    CHECK_FALSE(empty.file);
}

TEST_CASE("static files: only GET and HEAD", "[unit][gateway][static]") {
    const scratch_tree tree;
    const gw::static_root root(tree.settings(), "/");
    for (const std::string_view method : {"POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "TRACE"}) {
        INFO(method);
        const auto a = gw::serve(root, get("/a.css", method));
        CHECK(a.status == 405);
        CHECK(a.allow == "GET, HEAD");
        CHECK_FALSE(a.file);
    }
}

TEST_CASE("static files: If-None-Match and If-Modified-Since", "[unit][gateway][static]") {
    const scratch_tree tree;
    auto settings = tree.settings();
    settings.cache_control = "no-cache";
    const gw::static_root root(settings, "/");
    const std::string etag = gw::make_etag(nov_1994, 6);
    const auto conditional = [&](std::string_view inm, std::string_view ims, std::string_view method = "GET") {
        auto r = get("/a.css", method);
        r.if_none_match = inm;
        r.if_modified_since = ims;
        return gw::serve(root, r);
    };
    for (const std::string& inm : std::vector<std::string>{etag, "\"x\", " + etag, "\"x\",\"y\" , " + etag + " ",
                                                           "W/" + etag, "*", "\"a,b\", W/" + etag}) {
        INFO(inm);
        const auto a = conditional(inm, "");
        CHECK(a.status == 304);
        CHECK_FALSE(a.file);
        CHECK(a.etag == etag);
        CHECK(a.last_modified == "Sun, 06 Nov 1994 08:49:37 GMT");
        CHECK(a.cache_control == "no-cache");
        CHECK(a.vary_accept_encoding);
        CHECK(a.length == 0);
        CHECK(conditional(inm, "", "HEAD").status == 304);
    }
    for (const std::string& inm :
         std::vector<std::string>{"\"x\"", "\"2ebc98a1-7\"", "2ebc98a1-6", "\"x\" " + etag, "W/\"x\""}) {
        INFO(inm);
        const auto a = conditional(inm, "");
        CHECK(a.status == 200);
        CHECK(a.file);
    }
    // If-Modified-Since: not modified since (equal or later), the three date forms.
    CHECK(conditional("", "Sun, 06 Nov 1994 08:49:37 GMT").status == 304);
    CHECK(conditional("", "Sunday, 06-Nov-94 08:49:37 GMT").status == 304);
    CHECK(conditional("", "Sun Nov  6 08:49:37 1994").status == 304);
    CHECK(conditional("", "Mon, 07 Nov 1994 00:00:00 GMT").status == 304);
    // Modified since: 200 with the file.
    const auto modified = conditional("", "Sun, 06 Nov 1994 08:49:36 GMT");
    CHECK(modified.status == 200);
    CHECK(body_of(modified) == "body{}");
    // An unparsable date is ignored.
    CHECK(conditional("", "yesterday").status == 200);
    CHECK(conditional("", "Sun, 06 Nov 1994 08:49:37 UTC").status == 200);
    // If-None-Match decides when present: If-Modified-Since is not looked at.
    CHECK(conditional("\"other\"", "Mon, 07 Nov 1994 00:00:00 GMT").status == 200);
    CHECK(conditional(etag, "Sat, 05 Nov 1994 00:00:00 GMT").status == 304);
}

TEST_CASE("static files: byte ranges", "[unit][gateway][static]") {
    const scratch_tree tree;
    set_mtime(tree.root + "/big.bin", nov_1994);
    const gw::static_root root(tree.settings(), "/");
    const std::string content = big_content();
    const auto ranged = [&](std::string_view range, std::string_view if_range = {}, std::string_view method = "GET") {
        auto r = get("/big.bin", method);
        r.range = range;
        r.if_range = if_range;
        return gw::serve(root, r);
    };

    const auto first = ranged("bytes=0-99");
    CHECK(first.status == 206);
    CHECK(first.offset == 0);
    CHECK(first.length == 100);
    CHECK(first.size == big_size);
    CHECK(first.content_range == "bytes 0-99/102400");
    CHECK(body_of(first) == content.substr(0, 100));

    const auto open_ended = ranged("bytes=102000-");
    CHECK(open_ended.status == 206);
    CHECK(open_ended.content_range == "bytes 102000-102399/102400");
    CHECK(body_of(open_ended) == content.substr(102000));

    const auto suffix = ranged("bytes=-10");
    CHECK(suffix.status == 206);
    CHECK(suffix.content_range == "bytes 102390-102399/102400");
    CHECK(body_of(suffix) == content.substr(102390));

    const auto clamped = ranged("bytes=102300-999999999");
    CHECK(clamped.status == 206);
    CHECK(clamped.length == 100);
    CHECK(ranged("bytes=-999999").content_range == "bytes 0-102399/102400"); // longer than the file: all of it
    CHECK(ranged("Bytes = 5-5").status == 200);                              // no spaces around '='
    CHECK(ranged("BYTES=5-5").status == 206);                                // the unit in any case

    for (const std::string_view unsatisfiable :
         {"bytes=102400-", "bytes=102400-102401", "bytes=-0", "bytes=99999999999999999999999-"}) {
        INFO(unsatisfiable);
        const auto a = ranged(unsatisfiable);
        CHECK(a.status == 416);
        CHECK(a.content_range == "bytes */102400");
        CHECK_FALSE(a.file);
    }
    // Several ranges, another unit, bad syntax: the whole file.
    for (const std::string_view ignored :
         {"bytes=0-1,5-6", "bytes=0-1, 5-6", "items=0-1", "bytes=abc", "bytes=5-1", "bytes=-", "bytes=1-2-3",
          "bytes= -", "bytes=0x10-", "bytes=+1-2", "bytes", "bytes=1 -2"}) {
        INFO(ignored);
        const auto a = ranged(ignored);
        CHECK(a.status == 200);
        CHECK(a.length == big_size);
        CHECK(a.content_range.empty());
    }
    // HEAD: the Range header is ignored.
    const auto head = ranged("bytes=0-99", {}, "HEAD");
    CHECK(head.status == 200);
    CHECK(head.length == big_size);
    CHECK_FALSE(head.file);

    // If-Range: the current strong tag or exact date lets the range through.
    const std::string etag = gw::make_etag(nov_1994, big_size);
    CHECK(ranged("bytes=0-9", etag).status == 206);
    CHECK(ranged("bytes=0-9", "Sun, 06 Nov 1994 08:49:37 GMT").status == 206);
    CHECK(ranged("bytes=0-9", "\"stale\"").status == 200);
    CHECK(ranged("bytes=0-9", "W/" + etag).status == 200);                     // weak: never
    CHECK(ranged("bytes=0-9", "Sun, 06 Nov 1994 08:49:38 GMT").status == 200); // not exactly Last-Modified
    CHECK(ranged("bytes=0-9", "garbage").status == 200);
    CHECK(ranged("bytes=999999-", "\"stale\"").status == 200); // If-Range fails first: no 416

    // A conditional wins over a range.
    auto r = get("/big.bin");
    r.range = "bytes=0-9";
    r.if_none_match = etag;
    CHECK(gw::serve(root, r).status == 304);
}

TEST_CASE("static files: parse_range on its own", "[unit][gateway][static]") {
    using gw::range_outcome;
    const auto p = gw::parse_range("bytes=0-0", 1);
    CHECK(p.outcome == range_outcome::partial);
    CHECK(p.first == 0);
    CHECK(p.last == 0);
    CHECK(gw::parse_range("bytes=0-", 0).outcome == range_outcome::unsatisfiable);
    CHECK(gw::parse_range("bytes=-5", 0).outcome == range_outcome::unsatisfiable);
    CHECK(gw::parse_range("", 10).outcome == range_outcome::ignore);
    const auto huge = gw::parse_range("bytes=3-184467440737095516150", 10); // past 64 bits: to the end
    CHECK(huge.outcome == range_outcome::partial);
    CHECK(huge.last == 9);
    const auto suffix = gw::parse_range(" bytes=-3 ", 10);
    CHECK(suffix.outcome == range_outcome::partial);
    CHECK(suffix.first == 7);
    CHECK(suffix.last == 9);
}

TEST_CASE("static files: directories answer their index, never a listing", "[unit][gateway][static]") {
    const scratch_tree tree;
    const gw::static_root root(tree.settings(), "/");

    const auto home = gw::serve(root, get("/"));
    CHECK(home.status == 200);
    CHECK(home.content_type == "text/html; charset=utf-8");
    CHECK(body_of(home) == "<h1>home</h1>");
    const auto sub = gw::serve(root, get("/sub/"));
    CHECK(sub.status == 200);
    CHECK(body_of(sub) == "<h1>sub</h1>");

    auto no_slash = get("/sub");
    const auto moved = gw::serve(root, no_slash);
    CHECK(moved.status == 301);
    CHECK(moved.location == "/sub/");
    CHECK_FALSE(moved.file);
    no_slash.query = "a=1&b=2";
    CHECK(gw::serve(root, no_slash).location == "/sub/?a=1&b=2");
    no_slash.query = "a=1\r\nSet-Cookie: x";
    CHECK(gw::serve(root, no_slash).location == "/sub/");

    for (const std::string_view path : {"/empty/", "/index-dir/", "/a.css/", "/sub/page.txt/"}) {
        INFO(path);
        const auto a = gw::serve(root, get(path));
        CHECK(a.status == 404);
        CHECK_FALSE(a.file);
    }
    CHECK(gw::serve(root, get("/empty")).status == 301);

    auto settings = tree.settings();
    settings.index = "";
    const gw::static_root no_index(settings, "/");
    CHECK(gw::serve(no_index, get("/")).status == 404);
    CHECK(gw::serve(no_index, get("/sub/")).status == 404);
    CHECK(gw::serve(no_index, get("/sub/index.html")).status == 200);
    settings.index = "page.txt";
    const gw::static_root other_index(settings, "/");
    const auto page = gw::serve(other_index, get("/sub/"));
    CHECK(page.status == 200);
    CHECK(page.content_type == "text/plain; charset=utf-8");
}

TEST_CASE("static files: the route's prefix is stripped", "[unit][gateway][static]") {
    const scratch_tree tree;
    const gw::static_root slash(tree.settings(), "/static/");
    CHECK(body_of(gw::serve(slash, get("/static/a.css"))) == "body{}");
    CHECK(body_of(gw::serve(slash, get("/static/sub/page.txt"))) == "page");
    CHECK(body_of(gw::serve(slash, get("/static/"))) == "<h1>home</h1>");
    CHECK(gw::serve(slash, get("/static/sub")).location == "/static/sub/");
    CHECK(gw::serve(slash, get("/a.css")).status == 404);
    CHECK(gw::serve(slash, get("/static")).status == 404); // the router would not send it here

    const gw::static_root bare(tree.settings(), "/static");
    CHECK(body_of(gw::serve(bare, get("/static/a.css"))) == "body{}");
    CHECK(gw::serve(bare, get("/static")).status == 301);
    CHECK(gw::serve(bare, get("/static")).location == "/static/");
    CHECK(body_of(gw::serve(bare, get("/static/"))) == "<h1>home</h1>");
    CHECK(gw::serve(bare, get("/staticx/a.css")).status == 404);
    CHECK(gw::serve(bare, get("/stati")).status == 404);
}

TEST_CASE("static files: precompressed siblings by Accept-Encoding", "[unit][gateway][static]") {
    const scratch_tree tree;
    const gw::static_root root(tree.settings(), "/");
    const auto with = [&](std::string_view path, std::string_view accept_encoding) {
        auto r = get(path);
        r.accept_encoding = accept_encoding;
        return gw::serve(root, r);
    };
    struct expectation {
        std::string_view accept_encoding;
        std::string_view encoding;
        std::string_view body;
    };
    for (const auto& [accept, encoding, body] : std::vector<expectation>{
             {"br, gzip", "br", "BROTLI"},
             {"gzip, deflate, br", "br", "BROTLI"},
             {"gzip", "gzip", "GZIP-BYTES"},
             {"x-gzip", "gzip", "GZIP-BYTES"},
             {"br;q=0, gzip", "gzip", "GZIP-BYTES"},
             {"BR;Q=0, GZIP", "gzip", "GZIP-BYTES"},
             {"gzip;q=1.0, br;q=0.5", "gzip", "GZIP-BYTES"},
             {"br;q=0.5, gzip;q=0.5", "br", "BROTLI"},
             {"*", "br", "BROTLI"},
             {"br;q=0, *", "gzip", "GZIP-BYTES"},
             {"*;q=0", "", "console.log('identity');"},
             {"identity", "", "console.log('identity');"},
             {"", "", "console.log('identity');"},
             {"br;q=0, gzip;q=0", "", "console.log('identity');"},
             {"br;q=2", "", "console.log('identity');"}, // a malformed q drops the entry
             {"deflate", "", "console.log('identity');"},
         }) {
        INFO(accept);
        const auto a = with("/app.js", accept);
        CHECK(a.status == 200);
        CHECK(a.content_encoding == encoding);
        CHECK(body_of(a) == body);
        CHECK(a.vary_accept_encoding);
        CHECK(a.content_type == "text/javascript; charset=utf-8"); // that of app.js
        CHECK(a.etag.ends_with(encoding == "br" ? "-br\"" : encoding == "gzip" ? "-gz\"" : "\""));
    }
    const auto identity = with("/app.js", "");
    const auto br = with("/app.js", "br");
    const auto gz = with("/app.js", "gzip");
    CHECK(identity.etag != br.etag);
    CHECK(br.etag != gz.etag);
    CHECK(br.length == 6);

    // Only a .gz beside it; none beside a.css.
    CHECK(with("/only-gz.js", "br, gzip").content_encoding == "gzip");
    CHECK(with("/only-gz.js", "br").content_encoding.empty());
    const auto css = with("/a.css", "br, gzip");
    CHECK(css.content_encoding.empty());
    CHECK(css.vary_accept_encoding);

    // A range of the compressed bytes; a conditional on the sibling's tag.
    auto r = get("/app.js");
    r.accept_encoding = "br";
    r.range = "bytes=1-2";
    const auto part = gw::serve(root, r);
    CHECK(part.status == 206);
    CHECK(body_of(part) == "RO");
    r.range = {};
    r.if_none_match = br.etag;
    CHECK(gw::serve(root, r).status == 304);
    r.accept_encoding = "gzip";
    CHECK(gw::serve(root, r).status == 200);

    auto settings = tree.settings();
    settings.precompressed = false;
    const gw::static_root plain(settings, "/");
    auto q = get("/app.js");
    q.accept_encoding = "br, gzip";
    const auto a = gw::serve(plain, q);
    CHECK(a.content_encoding.empty());
    CHECK_FALSE(a.vary_accept_encoding);
    CHECK(body_of(a) == "console.log('identity');");
}

TEST_CASE("static files: Accept-Encoding qualities", "[unit][gateway][static]") {
    CHECK(gw::encoding_quality("br", "br") == 1000);
    CHECK(gw::encoding_quality("gzip;q=0.8, br;q=0.125", "br") == 125);
    CHECK(gw::encoding_quality("gzip ; q=0.8", "gzip") == 800);
    CHECK(gw::encoding_quality("gzip;q=0.", "gzip") == 0);
    CHECK(gw::encoding_quality("gzip;q=1.000", "gzip") == 1000);
    CHECK(gw::encoding_quality("gzip;q=1.001", "gzip") == 0);
    CHECK(gw::encoding_quality("gzip;q=0.1234", "gzip") == 0);
    CHECK(gw::encoding_quality("gzip;q=", "gzip") == 0);
    CHECK(gw::encoding_quality("*;q=0.3", "br") == 300);
    CHECK(gw::encoding_quality("br;q=0, *", "br") == 0);
    CHECK(gw::encoding_quality("*, br;q=0", "br") == 0);
    CHECK(gw::encoding_quality(",,br,,", "br") == 1000);
    CHECK(gw::encoding_quality("brotli", "br") == 0);
    CHECK(gw::accepts_encoding("gzip, br", "br"));
    CHECK_FALSE(gw::accepts_encoding("br;q=0", "br"));
    CHECK_FALSE(gw::accepts_encoding("", "gzip"));
}

TEST_CASE("static files: HTTP dates", "[unit][gateway][static]") {
    CHECK(gw::format_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
    CHECK(gw::format_http_date(nov_1994) == "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK(gw::format_http_date(951782400) == "Tue, 29 Feb 2000 00:00:00 GMT");
    CHECK(gw::format_http_date(-1) == "Wed, 31 Dec 1969 23:59:59 GMT");
    CHECK(gw::format_http_date(std::int64_t{1} << 50).empty());
    CHECK(gw::format_http_date(253402300799) == "Fri, 31 Dec 9999 23:59:59 GMT");
    CHECK(gw::format_http_date(253402300800).empty());
    CHECK(gw::format_http_date(-62135596800) == "Mon, 01 Jan 0001 00:00:00 GMT");
    CHECK(gw::format_http_date(-62135596801).empty());
    CHECK(gw::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == nov_1994);
    CHECK(gw::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == nov_1994);
    CHECK(gw::parse_http_date("Sun Nov  6 08:49:37 1994") == nov_1994);
    CHECK(gw::parse_http_date("  Sun, 06 Nov 1994 08:49:37 GMT ") == nov_1994);
    CHECK(gw::parse_http_date("Tuesday, 29-Feb-00 00:00:00 GMT") == 951782400);
    for (std::int64_t t : {std::int64_t{0}, nov_1994, std::int64_t{951782400}, std::int64_t{4102444799}}) {
        CHECK(gw::parse_http_date(gw::format_http_date(t)) == t);
    }
    for (const std::string_view bad :
         {"", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 31 Feb 1994 08:49:37 GMT",
          "Sun, 06 Nov 1994 24:00:00 GMT", "Sun, 06 nov 1994 08:49:37 GMT", "Xyz, 06 Nov 1994 08:49:37 GMT",
          "Sunday, 06-Nov-1994 08:49:37 GMT", "Sun Nov 6 08:49:37 1994", "784111777", "Sun, 06 Nov 1994 08:49 GMT",
          "Funday, 06-Nov-94 08:49:37 GMT"}) {
        INFO(bad);
        CHECK_FALSE(gw::parse_http_date(bad));
    }
}

TEST_CASE("static files: dot files are private unless the route says otherwise", "[unit][gateway][static]") {
    const scratch_tree tree;
    const gw::static_root root(tree.settings(), "/");
    for (const std::string_view path : {"/.hidden", "/.git/config", "/.git/", "/.git", "/.well-known/security.txt"}) {
        INFO(path);
        const auto a = gw::serve(root, get(path));
        CHECK(a.status == 404);
        CHECK_FALSE(a.file);
    }
    auto settings = tree.settings();
    settings.hidden = true;
    const gw::static_root open(settings, "/");
    CHECK(body_of(gw::serve(open, get("/.hidden"))) == "hidden");
    CHECK(body_of(gw::serve(open, get("/.git/config"))) == "[core]");
    CHECK(body_of(gw::serve(open, get("/.well-known/security.txt"))) == "Contact: x");
}

TEST_CASE("static files: escapes from the root are refused and nothing is opened", "[unit][gateway][static]") {
    const scratch_tree tree;
    const std::string nul_inside("/a.css\0.html", 12);
    const std::vector<std::string> escapes{
        "/../secret",
        "/..%2fsecret",
        "/%2e%2e/secret",
        "/%2e%2e%2fsecret",
        "/sub/../../secret",
        "/sub/..",
        "/..",
        "/./a.css",
        "/sub/./index.html",
        "/a.css%00.html",
        nul_inside,
        "/..\\secret",
        "/sub\\..\\..\\secret",
        "//etc/passwd",
        "/sub//index.html",
        "/link-out",
        "/link-passwd",
        "/link-outdir",
        "/link-outdir/",
        "/link-outdir/file",
        "/link-outdir/../secret",
        "/link-abs-in",
        "/fifo",
        "/sock",
        "/.hidden",
        "/.git/config",
        "/%c0%ae%c0%ae/secret",
        "/%C0%AE%C0%AE/secret",
        "/..;/secret",
        "/a.css.",
        "/a.css%20",
        "/" + std::string(PATH_MAX + 10, 'a'),
        "/" + std::string(NAME_MAX + 1, 'a'),
        "/sub/" + std::string(PATH_MAX, 'b') + "/x",
        "/dev/null",
        "/etc/passwd",
        "/proc/self/root/etc/passwd",
        "/a\x01"
        "b",
        "/a\x7f",
        "/a\r\nb",
        "relative.css",
        "",
    };
    REQUIRE(escapes.size() >= 20);
    const auto refuse_all = [&](const gw::static_root& root) {
        for (const auto& path : escapes) {
            INFO("path: " << path.substr(0, 80) << (root.walks() ? " (walk)" : " (openat2)"));
            for (const std::string_view method : {"GET", "HEAD"}) {
                const auto a = gw::serve(root, get(path, method));
                CHECK((a.status == 400 || a.status == 404));
                CHECK_FALSE(a.file);
                CHECK(a.length == 0);
            }
        }
    };

    gw::static_root root(tree.settings(), "/");
    SECTION("openat2") {
        refuse_all(root);
        if (openat2_available()) {
            // A symlink that stays inside the root is followed.
            CHECK(body_of(gw::serve(root, get("/link-in.css"))) == "body{}");
        }
    }
    SECTION("the O_NOFOLLOW walk") {
        root.use_walk_for_test(true);
        REQUIRE(root.walks());
        refuse_all(root);
        // The walk refuses every symlink, even one that stays inside.
        CHECK(gw::serve(root, get("/link-in.css")).status == 404);
        // What is plain still works.
        CHECK(body_of(gw::serve(root, get("/a.css"))) == "body{}");
        CHECK(body_of(gw::serve(root, get("/sub/page.txt"))) == "page");
        CHECK(body_of(gw::serve(root, get("/sub/"))) == "<h1>sub</h1>");
        CHECK(gw::serve(root, get("/sub")).status == 301);
        auto r = get("/app.js");
        r.accept_encoding = "gzip";
        CHECK(body_of(gw::serve(root, r)) == "GZIP-BYTES");
    }
    SECTION("with dot files allowed, and under a prefix") {
        auto settings = tree.settings();
        settings.hidden = true;
        for (const bool walk : {false, true}) {
            gw::static_root open(settings, "/static/");
            open.use_walk_for_test(walk);
            for (const std::string_view path :
                 {"/static/../secret", "/static/..%2fsecret", "/static//etc/passwd", "/static/link-out",
                  "/static/link-outdir/file", "/static/..;/secret", "/static/sub/../../secret", "/static/fifo",
                  "/static/.%2e/secret", "/static/%2e%2e/secret", "/static/.../secret", "/secret",
                  "/static../secret"}) {
                INFO(path << (walk ? " (walk)" : " (openat2)"));
                const auto a = gw::serve(open, get(path));
                CHECK((a.status == 400 || a.status == 404));
                CHECK_FALSE(a.file);
            }
        }
    }
}

TEST_CASE("static files: where openat2 answers ENOSYS, the walk takes over by itself", "[unit][gateway][static]") {
    const scratch_tree tree;
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        // A filter that makes openat2 look absent, as an old kernel or a
        // container's profile does; everything else goes through.
        sock_filter program[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        sock_fprog filter{static_cast<unsigned short>(std::size(program)), program};
        int code = 0;
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter) != 0) {
            code = 10;
        } else {
            const gw::static_root root(tree.settings(), "/");
            const auto plain = gw::serve(root, get("/sub/page.txt"));
            char buffer[8] = {};
            if (plain.status != 200 || !plain.file || ::pread(plain.file.get(), buffer, 4, 0) != 4 ||
                std::string_view(buffer, 4) != "page") {
                code = 11;
            } else if (gw::serve(root, get("/link-in.css")).status != 404) {
                code = 12; // followed a symlink: not the walk
            } else if (gw::serve(root, get("/link-out")).status != 404 ||
                       gw::serve(root, get("/link-outdir/file")).status != 404) {
                code = 13;
            }
        }
        // exit_group directly: no Catch2 or sanitizer exit handler in the child.
        ::syscall(SYS_exit_group, code);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("static files: a file the workers cannot read is not found", "[unit][gateway][static]") {
    const scratch_tree tree;
    if (::geteuid() == 0) {
        WARN("running as root: permission bits do not stop root, nothing to check");
        return;
    }
    write_file(tree.root + "/private.txt", "x");
    REQUIRE(::chmod((tree.root + "/private.txt").c_str(), 0) == 0);
    const gw::static_root root(tree.settings(), "/");
    const auto a = gw::serve(root, get("/private.txt"));
    CHECK(a.status == 404);
    CHECK(a.error == EACCES);
    CHECK_FALSE(a.file);
}

TEST_CASE("static files: the root is opened once, and owned", "[unit][gateway][static]") {
    const scratch_tree tree;
    auto settings = tree.settings();
    settings.root = tree.base + "/missing";
    CHECK_THROWS_WITH(gw::static_root(settings, "/"), Contains(tree.base + "/missing") && Contains("No such file"));
    settings.root = tree.root + "/a.css";
    CHECK_THROWS_WITH(gw::static_root(settings, "/"), Contains("a.css") && Contains("Not a directory"));
    settings = tree.settings();
    settings.index = "sub/index.html";
    CHECK_THROWS_AS(gw::static_root(settings, "/"), std::runtime_error);

    gw::static_root first(tree.settings(), "/");
    const int fd = first.fd();
    REQUIRE(fd >= 0);
    CHECK(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
    {
        gw::static_root second(std::move(first));
        CHECK(second.fd() == fd);
        CHECK(first.fd() == -1); // NOLINT(bugprone-use-after-move): moved-from state is specified
        CHECK(body_of(gw::serve(second, get("/a.css"))) == "body{}");
    }
    // Closed with its owner.
    errno = 0;
    CHECK(::fcntl(fd, F_GETFD) == -1);
    CHECK(errno == EBADF);

    gw::unique_fd a(::dup(STDERR_FILENO));
    REQUIRE(a);
    const int raw = a.get();
    gw::unique_fd b;
    b = std::move(a);
    CHECK_FALSE(a); // NOLINT(bugprone-use-after-move)
    CHECK(b.get() == raw);
    b.reset();
    CHECK(::fcntl(raw, F_GETFD) == -1);
}
