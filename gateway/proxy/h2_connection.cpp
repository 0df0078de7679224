#include "gateway/proxy/h2_connection.hpp"

#include "gateway/log.hpp"
#include "gateway/proxy/block_pool.hpp"
#include "gateway/proxy/error_status.hpp"
#include "gateway/proxy/http_rules.hpp"
#include "gateway/proxy/worker.hpp"

#include <boost/asio/write.hpp>

#include <nghttp2/nghttp2.h>

#include <malloc.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <unordered_map>

namespace rampart::gateway {

namespace {

using clock = std::chrono::steady_clock;

/// A connection with streams open but nothing to send has no deadline of its
/// own (each stream has its own); this stands for "none".
constexpr auto no_deadline = std::chrono::hours(24 * 365);

/// Frames a client may send per second before it counts as a flood. Browsers
/// send a handful of each; an attack sends thousands.
constexpr unsigned ping_per_second = 50;
constexpr unsigned settings_per_second = 50;
constexpr unsigned empty_data_per_second = 100;
/// WINDOW_UPDATE frames opening less than small_window_update bytes (each
/// makes the gateway send a tiny DATA frame) and WINDOW_UPDATE frames of any
/// size per second.
constexpr unsigned small_window_updates_per_second = 100;
constexpr std::uint32_t small_window_update = 1024;
constexpr unsigned window_updates_per_second = 2000;
/// Frames of one header block (HEADERS and its CONTINUATIONs).
constexpr unsigned header_block_frames = 16;
/// A header block decoding to more than limits.header_bytes is an HPACK
/// bomb when it also decodes to more than this many times its wire size.
constexpr std::uint64_t hpack_bomb_ratio = 8;
/// Response bytes a stream holds before write_body waits for the client.
constexpr std::size_t stream_send_buffer = relay_chunk;
/// How long a connection stays without streams before nghttp2's frame
/// buffer pages go back to the kernel.
constexpr auto idle_release = std::chrono::seconds(1);
/// Request body bytes read and dropped after the response (see discard).
constexpr std::uint64_t discard_budget = 1024 * 1024;
/// The lingering close after a GOAWAY: how long and how much is read and dropped.
constexpr auto linger_time = std::chrono::seconds(2);
constexpr std::size_t linger_bytes = 4 * 1024 * 1024;
/// Bytes gathered from nghttp2 into one write to the TLS stream.
constexpr std::size_t write_batch = 64 * 1024;
/// Read buffer for the TLS stream (four full TLS records).
constexpr std::size_t read_size = 64 * 1024;

static_assert(block_pool::size >= write_batch && block_pool::size >= read_size);

/// nghttp2's memory for one session. Blocks of a page or more are
/// page-aligned whole pages, so that an idle connection can hand pages back
/// to the kernel (MADV_DONTNEED: they read as zeros when next touched):
/// - the frame buffer: the big blocks (frame_block or more) allocated while
///   the session is created are its 16 KiB frame buffer, kept for the
///   session's life and holding nothing between two mem_send calls that
///   returned everything;
/// - any page of any block that holds only zeros (the stream map's table
///   once no stream is open, say): releasing it changes no byte nghttp2
///   could read.
/// Other pages (a large header in the HPACK table, say) stay.
class h2_memory {
public:
    static constexpr std::size_t page = 4096;
    static constexpr std::size_t frame_block = 8 * 1024;

    nghttp2_mem table() {
        return nghttp2_mem{this, &h2_memory::do_malloc, &h2_memory::do_free, &h2_memory::do_calloc,
                           &h2_memory::do_realloc};
    }

    /// Hands back the frame buffer's pages and every page that holds only
    /// zeros. Only while nghttp2 holds nothing in the frame buffer.
    void release_idle() {
        for (const auto& b : big_) {
            if (b.frame_buffer) {
                ::madvise(b.at, b.size, MADV_DONTNEED);
                continue;
            }
            auto* bytes = static_cast<unsigned char*>(b.at);
            for (std::size_t off = 0; off < b.size; off += page) {
                if (all_zero(bytes + off)) {
                    ::madvise(bytes + off, page, MADV_DONTNEED);
                }
            }
        }
    }
    static bool all_zero(const unsigned char* p) {
        // Word-wise: a page-aligned page of 512 words.
        const auto* w = reinterpret_cast<const std::uint64_t*>(p);
        std::uint64_t any = 0;
        for (std::size_t i = 0; i < page / sizeof(std::uint64_t); ++i) {
            any |= w[i];
        }
        return any == 0;
    }
    /// Brackets nghttp2_session_*_new: blocks of frame_block or more allocated meanwhile are the frame buffer.
    void creating(bool on) { creating_ = on; }

private:
    static std::size_t rounded(std::size_t n) { return (n + page - 1) / page * page; }

    void* take_big(std::size_t n) {
        const std::size_t size = rounded(n);
        void* p = std::aligned_alloc(page, size);
        if (p != nullptr) {
            big_.push_back(block{p, size, creating_ && size >= frame_block});
        }
        return p;
    }
    std::size_t big_size(void* p) const {
        for (const auto& b : big_) {
            if (b.at == p) {
                return b.size;
            }
        }
        return 0;
    }
    void forget(void* p) {
        std::erase_if(big_, [p](const block& b) { return b.at == p; });
    }

    static void* do_malloc(std::size_t n, void* self) {
        return n >= page ? static_cast<h2_memory*>(self)->take_big(n) : std::malloc(n);
    }
    static void do_free(void* p, void* self) {
        if (p != nullptr) {
            static_cast<h2_memory*>(self)->forget(p);
            std::free(p);
        }
    }
    static void* do_calloc(std::size_t count, std::size_t size, void* self) {
        const std::size_t n = count * size;
        if (size != 0 && n / size != count) {
            return nullptr;
        }
        if (n < page) {
            return std::calloc(count, size);
        }
        void* p = static_cast<h2_memory*>(self)->take_big(n);
        if (p != nullptr) {
            std::memset(p, 0, n);
        }
        return p;
    }
    static void* do_realloc(void* p, std::size_t n, void* self) {
        auto* m = static_cast<h2_memory*>(self);
        const std::size_t old_big = p != nullptr ? m->big_size(p) : 0;
        if (old_big == 0 && n < page) {
            return std::realloc(p, n);
        }
        if (old_big != 0 && n <= old_big) {
            return p; // already whole pages of this size
        }
        void* q = do_malloc(n, self);
        if (q == nullptr) {
            return nullptr;
        }
        if (p != nullptr) {
            std::memcpy(q, p, std::min(n, old_big != 0 ? old_big : ::malloc_usable_size(p)));
            do_free(p, self);
        }
        return q;
    }

    struct block {
        void* at;
        std::size_t size;
        bool frame_buffer;
    };
    std::vector<block> big_;
    bool creating_ = false;
};

/// Per-second frame counter.
struct rate_meter {
    mono_ns window_start = 0;
    unsigned count = 0;

