#pragma once
// The status page's files (gateway/control/status/), embedded at build time
// by rampart_embed (cmake/embed.cmake): their bytes, exactly.

#include <string_view>

namespace rampart::gateway::status_assets {

/// The markup, with an empty <style></style> and <script></script> where
/// page_css and page_js go.
extern const std::string_view page_html;
extern const std::string_view page_css;
extern const std::string_view page_js;

} // namespace rampart::gateway::status_assets
