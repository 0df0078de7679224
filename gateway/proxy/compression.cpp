#include "gateway/proxy/compression.hpp"

#include "gateway/proxy/http_rules.hpp"
#include "gateway/proxy/static_files.hpp"

#include <brotli/encode.h>
#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <stdexcept>

namespace rampart::gateway {
namespace {

std::string_view media_type(std::string_view content_type) {
    return trim_ows(content_type.substr(0, content_type.find(';')));
}

} // namespace

const char* to_string(content_coding c) {
    switch (c) {
    case content_coding::gzip:
        return "gzip";
    case content_coding::br:
        return "br";
    case content_coding::identity:
        break;
    }
    return "identity";
}

// The q of each offered coding as the static files' negotiation reads it
// (encoding_quality: RFC 9110's qvalue grammar, `x-gzip`, `*`).
content_coding choose_coding(std::string_view accept_encoding, const std::vector<std::string>& offered) {
    unsigned best_q = 0;
    content_coding best = content_coding::identity;
    for (const auto& name : offered) {
        const unsigned q = encoding_quality(accept_encoding, name);
        if (q > best_q) {
            best_q = q;
            best = name == "br" ? content_coding::br : content_coding::gzip;
        }
    }
    return best;
}

bool compressible(const http::response_header<>& res, http::verb method, const config::compression& s) {
    if (res.result() != http::status::ok || (method != http::verb::get && method != http::verb::head)) {
        return false;
    }
    if (const auto ce = res[http::field::content_encoding]; !ce.empty() && !iequals(trim_ows(ce), "identity")) {
        return false;
    }
    if (res.find(http::field::content_range) != res.end()) {
        return false;
    }
    for (auto it = res.find(http::field::cache_control); it != res.end() && it->name() == http::field::cache_control;
         ++it) {
        std::string lower(it->value());
        std::transform(lower.begin(), lower.end(), lower.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (lower.find("no-transform") != std::string::npos) {
            return false;
        }
    }
    if (!s.with_cookies && res.find(http::field::set_cookie) != res.end()) {
        return false;
    }
    const std::string_view type = media_type(res[http::field::content_type]);
    if (std::none_of(s.types.begin(), s.types.end(), [&](const std::string& t) { return iequals(t, type); })) {
        return false;
    }
    if (const auto cl = res[http::field::content_length]; !cl.empty()) {
        std::uint64_t n = 0;
        const auto [end, ec] = std::from_chars(cl.data(), cl.data() + cl.size(), n);
        if (ec != std::errc{} || n < s.min_size) {
            return false;
        }
    }
    return true;
}

void mark_encoded(http::response_header<>& res, content_coding c) {
    res.set(http::field::content_encoding, to_string(c));
    res.erase(http::field::content_length);
    if (const auto etag = res[http::field::etag]; !etag.empty() && etag.starts_with('"')) {
        res.set(http::field::etag, "W/" + std::string(etag));
    }
}

void add_vary_accept_encoding(http::response_header<>& res) {
    std::string vary;
    for (auto it = res.find(http::field::vary); it != res.end() && it->name() == http::field::vary; ++it) {
        std::string_view rest = it->value();
        while (!rest.empty()) {
            const auto comma = rest.find(',');
            const std::string_view token = trim_ows(rest.substr(0, comma));
            if (token == "*" || iequals(token, "accept-encoding")) {
                return;
            }
            rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        }
        vary += (vary.empty() ? "" : ", ") + std::string(it->value());
    }
    res.set(http::field::vary, vary.empty() ? "Accept-Encoding" : vary + ", Accept-Encoding");
}

struct body_encoder::state {
    content_coding coding;
    z_stream z{};
    bool z_ready = false;
    BrotliEncoderState* br = nullptr;
};

body_encoder::body_encoder(content_coding c, const config::compression& s) : state_(std::make_unique<state>()) {
    state_->coding = c;
    if (c == content_coding::gzip) {
        // windowBits 15 + 16: a gzip header and trailer; memLevel 8 (zlib's default).
        if (deflateInit2(&state_->z, static_cast<int>(s.gzip_level), Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
            Z_OK) {
            throw std::runtime_error("zlib: deflateInit2 failed");
        }
        state_->z_ready = true;
    } else if (c == content_coding::br) {
        state_->br = BrotliEncoderCreateInstance(nullptr, nullptr, nullptr);
        if (state_->br == nullptr) {
            throw std::runtime_error("brotli: no encoder");
        }
        BrotliEncoderSetParameter(state_->br, BROTLI_PARAM_QUALITY, s.brotli_quality);
        BrotliEncoderSetParameter(state_->br, BROTLI_PARAM_LGWIN, 19); // a 512 KiB window, as nginx's module
        BrotliEncoderSetParameter(state_->br, BROTLI_PARAM_MODE, BROTLI_MODE_TEXT);
    }
}

body_encoder::~body_encoder() {
    if (state_->z_ready) {
        deflateEnd(&state_->z);
    }
    if (state_->br != nullptr) {
        BrotliEncoderDestroyInstance(state_->br);
    }
}

bool body_encoder::encode(std::string_view in, bool last, std::string& out, bool flush_now) {
    constexpr std::size_t step = 16 * 1024;
    if (state_->coding == content_coding::gzip) {
        z_stream& z = state_->z;
        z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
        z.avail_in = static_cast<uInt>(in.size());
        const int flush = last ? Z_FINISH : flush_now ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        for (int round = 0; round < 1 << 16; ++round) { // bounded: each round fills `step` or ends
            const std::size_t at = out.size();
            out.resize(at + step);
            z.next_out = reinterpret_cast<Bytef*>(out.data() + at);
            z.avail_out = static_cast<uInt>(step);
            const int r = deflate(&z, flush);
            out.resize(at + step - z.avail_out);
            if (r == Z_STREAM_ERROR) {
                return false;
            }
            if (last ? r == Z_STREAM_END
                     : (z.avail_out != 0 && z.avail_in == 0) || (r == Z_BUF_ERROR && z.avail_in == 0)) {
                return true;
            }
        }
        return false;
    }
    if (state_->coding == content_coding::br) {
        const auto* next_in = reinterpret_cast<const std::uint8_t*>(in.data());
        std::size_t avail_in = in.size();
        const auto op = last ? BROTLI_OPERATION_FINISH : flush_now ? BROTLI_OPERATION_FLUSH : BROTLI_OPERATION_PROCESS;
        for (int round = 0; round < 1 << 16; ++round) {
            const std::size_t at = out.size();
            out.resize(at + step);
            auto* next_out = reinterpret_cast<std::uint8_t*>(out.data() + at);
            std::size_t avail_out = step;
            if (BrotliEncoderCompressStream(state_->br, op, &avail_in, &next_in, &avail_out, &next_out, nullptr) ==
                BROTLI_FALSE) {
                out.resize(at);
                return false;
            }
            out.resize(at + step - avail_out);
            const bool done =
                last ? BrotliEncoderIsFinished(state_->br) == BROTLI_TRUE
                     : avail_in == 0 && (!flush_now || BrotliEncoderHasMoreOutput(state_->br) == BROTLI_FALSE);
            if (done) {
                return true;
            }
        }
        return false;
    }
    out.append(in);
    return true;
}

} // namespace rampart::gateway
