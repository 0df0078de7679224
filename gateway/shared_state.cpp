#include "gateway/shared_state.hpp"

#include <arpa/inet.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include <cerrno>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>

namespace rampart::gateway {

static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared counters must be lock-free across processes");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

mono_ns mono_now() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

namespace {

std::uint64_t load_be64(const unsigned char* p) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) {
        v = v << 8 | p[i];
    }
    return v;
}

void store_be64(unsigned char* p, std::uint64_t v) {
    for (int i = 7; i >= 0; --i) {
        p[i] = static_cast<unsigned char>(v);
        v >>= 8;
    }
}

// splitmix64's finaliser: a cheap, well-mixed hash of 64 bits.
std::uint64_t mix(std::uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

} // namespace

client_address client_address::parse(const std::string& text) {
    unsigned char bytes[16] = {};
    if (::inet_pton(AF_INET6, text.c_str(), bytes) != 1) {
        unsigned char v4[4];
        if (::inet_pton(AF_INET, text.c_str(), v4) != 1) {
            return {};
        }
        bytes[10] = 0xff;
        bytes[11] = 0xff;
        std::memcpy(bytes + 12, v4, 4);
    }
    return from_bytes(bytes);
}

client_address client_address::from_bytes(const unsigned char (&bytes)[16]) {
    client_address a;
    a.hi = load_be64(bytes);
    a.lo = load_be64(bytes + 8);
    return a;
}

std::string client_address::to_string() const {
    unsigned char bytes[16];
    store_be64(bytes, hi);
    store_be64(bytes + 8, lo);
    char text[INET6_ADDRSTRLEN] = {};
    if (hi == 0 && (lo >> 32) == 0xffff) {
        ::inet_ntop(AF_INET, bytes + 12, text, sizeof text);
    } else {
        ::inet_ntop(AF_INET6, bytes, text, sizeof text);
    }
    return text;
}

bool client_address::is_loopback() const {
    if (hi == 0 && (lo >> 32) == 0xffff) {
        return ((lo >> 24) & 0xff) == 127;
    }
    return hi == 0 && lo == 1;
}

network_set::network_set(const std::vector<config::network>& networks) {
    const auto mask = [](unsigned bits) { return bits == 0 ? 0 : bits >= 64 ? ~0ULL : ~(~0ULL >> bits); };
    for (const auto& n : networks) {
        const client_address net = client_address::parse(n.address);
        // An IPv4 network covers the v4-mapped addresses only: ::ffff:0:0/96 and its prefix.
        const unsigned prefix = n.v6 ? n.prefix : n.prefix + 96;
        const std::uint64_t mask_hi = mask(std::min(prefix, 64U));
        const std::uint64_t mask_lo = mask(prefix > 64 ? prefix - 64 : 0);
        entries_.push_back({net.hi & mask_hi, net.lo & mask_lo, mask_hi, mask_lo});
    }
}

bool network_set::contains(const client_address& a) const {
    return std::any_of(entries_.begin(), entries_.end(),
                       [&](const entry& e) { return (a.hi & e.mask_hi) == e.hi && (a.lo & e.mask_lo) == e.lo; });
}

client_slot* find_client(shared_block& b, const client_address& a, std::uint32_t scope, mono_ns now) {
    const std::uint64_t key = (mix(a.hi ^ mix(a.lo ^ scope)) | 1);
    const std::size_t start = static_cast<std::size_t>(key >> 17) & (client_slots - 1);
    for (std::size_t k = 0; k < client_probe; ++k) {
        client_slot& s = b.clients[(start + k) & (client_slots - 1)];
        std::uint64_t seen = s.key.load(std::memory_order_acquire);
        if (seen == 0) {
            // Claim: the address is written after the key, read only by the
            // master well after (for a client with many violations).
            if (s.key.compare_exchange_strong(seen, key, std::memory_order_acq_rel)) {
                s.addr_hi.store(a.hi, std::memory_order_relaxed);
                s.addr_lo.store(a.lo, std::memory_order_relaxed);
                s.last_seen.store(now, std::memory_order_relaxed);
                return &s;
            }
        }
        if (seen == key) {
            s.last_seen.store(now, std::memory_order_relaxed);
            return &s;
        }
    }
    b.client_table_full.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
}

