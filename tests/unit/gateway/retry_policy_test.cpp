// The retry policy's whole decision table, without a socket.
#include "gateway/proxy/retry_policy.hpp"

#include <catch2/catch.hpp>

namespace gateway = rampart::gateway;
namespace http = boost::beast::http;
using gateway::attempt_failure_facts;
using gateway::attempt_stage;
using gateway::retry_action;
using gateway::retry_policy;

namespace {

attempt_failure_facts failed(attempt_stage stage, bool timed_out = false, bool reused = false, bool closed = false) {
    attempt_failure_facts f;
    f.stage = stage;
    f.timed_out = timed_out;
    f.reused_connection = reused;
    f.peer_closed = closed;
    return f;
}

} // namespace

TEST_CASE("retry: a stale kept-alive connection is replaced once, for a request that can be resent",
          "[unit][gateway][retry]") {
    retry_policy get(true, true, 1);
    get.on_server_chosen();
    CHECK(get.resendable());
    CHECK_FALSE(get.stale_resend_used());
    auto d = get.on_failure(failed(attempt_stage::response_head, false, true, true), false);
    CHECK(d.action == retry_action::resend_new_connection);
    CHECK(get.stale_resend_used());
    CHECK(get.attempts_left() == 1); // the same attempt, not a retry
    // Once per server: the next failure of that server counts as a failure.
    d = get.on_failure(failed(attempt_stage::response_head, false, true, true), false);
    CHECK(d.action == retry_action::retry_elsewhere);
    CHECK(d.status == http::status::bad_gateway);
    get.on_server_chosen();
    CHECK_FALSE(get.stale_resend_used()); // a new server may have its own stale connection
    CHECK(get.on_failure(failed(attempt_stage::send, false, true), false).action ==
          retry_action::resend_new_connection);

    // Not stale: a new connection, a timeout, an error other than the server closing.
    retry_policy p(true, true, 0);
    p.on_server_chosen();
    CHECK(p.on_failure(failed(attempt_stage::response_head, false, false, true), false).action == retry_action::answer);
    retry_policy q(true, true, 0);
    q.on_server_chosen();
    const auto slow = q.on_failure(failed(attempt_stage::response_head, true, true, true), false);
    CHECK(slow.action == retry_action::answer);
    CHECK(slow.status == http::status::gateway_timeout);
    retry_policy r(true, true, 0);
    r.on_server_chosen();
    CHECK(r.on_failure(failed(attempt_stage::response_head, false, true, false), false).action == retry_action::answer);
    // A POST with its body sent cannot be resent, even on a stale connection.
    retry_policy post(false, true, 1);
    post.on_server_chosen();
    CHECK_FALSE(post.resendable());
    CHECK(post.on_failure(failed(attempt_stage::response_head, false, true, true), false).action ==
          retry_action::answer);
    // Nor a GET whose body streams (not all of it in memory).
    retry_policy streamed(true, false, 1);
    streamed.on_server_chosen();
    CHECK(streamed.on_failure(failed(attempt_stage::send, false, true), false).action == retry_action::answer);
}

TEST_CASE("retry: another server when nothing was sent or the request can be resent, while attempts last",
          "[unit][gateway][retry]") {
    // Connect failures: any method, any body, goes elsewhere.
    retry_policy post(false, false, 2);
    post.on_server_chosen();
    auto d = post.on_failure(failed(attempt_stage::connect), false);
    CHECK(d.action == retry_action::retry_elsewhere);
    post.on_server_chosen();
    CHECK(post.on_failure(failed(attempt_stage::connect, true), false).action == retry_action::retry_elsewhere);
    post.on_server_chosen();
    d = post.on_failure(failed(attempt_stage::connect, true), false);
    CHECK(d.action == retry_action::answer); // 1 + 2 attempts used
    CHECK(d.status == http::status::gateway_timeout);
    CHECK(post.no_server_status() == http::status::gateway_timeout);

    // Sent, then failed: only a request that can be resent.
    for (auto stage : {attempt_stage::send, attempt_stage::response_head}) {
        retry_policy get(true, true, 1);
        get.on_server_chosen();
        CHECK(get.on_failure(failed(stage), false).action == retry_action::retry_elsewhere);
        retry_policy body(false, true, 1);
        body.on_server_chosen();
        d = body.on_failure(failed(stage), false);
        CHECK(d.action == retry_action::answer);
        CHECK(d.status == http::status::bad_gateway);
    }
    // A draining worker makes no new attempt.
    retry_policy drain(true, true, 3);
    drain.on_server_chosen();
    CHECK(drain.on_failure(failed(attempt_stage::connect), true).action == retry_action::answer);
    // No server could be chosen at all: 503.
    retry_policy none(true, true, 1);
    CHECK(none.no_server_status() == http::status::service_unavailable);
}

TEST_CASE("retry: a response body failing before its head reached the client goes elsewhere, after it the "
          "connection is cut",
          "[unit][gateway][retry]") {
    retry_policy get(true, true, 1);
    get.on_server_chosen();
    auto f = failed(attempt_stage::response_body);
    CHECK(get.on_failure(f, false).action == retry_action::retry_elsewhere);
    get.on_server_chosen();
    CHECK(get.on_failure(f, false).action == retry_action::abort); // no attempt left
    retry_policy started(true, true, 3);
    started.on_server_chosen();
    f.response_started = true;
    CHECK(started.on_failure(f, false).action == retry_action::abort);
    retry_policy post(false, true, 3);
    post.on_server_chosen();
    f.response_started = false;
    CHECK(post.on_failure(f, false).action == retry_action::abort);
    retry_policy drain(true, true, 3);
    drain.on_server_chosen();
    CHECK(drain.on_failure(f, true).action == retry_action::abort);
}

TEST_CASE("retry: idempotent methods", "[unit][gateway][retry]") {
    for (auto v : {http::verb::get, http::verb::head, http::verb::options, http::verb::trace, http::verb::put,
                   http::verb::delete_}) {
        CHECK(gateway::is_idempotent(v));
    }
    for (auto v : {http::verb::post, http::verb::patch, http::verb::connect}) {
        CHECK_FALSE(gateway::is_idempotent(v));
    }
}
