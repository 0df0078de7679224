#pragma once
// Every answer the gateway gives on its own, decided in one place: what a
// failed read of a request (head or body) becomes for the client.
//
// The rule: a request the gateway refuses always gets its status line before
// the close (400, 408, 411, 413, 431, 501, 505), whatever the framing error
// and wherever it was found, in the head or in a chunked body. Only a client
// that went away (or stayed silent between requests) is closed without one.

#include "gateway/net.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace rampart::gateway {

/// Errors that only mean "the peer went away": not worth a log line, and
/// nobody is left to answer.
bool is_disconnect(const error_code& ec);

/// The answer to a request head that could not be read. nullopt: close
/// without answering (the client left, or was idle and timed out).
std::optional<http::status> head_error_status(const error_code& ec, bool timed_out);

/// The answer to a request body that could not be read (too large,
/// malformed framing, too slow). nullopt: the client left.
std::optional<http::status> body_error_status(const error_code& ec, bool timed_out);

/// Logs why a request was refused, at debug level: a client can cause any
/// number of these, so never above debug.
void log_refused(const std::string& client, http::status status, std::string_view reason);

} // namespace rampart::gateway
