#pragma once
// The live status page of the admin listener (GET /status) and the JSON it
// polls (GET /api/status): pools and servers with their state and counters,
// the process, VRRP state and certificates. The page is one self-contained
// HTML document (inline CSS and script, no external asset) so it works
// offline and under a strict Content-Security-Policy.

#include "config/config.hpp"
#include "gateway/shared_state.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rampart::gateway {

/// One loaded certificate as the status page shows it.
struct cert_info {
    std::string file;
    std::string key_type; ///< "ECDSA" or "RSA"
    std::vector<std::string> names;
    std::int64_t not_after_unix = 0; ///< seconds since 1970, UTC
    std::string issuer;              ///< the issuer's CN
    /// An ACME certificate: "issued", "placeholder" (not issued yet); "" otherwise.
    std::string acme;
    std::string acme_error;          ///< why the last order failed ("" after a success)
    std::int64_t acme_next_unix = 0; ///< when the next order is due (ACME only)
};

/// What the status page shows besides the config and the shared counters:
/// facts only the master knows. The master owns one and updates it (reload,
/// VRRP notifications, worker restarts).
struct status_extra {
    std::uint64_t generation = 1;     ///< configuration generation, 1 = as started
    std::string last_reload = "none"; ///< "ok" | "failed: <reason>" | "none"
    std::int64_t started_unix = 0;    ///< when the master started, seconds since 1970
    std::string vrrp_state = "unknown";
    std::vector<cert_info> certificates;
    unsigned workers = 1; ///< worker processes whose counters are summed
    std::uint64_t worker_restarts = 0;
    std::string maintenance = "off"; ///< "off", "site", or "routes NAME, NAME"
};

/// The status page: one HTML document that fetches /api/status every 2 s
/// (gateway/control/status/: the markup with the style and script inlined).
std::string_view status_page_html();

/// The page's entity tag (a quoted prefix of its SHA-256): the same for as
/// long as the binary is, so a browser revalidates with If-None-Match and
/// gets 304.
std::string_view status_page_etag();

/// The Content-Security-Policy to serve the page with: no source but the
/// page's own inline script and style (allowed by their SHA-256 hashes), data:
/// images, fetches to the same origin only, no framing.
std::string_view status_page_csp();

/// The JSON of GET /api/status at `now`.
/// `slots`: where cfg's servers and pools live in `shared`; empty = at their
/// own indexes.
std::string status_json(const config::snapshot& cfg, const shared_block& shared, const slot_map& slots,
                        const status_extra& extra, std::chrono::system_clock::time_point now);

/// GET /status/tables: the status page's tables as plain HTML, no script,
/// read again by the browser every 10 s (<meta http-equiv="refresh">): for a
/// browser without JavaScript (the page's <noscript> links to it).
std::string status_tables_html(const config::snapshot& cfg, const shared_block& shared, const slot_map& slots,
                               const status_extra& extra, std::chrono::system_clock::time_point now);

/// The Content-Security-Policy of /status/tables: its one style block, nothing else.
std::string_view status_tables_csp();

/// The JSON of GET /api/status, now.
std::string status_json(const config::snapshot& cfg, const shared_block& shared, const slot_map& slots,
                        const status_extra& extra);

/// `text` as the inside of a JSON string: quotes, backslashes and control
/// characters escaped, invalid UTF-8 replaced by U+FFFD.
std::string json_string_body(std::string_view text);

} // namespace rampart::gateway
