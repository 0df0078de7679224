#include "certs/record_pool.hpp"

#include <openssl/crypto.h>

#include <cstdlib>
#include <malloc.h>

namespace rampart::certs {

namespace {

struct pool {
    void* blocks[record_pool_blocks];
    std::size_t count = 0;

    ~pool() {
        while (count > 0) {
            std::free(blocks[--count]);
        }
    }
};

thread_local pool records;

bool in_range(std::size_t n) { return n >= record_pool_min && n <= record_pool_block; }

}  // namespace

void* record_pool_malloc(std::size_t n, const char* /*file*/, int /*line*/) {
    if (!in_range(n)) {
        return std::malloc(n);
    }
    if (records.count > 0) {
        return records.blocks[--records.count];
    }
    // Always the whole block, so that any pooled block serves any request in the range.
    return std::malloc(record_pool_block);
}

void* record_pool_realloc(void* p, std::size_t n, const char* /*file*/, int /*line*/) {
    // A pooled block is an ordinary malloc block: realloc may move or resize it.
    return std::realloc(p, n);
}

void record_pool_free(void* p, const char* /*file*/, int /*line*/) {
    if (p == nullptr) {
        return;
    }
    // malloc rounds a request up by at most 16 bytes on 64-bit glibc; a
    // block of this usable size came from record_pool_malloc (or is as good).
    const std::size_t usable = malloc_usable_size(p);
    if (usable >= record_pool_block && usable < record_pool_block + 32 && records.count < record_pool_blocks) {
        records.blocks[records.count++] = p;
        return;
    }
    std::free(p);
}

std::size_t record_pool_held() { return records.count; }

bool install_record_pool() {
    return CRYPTO_set_mem_functions(record_pool_malloc, record_pool_realloc, record_pool_free) == 1;
}

}  // namespace rampart::certs
