#include "gateway/proxy/retry_policy.hpp"

namespace rampart::gateway {

namespace http = boost::beast::http;

bool is_idempotent(http::verb v) {
    return v == http::verb::get || v == http::verb::head || v == http::verb::options || v == http::verb::trace ||
           v == http::verb::put || v == http::verb::delete_;
}

retry_decision retry_policy::on_failure(const attempt_failure_facts& f, bool draining) {
    // A kept-alive connection the server had closed: the failure comes
    // before any response byte, so a request that may be sent again goes
    // once more to the same server on a new connection. Not a timeout (the
    // server is slow, not gone), and once per server.
    const bool stale = f.reused_connection && !f.timed_out && !stale_resend_used_ && resendable() &&
                       (f.stage == attempt_stage::send || (f.stage == attempt_stage::response_head && f.peer_closed));
    if (stale) {
        stale_resend_used_ = true;
        return {retry_action::resend_new_connection, http::status::ok};
    }
    if (f.stage == attempt_stage::response_body) {
        // The head goes out with the first body piece: until then nothing
        // reached the client and a request safe to resend may go elsewhere.
        // After it, cutting the connection is the only honest signal left.
        last_status_ = http::status::bad_gateway;
        if (!f.response_started && resendable() && attempts_left_ > 0 && !draining) {
            return {retry_action::retry_elsewhere, last_status_};
        }
        return {retry_action::abort, last_status_};
    }
    last_status_ = f.timed_out ? http::status::gateway_timeout : http::status::bad_gateway;
    // Another server when it is safe: nothing was sent, or the method is
    // idempotent and the whole request is in memory. Never a POST whose
    // body went out.
    const bool safe = f.stage == attempt_stage::connect || resendable();
    if (attempts_left_ == 0 || !safe || draining) {
        return {retry_action::answer, last_status_};
    }
    return {retry_action::retry_elsewhere, last_status_};
}

} // namespace rampart::gateway
