#include "gateway/proxy/error_status.hpp"

#include "gateway/log.hpp"

#include <boost/asio/ssl/error.hpp>
#include <boost/beast/http/error.hpp>

namespace rampart::gateway {

bool is_disconnect(const error_code& ec) {
    return ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::broken_pipe ||
           ec == net::error::operation_aborted || ec == net::ssl::error::stream_truncated ||
           ec == http::error::end_of_stream || ec == http::error::partial_message;
}

namespace {

bool is_parse_error(const error_code& ec) {
    return ec.category() == http::make_error_code(http::error::bad_target).category();
}

} // namespace

std::optional<http::status> head_error_status(const error_code& ec, bool timed_out) {
    if (timed_out) {
        return http::status::request_timeout;
    }
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
        return http::status::request_header_fields_too_large;
    }
    if (ec == http::error::body_limit) {
        return http::status::payload_too_large;
    }
    if (is_disconnect(ec)) {
        return std::nullopt;
    }
    if (is_parse_error(ec)) {
        return http::status::bad_request; // any other parse error: malformed request
    }
    return std::nullopt;
}

std::optional<http::status> body_error_status(const error_code& ec, bool timed_out) {
    if (timed_out) {
        return http::status::request_timeout;
    }
    if (ec == http::error::body_limit) {
        return http::status::payload_too_large;
    }
    if (is_disconnect(ec)) {
        return std::nullopt;
    }
    return http::status::bad_request; // a chunk size, extension or trailer that breaks the rules
}

void log_refused(const std::string& client, http::status status, std::string_view reason) {
    if (log_enabled(log_level::debug)) {
        log(log_level::debug, "request from " + client + " refused (" + std::to_string(static_cast<unsigned>(status)) +
                                  "): " + std::string(reason));
    }
}

} // namespace rampart::gateway
