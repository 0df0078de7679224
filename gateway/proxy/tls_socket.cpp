#include "gateway/proxy/tls_socket.hpp"

#include <boost/asio/ssl/error.hpp>

#include <sys/socket.h>
#include <sys/types.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <system_error>

namespace rampart::gateway {
namespace {

/// Small writes (a response header and a short body, say) are gathered here
/// and sent as one TLS record. One per process: a worker is single-threaded
/// and the bytes are consumed by SSL_write before the call returns, except
/// for a retry, which copies them into the connection (pending_write_).
constexpr std::size_t gather_limit = 16 * 1024;
unsigned char gather_buffer[gather_limit];

/// The staging block: a block_pool block, four full TLS records and then
/// some, so that a 64 KiB body piece leaves in one send().
constexpr std::size_t staging_block = block_pool::size;
/// Room a record may need: a write stops staging when less is left.
constexpr std::size_t record_room = 16 * 1024 + 512;

int staged_create(BIO* bio) {
    BIO_set_init(bio, 1);
    return 1;
}

const BIO_METHOD* staged_method();

} // namespace

int staged_write(BIO* bio, const char* data, int len) {
    auto* self = static_cast<tls_socket*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    if (self == nullptr || len < 0) {
        return -1;
    }
    if (self->stage(data, static_cast<std::size_t>(len))) {
        return len;
    }
    BIO_set_retry_write(bio); // full: OpenSSL retries the record after a send
    return -1;
}

// Reads straight from the socket, as a socket BIO would: one BIO serves both
// directions, so an idle connection holds no second BIO.
int staged_read(BIO* bio, char* data, int len) {
    auto* self = static_cast<tls_socket*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    if (self == nullptr || data == nullptr || len <= 0) {
        return 0;
    }
    for (int attempt = 0; attempt < 8; ++attempt) { // bounded: EINTR only
        const ssize_t n = ::recv(self->socket_.native_handle(), data, static_cast<std::size_t>(len), 0);
        if (n > 0) {
            return static_cast<int>(n);
        }
        if (n == 0) {
            BIO_set_flags(bio, BIO_FLAGS_IN_EOF); // BIO_eof(): OpenSSL tells a truncation from a close
            return 0;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            BIO_set_retry_read(bio);
        }
        return -1; // errno stays for tls_error
    }
    return -1;
}

long staged_ctrl(BIO* bio, int cmd, long num, void* /*ptr*/) {
    auto* self = static_cast<tls_socket*>(BIO_get_data(bio));
    switch (cmd) {
    case BIO_CTRL_EOF:
        return BIO_test_flags(bio, BIO_FLAGS_IN_EOF) != 0 ? 1 : 0;
    case BIO_CTRL_FLUSH:
        return 1; // tls_socket sends after each call into OpenSSL
    case BIO_CTRL_WPENDING:
        return self != nullptr ? static_cast<long>(self->out_size_ - self->out_sent_) : 0;
    case BIO_CTRL_PENDING:
        return 0;
    case BIO_CTRL_GET_CLOSE:
        return BIO_get_shutdown(bio);
    case BIO_CTRL_SET_CLOSE:
        BIO_set_shutdown(bio, static_cast<int>(num));
        return 1;
    default:
        return 0;
    }
}

namespace {

const BIO_METHOD* staged_method() {
    static BIO_METHOD* method = [] {
        BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "rampart socket, staged writes");
        if (m == nullptr || BIO_meth_set_write(m, staged_write) != 1 || BIO_meth_set_read(m, staged_read) != 1 ||
            BIO_meth_set_ctrl(m, staged_ctrl) != 1 || BIO_meth_set_create(m, staged_create) != 1) {
            throw std::bad_alloc();
        }
        return m;
    }();
    return method;
}

} // namespace

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
    // The BIO calls recv()/send() on the descriptor itself: it must be
    // non-blocking, or a slow client would stall the whole worker. (Asio
    // sets O_NONBLOCK only lazily, and an accepted socket starts blocking.)
    error_code ec;
    socket_.non_blocking(true, ec);
    if (ec) {
        SSL_free(ssl_);
        throw std::system_error(ec);
    }
    // One BIO for both directions: reads go straight from the socket,
    // writes are staged (it never owns the descriptor: socket_ does).
    BIO* bio = BIO_new(staged_method());
    if (bio == nullptr) {
        SSL_free(ssl_);
        throw std::bad_alloc();
    }
    BIO_set_data(bio, this);
    SSL_set_bio(ssl_, bio, bio); // the same BIO twice: the SSL takes its one reference
    SSL_set_accept_state(ssl_);
    // RELEASE_BUFFERS: no record buffer while idle. PARTIAL_WRITE: a write
    // returns after each record, like write_some should. MOVING_WRITE_BUFFER:
    // a retried write may come from pending_write_ instead of the gather area.
    SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // Read as much as the socket has: one read() per record instead of one
    // for the record header and one for its body.
    SSL_set_read_ahead(ssl_, 1);
}

