#pragma once
// A TLS stream over a TCP socket whose BIO reads and writes the socket
// directly (no copy through Asio) and uses Asio only to wait for readiness.
//
// Why not asio::ssl::stream: it pipes every byte through a BIO pair and keeps
// two 17 KiB staging buffers per connection for its whole life, and it turns a
// buffer sequence into one TLS record per buffer. Here an idle connection
// holds only OpenSSL's SSL object (SSL_MODE_RELEASE_BUFFERS frees its record
// buffers between reads), small writes are gathered into one record and one
// syscall, and read-ahead fetches a whole record per read() instead of two.
//
// One BIO of our own serves both directions: reads go straight from the
// socket, writes are coalesced: the records of one write_some (up to four full 16 KiB
// records, a 64 KiB body piece) are staged in one block from the worker's
// block_pool and leave in one send(), where a socket BIO makes one write()
// per record. A write_some completes only once its records are on the
// socket, so nothing waits unsent behind an idle connection; the block goes
// back to the pool as soon as it is empty.
//
// Models Beast's AsyncReadStream/AsyncWriteStream, so http::async_read and
// http::async_write work on it unchanged. Single-threaded: use it only on its
// worker's io_context.

#include "gateway/net.hpp"
#include "gateway/proxy/block_pool.hpp"

#include <boost/asio/compose.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstddef>
#include <memory>
#include <type_traits>
#include <vector>

namespace rampart::gateway {

/// Maps the result of an SSL_* call that failed with `ssl_error` (from
/// SSL_get_error) to an error_code; eof for a clean close_notify,
/// ssl::error::stream_truncated for a TCP close without one.
error_code tls_error(int ssl_error);

class tls_socket {
public:
    using executor_type = tcp_socket::executor_type;
    using next_layer_type = tcp_socket;
    using lowest_layer_type = tcp_socket;

    /// Takes the connected socket; the connection starts in server mode with
    /// the given context (SNI may switch it during the handshake).
    tls_socket(tcp_socket&& socket, SSL_CTX* ctx);
    ~tls_socket();
    tls_socket(const tls_socket&) = delete;
    tls_socket& operator=(const tls_socket&) = delete;

    executor_type get_executor() { return socket_.get_executor(); }
    tcp_socket& next_layer() { return socket_; }
    tcp_socket& lowest_layer() { return socket_; }
    SSL* native_handle() { return ssl_; }

    /// The server side of the handshake.
    net::awaitable<error_code> handshake();
    /// Sends close_notify if the socket can take it now; never waits for the
    /// peer's (nginx does the same: waiting costs a round trip per close).
    void shutdown();
    /// Bytes OpenSSL wrote that are not on the socket yet (a send that would
    /// have blocked, or a record written by a read: an alert, a key update).
    bool has_unsent() const { return out_sent_ < out_size_; }
    /// Sends what is unsent, waiting for the socket as needed.
    net::awaitable<error_code> flush();
    /// True when OpenSSL holds bytes read from the socket but not yet
    /// returned (decrypted or not): waiting for readability would then hang.
    bool has_buffered() const { return SSL_has_pending(ssl_) == 1; }

    template <class MutableBufferSequence, class Token>
    auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
        return net::async_compose<Token, void(error_code, std::size_t)>(
            io_op<MutableBufferSequence, true>{this, buffers}, token, socket_);
    }

    template <class ConstBufferSequence, class Token>
    auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
        return net::async_compose<Token, void(error_code, std::size_t)>(
            io_op<ConstBufferSequence, false>{this, buffers}, token, socket_);
    }

    /// One SSL_read_ex attempt. Returns 0 and sets `want` (SSL_ERROR_WANT_*)
    /// when the socket must become ready first.
    std::size_t read_once(net::mutable_buffer b, error_code& ec, int& want);
    /// SSL_write_ex over the front of `buffers` (gathered into one record
    /// when small), as many records as the staging block takes. Same
    /// contract as read_once; the records are staged, not yet sent.
    std::size_t write_once(const net::const_buffer* buffers, std::size_t count, error_code& ec, int& want);
    /// Sends staged bytes without waiting: true when none are left, false
    /// when the socket is full (or `ec` says why it failed).
    bool send_staged(error_code& ec);