    /// Counts one; true when more than `limit` fell in the current second.
    bool over(unsigned limit, mono_ns now) {
        if (now - window_start >= 1'000'000'000) {
            window_start = now;
            count = 0;
        }
        return ++count > limit;
    }
};

bool is_connection_specific(std::string_view name) {
    return name == "connection" || name == "keep-alive" || name == "proxy-connection" || name == "transfer-encoding" ||
           name == "upgrade";
}

bool has_control_byte(std::string_view s) {
    return std::any_of(s.begin(), s.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return (u < 0x20 && u != '\t') || u == 0x7f;
    });
}

} // namespace

const char* to_string(h2_abuse a) {
    static constexpr std::array<const char*, h2_abuse_kinds> names{
        "rapid_reset",      "continuation_flood",  "hpack_bomb",  "ping_flood",       "settings_flood",
        "empty_data_flood", "window_update_flood", "zero_window", "too_many_streams", "protocol_error"};
    const auto i = static_cast<std::size_t>(a);
    return i < names.size() ? names[i] : "unknown";
}

class h2_stream;

// ---------------------------------------------------------------- session

class h2_session : public std::enable_shared_from_this<h2_session> {
public:
    h2_session(connection_base& conn, tls_socket& stream, const connection_facts& facts);
    ~h2_session();

    net::awaitable<bool> run();
    void drain();

    // For streams.
    nghttp2_session* session() { return session_; }
    connection_base& connection() { return conn_; }
    worker_context& worker() { return conn_.worker(); }
    const connection_facts& facts() const { return facts_; }
    bool dead() const { return dead_; }
    /// Something new to send: wakes the writer.
    void want_write();
    /// Ends the connection for abuse: GOAWAY ENHANCE_YOUR_CALM, one violation.
    void abuse(h2_abuse kind, std::string_view detail);
    void stream_finished(h2_stream& s);
    void update_deadline();
    void release_when_idle();

private:
    static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user);
    static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name, std::size_t namelen,
                         const std::uint8_t* value, std::size_t valuelen, std::uint8_t flags, void* user);
    static int on_invalid_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                                 std::size_t namelen, const std::uint8_t* value, std::size_t valuelen,
                                 std::uint8_t flags, void* user);
    static int on_begin_frame(nghttp2_session*, const nghttp2_frame_hd* hd, void* user);
    static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user);
    static int on_invalid_frame_recv(nghttp2_session*, const nghttp2_frame* frame, int lib_error, void* user);
    static int on_data_chunk_recv(nghttp2_session*, std::uint8_t flags, std::int32_t stream_id,
                                  const std::uint8_t* data, std::size_t len, void* user);
    static int on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user);
    static int on_stream_close(nghttp2_session*, std::int32_t stream_id, std::uint32_t error_code, void* user);

    h2_stream* stream_of(std::int32_t id);
    void start_ready();
    static net::awaitable<void> serve_stream(std::shared_ptr<h2_session> self, std::shared_ptr<h2_stream> s);
    net::awaitable<void> reader();
    net::awaitable<void> writer();
    static net::awaitable<void> run_writer(std::shared_ptr<h2_session> self);
    net::awaitable<void> linger_close();
    void stop_reading();

    connection_base& conn_;
    tls_socket& stream_;
    const connection_facts& facts_;
    h2_memory memory_; ///< before session_: nghttp2 frees into it
    nghttp2_session* session_ = nullptr;
    std::unordered_map<std::int32_t, std::shared_ptr<h2_stream>> streams_;
    net::steady_timer wake_writer_;
    std::optional<net::steady_timer> drain_timer_;
    std::optional<net::steady_timer> release_timer_; ///< see release_when_idle
    bool release_pending_ = false;
    block_pool::block read_buffer_;
    block_pool::block write_buffer_;
    std::vector<std::shared_ptr<h2_stream>> ready_; ///< heads complete in this mem_recv
    unsigned running_ = 0;                          ///< exchanges running (a reset stream's may still be finishing)
    bool dead_ = false;                             ///< reader and writer are done: streams fail at once
    bool writing_ = false;
    bool writer_running_ = false;
    std::optional<net::steady_timer> writer_done_; ///< run() waits on it for the writer's end
    bool input_closed_ = false;
    bool peer_closed_ = false; ///< the client closed or reset the connection
    bool abused_ = false;
    bool draining_ = false;
    bool goaway_sent_ = false;
    // Header block accounting (one block at a time on a connection).
    unsigned block_frames_ = 0;
    std::uint64_t block_wire_bytes_ = 0;
    // Floods.
    rate_meter resets_, pings_, settings_, empty_data_, window_updates_, small_window_updates_;
};

// ---------------------------------------------------------------- stream

class h2_stream final : public exchange_host, public downstream {
public:
    h2_stream(std::shared_ptr<h2_session> session, std::int32_t id)
        : exchange_host(session->worker()), session_(std::move(session)), id_(id), wake_(session_->worker().io) {
        wake_.expires_at(clock::time_point::max());
        request_.version(11);
    }

    void start(std::shared_ptr<h2_stream> self) { start_watchdog(std::move(self)); }

    std::int32_t id() const { return id_; }

    // ------------------------------------------------- exchange_host
    void violation() override { session_->connection().violation(); }
    const admission& admitted() const override { return session_->connection().admitted(); }
    bool closing() const override { return closed_ || session_->dead(); }