bool take_token(client_slot& s, double rate, std::uint64_t burst, mono_ns now) {
    constexpr std::uint64_t milli = 1000;
    const std::uint64_t cap = burst * milli;
    const auto now_ms = static_cast<std::uint32_t>(static_cast<std::uint64_t>(now) / 1'000'000);
    std::uint64_t old = s.bucket.load(std::memory_order_relaxed);
    for (int attempt = 0; attempt < 64; ++attempt) {
        std::uint64_t tokens = cap;
        if (old != 0) {
            const auto stamp = static_cast<std::uint32_t>(old >> 32);
            const std::uint32_t elapsed = now_ms - stamp;              // wraps correctly
            const double refill = static_cast<double>(elapsed) * rate; // milli-tokens: ms * tokens/s
            tokens = std::min<std::uint64_t>(cap, (old & 0xffffffffULL) + static_cast<std::uint64_t>(refill));
        }
        if (tokens < milli) {
            return false;
        }
        // Stamp 0 with bucket 0 would read as "full": keep the word non-zero.
        const std::uint64_t next =
            (static_cast<std::uint64_t>(now_ms) << 32 | (tokens - milli)) | (now_ms == 0 ? 1ULL << 32 : 0);
        if (s.bucket.compare_exchange_weak(old, next, std::memory_order_relaxed)) {
            return true;
        }
    }
    return true; // heavy contention on one client's bucket: let it through rather than spin
}

void count_violation(shared_block& b, const client_address& a, mono_ns now) {
    b.abuse_violations.fetch_add(1, std::memory_order_relaxed);
    if (client_slot* s = find_client(b, a, scope_connections, now)) {
        s->violations.fetch_add(1, std::memory_order_relaxed);
    }
}

shared_region::shared_region() {
    void* p = ::mmap(nullptr, sizeof(shared_block), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        throw std::system_error(errno, std::generic_category(), "mmap shared state");
    }
    // Anonymous pages are zeroed; placement-new gives the atomics their
    // lifetime without changing the bytes.
    block_ = new (p) shared_block();
}

shared_region::~shared_region() {
    ::munmap(block_, sizeof(shared_block));
}

namespace {

template <std::size_t N> std::size_t claim(slot_name (&names)[N], const std::string& name, const char* what) {
    std::size_t free_slot = N;
    for (std::size_t i = 0; i < N; ++i) {
        if (name == names[i].text) {
            return i;
        }
        if (free_slot == N && names[i].text[0] == '\0') {
            free_slot = i;
        }
    }
    if (free_slot == N || name.size() >= sizeof names[0].text) {
        throw std::invalid_argument(std::string("no free ") + what + " slot for " + name + " (at most " +
                                    std::to_string(N) + " over the process's lifetime, names under 64 bytes)");
    }
    std::memcpy(names[free_slot].text, name.c_str(), name.size() + 1);
    return free_slot;
}

} // namespace

slot_map assign_slots(shared_block& b, const config::snapshot& cfg) {
    slot_map m;
    for (const auto& srv : cfg.servers) {
        m.servers.push_back(claim(b.server_names, srv.name, "server"));
    }
    for (const auto& p : cfg.gw.pools) {
        m.pools.push_back(claim(b.pool_names, p.name, "pool"));
    }
    return m;
}

void check_fits(const config::snapshot& s) {
    if (s.servers.size() > max_servers) {
        throw std::invalid_argument("too many servers (at most " + std::to_string(max_servers) + ")");
    }
    if (s.gw.pools.size() > max_pools) {
        throw std::invalid_argument("too many pools (at most " + std::to_string(max_pools) + ")");
    }
    if (s.effective_workers() > max_workers) {
        throw std::invalid_argument("too many workers (at most " + std::to_string(max_workers) + ")");
    }
}

std::uint64_t mix64(std::uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

std::uint64_t stable_hash(std::string_view text) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const char c : text) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    return mix64(h); // FNV-1a alone mixes the last bytes poorly
}

// ACME answers: bytes copied through atomic_ref so that a reader racing the
// master's writer is a retry, not a data race.

namespace {

void store_bytes(char* to, std::size_t capacity, std::string_view from) {
    for (std::size_t i = 0; i < capacity; ++i) {
        std::atomic_ref<char>(to[i]).store(i < from.size() ? from[i] : '\0', std::memory_order_relaxed);
    }
}

void store_bytes(unsigned char* to, std::size_t capacity, std::string_view from) {
    store_bytes(reinterpret_cast<char*>(to), capacity, from);
}

std::string load_text(const char* from, std::size_t capacity) {
    std::string out;
    for (std::size_t i = 0; i < capacity; ++i) {
        const char c = std::atomic_ref<char>(const_cast<char&>(from[i])).load(std::memory_order_relaxed);
        if (c == '\0') {
            break;
        }
        out += c;
    }
    return out;
}

std::string load_bytes(const unsigned char* from, std::size_t length) {
    std::string out(length, '\0');
    for (std::size_t i = 0; i < length; ++i) {
        out[i] = std::atomic_ref<char>(const_cast<char&>(reinterpret_cast<const char*>(from)[i]))
                     .load(std::memory_order_relaxed);
    }
    return out;
}

/// Runs `read` between two equal even sequence numbers. The master writes a
/// few KiB at a time, so this spins (no system call: the worker's filter
/// and its event loop both want none), bounded: nullopt when the master
/// stayed in the middle of a write that long (descheduled); the validator
/// then asks again.
template <class Read> auto read_consistent(const acme_answers& a, Read read) -> decltype(read()) {
    for (int attempt = 0; attempt < 100'000; ++attempt) {
        const std::uint64_t before = a.seq.load(std::memory_order_acquire);
        if ((before & 1) != 0) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            continue;
        }
        auto value = read();
        std::atomic_thread_fence(std::memory_order_acquire);
        if (a.seq.load(std::memory_order_relaxed) == before) {
            return value;
        }
    }
    return std::nullopt;
}

} // namespace