private:
    // One read_some or write_some: try OpenSSL, and when it needs the socket
    // to become readable or writable first, wait for that and try again.
    // A read uses the first non-empty buffer; a write gathers up to 16.
    template <class Buffers, bool IsRead> struct io_op {
        tls_socket* self_;
        Buffers buffers_;

        std::size_t done_ = 0; ///< bytes a write took, waiting for their records to leave

        template <class Self> void operator()(Self& self, error_code ec = {}) {
            if (ec) {
                self.complete(ec, 0);
                return;
            }
            // Staged bytes leave before anything else (and before a wait for
            // readability: the peer may be waiting for them).
            if (self_->has_unsent()) {
                if (!self_->send_staged(ec)) {
                    if (ec) {
                        self.complete(ec, 0);
                    } else {
                        self_->socket_.async_wait(tcp::socket::wait_write, std::move(self));
                    }
                    return;
                }
            }
            if (done_ != 0) {
                self.complete({}, done_);
                return;
            }
            using buffer = std::conditional_t<IsRead, net::mutable_buffer, net::const_buffer>;
            constexpr std::size_t max_buffers = IsRead ? 1 : 16;
            buffer list[max_buffers];
            std::size_t count = 0;
            for (auto it = net::buffer_sequence_begin(buffers_);
                 it != net::buffer_sequence_end(buffers_) && count < max_buffers; ++it) {
                if (net::buffer_size(*it) != 0) {
                    list[count++] = *it;
                }
            }
            if (count == 0) {
                self.complete({}, 0);
                return;
            }
            int want = 0;
            std::size_t n = 0;
            if constexpr (IsRead) {
                n = self_->read_once(list[0], ec, want);
            } else {
                n = self_->write_once(list, count, ec, want);
            }
            if (want != 0) {
                // What OpenSSL staged on the way (a key update's answer, say)
                // leaves before the wait; if the socket will not take it now,
                // the wait is for writability and the operation starts over.
                error_code sec;
                if (self_->has_unsent() && !self_->send_staged(sec)) {
                    if (sec) {
                        self.complete(sec, 0);
                        return;
                    }
                    want = SSL_ERROR_WANT_WRITE;
                }
                self_->socket_.async_wait(
                    want == SSL_ERROR_WANT_WRITE ? tcp::socket::wait_write : tcp::socket::wait_read, std::move(self));
                return;
            }
            if (!ec && self_->has_unsent() && !self_->send_staged(ec) && !ec) {
                if constexpr (IsRead) {
                    // A record a read wrote (an alert, a key update): the
                    // data read is delivered now, the record leaves with the
                    // next write or flush.
                    self.complete(ec, n);
                } else {
                    done_ = n;
                    self_->socket_.async_wait(tcp::socket::wait_write, std::move(self));
                }
                return;
            }
            self.complete(ec, n);
        }
    };

    // The coalescing write BIO's callbacks (tls_socket.cpp).
    friend int staged_write(BIO* bio, const char* data, int len);
    friend int staged_read(BIO* bio, char* data, int len);
    friend long staged_ctrl(BIO* bio, int cmd, long num, void* ptr);
    /// Copies `len` bytes into the staging block (taken on first use);
    /// false when they do not fit.
    bool stage(const char* data, std::size_t len);
    std::size_t staged_room() const;

    tcp_socket socket_;
    SSL* ssl_;
    /// The staging block (null when empty), its bytes and how many left.
    block_pool::block out_;
    std::size_t out_size_ = 0;
    std::size_t out_sent_ = 0;
    /// A write OpenSSL asked to retry must be retried with the same bytes;
    /// when they were gathered from several buffers they are kept here until
    /// the retry succeeds (rare: only when the socket's send buffer is full).
    std::vector<unsigned char> pending_write_;
};

} // namespace rampart::gateway
