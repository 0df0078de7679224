#include "gateway/http_rules.hpp"

#include <catch2/catch.hpp>

using namespace rampart::gateway;

namespace {
http::request_header<> request(std::initializer_list<std::pair<const char*, const char*>> fields,
                               const char* target = "/") {
    http::request_header<> h;
    h.method(http::verb::get);
    h.target(target);
    h.version(11);
    for (auto [k, v] : fields) {
        h.insert(k, v);
    }
    return h;
}
}  // namespace

TEST_CASE("forwarding fields are replaced, not appended", "[unit][gateway][http]") {
    auto h = request({{"Host", "www.foobar.com"},
                      {"X-Forwarded-For", "6.6.6.6"},
                      {"X-Forwarded-Proto", "http"},
                      {"Forwarded", "for=6.6.6.6"},
                      {"X-Real-IP", "6.6.6.6"}});
    rewrite_request(h, client_info{"192.0.2.7", true});
    CHECK(h["X-Forwarded-For"] == "192.0.2.7");
    CHECK(h["X-Forwarded-Proto"] == "https");
    CHECK(h["X-Forwarded-Host"] == "www.foobar.com");
    CHECK(h[http::field::forwarded] == "for=192.0.2.7;proto=https;host=\"www.foobar.com\"");
    CHECK(h.count("X-Real-IP") == 0);
    CHECK(h.count("X-Forwarded-For") == 1);
}

TEST_CASE("Forwarded quotes IPv6 clients", "[unit][gateway][http]") {
    CHECK(forwarded_value(client_info{"2001:db8::1", true}, "a.example") ==
          "for=\"[2001:db8::1]\";proto=https;host=\"a.example\"");
}

TEST_CASE("hop-by-hop fields and the fields Connection names are removed", "[unit][gateway][http]") {
    auto h = request({{"Host", "www.foobar.com"},
                      {"Connection", "keep-alive, X-Secret"},
                      {"X-Secret", "1"},
                      {"Keep-Alive", "timeout=5"},
                      {"TE", "trailers"},
                      {"Upgrade", "websocket"},
                      {"Proxy-Authorization", "Basic x"},
                      {"X-Kept", "yes"}});
    rewrite_request(h, client_info{"127.0.0.1", true});
    for (auto name : {"X-Secret", "Keep-Alive", "TE", "Upgrade", "Proxy-Authorization"}) {
        INFO(name);
        CHECK(h.count(name) == 0);
    }
    CHECK(h["X-Kept"] == "yes");
}

TEST_CASE("request validation", "[unit][gateway][http]") {
    CHECK_FALSE(validate_request(request({{"Host", "www.foobar.com"}}), 100));
    auto missing = validate_request(request({}), 100);
    REQUIRE(missing);
    CHECK(missing->status == http::status::bad_request);
    auto dup = validate_request(request({{"Host", "a"}, {"Host", "b"}}), 100);
    REQUIRE(dup);
    CHECK(dup->reason == "duplicate Host");
    auto many = validate_request(request({{"Host", "a"}, {"A", "1"}, {"B", "2"}}), 2);
    REQUIRE(many);
    CHECK(many->status == http::status::request_header_fields_too_large);
    auto absolute = validate_request(request({{"Host", "a"}}, "http://a/"), 100);
    REQUIRE(absolute);
    CHECK(absolute->status == http::status::bad_request);
    CHECK(validate_request(request({{"Host", "bad host"}}), 100));
}

TEST_CASE("ambiguous message framing is refused", "[unit][gateway][http]") {
    auto reason = [](std::initializer_list<std::pair<const char*, const char*>> fields) {
        auto r = validate_request(request(fields), 100);
        return r ? r->reason : std::string("accepted");
    };
    CHECK(reason({{"Host", "a"}, {"Content-Length", "5"}}) == "accepted");
    CHECK(reason({{"Host", "a"}, {"Transfer-Encoding", "chunked"}}) == "accepted");
    CHECK(reason({{"Host", "a"}, {"Transfer-Encoding", "Chunked"}}) == "accepted");
    CHECK(reason({{"Host", "a"}, {"Content-Length", "5"}, {"Transfer-Encoding", "chunked"}}) ==
          "both Content-Length and Transfer-Encoding");
    CHECK(reason({{"Host", "a"}, {"Content-Length", "5"}, {"Content-Length", "5"}}) == "duplicate Content-Length");
    CHECK(reason({{"Host", "a"}, {"Transfer-Encoding", "gzip, chunked"}}) == "Transfer-Encoding other than chunked");
    CHECK(reason({{"Host", "a"}, {"Transfer-Encoding", "chunked"}, {"Transfer-Encoding", "chunked"}}) ==
          "Transfer-Encoding other than chunked");
}

TEST_CASE("https redirect location", "[unit][gateway][http]") {
    CHECK(*https_location("www.foobar.com", "/a?b=1", 443, "site") == "https://www.foobar.com/a?b=1");
    CHECK(*https_location("www.foobar.com:8080", "/x", 8443, "site") == "https://www.foobar.com:8443/x");
    CHECK(*https_location("", "/x", 443, "www.foobar.com") == "https://www.foobar.com/x");
    CHECK(*https_location("evil\"/", "/x", 443, "www.foobar.com") == "https://www.foobar.com/x");
    CHECK(*https_location("[::1]:80", "/", 443, "site") == "https://[::1]/");
    CHECK_FALSE(https_location("a", "http://a/", 443, "site"));
}

TEST_CASE("responses get HSTS and lose hop-by-hop fields", "[unit][gateway][http]") {
    http::response_header<> h;
    h.result(http::status::ok);
    h.version(11);
    h.set("Connection", "close, X-Internal");
    h.set("X-Internal", "1");
    rewrite_response(h, "max-age=31536000; includeSubDomains", true, 11);
    CHECK(h[http::field::strict_transport_security] == "max-age=31536000; includeSubDomains");
    CHECK(h.count("X-Internal") == 0);
    CHECK(h.count(http::field::connection) == 0);
    auto err = make_error_response(http::status::bad_gateway, 11, "", true);
    CHECK(err.body() == "502 Bad Gateway\n");
    CHECK(err[http::field::connection] == "close");
}
