#pragma once
// Asio/Beast aliases shared by the gateway. Every asynchronous operation uses
// `as_tuple(use_awaitable)`: errors come back as values, never as exceptions,
// on the request path.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

namespace rampart::gateway {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

/// Completion token: `auto [ec, n] = co_await op(..., use_tuple);`
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
using tuple_token = net::as_tuple_t<net::use_awaitable_t<>>;
/// Sockets are bound to the io_context's own executor type rather than
/// any_io_executor: every composed operation copies and queries its
/// executor, and the type-erased one showed up at ~5 % of a worker's CPU.
using executor = net::io_context::executor_type;
/// A TCP socket whose operations default to `use_tuple`.
using tcp_socket = tuple_token::as_default_on_t<net::basic_stream_socket<tcp, executor>>;
using tcp_acceptor = tuple_token::as_default_on_t<net::basic_socket_acceptor<tcp, executor>>;

using request_parser = http::request_parser<http::buffer_body>;
using response_parser = http::response_parser<http::buffer_body>;

} // namespace rampart::gateway