    // ------------------------------------------------- request head
    /// One header field of the request (or of its trailers: dropped). A
    /// field that breaks the mapping rules marks the stream refused (400 or
    /// 431 once the head is complete; nothing reaches an app server).
    void add_field(std::string_view name, std::string_view value, std::uint64_t header_limit, unsigned count_limit) {
        // Counted for trailers too: the HPACK bomb check reads this sum.
        header_bytes_ += name.size() + value.size() + 32; // RFC 9113 6.5.2's accounting
        if (trailers_) {
            return;
        }
        if (header_bytes_ > header_limit) {
            refuse(http::status::request_header_fields_too_large, "header list larger than limits.header_bytes");
            return;
        }
        if (refusal_) {
            return;
        }
        if (has_control_byte(value) || has_control_byte(name)) {
            refuse(http::status::bad_request, "control character in a header field");
            return;
        }
        if (!name.empty() && name.front() == ':') {
            if (regular_seen_) {
                refuse(http::status::bad_request, "pseudo-header after a regular field");
            } else if (name == ":method") {
                set_once(method_, value, ":method");
            } else if (name == ":scheme") {
                set_once(scheme_, value, ":scheme");
            } else if (name == ":path") {
                set_once(path_, value, ":path");
            } else if (name == ":authority") {
                set_once(authority_, value, ":authority");
            } else {
                refuse(http::status::bad_request, "unknown pseudo-header");
            }
            return;
        }
        regular_seen_ = true;
        if (++fields_ > count_limit) {
            refuse(http::status::request_header_fields_too_large, "too many header fields");
            return;
        }
        if (std::any_of(name.begin(), name.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
            refuse(http::status::bad_request, "upper-case header name");
            return;
        }
        if (is_connection_specific(name) || (name == "te" && value != "trailers")) {
            refuse(http::status::bad_request, "connection-specific header field");
            return;
        }
        if (name == "te") {
            return; // "trailers": hop-by-hop, not passed on
        }
        if (name == "host") {
            if (host_) {
                refuse(http::status::bad_request, "duplicate host");
                return;
            }
            host_ = std::string(value);
            return;
        }
        if (name == "cookie") {
            // Crumbs (RFC 9113 8.2.3) become one field for HTTP/1.1.
            if (!cookie_.empty()) {
                cookie_ += "; ";
            }
            cookie_ += value;
            return;
        }
        if (name == "content-length") {
            std::uint64_t n = 0;
            const auto* end = value.data() + value.size();
            auto [p, ec] = std::from_chars(value.data(), end, n);
            if (value.empty() || ec != std::errc() || p != end || (content_length_ && *content_length_ != n)) {
                refuse(http::status::bad_request, "bad content-length");
                return;
            }
            content_length_ = n;
            return;
        }
        request_.insert(name, value);
    }

    /// A trailer block begins: its size is checked on its own.
    void begin_trailers() {
        trailers_ = true;
        header_bytes_ = 0;
    }

    /// The head is complete: builds the HTTP/1.1 request. Returns false when
    /// the stream was refused.
    bool finish_head(bool end_stream) {
        if (end_stream) {
            in_done_ = true;
        }
        if (refusal_) {
            return false;
        }
        if (!method_ || !scheme_ || !path_) {
            refuse(http::status::bad_request, "missing :method, :scheme or :path");
            return false;
        }
        if (*method_ == "CONNECT") {
            refuse(http::status::method_not_allowed, "CONNECT is not supported");
            return false;
        }
        if (*scheme_ != "https") {
            refuse(http::status::bad_request, ":scheme is not https");
            return false;
        }
        if (path_->empty() || (path_->front() != '/' && !(*path_ == "*" && *method_ == "OPTIONS"))) {
            refuse(http::status::bad_request, ":path is not in origin form");
            return false;
        }
        if (authority_ && (authority_->find('@') != std::string::npos)) {
            refuse(http::status::bad_request, ":authority with user information");
            return false;
        }
        if (authority_ && host_ && !iequals(*authority_, *host_)) {
            refuse(http::status::bad_request, ":authority and host disagree");
            return false;
        }
        if (!authority_ && !host_) {
            refuse(http::status::bad_request, "neither :authority nor host");
            return false;
        }
        if (end_stream && content_length_ && *content_length_ != 0) {
            refuse(http::status::bad_request, "content-length without DATA");
            return false;
        }
        request_.method_string(*method_);
        request_.target(*path_);
        request_.set(http::field::host, authority_ ? *authority_ : *host_);
        if (!cookie_.empty()) {
            request_.set(http::field::cookie, cookie_);
        }
        if (content_length_) {
            request_.content_length(*content_length_);
        } else if (!end_stream) {
            request_.chunked(true); // a body of unknown length: chunked to the app server
        }
        return true;
    }

    std::optional<http::status> refused_status() const {
        return refusal_ ? std::optional<http::status>(refusal_->first) : std::nullopt;
    }
    const std::string& refused_reason() const { return refusal_->second; }

    /// Sizes of the head as decoded so far, for the HPACK bomb check.
    std::uint64_t header_bytes() const { return header_bytes_; }

    // ------------------------------------------------- request body (from the session)
    void data_arrived(const std::uint8_t* data, std::size_t n, std::uint64_t body_limit) {
        if (discarding_) {
            discard(n);
            return;
        }
        received_ += n;
        if (received_ > body_limit) {
            too_large_ = true;
        }
        in_.append(reinterpret_cast<const char*>(data), n);
        wake();
    }
    void end_of_request() {
        in_done_ = true;
        wake();
    }
    /// nghttp2 closed the stream (both sides done, or a reset).
    void closed(std::uint32_t code) {
        closed_ = true;
        close_code_ = code;
        if (!in_.empty() && !session_->dead()) {
            // Received but never read: the connection's window gets it back.
            nghttp2_session_consume_connection(session_->session(), in_.size());
        }
        in_.clear();
        out_.clear();
        out_at_ = 0;
        wake();
        cancel_upstream();
        if (!running_) {
            stop_watchdog();
        }
    }
    bool is_closed() const { return closed_; }
    bool request_finished() const { return in_done_; }

    // ------------------------------------------------- response body (to the session)
    /// nghttp2's data source: copies what the exchange wrote.
    ssize_t read_data(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) {
        const std::size_t pending = out_.size() - out_at_;
        const std::size_t n = std::min(length, pending);
        if (n > 0) {
            std::memcpy(buf, out_.data() + out_at_, n);
            out_at_ += n;
            if (out_at_ == out_.size()) {
                out_.clear();
                out_at_ = 0;
            }
            arm(phase::response_body); // progress: the client's window moves
        }
        if (out_.size() - out_at_ == 0) {
            if (out_last_) {
                *flags |= NGHTTP2_DATA_FLAG_EOF;
                if (!running_) {
                    stop_watchdog();
                }
            } else if (n == 0) {
                data_deferred_ = true;
                return NGHTTP2_ERR_DEFERRED;
            }
        }
        if (n > 0 && out_.size() - out_at_ <= stream_send_buffer) {
            wake();
        }
        return static_cast<ssize_t>(n);
    }

    // ------------------------------------------------- downstream
    http::request<http::buffer_body>& request() override { return request_; }
    bool request_done() const override { return in_done_ && in_.empty(); }
    std::optional<std::uint64_t> request_remaining() const override {
        if (content_length_) {
            return *content_length_ - std::min(*content_length_, consumed_);
        }
        if (in_done_) {
            return in_.size();
        }
        return std::nullopt;
    }

    net::awaitable<body_read> read_body(net::mutable_buffer into) override {
        for (;;) {
            if (too_large_) {
                co_return body_read{http::error::body_limit, 0};
            }
            std::size_t ready = in_.size();
            if (content_length_ && !in_done_ && consumed_ + ready >= *content_length_) {
                // The last byte of a body of announced length waits for the
                // client's END_STREAM: DATA beyond the length resets the
                // stream first, and the app server never gets a whole
                // request whose framing was a lie.
                ready = static_cast<std::size_t>(*content_length_ - std::min(*content_length_, consumed_ + 1));
            }
            if (ready > 0) {
                const std::size_t n = std::min(into.size(), ready);
                std::memcpy(into.data(), in_.data(), n);
                in_.erase(0, n);
                consumed_ += n;
                // The window opens as the exchange takes the bytes: a client
                // sends no faster than the app server reads.
                if (!closed_ && !session_->dead()) {
                    nghttp2_session_consume(session_->session(), id_, n);
                    session_->want_write();
                }
                co_return body_read{{}, n};
            }
            if (in_done_) {
                co_return body_read{};
            }
            if (closed_ || session_->dead()) {
                co_return body_read{net::error::connection_reset, 0};
            }
            if (cancelled_) {
                cancelled_ = false;
                co_return body_read{net::error::operation_aborted, 0};
            }
            co_await wait();
        }
    }

    net::awaitable<error_code> write_continue() override {
        if (closed_ || session_->dead()) {
            co_return net::error::connection_reset;
        }
        const nghttp2_nv status = make_nv(":status", "100");
        nghttp2_submit_headers(session_->session(), NGHTTP2_FLAG_NONE, id_, nullptr, &status, 1, nullptr);
        session_->want_write();
        co_return error_code{};
    }

    net::awaitable<error_code> write_response(http::response<http::string_body>& res, bool) override {
        if (!res.has_content_length()) {
            res.content_length(res.body().size());
        }
        if (auto ec = submit(res.base(), res.body().empty())) {
            co_return ec;
        }
        co_return co_await write_body(net::buffer(res.body()), true);
    }

    net::awaitable<error_code> write_head(http::response<http::buffer_body>& res, net::const_buffer body, bool last,
                                          bool) override {
        if (auto ec = submit(res.base(), last && body.size() == 0)) {
            co_return ec;
        }
        if (last && body.size() == 0) {
            co_return error_code{};
        }
        co_return co_await write_body(body, last);
    }

    net::awaitable<error_code> write_body(net::const_buffer body, bool last) override {
        if (!head_submitted_) {
            co_return make_error_code(net::error::invalid_argument);
        }
        if (closed_ || session_->dead()) {
            co_return net::error::connection_reset;
        }
        if (out_last_) {
            co_return error_code{}; // the headers ended the stream (no body)
        }
        if (out_at_ > 0) {
            out_.erase(0, out_at_);
            out_at_ = 0;
        }
        out_.append(static_cast<const char*>(body.data()), body.size());
        out_last_ = last;
        if (data_deferred_) {
            data_deferred_ = false;
            nghttp2_session_resume_data(session_->session(), id_);
        }
        session_->want_write();
        // Back pressure: at most one piece waits beyond the one being sent.
        while (out_.size() - out_at_ > stream_send_buffer) {
            if (closed_ || session_->dead()) {
                co_return net::error::connection_reset;
            }
            if (cancelled_) {
                cancelled_ = false;
                co_return net::error::operation_aborted;
            }
            co_await wait();
        }
        co_return error_code{};
    }

    bool head_written() const override { return head_submitted_; }
    net::awaitable<tunnel_result> tunnel(tcp_socket&, beast::flat_buffer&) override { co_return tunnel_result{}; }
    bool can_tunnel() const override { return false; }
    unsigned version() const override { return 20; }
    bool keep_alive() const override { return true; }

    // ------------------------------------------------- the exchange's life
    void exchange_started() { running_ = true; }
    /// The exchange ended; `complete`: its response was queued whole.
    void exchange_ended(bool complete) {
        running_ = false;
        if (closed_ || session_->dead()) {
            stop_watchdog();
            return;
        }
        if (complete && head_submitted_ && !in_done_) {
            // Answered before the request body ended (an error, a redirect):
            // the rest is read and dropped, up to a budget, so that the
            // client sees its response rather than a reset stream (curl
            // reports RST_STREAM NO_ERROR as a failure). Beyond the budget
            // or timeouts.body, RST_STREAM NO_ERROR (RFC 9113 8.1).
            discarding_ = true;
            const std::size_t held = in_.size();
            in_.clear();
            discard(held);
            arm(phase::request_body);
        }
        if (!complete || !head_submitted_ || !out_last_) {
            reset(NGHTTP2_INTERNAL_ERROR); // a response cut short: the client must not take it as whole
        }
    }
    /// Drops `n` request body bytes nobody will read, opening the window
    /// again, up to discard_budget.
    void discard(std::size_t n) {
        discarded_ += n;
        if (n > 0) {
            nghttp2_session_consume(session_->session(), id_, n);
            session_->want_write();
        }
        if (discarded_ > discard_budget) {
            reset(NGHTTP2_NO_ERROR);
        }
    }

    void reset(std::uint32_t code) {
        if (!closed_ && !reset_sent_ && !session_->dead()) {
            reset_sent_ = true;
            nghttp2_submit_rst_stream(session_->session(), NGHTTP2_FLAG_NONE, id_, code);
            session_->want_write();
        }
    }

    /// Wakes whatever waits in read_body or write_body.
    void wake() { wake_.cancel(); }

protected:
    // The stream's deadline passed.
    void cancel_io() override {
        if (current_phase() == phase::header && !head_complete_) {
            // The client left a header block unfinished for timeouts.header.
            session_->connection().violation();
            reset(NGHTTP2_CANCEL);
            return;
        }
        if (!running_) {
            // The exchange is over; the client neither finished its body
            // nor took the response within timeouts.body.
            if (discarding_) {
                reset(NGHTTP2_NO_ERROR);
                return;
            }
        }
        if (current_phase() == phase::response_body && out_.size() > out_at_ && !closed_ && !session_->dead()) {
            const std::int32_t window =
                std::min(nghttp2_session_get_stream_remote_window_size(session_->session(), id_),
                         nghttp2_session_get_remote_window_size(session_->session()));
            if (window <= 0) {
                session_->abuse(h2_abuse::zero_window, "the client never opened its flow-control window");
            }
        }
        cancelled_ = true;
        wake();
        cancel_upstream();
    }

public:
    void head_complete() { head_complete_ = true; }
    /// A frame of this stream was refused and counted already.
    void flag() { flagged_ = true; }
    bool flagged() const { return flagged_; }

private:
    static nghttp2_nv make_nv(std::string_view name, std::string_view value) {
        return nghttp2_nv{reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
                          reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
                          NGHTTP2_NV_FLAG_NONE};
    }

    void refuse(http::status s, std::string reason) {
        if (!refusal_) {
            refusal_.emplace(s, std::move(reason));
        }
    }

    void set_once(std::optional<std::string>& slot, std::string_view value, const char* what) {
        if (slot) {
            refuse(http::status::bad_request, std::string("duplicate ") + what);
            return;
        }
        slot = std::string(value);
    }

    // The response head as HTTP/2 fields: lower-case names, no
    // connection-specific fields; `end`: no body follows.
    error_code submit(http::response_header<>& h, bool end) {
        if (closed_ || session_->dead()) {
            return net::error::connection_reset;
        }
        if (head_submitted_) {
            return make_error_code(net::error::invalid_argument);
        }
        auto& w = session_->worker();
        rewrite_response(h, w.hsts_value, true, 11); // hop-by-hop fields out, HSTS in
        const std::string status = std::to_string(h.result_int());
        // Names in lower case, all in one buffer (sized first: the views
        // into it must not move).
        std::size_t name_bytes = 0;
        std::size_t count = 0;
        for (const auto& f : h) {
            name_bytes += f.name_string().size();
            ++count;
        }
        std::string names(name_bytes, '\0');
        std::vector<nghttp2_nv> nva;
        nva.reserve(count + 1);
        nva.push_back(make_nv(":status", status));
        std::size_t at = 0;
        for (const auto& f : h) {
            const std::string_view original = f.name_string();
            char* out = names.data() + at;
            for (std::size_t i = 0; i < original.size(); ++i) {
                const char c = original[i];
                out[i] = c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c;
            }
            const std::string_view name(out, original.size());
            at += original.size();
            if (is_connection_specific(name) || name == "te" || name == "trailer") {
                continue;
            }
            nva.push_back(make_nv(name, f.value()));
        }
        head_submitted_ = true;
        nghttp2_data_provider provider{};
        provider.source.ptr = this;
        provider.read_callback = [](nghttp2_session*, std::int32_t, std::uint8_t* buf, std::size_t length,
                                    std::uint32_t* flags, nghttp2_data_source* source, void*) -> ssize_t {
            return static_cast<h2_stream*>(source->ptr)->read_data(buf, length, flags);
        };
        if (end) {
            out_last_ = true;
        }
        const int rv =
            nghttp2_submit_response(session_->session(), id_, nva.data(), nva.size(), end ? nullptr : &provider);
        session_->want_write();
        if (rv != 0) {
            return net::error::connection_reset;
        }
        return {};
    }

    net::awaitable<void> wait() {
        wake_.expires_at(clock::time_point::max());
        co_await wake_.async_wait(use_tuple);
    }

    std::shared_ptr<h2_session> session_;
    std::int32_t id_;
    net::steady_timer wake_;
    http::request<http::buffer_body> request_;
    // The head as it arrives.
    std::optional<std::string> method_, scheme_, path_, authority_, host_;
    std::optional<std::uint64_t> content_length_;
    std::string cookie_;
    std::optional<std::pair<http::status, std::string>> refusal_;
    std::uint64_t header_bytes_ = 0;
    unsigned fields_ = 0;
    bool regular_seen_ = false;
    bool trailers_ = false;
    bool head_complete_ = false;
    // The request body.
    std::string in_; ///< received, not yet read by the exchange (at most the stream window)
    std::uint64_t received_ = 0;
    std::uint64_t consumed_ = 0;
    bool in_done_ = false;
    bool too_large_ = false;
    // The response.
    std::string out_; ///< written by the exchange, not yet taken by nghttp2 from out_at_ on
    std::size_t out_at_ = 0;
    bool out_last_ = false;
    bool head_submitted_ = false;
    bool data_deferred_ = false;
    // State.
    bool closed_ = false;
    std::uint32_t close_code_ = 0;
    bool cancelled_ = false;
    bool running_ = false;
    bool flagged_ = false;
    bool discarding_ = false;
    bool reset_sent_ = false;
    std::uint64_t discarded_ = 0;
};

// ---------------------------------------------------------------- session

h2_session::h2_session(connection_base& conn, tls_socket& stream, const connection_facts& facts)
    : conn_(conn), stream_(stream), facts_(facts), wake_writer_(conn.worker().io) {
    wake_writer_.expires_at(clock::time_point::max());
    nghttp2_session_callbacks* cb = nullptr;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cb, on_invalid_header);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option* opt = nullptr;
    nghttp2_option_new(&opt);
    const auto& h2s = conn.worker().cfg->gw.h2_settings;
    // The window opens as exchanges read (nghttp2_session_consume), not as
    // bytes arrive.
    nghttp2_option_set_no_auto_window_update(opt, 1);
    // Closed streams are forgotten at once (no priority tree of the dead).
    nghttp2_option_set_no_closed_streams(opt, 1);
    // Our own limits below fire first; these are the library's backstops.
    nghttp2_option_set_max_continuations(opt, header_block_frames * 2);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    // Responses are encoded from the static table and literals, never
    // indexed into a dynamic table (HAProxy's encoder does the same): each
    // idle connection would otherwise keep up to 4 KiB of entries (about
    // 1.4 KB for the usual response headers), and an encoder without a
    // table does no search or eviction. The cost: a repeated response
    // field is sent again (Huffman-coded) instead of as one byte.
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 0);
    nghttp2_mem mem = memory_.table();
    memory_.creating(true);
    nghttp2_session_server_new3(&session_, cb, this, opt, &mem);
    memory_.creating(false);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);

    const auto& limits = conn.worker().cfg->gw.limits_settings;
    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h2s.max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, h2s.initial_window},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, h2s.max_frame_size},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, h2s.header_table_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<std::uint32_t>(limits.header_bytes)},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
    // The connection window: room for every stream's window at once, so one
    // slow upload does not stall the others.
    const auto connection_window = static_cast<std::int32_t>(
        std::min<std::uint64_t>(std::uint64_t{h2s.initial_window} * h2s.max_concurrent_streams, (1u << 31) - 1));
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, connection_window);
}