tls_socket::~tls_socket() {
    SSL_free(ssl_);
    block_pool::give_back(out_);
}

bool tls_socket::stage(const char* data, std::size_t len) {
    if (out_sent_ == out_size_) {
        out_sent_ = out_size_ = 0;
    }
    if (out_size_ + len > staging_block) {
        return false;
    }
    if (!out_) {
        out_ = block_pool::take();
    }
    std::memcpy(out_.get() + out_size_, data, len);
    out_size_ += len;
    return true;
}

std::size_t tls_socket::staged_room() const {
    return out_sent_ == out_size_ ? staging_block : staging_block - out_size_;
}

bool tls_socket::send_staged(error_code& ec) {
    // Bounded: each round sends something or returns.
    for (int round = 0; round < 1024 && out_sent_ < out_size_; ++round) {
        const ssize_t n = ::send(socket_.native_handle(), out_.get() + out_sent_, out_size_ - out_sent_, MSG_NOSIGNAL);
        if (n > 0) {
            out_sent_ += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return false;
        }
        ec = error_code(n < 0 ? errno : EPIPE, boost::system::system_category());
        return false;
    }
    if (out_sent_ < out_size_) {
        return false;
    }
    out_sent_ = out_size_ = 0;
    block_pool::give_back(out_);
    return true;
}

net::awaitable<error_code> tls_socket::flush() {
    // Bounded in time by the connection's deadline, which cancels the wait.
    for (int round = 0; round < 1 << 20; ++round) {
        error_code ec;
        if (send_staged(ec)) {
            co_return error_code{};
        }
        if (ec) {
            co_return ec;
        }
        auto [wec] = co_await socket_.async_wait(tcp::socket::wait_write);
        if (wec) {
            co_return wec;
        }
    }
    co_return make_error_code(net::error::timed_out);
}

net::awaitable<error_code> tls_socket::handshake() {
    // Each turn waits for the socket; the session's deadline bounds the whole.
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_do_handshake(ssl_);
        const int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
        if (r != 1 && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            const error_code failed = tls_error(e);
            error_code ignored;
            send_staged(ignored); // the alert, if the socket takes it now
            co_return failed;
        }
        // The flight (or the session ticket) leaves before the next wait.
        if (has_unsent()) {
            if (auto fec = co_await flush()) {
                co_return fec;
            }
        }
        if (r == 1) {
            co_return error_code{};
        }
        auto [ec] =
            co_await socket_.async_wait(e == SSL_ERROR_WANT_READ ? tcp::socket::wait_read : tcp::socket::wait_write);
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
    error_code ignored;
    if (!send_staged(ignored)) {
        // What the socket does not take now is dropped, as it would be unsent
        // with a socket BIO: the connection is ending.
        out_sent_ = out_size_ = 0;
        block_pool::give_back(out_);
    }
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
    // One record per SSL_write_ex (PARTIAL_WRITE), as many as the staging
    // block takes: a 64 KiB piece becomes four records and one send().
    std::size_t total = 0;
    int r = 1;
    do {
        ERR_clear_error();
        errno = 0;
        std::size_t n = 0;
        r = SSL_write_ex(ssl_, static_cast<const unsigned char*>(data) + total, len - total, &n);
        if (r != 1) {
            break;
        }
        total += n;
    } while (total < len && data != gather_buffer && pending_write_.empty() && staged_room() >= record_room);
    if (r == 1 || total > 0) {
        ERR_clear_error();
        pending_write_.clear();
        return total;
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

} // namespace rampart::gateway
