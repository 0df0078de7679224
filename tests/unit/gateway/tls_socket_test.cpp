// tls_socket against a real OpenSSL client over loopback TCP: the records of
// one write leave together, everything arrives intact, also when the client
// reads slowly and the socket fills up.

#include "certs/certs.hpp"
#include "gateway/proxy/tls_socket.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/write.hpp>

#include <catch2/catch.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

namespace gw = rampart::gateway;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

namespace {

// Development certificates in a temporary directory, removed at exit.
struct dev_certificates {
    std::string dir;
    dev_certificates() {
        auto d = std::filesystem::temp_directory_path() / ("rampart-tls-socket-test-" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        rampart::certs::make_dev_certificates(d.string(), {"www.foobar.com"});
        dir = d.string();
    }
    ~dev_certificates() {
        std::error_code ignored;
        std::filesystem::remove_all(dir, ignored);
    }
};

const std::string& dev_dir() {
    static const dev_certificates certificates;
    return certificates.dir;
}

struct ctx_deleter {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using ctx_ptr = std::unique_ptr<SSL_CTX, ctx_deleter>;

ctx_ptr server_context() {
    ctx_ptr ctx(SSL_CTX_new(TLS_server_method()));
    REQUIRE(ctx);
    REQUIRE(SSL_CTX_use_certificate_chain_file(ctx.get(), (dev_dir() + "/ecdsa.pem").c_str()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey_file(ctx.get(), (dev_dir() + "/ecdsa.key").c_str(), SSL_FILETYPE_PEM) == 1);
    return ctx;
}

unsigned char pattern(std::size_t i) {
    return static_cast<unsigned char>((i * 131 + i / 7) & 0xff);
}

// A blocking OpenSSL client: connects, optionally waits before reading (so
// that the server's socket fills), reads until close_notify or EOF.
struct client_result {
    bool handshake_ok = false;
    std::vector<unsigned char> received;
};

client_result run_client(unsigned short port, std::chrono::milliseconds read_delay) {
    client_result r;
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    net::io_context io;
    tcp::socket s(io);
    s.connect({net::ip::make_address("127.0.0.1"), port});
    // A small receive buffer makes the server's send() hit EAGAIN.
    s.set_option(net::socket_base::receive_buffer_size(16 * 1024));
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, static_cast<int>(s.native_handle()));
    SSL_set_tlsext_host_name(ssl, "www.foobar.com");
    r.handshake_ok = SSL_connect(ssl) == 1;
    if (r.handshake_ok) {
        std::this_thread::sleep_for(read_delay);
        unsigned char buf[16384];
        for (int i = 0; i < 100000; ++i) { // bounded; ends at close_notify or EOF
            std::size_t n = 0;
            if (SSL_read_ex(ssl, buf, sizeof buf, &n) != 1) {
                break;
            }
            r.received.insert(r.received.end(), buf, buf + n);
        }
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return r;
}

struct server_result {
    bool handshake_ok = false;
    std::size_t first_write = 0; ///< what one write_some of 64 KiB took
    std::size_t total = 0;
    bool unsent_after = true;
    std::string error;
};

void serve(tcp::acceptor& acceptor, net::io_context& io, SSL_CTX* ctx, std::size_t body_bytes, server_result& out) {
    gw::tcp_socket socket(io);
    acceptor.accept(socket);
    auto tls = std::make_shared<gw::tls_socket>(std::move(socket), ctx);
    net::co_spawn(
        io,
        [&, tls]() -> net::awaitable<void> {
            if (auto ec = co_await tls->handshake()) {
                out.error = "handshake: " + ec.message();
                co_return;
            }
            out.handshake_ok = true;
            std::vector<unsigned char> body(body_bytes);
            for (std::size_t i = 0; i < body.size(); ++i) {
                body[i] = pattern(i);
            }
            auto [ec1, n1] = co_await tls->async_write_some(net::buffer(body.data(), 64 * 1024), gw::use_tuple);
            if (ec1) {
                out.error = "write_some: " + ec1.message();
                co_return;
            }
            out.first_write = n1;
            auto [ec2, n2] =
                co_await net::async_write(*tls, net::buffer(body.data() + n1, body.size() - n1), gw::use_tuple);
            if (ec2) {
                out.error = "write: " + ec2.message();
                co_return;
            }
            out.total = n1 + n2;
            tls->shutdown();
            out.unsent_after = tls->has_unsent();
            error_code ignored;
            tls->next_layer().shutdown(tcp::socket::shutdown_send, ignored);
        },
        net::detached);
    io.run_for(std::chrono::seconds(60)); // a guard against a hang, not a bound of the test
}

} // namespace

TEST_CASE("tls_socket: one write_some stages four records and sends them together; a slow reader gets every byte",
          "[unit][tls_socket]") {
    auto ctx = server_context();
    const std::size_t body_bytes = GENERATE(std::size_t{64 * 1024}, std::size_t{1024 * 1024 + 123});
    const auto delay = GENERATE(std::chrono::milliseconds(0), std::chrono::milliseconds(300));
    INFO("body " << body_bytes << " bytes, client reads after " << delay.count() << " ms");

    net::io_context io;
    tcp::acceptor acceptor(io, {net::ip::make_address("127.0.0.1"), 0});
    const auto port = acceptor.local_endpoint().port();
    client_result got;
    std::thread client([&] { got = run_client(port, delay); });
    server_result sent;
    serve(acceptor, io, ctx.get(), body_bytes, sent);
    client.join();

    INFO(sent.error);
    REQUIRE(sent.handshake_ok);
    REQUIRE(got.handshake_ok);
    // A socket BIO with partial writes would take one 16 KiB record per call.
    CHECK(sent.first_write == 64 * 1024);
    CHECK(sent.total == body_bytes);
    CHECK_FALSE(sent.unsent_after);
    REQUIRE(got.received.size() == body_bytes);
    bool same = true;
    for (std::size_t i = 0; i < body_bytes && same; ++i) {
        same = got.received[i] == pattern(i);
    }
    CHECK(same);
}