h2_session::~h2_session() {
    if (session_ != nullptr) {
        nghttp2_session_del(session_);
    }
}

h2_stream* h2_session::stream_of(std::int32_t id) {
    return static_cast<h2_stream*>(nghttp2_session_get_stream_user_data(session_, id));
}

void h2_session::want_write() {
    wake_writer_.cancel();
}

void h2_session::abuse(h2_abuse kind, std::string_view detail) {
    if (abused_ || dead_) {
        return;
    }
    abused_ = true;
    auto& w = conn_.worker();
    w.counters.h2_abuse[static_cast<std::size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
    conn_.violation();
    log_refused(facts_.client.address, http::status::bad_request,
                std::string("HTTP/2 connection closed (") + to_string(kind) + "): " + std::string(detail));
    nghttp2_session_terminate_session(session_, NGHTTP2_ENHANCE_YOUR_CALM);
    want_write();
}

void h2_session::drain() {
    if (draining_ || dead_) {
        return;
    }
    draining_ = true;
    // A first GOAWAY tells the client to open no more streams; the final one,
    // a moment later, names the last stream that will be served (requests
    // already on the wire still get in).
    nghttp2_submit_shutdown_notice(session_);
    want_write();
    drain_timer_.emplace(conn_.worker().io);
    drain_timer_->expires_after(connection_base::drain_grace);
    drain_timer_->async_wait([self = shared_from_this()](const error_code&) {
        if (!self->dead_) {
            nghttp2_submit_goaway(self->session_, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(self->session_), NGHTTP2_NO_ERROR, nullptr,
                                  0);
            self->goaway_sent_ = true;
            self->want_write();
        }
    });
}

// A connection without streams gives nghttp2's frame buffer pages back to
// the kernel once it has stayed so for idle_release: a busy connection whose
// streams only pause between bursts does not pay a madvise and the page
// faults after it every time (at most one timer per second and connection).
void h2_session::release_when_idle() {
    if (release_pending_ || dead_) {
        return;
    }
    release_pending_ = true;
    if (!release_timer_) {
        release_timer_.emplace(conn_.worker().io);
    }
    release_timer_->expires_after(idle_release);
    release_timer_->async_wait([self = shared_from_this()](const error_code&) {
        self->release_pending_ = false;
        if (self->dead_) {
            return;
        }
        if (self->streams_.empty() && self->running_ == 0 && !self->writing_) {
            self->memory_.release_idle();
            self->worker().counters.h2_idle_releases.fetch_add(1, std::memory_order_relaxed);
        }
    });
}

void h2_session::update_deadline() {
    if (dead_) {
        return;
    }
    if (writing_) {
        conn_.arm(phase::response_body);
    } else if (!streams_.empty() || running_ > 0) {
        conn_.set_deadline(no_deadline, phase::response_body);
    } else if (draining_) {
        conn_.set_deadline(connection_base::drain_grace * 2, phase::idle);
    } else {
        conn_.arm(phase::idle);
    }
}

void h2_session::stop_reading() {
    error_code ec;
    stream_.next_layer().cancel(ec);
}

net::awaitable<bool> h2_session::run() {
    auto& w = conn_.worker();
    w.counters.h2_connections_total.fetch_add(1, std::memory_order_relaxed);
    w.counters.h2_connections_active.fetch_add(1, std::memory_order_relaxed);
    conn_.arm(phase::header); // the preface and SETTINGS
    if (w.draining) {
        drain(); // the worker began to drain during the handshake
    }
    // The writer runs beside the reader, which runs here: one spawned
    // coroutine, not two in a parallel group (about 1 KB less per idle
    // connection: no group state, no second spawn, no cancellation slots).
    writer_running_ = true;
    net::co_spawn(w.io, run_writer(shared_from_this()), log_failure{"HTTP/2 writer failed: "});
    std::exception_ptr failure;
    try {
        co_await reader();
    } catch (...) {
        // The writer ends after what it is writing; the connection ends
        // once it has (the writer uses the stream and the connection).
        failure = std::current_exception();
        dead_ = true;
        want_write();
    }
    if (writer_running_) {
        writer_done_.emplace(w.io);
        writer_done_->expires_at(clock::time_point::max());
        co_await writer_done_->async_wait(use_tuple);
    }
    const bool linger = !failure && (abused_ || goaway_sent_) && !peer_closed_;
    if (linger) {
        co_await linger_close();
    }
    dead_ = true;
    if (release_timer_) {
        release_timer_->cancel(); // a pending timer would hold the worker up at its drain
    }
    w.counters.h2_connections_active.fetch_sub(1, std::memory_order_relaxed);
    auto streams = std::move(streams_);
    streams_.clear();
    for (auto& [id, s] : streams) {
        s->closed(NGHTTP2_CANCEL); // wakes the exchange and cancels its upstream
    }
    if (failure) {
        std::rethrow_exception(failure);
    }
    // After a lingering close the TLS and TCP shutdown are done.
    co_return !linger && !abused_ && !input_closed_ && goaway_sent_;
}

// The client may still be sending (an attack, or a request that crossed our
// GOAWAY): closing now would make the kernel answer its bytes with a TCP
// reset, which can destroy the GOAWAY before the client reads it. So the
// write side is shut (close_notify, then FIN) and what still arrives is read
// and dropped, for at most linger_time or linger_bytes, before the close.
net::awaitable<void> h2_session::linger_close() {
    stream_.shutdown();
    error_code ec;
    stream_.next_layer().shutdown(tcp::socket::shutdown_send, ec);
    conn_.set_deadline(linger_time, phase::idle);
    std::array<std::uint8_t, 4096> sink{};
    std::size_t dropped = 0;
    while (dropped < linger_bytes) {
        auto [rec, n] = co_await stream_.next_layer().async_read_some(net::buffer(sink), use_tuple);
        if (rec) {
            break;
        }
        dropped += n;
    }
    conn_.take_timeout();
}

net::awaitable<void> h2_session::reader() {
    while (!dead_) {
        if (!nghttp2_session_want_read(session_)) {
            break;
        }
        if (!stream_.has_buffered()) {
            // Readiness first: no read buffer is held while waiting (the
            // pool makes giving it back and taking it again cheap).
            block_pool::give_back(read_buffer_);
            if (stream_.has_unsent() && co_await stream_.flush()) {
                break;
            }
            auto [wec] = co_await stream_.next_layer().async_wait(tcp::socket::wait_read);
            if (wec) {
                break;
            }
        }
        if (!read_buffer_) {
            read_buffer_ = block_pool::take();
        }
        auto [ec, n] = co_await stream_.async_read_some(net::buffer(read_buffer_.get(), read_size), use_tuple);
        if (ec) {
            peer_closed_ = ec != net::error::operation_aborted;
            break;
        }
        const ssize_t rv = nghttp2_session_mem_recv(session_, read_buffer_.get(), n);
        if (rv < 0) {
            // A connection error nghttp2 could not answer itself (flood
            // limits, a broken HPACK block, a failed callback).
            if (!abused_) {
                abuse(rv == NGHTTP2_ERR_FLOODED ? h2_abuse::ping_flood : h2_abuse::protocol_error,
                      nghttp2_strerror(static_cast<int>(rv)));
            }
            break;
        }
        if (abused_) {
            ready_.clear();
            break;
        }
        start_ready();
        update_deadline();
        want_write();
    }
    input_closed_ = !abused_ && !draining_ && !goaway_sent_;
    if (conn_.take_timeout() && !abused_) {
        // Idle too long (or a silent preface): a polite GOAWAY.
        input_closed_ = false;
        nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                              NGHTTP2_NO_ERROR, nullptr, 0);
        goaway_sent_ = true;
        conn_.arm(phase::response_body);
    }
    want_write(); // the writer sends what is queued (GOAWAY included), then ends
    block_pool::give_back(read_buffer_);
}