bool publish_acme_answers(acme_answers& a, const std::vector<std::pair<std::string, std::string>>& http,
                          const std::vector<acme_alpn_source>& alpn) {
    bool all = true;
    a.seq.fetch_add(1, std::memory_order_acq_rel); // odd: writing
    std::atomic_thread_fence(std::memory_order_release);
    std::size_t h = 0;
    for (const auto& [token, answer] : http) {
        if (h == max_acme_challenges || token.size() >= sizeof a.http[0].token ||
            answer.size() >= sizeof a.http[0].key_authorization) {
            all = false;
            continue;
        }
        store_bytes(a.http[h].token, sizeof a.http[h].token, token);
        store_bytes(a.http[h].key_authorization, sizeof a.http[h].key_authorization, answer);
        ++h;
    }
    for (; h < max_acme_challenges; ++h) {
        store_bytes(a.http[h].token, sizeof a.http[h].token, {});
    }
    std::size_t n = 0;
    for (const auto& e : alpn) {
        auto& slot = a.alpn[n < max_acme_challenges ? n : 0];
        if (n == max_acme_challenges || e.name.size() >= sizeof slot.name || e.cert_der.size() > sizeof slot.cert_der ||
            e.key_der.size() > sizeof slot.key_der) {
            all = false;
            continue;
        }
        store_bytes(slot.name, sizeof slot.name, e.name);
        std::atomic_ref<std::uint16_t>(slot.cert_length)
            .store(static_cast<std::uint16_t>(e.cert_der.size()), std::memory_order_relaxed);
        std::atomic_ref<std::uint16_t>(slot.key_length)
            .store(static_cast<std::uint16_t>(e.key_der.size()), std::memory_order_relaxed);
        store_bytes(slot.cert_der, sizeof slot.cert_der, e.cert_der);
        store_bytes(slot.key_der, sizeof slot.key_der, e.key_der);
        ++n;
    }
    for (; n < max_acme_challenges; ++n) {
        store_bytes(a.alpn[n].name, sizeof a.alpn[n].name, {});
    }
    a.seq.fetch_add(1, std::memory_order_release); // even: done
    return all;
}

std::optional<std::string> find_acme_http(const acme_answers& a, std::string_view token) {
    if (token.empty() || token.size() >= sizeof a.http[0].token) {
        return std::nullopt;
    }
    return read_consistent(a, [&]() -> std::optional<std::string> {
        for (const auto& e : a.http) {
            if (load_text(e.token, sizeof e.token) == token) {
                return load_text(e.key_authorization, sizeof e.key_authorization);
            }
        }
        return std::nullopt;
    });
}

std::optional<acme_alpn_source> find_acme_alpn(const acme_answers& a, std::string_view name) {
    if (name.empty() || name.size() >= sizeof a.alpn[0].name) {
        return std::nullopt;
    }
    return read_consistent(a, [&]() -> std::optional<acme_alpn_source> {
        for (const auto& e : a.alpn) {
            if (load_text(e.name, sizeof e.name) != name) {
                continue;
            }
            const auto cert_length = std::atomic_ref<std::uint16_t>(const_cast<std::uint16_t&>(e.cert_length))
                                         .load(std::memory_order_relaxed);
            const auto key_length = std::atomic_ref<std::uint16_t>(const_cast<std::uint16_t&>(e.key_length))
                                        .load(std::memory_order_relaxed);
            if (cert_length > sizeof e.cert_der || key_length > sizeof e.key_der) {
                return std::nullopt;
            }
            return acme_alpn_source{std::string(name), load_bytes(e.cert_der, cert_length),
                                    load_bytes(e.key_der, key_length)};
        }
        return std::nullopt;
    });
}

} // namespace rampart::gateway
