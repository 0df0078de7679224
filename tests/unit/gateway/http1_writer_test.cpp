#include "gateway/proxy/http1_writer.hpp"

#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace rampart::gateway;
namespace http = boost::beast::http;
namespace net = boost::asio;

namespace {

// What Beast's serializer writes for `msg` with its body given in `pieces`
// (the last piece ends the body), as http::async_write would send it: the
// reference the writer must match byte for byte.
template <bool Request>
std::string beast_bytes(http::message<Request, http::buffer_body>& msg, const std::vector<std::string>& pieces) {
    http::serializer<Request, http::buffer_body> sr{msg};
    std::string out;
    for (std::size_t i = 0; i < pieces.size(); ++i) {
        auto& body = msg.body();
        body.data = pieces[i].empty() ? nullptr : const_cast<char*>(pieces[i].data());
        body.size = pieces[i].size();
        body.more = i + 1 < pieces.size();
        for (int step = 0; step < 100; ++step) {
            boost::system::error_code ec;
            bool wrote = false;
            sr.next(ec, [&](boost::system::error_code&, const auto& buffers) {
                out += boost::beast::buffers_to_string(buffers);
                sr.consume(net::buffer_size(buffers));
                wrote = true;
            });
            if (ec == http::error::need_buffer || sr.is_done()) {
                break;
            }
            REQUIRE(!ec);
            REQUIRE(wrote);
        }
    }
    REQUIRE(sr.is_done());
    return out;
}

template <class Header>
std::string writer_bytes(const Header& head, bool chunked, const std::vector<std::string>& pieces) {
    http1_writer w;
    w.start(head, chunked);
    std::string out;
    for (std::size_t i = 0; i < pieces.size(); ++i) {
        out += boost::beast::buffers_to_string(w.piece(net::buffer(pieces[i]), i + 1 == pieces.size()));
    }
    return out;
}

http::request<http::buffer_body> a_request(bool chunked) {
    http::request<http::buffer_body> req{http::verb::post, "/upload?x=1", 11};
    req.set(http::field::host, "www.foobar.com");
    req.set("X-Forwarded-For", "192.0.2.7");
    req.insert("Cookie", "a=1");
    req.insert("Cookie", "b=2");
    if (chunked) {
        req.chunked(true);
    } else {
        req.content_length(11);
    }
    return req;
}

} // namespace

TEST_CASE("http1_writer: a request head and body, byte for byte as Beast's serializer", "[unit][http1_writer]") {
    SECTION("Content-Length, one piece") {
        auto req = a_request(false);
        const std::vector<std::string> pieces{"hello world"};
        CHECK(writer_bytes(req.base(), false, pieces) == beast_bytes(req, pieces));
    }
    SECTION("Content-Length, three pieces") {
        auto req = a_request(false);
        const std::vector<std::string> pieces{"hel", "lo wo", "rld"};
        CHECK(writer_bytes(req.base(), false, pieces) == beast_bytes(req, pieces));
    }
    SECTION("no body at all") {
        http::request<http::buffer_body> req{http::verb::get, "/", 11};
        req.set(http::field::host, "www.foobar.com");
        const std::vector<std::string> pieces{""};
        const std::string bytes = writer_bytes(req.base(), false, pieces);
        CHECK(bytes == "GET / HTTP/1.1\r\nHost: www.foobar.com\r\n\r\n");
        CHECK(bytes == beast_bytes(req, pieces));
    }
    SECTION("chunked: pieces, an empty piece in the middle, the last piece with data") {
        auto req = a_request(true);
        const std::vector<std::string> pieces{"hello", "", std::string(300, 'x'), "end"};
        const std::string bytes = writer_bytes(req.base(), true, pieces);
        CHECK(bytes == beast_bytes(req, pieces));
        CHECK(bytes.find("\r\n\r\n5\r\nhello\r\n12c\r\n") != std::string::npos);
        CHECK(bytes.ends_with("3\r\nend\r\n0\r\n\r\n"));
    }
    SECTION("chunked: the body ends with an empty piece") {
        auto req = a_request(true);
        const std::vector<std::string> pieces{"abc", ""};
        CHECK(writer_bytes(req.base(), true, pieces) == beast_bytes(req, pieces));
    }
    SECTION("an unknown method and HTTP/1.0") {
        http::request<http::buffer_body> req;
        req.method_string("PURGE");
        req.target("/cache/item");
        req.version(10);
        req.set(http::field::host, "www.foobar.com");
        const std::vector<std::string> pieces{""};
        const std::string bytes = writer_bytes(req.base(), false, pieces);
        CHECK(bytes.starts_with("PURGE /cache/item HTTP/1.0\r\n"));
        CHECK(bytes == beast_bytes(req, pieces));
    }
}

TEST_CASE("http1_writer: a response head, byte for byte as Beast's serializer", "[unit][http1_writer]") {
    SECTION("the standard reason phrase when the message has none") {
        for (const unsigned code : {200u, 204u, 301u, 404u, 502u, 299u}) {
            http::response<http::buffer_body> res;
            res.result(code);
            res.version(11);
            res.set(http::field::server, "app1");
            res.set("Strict-Transport-Security", "max-age=31536000; includeSubDomains");
            res.content_length(2);
            const std::vector<std::string> pieces{"ok"};
            INFO(code);
            CHECK(writer_bytes(res.base(), false, pieces) == beast_bytes(res, pieces));
        }
    }
    SECTION("the app server's own reason phrase is kept") {
        http::response<http::buffer_body> res{http::status::ok, 11};
        res.reason("Fine Thanks");
        res.content_length(0);
        const std::vector<std::string> pieces{""};
        const std::string bytes = writer_bytes(res.base(), false, pieces);
        CHECK(bytes.starts_with("HTTP/1.1 200 Fine Thanks\r\n"));
        CHECK(bytes == beast_bytes(res, pieces));
    }
    SECTION("chunked, HTTP/1.0 status line") {
        http::response<http::buffer_body> res{http::status::ok, 10};
        res.chunked(true);
        const std::vector<std::string> pieces{"a", "bc"};
        CHECK(writer_bytes(res.base(), true, pieces) == beast_bytes(res, pieces));
    }
    SECTION("head_text is the head alone") {
        http::response<http::buffer_body> res{http::status::not_found, 11};
        res.set(http::field::content_length, "0");
        CHECK(head_text(res.base()) == "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
}

TEST_CASE("http1_writer: a piece is at most three buffers, the head only with the first", "[unit][http1_writer]") {
    auto req = a_request(false);
    http1_writer w;
    w.start(req.base(), false);
    CHECK(w.head_pending());
    const std::string first = "hello";
    auto b = w.piece(net::buffer(first), false);
    CHECK(boost::beast::buffers_to_string(b).starts_with("POST /upload?x=1 HTTP/1.1\r\n"));
    CHECK(b[1].data() == first.data()); // the body is not copied
    CHECK_FALSE(w.head_pending());
    const std::string second = " world";
    b = w.piece(net::buffer(second), true);
    CHECK(boost::beast::buffers_to_string(b) == " world");
    CHECK(b[0].size() == 0);
}
