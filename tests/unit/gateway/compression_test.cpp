// Response compression (compression.cpp): the coding chosen from
// Accept-Encoding, which responses qualify, the head of a compressed
// response, and the streaming encoders against the real decoders.

#include "gateway/proxy/compression.hpp"

#include <brotli/decode.h>
#include <zlib.h>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace rampart::gateway;
namespace cfg = rampart::config;

namespace {

const std::vector<std::string> both{"br", "gzip"};

http::response_header<> response(std::string_view type, std::string_view length = "5000") {
    http::response_header<> r;
    r.result(http::status::ok);
    r.set(http::field::content_type, type);
    if (!length.empty()) {
        r.set(http::field::content_length, length);
    }
    return r;
}

std::string gunzip(const std::string& in) {
    z_stream z{};
    REQUIRE(inflateInit2(&z, 15 + 16) == Z_OK);
    std::string out(in.size() * 20 + 1024, '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    const int r = inflate(&z, Z_FINISH);
    out.resize(z.total_out);
    inflateEnd(&z);
    REQUIRE(r == Z_STREAM_END);
    return out;
}

std::string unbrotli(const std::string& in) {
    std::string out(in.size() * 40 + 1024, '\0');
    std::size_t size = out.size();
    REQUIRE(BrotliDecoderDecompress(in.size(), reinterpret_cast<const std::uint8_t*>(in.data()), &size,
                                    reinterpret_cast<std::uint8_t*>(out.data())) == BROTLI_DECODER_RESULT_SUCCESS);
    out.resize(size);
    return out;
}

std::string page(std::size_t n) {
    std::string s;
    for (std::size_t i = 0; s.size() < n; ++i) {
        s += "<li>item " + std::to_string(i * 7919 % 100000) + " of the catalogue</li>\n";
    }
    s.resize(n);
    return s;
}

} // namespace

TEST_CASE("compression: the coding by q-value, ties by the server's order", "[unit][gateway]") {
    CHECK(choose_coding("gzip, deflate, br", both) == content_coding::br);
    CHECK(choose_coding("gzip", both) == content_coding::gzip);
    CHECK(choose_coding("br;q=0.5, gzip;q=0.9", both) == content_coding::gzip);
    CHECK(choose_coding("br;q=1.0, gzip;q=1", both) == content_coding::br);
    CHECK(choose_coding("gzip;q=0.001", both) == content_coding::gzip);
    CHECK(choose_coding("gzip;q=0, br;q=0", both) == content_coding::identity);
    CHECK(choose_coding("", both) == content_coding::identity);
    CHECK(choose_coding("identity", both) == content_coding::identity);
    CHECK(choose_coding("*", both) == content_coding::br);
    CHECK(choose_coding("*;q=0.5, br;q=0", both) == content_coding::gzip);
    CHECK(choose_coding("x-gzip", both) == content_coding::gzip);
    CHECK(choose_coding("GZIP ; Q=0.8", both) == content_coding::gzip);
    CHECK(choose_coding("gzip;q=2", both) == content_coding::identity);       // malformed q: ignored
    CHECK(choose_coding("gzip;q=0.1234", both) == content_coding::identity);  // more than three decimals
    CHECK(choose_coding("gzip, br", {"gzip", "br"}) == content_coding::gzip); // the server's order
    CHECK(choose_coding("br", {"gzip"}) == content_coding::identity);         // not offered
}

TEST_CASE("compression: which responses qualify", "[unit][gateway]") {
    const cfg::compression s;
    CHECK(compressible(response("text/html; charset=utf-8"), http::verb::get, s));
    CHECK(compressible(response("application/json", ""), http::verb::get, s)); // length unknown
    CHECK(compressible(response("TEXT/CSS"), http::verb::get, s));
    CHECK_FALSE(compressible(response("image/png"), http::verb::get, s));
    CHECK_FALSE(compressible(response("text/html", "1023"), http::verb::get, s));
    CHECK(compressible(response("text/html", "1024"), http::verb::get, s));
    CHECK(compressible(response("text/html"), http::verb::head, s));       // its head fields, no body
    CHECK_FALSE(compressible(response("text/html"), http::verb::post, s)); // BREACH: may echo the form
    auto r = response("text/html");
    r.result(http::status::partial_content);
    CHECK_FALSE(compressible(r, http::verb::get, s));
    r = response("text/html");
    r.set(http::field::content_encoding, "gzip");
    CHECK_FALSE(compressible(r, http::verb::get, s));
    r.set(http::field::content_encoding, "identity");
    CHECK(compressible(r, http::verb::get, s));
    r = response("text/html");
    r.set(http::field::cache_control, "public, No-Transform");
    CHECK_FALSE(compressible(r, http::verb::get, s));
    r = response("text/html");
    r.set(http::field::set_cookie, "a=1");
    CHECK_FALSE(compressible(r, http::verb::get, s)); // BREACH
    cfg::compression with_cookies;
    with_cookies.with_cookies = true;
    CHECK(compressible(r, http::verb::get, with_cookies));
    r = response("text/html");
    r.set(http::field::content_range, "bytes 0-9/100");
    CHECK_FALSE(compressible(r, http::verb::get, s));
}

TEST_CASE("compression: the head of an encoded response and Vary", "[unit][gateway]") {
    auto r = response("text/html");
    r.set(http::field::etag, "\"v1\"");
    mark_encoded(r, content_coding::br);
    CHECK(r[http::field::content_encoding] == "br");
    CHECK(r.find(http::field::content_length) == r.end());
    CHECK(r[http::field::etag] == "W/\"v1\"");
    r.set(http::field::etag, "W/\"v2\"");
    mark_encoded(r, content_coding::gzip);
    CHECK(r[http::field::etag] == "W/\"v2\""); // already weak
    add_vary_accept_encoding(r);
    CHECK(r[http::field::vary] == "Accept-Encoding");
    add_vary_accept_encoding(r);
    CHECK(r[http::field::vary] == "Accept-Encoding");
    auto v = response("text/html");
    v.set(http::field::vary, "Origin");
    add_vary_accept_encoding(v);
    CHECK(v[http::field::vary] == "Origin, Accept-Encoding");
    v.set(http::field::vary, "*");
    add_vary_accept_encoding(v);
    CHECK(v[http::field::vary] == "*");
}

TEST_CASE("compression: streamed pieces decode to the body, each piece flushed", "[unit][gateway]") {
    const cfg::compression s;
    const std::string body = page(300'000);
    for (const auto coding : {content_coding::gzip, content_coding::br}) {
        body_encoder e(coding, s);
        std::string out;
        std::size_t after_first = 0;
        for (std::size_t at = 0; at < body.size(); at += 65536) {
            const std::string_view piece = std::string_view(body).substr(at, 65536);
            REQUIRE(e.encode(piece, at + 65536 >= body.size(), out));
            if (at == 0) {
                after_first = out.size();
            }
        }
        CHECK(after_first > 0); // the first piece left at once (flushed), not held for the rest
        CHECK(out.size() < body.size() / 5);
        CHECK((coding == content_coding::gzip ? gunzip(out) : unbrotli(out)) == body);
    }
    // An empty body still makes a valid stream.
    body_encoder empty(content_coding::gzip, s);
    std::string out;
    REQUIRE(empty.encode({}, true, out));
    CHECK(gunzip(out).empty());
}
