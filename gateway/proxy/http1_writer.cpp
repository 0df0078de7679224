#include "gateway/proxy/http1_writer.hpp"

#include <boost/beast/http/status.hpp>

namespace rampart::gateway {

namespace http = boost::beast::http;
namespace net = boost::asio;

namespace {

void append_version(std::string& out, unsigned version) {
    const char v[] = {
        'H', 'T', 'T', 'P', '/', static_cast<char>('0' + version / 10), '.', static_cast<char>('0' + version % 10)};
    out.append(v, sizeof v);
}

void append_request_line(std::string& out, const http::request_header<>& head) {
    const auto method = head.method_string();
    const auto target = head.target();
    out.append(method.data(), method.size());
    out.push_back(' ');
    out.append(target.data(), target.size());
    out.push_back(' ');
    append_version(out, head.version());
    out.append("\r\n", 2);
}

void append_status_line(std::string& out, const http::response_header<>& head) {
    append_version(out, head.version());
    const unsigned code = head.result_int();
    const char status[] = {' ', static_cast<char>('0' + code / 100 % 10), static_cast<char>('0' + code / 10 % 10),
                           static_cast<char>('0' + code % 10), ' '};
    out.append(status, sizeof status);
    auto reason = head.reason();
    if (reason.empty()) {
        reason = http::obsolete_reason(static_cast<http::status>(code));
    }
    out.append(reason.data(), reason.size());
    out.append("\r\n", 2);
}

// The chunk size line: hexadecimal digits, CRLF.
void append_chunk_size(std::string& out, std::size_t n) {
    char digits[2 * sizeof n];
    std::size_t at = sizeof digits;
    do {
        digits[--at] = "0123456789abcdef"[n & 0xf];
        n >>= 4;
    } while (n != 0);
    out.append(digits + at, sizeof digits - at);
    out.append("\r\n", 2);
}

constexpr std::string_view crlf = "\r\n";
constexpr std::string_view last_chunk = "0\r\n\r\n";
constexpr std::string_view crlf_last_chunk = "\r\n0\r\n\r\n";

} // namespace

void http1_writer::append_fields(const http::fields& fields) {
    // One allocation for the whole head (and a chunk size line after it),
    // not a doubling per few fields.
    std::size_t size = prefix_.size() + 2 + 2 * sizeof(std::size_t) + 4;
    for (const auto& f : fields) {
        size += f.name_string().size() + f.value().size() + 4;
    }
    prefix_.reserve(size);
    for (const auto& f : fields) {
        const auto name = f.name_string();
        const auto value = f.value();
        prefix_.append(name.data(), name.size());
        prefix_.append(": ", 2);
        prefix_.append(value.data(), value.size());
        prefix_.append("\r\n", 2);
    }
    prefix_.append("\r\n", 2);
}

void http1_writer::begin(bool chunked) {
    prefix_.clear();
    head_pending_ = true;
    chunked_ = chunked;
}

void http1_writer::start(const http::request_header<>& head, bool chunked) {
    begin(chunked);
    append_request_line(prefix_, head);
    append_fields(head);
}

void http1_writer::start(const http::response_header<>& head, bool chunked) {
    begin(chunked);
    append_status_line(prefix_, head);
    append_fields(head);
}

std::array<net::const_buffer, 3> http1_writer::piece(net::const_buffer data, bool last) {
    if (!head_pending_) {
        prefix_.clear();
    }
    head_pending_ = false;
    if (!chunked_) {
        return {net::buffer(prefix_), data, net::const_buffer{}};
    }
    std::string_view suffix;
    if (data.size() != 0) {
        append_chunk_size(prefix_, data.size());
        suffix = last ? crlf_last_chunk : crlf;
    } else if (last) {
        suffix = last_chunk;
    }
    return {net::buffer(prefix_), data, net::buffer(suffix.data(), suffix.size())};
}

std::string head_text(const http::request_header<>& head) {
    http1_writer w;
    w.start(head, false);
    auto b = w.piece({}, true);
    return {static_cast<const char*>(b[0].data()), b[0].size()};
}

std::string head_text(const http::response_header<>& head) {
    http1_writer w;
    w.start(head, false);
    auto b = w.piece({}, true);
    return {static_cast<const char*>(b[0].data()), b[0].size()};
}

} // namespace rampart::gateway
