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
/// malloc_usable_size of a block of record_pool_block bytes with this
/// process's malloc (glibc rounds to 16 bytes, TCMalloc to a size class).
thread_local std::size_t pooled_usable = 0;

bool in_range(std::size_t n) {
    return n >= record_pool_min && n <= record_pool_block;
}

} // namespace

void* record_pool_malloc(std::size_t n, const char* /*file*/, int /*line*/) {
    if (!in_range(n)) {
        return std::malloc(n);
    }
    if (records.count > 0) {
        return records.blocks[--records.count];
    }
    // Always the whole block, so that any pooled block serves any request in the range.
    void* p = std::malloc(record_pool_block);
    if (p != nullptr && pooled_usable == 0) {
        pooled_usable = malloc_usable_size(p);
    }
    return p;
}

void* record_pool_realloc(void* p, std::size_t n, const char* /*file*/, int /*line*/) {
    // A pooled block is an ordinary malloc block: realloc may move or resize it.
    return std::realloc(p, n);
}

void record_pool_free(void* p, const char* /*file*/, int /*line*/) {
    if (p == nullptr) {
        return;
    }
    // A block of the pooled blocks' usable size came from record_pool_malloc
    // (or holds as many bytes, which is as good).
    if (pooled_usable != 0 && records.count < record_pool_blocks && malloc_usable_size(p) == pooled_usable) {
        records.blocks[records.count++] = p;
        return;
    }
    std::free(p);
}

std::size_t record_pool_held() {
    return records.count;
}

bool install_record_pool() {
    return CRYPTO_set_mem_functions(record_pool_malloc, record_pool_realloc, record_pool_free) == 1;
}

} // namespace rampart::certs
