#include "ha/peer.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <charconv>

namespace rampart::ha {
namespace {

std::string hex(const unsigned char* data, std::size_t size) {
    constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(size * 2);
    for (std::size_t i = 0; i < size; ++i) {
        out += digits[data[i] >> 4];
        out += digits[data[i] & 0xf];
    }
    return out;
}

bool is_hex(std::string_view s, std::size_t size) {
    return s.size() == size &&
           std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool valid_node_name(std::string_view s) {
    return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
               c == '.';
    });
}

std::string request_message(std::string_view node, std::int64_t time, std::string_view nonce) {
    return "rampart-peer-request\n" + std::string(node) + "\n" + std::to_string(time) + "\n" + std::string(nonce);
}

// The value of `"key":` in one of our own JSON lines: a string without
// escapes, true/false, or digits.
std::optional<std::string_view> json_value(std::string_view body, std::string_view key) {
    const std::string needle = "\"" + std::string(key) + "\":";
    const auto at = body.find(needle);
    if (at == std::string_view::npos) {
        return std::nullopt;
    }
    std::string_view rest = body.substr(at + needle.size());
    if (rest.starts_with('"')) {
        const auto end = rest.find('"', 1);
        return end == std::string_view::npos ? std::nullopt : std::optional(rest.substr(1, end - 1));
    }
    const auto end = rest.find_first_of(",}");
    return end == std::string_view::npos ? std::nullopt : std::optional(rest.substr(0, end));
}

} // namespace

std::string hmac_hex(std::string_view secret, std::string_view message) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
    unsigned int size = 0;
    ::HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac.data(), &size);
    return hex(mac.data(), size);
}

std::string random_nonce() {
    std::array<unsigned char, 16> bytes{};
    if (::RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        return {};
    }
    return hex(bytes.data(), bytes.size());
}

std::string sign_peer_request(std::string_view secret, std::string_view node, std::int64_t time,
                              std::string_view nonce) {
    return "node=" + std::string(node) + ", time=" + std::to_string(time) + ", nonce=" + std::string(nonce) +
           ", mac=" + hmac_hex(secret, request_message(node, time, nonce));
}

std::optional<peer_claim> parse_peer_claim(std::string_view header) {
    peer_claim c;
    bool have_time = false;
    while (!header.empty()) {
        const auto comma = header.find(',');
        std::string_view item = header.substr(0, comma);
        header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
        while (item.starts_with(' ')) {
            item.remove_prefix(1);
        }
        const auto eq = item.find('=');
        if (eq == std::string_view::npos) {
            return std::nullopt;
        }
        const std::string_view key = item.substr(0, eq);
        const std::string_view value = item.substr(eq + 1);
        if (key == "node" && c.node.empty() && valid_node_name(value)) {
            c.node = value;
        } else if (key == "time" && !have_time) {
            const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), c.time);
            if (ec != std::errc{} || end != value.data() + value.size() || c.time < 0) {
                return std::nullopt;
            }
            have_time = true;
        } else if (key == "nonce" && c.nonce.empty() && is_hex(value, 32)) {
            c.nonce = value;
        } else if (key == "mac" && c.mac.empty() && is_hex(value, 64)) {
            c.mac = value;
        } else {
            return std::nullopt;
        }
    }
    if (c.node.empty() || !have_time || c.nonce.empty() || c.mac.empty()) {
        return std::nullopt;
    }
    return c;
}

bool same_mac(std::string_view a, std::string_view b) {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string check_peer_claim(const peer_claim& claim, std::string_view secret, std::string_view expected_node,
                             std::int64_t now) {
    if (!same_mac(claim.mac, hmac_hex(secret, request_message(claim.node, claim.time, claim.nonce)))) {
        return "the proof does not verify (a different secret?)";
    }
    if (claim.node != expected_node) {
        return "node " + claim.node + " is not this node's peer";
    }
    if (claim.time > now + peer_max_skew_s || claim.time < now - peer_max_skew_s) {
        return "its clock is " + std::to_string(claim.time - now) + " s off this node's (more than " +
               std::to_string(peer_max_skew_s) + " s)";
    }
    return {};
}

std::string sign_peer_answer(std::string_view secret, std::string_view nonce, std::string_view body) {
    return hmac_hex(secret, "rampart-peer-answer\n" + std::string(nonce) + "\n" + std::string(body));
}

std::string peer_answer_body(const peer_view& v) {
    return "{\"node\":\"" + v.node + "\",\"state\":\"" + v.state +
           "\",\"vip_held\":" + (v.vip_held ? "true" : "false") + ",\"healthy\":" + (v.healthy ? "true" : "false") +
           ",\"priority\":" + std::to_string(v.priority) + "}\n";
}

std::optional<peer_view> parse_peer_answer(std::string_view body) {
    peer_view v;
    const auto node = json_value(body, "node");
    const auto state = json_value(body, "state");
    const auto held = json_value(body, "vip_held");
    const auto healthy = json_value(body, "healthy");
    const auto priority = json_value(body, "priority");
    if (!node || !state || !held || !healthy || !priority || !valid_node_name(*node)) {
        return std::nullopt;
    }
    constexpr std::array states{"MASTER", "BACKUP", "FAULT", "STOP", "unknown"};
    if (std::find(states.begin(), states.end(), *state) == states.end() || (*held != "true" && *held != "false") ||
        (*healthy != "true" && *healthy != "false")) {
        return std::nullopt;
    }
    const auto [end, ec] = std::from_chars(priority->data(), priority->data() + priority->size(), v.priority);
    if (ec != std::errc{} || end != priority->data() + priority->size() || v.priority > 255) {
        return std::nullopt;
    }
    v.node = *node;
    v.state = *state;
    v.vip_held = *held == "true";
    v.healthy = *healthy == "true";
    return v;
}

} // namespace rampart::ha