net::awaitable<void> h2_session::run_writer(std::shared_ptr<h2_session> self) {
    // The session refers to its connection and TLS stream: they stay while
    // the writer may still use them.
    const auto keep = self->conn_.shared_from_this();
    try {
        co_await self->writer();
    } catch (...) {
        log_exception("HTTP/2 writer failed: ", std::current_exception());
        self->stop_reading();
    }
    self->writer_running_ = false;
    if (self->writer_done_) {
        self->writer_done_->cancel();
    }
}

// Gathers what nghttp2 has to send into one 64 KiB block and writes it: one
// TLS write (and as few records) for many frames.
net::awaitable<void> h2_session::writer() {
    for (;;) {
        std::size_t used = 0;
        const std::uint8_t* extra = nullptr; // a piece that did not fit: written after the block
        std::size_t extra_size = 0;
        for (;;) {
            const std::uint8_t* data = nullptr;
            const ssize_t n = nghttp2_session_mem_send(session_, &data);
            if (n <= 0) {
                break;
            }
            if (!write_buffer_) {
                write_buffer_ = block_pool::take();
            }
            const auto size = static_cast<std::size_t>(n);
            if (size > write_batch - used) {
                extra = data; // valid until the next mem_send
                extra_size = size;
                break;
            }
            std::memcpy(write_buffer_.get() + used, data, size);
            used += size;
            if (write_batch - used < 1024) {
                break;
            }
        }
        if (used == 0 && extra_size == 0) {
            const bool session_done = !nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_);
            if (session_done || abused_ || input_closed_ || dead_) {
                break;
            }
            // Nothing to send: no write buffer is held while waiting, and
            // once no stream is open nghttp2's frame buffer pages go back to
            // the kernel.
            block_pool::give_back(write_buffer_);
            if (streams_.empty() && running_ == 0) {
                release_when_idle();
            }
            wake_writer_.expires_at(clock::time_point::max());
            co_await wake_writer_.async_wait(use_tuple);
            continue;
        }
        writing_ = true;
        update_deadline();
        const std::array<net::const_buffer, 2> pieces{net::buffer(write_buffer_.get(), used),
                                                      net::buffer(extra, extra_size)};
        auto [ec, n] = co_await net::async_write(stream_, pieces, use_tuple);
        writing_ = false;
        if (ec) {
            conn_.take_timeout();
            break;
        }
        update_deadline();
    }
    block_pool::give_back(write_buffer_);
    // The reader may be waiting for bytes that will never matter now.
    stop_reading();
    co_return;
}

