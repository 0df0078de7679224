#pragma once
// Large I/O blocks kept for reuse by a worker (one thread, no lock): the TLS
// staging block (the records of one write, tls_socket) and HTTP/2's read and
// write buffers (h2_connection). A busy connection takes and returns blocks
// between bursts without a trip through malloc (a 64 KiB request is a slow
// path for every allocator we tried); an idle connection holds none.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace rampart::gateway {

class block_pool {
public:
    /// Four full TLS records (16,384 bytes of data plus at most 256 of
    /// header, padding and tag each) and then some: a 64 KiB body piece
    /// leaves in one send(); HTTP/2 reads and writes 64 KiB at a time.
    static constexpr std::size_t size = 64 * 1024 + 2 * 1024;
    using block = std::unique_ptr<std::uint8_t[]>;

    static block take() {
        auto& free = list();
        if (free.empty()) {
            return block(new std::uint8_t[size]);
        }
        block b = std::move(free.back());
        free.pop_back();
        return b;
    }
    /// Keeps `b` for reuse (up to max_kept) or frees it; `b` is empty after.
    static void give_back(block& b) {
        if (!b) {
            return;
        }
        auto& free = list();
        if (free.size() < max_kept) {
            free.push_back(std::move(b));
        }
        b.reset();
    }

private:
    /// At most 4.1 MiB kept per worker.
    static constexpr std::size_t max_kept = 64;
    static std::vector<block>& list() {
        thread_local std::vector<block> free = [] {
            std::vector<block> v;
            v.reserve(max_kept);
            return v;
        }();
        return free;
    }
};

} // namespace rampart::gateway
