#include "gateway/proxy/tls_socket.hpp"

#include <boost/asio/ssl/error.hpp>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace rampart::gateway {
namespace {

/// Small writes (a response header and a short body, say) are gathered here
/// and sent as one TLS record. One per process: a worker is single-threaded
/// and the bytes are consumed by SSL_write before the call returns, except
/// for a retry, which copies them into the connection (pending_write_).
constexpr std::size_t gather_limit = 16 * 1024;
unsigned char gather_buffer[gather_limit];

}  // namespace

error_code tls_error(int ssl_error) {
    int saved_errno = errno;
    if (ssl_error == SSL_ERROR_ZERO_RETURN) {
        return net::error::eof;
    }
    unsigned long e = ERR_peek_error();
    if (ssl_error == SSL_ERROR_SYSCALL && e == 0) {
        ERR_clear_error();
        if (saved_errno != 0) {
            return error_code(saved_errno, boost::system::system_category());
        }
        return net::ssl::error::stream_truncated;
    }
    // OpenSSL 3 reports a TCP close without close_notify as an SSL error.
    if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        return net::ssl::error::stream_truncated;
    }
    e = ERR_get_error();
    ERR_clear_error();
    if (e == 0) {
        return net::error::connection_aborted;
    }
    return error_code(static_cast<int>(e), net::error::get_ssl_category());
}

tls_socket::tls_socket(tcp_socket&& socket, SSL_CTX* ctx) : socket_(std::move(socket)), ssl_(SSL_new(ctx)) {
    if (ssl_ == nullptr) {
        throw std::bad_alloc();
    }
    // OpenSSL calls read()/write() on the descriptor itself: it must be
    // non-blocking, or a slow client would stall the whole worker. (Asio
    // sets O_NONBLOCK only lazily, and an accepted socket starts blocking.)
    error_code ec;
    socket_.non_blocking(true, ec);
    if (ec) {
        SSL_free(ssl_);
        throw std::system_error(ec);
    }
    // The socket BIO does not own the descriptor (BIO_NOCLOSE): socket_ does.
    SSL_set_fd(ssl_, socket_.native_handle());
    SSL_set_accept_state(ssl_);
    // RELEASE_BUFFERS: no record buffer while idle. PARTIAL_WRITE: a write
    // returns after each record, like write_some should. MOVING_WRITE_BUFFER:
    // a retried write may come from pending_write_ instead of the gather area.
    SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                           SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // Read as much as the socket has: one read() per record instead of one
    // for the record header and one for its body.
    SSL_set_read_ahead(ssl_, 1);
}

tls_socket::~tls_socket() { SSL_free(ssl_); }

net::awaitable<error_code> tls_socket::handshake() {
    // Each turn waits for the socket; the session's deadline bounds the whole.
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_do_handshake(ssl_);
        if (r == 1) {
            co_return error_code{};
        }
        int e = SSL_get_error(ssl_, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            co_return tls_error(e);
        }
        auto [ec] = co_await socket_.async_wait(e == SSL_ERROR_WANT_READ ? tcp::socket::wait_read
                                                                          : tcp::socket::wait_write);
        if (ec) {
            co_return ec;
        }
    }
}

void tls_socket::shutdown() {
    if (SSL_is_init_finished(ssl_) == 1) {
        SSL_shutdown(ssl_);
    }
    ERR_clear_error();
}

std::size_t tls_socket::read_once(net::mutable_buffer b, error_code& ec, int& want) {
    ERR_clear_error();
    errno = 0;
    std::size_t n = 0;
    int r = SSL_read_ex(ssl_, b.data(), b.size(), &n);
    if (r == 1) {
        return n;
    }
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        want = e;
        return 0;
    }
    ec = tls_error(e);
    return 0;
}

std::size_t tls_socket::write_once(const net::const_buffer* buffers, std::size_t count, error_code& ec, int& want) {
    const void* data = nullptr;
    std::size_t len = 0;
    if (!pending_write_.empty()) {
        data = pending_write_.data();
        len = pending_write_.size();
    } else if (count == 1 || buffers[0].size() >= gather_limit) {
        data = buffers[0].data();
        len = buffers[0].size();
    } else {
        for (std::size_t i = 0; i < count && len < gather_limit; ++i) {
            std::size_t take = std::min(buffers[i].size(), gather_limit - len);
            std::memcpy(gather_buffer + len, buffers[i].data(), take);
            len += take;
        }
        data = gather_buffer;
    }
    ERR_clear_error();
    errno = 0;
    std::size_t n = 0;
    int r = SSL_write_ex(ssl_, data, len, &n);
    if (r == 1) {
        pending_write_.clear();
        return n;
    }
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (data == gather_buffer) {
            const auto* bytes = static_cast<const unsigned char*>(data);
            pending_write_.assign(bytes, bytes + len);
        }
        want = e;
        return 0;
    }
    pending_write_.clear();
    ec = tls_error(e);
    return 0;
}

}  // namespace rampart::gateway