// A new request stream.
int h2_session::on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    auto* self = static_cast<h2_session*>(user);
    self->block_frames_ = 1;
    self->block_wire_bytes_ = frame->hd.length;
    if (frame->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    if (frame->headers.cat == NGHTTP2_HCAT_HEADERS) {
        if (auto* s = self->stream_of(frame->hd.stream_id)) {
            s->begin_trailers();
        }
        return 0;
    }
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    const auto& h2s = self->conn_.worker().cfg->gw.h2_settings;
    if (self->streams_.size() >= h2s.max_concurrent_streams || self->running_ >= h2s.max_concurrent_streams * 2) {
        // Over the limit the SETTINGS announced (before the client saw
        // them), or reset streams whose exchanges still finish: refused.
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        if (self->streams_.size() >= h2s.max_concurrent_streams * 2) {
            self->abuse(h2_abuse::too_many_streams, "more streams than max_concurrent_streams");
        }
        return 0;
    }
    auto s = std::make_shared<h2_stream>(self->shared_from_this(), frame->hd.stream_id);
    s->start(s);
    s->arm(phase::header);
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s.get());
    self->streams_.emplace(frame->hd.stream_id, std::move(s));
    self->conn_.worker().counters.h2_streams_total.fetch_add(1, std::memory_order_relaxed);
    return 0;
}

int h2_session::on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name, std::size_t namelen,
                          const std::uint8_t* value, std::size_t valuelen, std::uint8_t, void* user) {
    auto* self = static_cast<h2_session*>(user);
    auto* s = self->stream_of(frame->hd.stream_id);
    if (s == nullptr) {
        return 0;
    }
    const auto& limits = self->conn_.worker().cfg->gw.limits_settings;
    s->add_field(std::string_view(reinterpret_cast<const char*>(name), namelen),
                 std::string_view(reinterpret_cast<const char*>(value), valuelen), limits.header_bytes,
                 limits.header_count);
    if (s->header_bytes() > limits.header_bytes && s->header_bytes() > hpack_bomb_ratio * self->block_wire_bytes_) {
        self->abuse(h2_abuse::hpack_bomb, "a header block decoding to " + std::to_string(s->header_bytes()) +
                                              " bytes from " + std::to_string(self->block_wire_bytes_));
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

// A field nghttp2's HTTP rules refuse (a forbidden character, white space
// around a value): the stream is reset with PROTOCOL_ERROR, and
// on_invalid_frame_recv counts it.
int h2_session::on_invalid_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                                  std::size_t namelen, const std::uint8_t*, std::size_t, std::uint8_t, void* user) {
    auto* self = static_cast<h2_session*>(user);
    log_refused(self->facts_.client.address, http::status::bad_request,
                "HTTP/2 stream " + std::to_string(frame->hd.stream_id) + ": invalid header field " +
                    std::string(reinterpret_cast<const char*>(name), std::min<std::size_t>(namelen, 64)));
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

int h2_session::on_begin_frame(nghttp2_session*, const nghttp2_frame_hd* hd, void* user) {
    auto* self = static_cast<h2_session*>(user);
    if (hd->type == NGHTTP2_CONTINUATION) {
        ++self->block_frames_;
        self->block_wire_bytes_ += hd->length;
        const auto limit = self->conn_.worker().cfg->gw.limits_settings.header_bytes;
        // Bytes: twice the header list limit, so that an honest block a bit
        // over it gets its 431 rather than a GOAWAY.
        if (self->block_frames_ > header_block_frames || self->block_wire_bytes_ > 2 * limit) {
            self->abuse(h2_abuse::continuation_flood, "a header block of " + std::to_string(self->block_frames_) +
                                                          " frames, " + std::to_string(self->block_wire_bytes_) +
                                                          " bytes");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    return 0;
}

int h2_session::on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto* self = static_cast<h2_session*>(user);
    const mono_ns now = mono_now();
    const auto& h2s = self->conn_.worker().cfg->gw.h2_settings;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
        auto* s = self->stream_of(frame->hd.stream_id);
        if (s == nullptr) {
            break;
        }
        const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            s->head_complete();
            s->finish_head(end_stream);
            auto found = self->streams_.find(frame->hd.stream_id);
            if (found != self->streams_.end()) {
                self->ready_.push_back(found->second); // started once mem_recv returns
            }
        } else if (end_stream) {
            s->end_of_request(); // trailers: dropped
        }
        break;
    }
    case NGHTTP2_DATA: {
        auto* s = self->stream_of(frame->hd.stream_id);
        const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
        if (frame->hd.length == 0 && !end_stream && self->empty_data_.over(empty_data_per_second, now)) {
            self->abuse(h2_abuse::empty_data_flood, "empty DATA frames");
        }
        if (s != nullptr && end_stream) {
            s->end_of_request();
        }
        break;
    }
    case NGHTTP2_RST_STREAM:
        if (self->resets_.over(h2s.max_concurrent_streams, now)) {
            self->abuse(h2_abuse::rapid_reset, "streams reset faster than max_concurrent_streams a second");
        }
        break;
    case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0 && self->pings_.over(ping_per_second, now)) {
            self->abuse(h2_abuse::ping_flood, "PING frames");
        }
        break;
    case NGHTTP2_SETTINGS:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0 && self->settings_.over(settings_per_second, now)) {
            self->abuse(h2_abuse::settings_flood, "SETTINGS frames");
        }
        break;
    case NGHTTP2_WINDOW_UPDATE:
        if (self->window_updates_.over(window_updates_per_second, now) ||
            (frame->window_update.window_size_increment < static_cast<std::int32_t>(small_window_update) &&
             self->small_window_updates_.over(small_window_updates_per_second, now))) {
            self->abuse(h2_abuse::window_update_flood, "WINDOW_UPDATE frames");
        }
        break;
    default:
        break;
    }
    return 0;
}

// A frame nghttp2 refused: a stream error it answers with RST_STREAM
// (a missing or malformed pseudo-header, a connection-specific field, an
// upper-case name, content-length disagreeing with END_STREAM), or a
// connection error it answers with GOAWAY (a stream beyond
// max_concurrent_streams once the client acknowledged it). Counted against
// the client; too many streams is an attack class of its own.
int h2_session::on_invalid_frame_recv(nghttp2_session*, const nghttp2_frame* frame, int lib_error, void* user) {
    auto* self = static_cast<h2_session*>(user);
    if (auto* s = self->stream_of(frame->hd.stream_id)) {
        s->flag();
    }
    const auto& h2s = self->conn_.worker().cfg->gw.h2_settings;
    if (frame->hd.type == NGHTTP2_HEADERS &&
        (lib_error == NGHTTP2_ERR_REFUSED_STREAM || lib_error == NGHTTP2_ERR_PROTO) &&
        self->streams_.size() >= h2s.max_concurrent_streams) {
        self->abuse(h2_abuse::too_many_streams, "more streams than max_concurrent_streams");
        return 0;
    }
    self->conn_.violation();
    self->conn_.worker().counters.requests_rejected.fetch_add(1, std::memory_order_relaxed);
    log_refused(self->facts_.client.address, http::status::bad_request,
                "HTTP/2 frame refused on stream " + std::to_string(frame->hd.stream_id) + ": " +
                    nghttp2_strerror(lib_error));
    if (lib_error == NGHTTP2_ERR_PROTO) {
        self->abuse(h2_abuse::protocol_error, nghttp2_strerror(lib_error));
    }
    return 0;
}

int h2_session::on_data_chunk_recv(nghttp2_session* session, std::uint8_t, std::int32_t stream_id,
                                   const std::uint8_t* data, std::size_t len, void* user) {
    auto* self = static_cast<h2_session*>(user);
    auto* s = self->stream_of(stream_id);
    if (s == nullptr || s->is_closed()) {
        // Nobody will read it: the connection's window gets it back now.
        nghttp2_session_consume_connection(session, len);
        return 0;
    }
    s->data_arrived(data, len, self->conn_.worker().cfg->gw.limits_settings.body_bytes);
    return 0;
}

int h2_session::on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto* self = static_cast<h2_session*>(user);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        self->goaway_sent_ = true;
    }
    return 0;
}

int h2_session::on_stream_close(nghttp2_session*, std::int32_t stream_id, std::uint32_t code, void* user) {
    auto* self = static_cast<h2_session*>(user);
    auto found = self->streams_.find(stream_id);
    if (found == self->streams_.end()) {
        return 0;
    }
    auto s = std::move(found->second);
    self->streams_.erase(found);
    if (code == NGHTTP2_PROTOCOL_ERROR && !s->flagged()) {
        // Reset by the framing layer without a callback before (DATA
        // beyond or short of content-length): a malformed request.
        self->conn_.violation();
    }
    s->closed(code);
    self->update_deadline();
    return 0;
}

// The streams whose request heads arrived in the last mem_recv: each gets
// its exchange now, outside nghttp2's callbacks (an exchange may submit
// frames at once, and co_spawn starts it inline).
void h2_session::start_ready() {
    if (ready_.empty()) {
        return;
    }
    auto ready = std::move(ready_);
    ready_.clear();
    for (auto& s : ready) {
        if (s->is_closed()) {
            continue; // reset in the same read (Rapid Reset): no work at all
        }
        ++running_;
        s->exchange_started();
        // The coroutine holds the stream, the session and the connection:
        // it may outlive the connection's run.
        net::co_spawn(conn_.worker().io, serve_stream(shared_from_this(), std::move(s)),
                      log_failure{"HTTP/2 stream failed: "});
    }
}

net::awaitable<void> h2_session::serve_stream(std::shared_ptr<h2_session> self, std::shared_ptr<h2_stream> s) {
    const auto keep = self->conn_.shared_from_this();
    // Whatever happens (an exception included), the stream and the session
    // learn that the exchange ended.
    struct ended {
        h2_session& session;
        h2_stream& stream;
        bool complete = false;
        ~ended() {
            stream.exchange_ended(complete);
            session.stream_finished(stream);
        }
    } guard{*self, *s};
    auto& w = self->worker();
    if (s->is_closed() || self->dead()) {
        co_return; // reset before it started (Rapid Reset): no work at all
    }
    w.counters.requests_total.fetch_add(1, std::memory_order_relaxed);
    w.counters.h2_requests_total.fetch_add(1, std::memory_order_relaxed);
    const auto& limits = w.cfg->gw.limits_settings;
    exchange ex(w, *s, *s, self->facts());
    exchange_end end = exchange_end::abort;
    if (auto status = s->refused_status()) {
        log_refused(self->facts().client.address, *status, s->refused_reason());
        end = co_await ex.refuse(*status, true);
    } else if (auto r = validate_request(s->request().base(), limits.header_count)) {
        log_refused(self->facts().client.address, r->status, r->reason);
        end = co_await ex.refuse(r->status, true);
    } else if (s->request_remaining().value_or(0) > limits.body_bytes) {
        end = co_await ex.refuse(http::status::payload_too_large, true);
    } else {
        end = co_await ex.serve();
    }
    ex.finish(s->request());
    guard.complete = end == exchange_end::done;
}

void h2_session::stream_finished(h2_stream&) {
    --running_;
    update_deadline();
    want_write();
}

// ---------------------------------------------------------------- h2_connection

h2_connection::h2_connection(connection_base& conn, tls_socket& stream, const connection_facts& facts)
    : session_(std::make_shared<h2_session>(conn, stream, facts)) {}

h2_connection::~h2_connection() = default;

net::awaitable<bool> h2_connection::run() {
    co_return co_await session_->run();
}

void h2_connection::drain() {
    session_->drain();
}

} // namespace rampart::gateway
