#pragma once
// A small per-thread free list for OpenSSL's TLS record buffers.
//
// With SSL_MODE_RELEASE_BUFFERS (which keeps an idle connection near 14 KiB
// instead of ~48 KiB), OpenSSL allocates a ~16.7 KiB read buffer when a
// record arrives and a ~16.7 KiB write buffer for every SSL_write, and frees
// each as soon as it is empty: on a keep-alive connection, two large
// malloc/free pairs per request, and one per 16 KiB of a large response.
// glibc serves blocks of that size from its sorted bins, and each request
// of that size first consolidates every small freed chunk
// (malloc_consolidate), which showed in the keep-alive profile at several
// per cent of the worker's CPU.
//
// Installed through CRYPTO_set_mem_functions before OpenSSL allocates
// anything, the pool keeps up to `record_pool_blocks` blocks of
// `record_pool_block` bytes per thread: a request in the record-buffer range
// takes one, a freed block of that size goes back. Everything else (and a
// full or empty pool) is plain malloc/free: no header is added to any
// allocation, so an idle connection does not grow. Workers are
// single-threaded, so the pool needs no lock.

#include <cstddef>

namespace rampart::certs {

/// Requests in [record_pool_min, record_pool_block] bytes are pooled; every
/// pooled block holds record_pool_block bytes (OpenSSL 3.0's read buffer is
/// 16,709 bytes plus alignment, its write buffer 16,384 plus record
/// overhead).
inline constexpr std::size_t record_pool_min = 16 * 1024;
inline constexpr std::size_t record_pool_block = 17 * 1024 + 512;
inline constexpr std::size_t record_pool_blocks = 16;

/// Routes OpenSSL's allocations through the pool. Must run before OpenSSL
/// allocates (first thing in main); false if it was too late (OpenSSL then
/// keeps using malloc, which is correct, only slower).
bool install_record_pool();

/// The functions installed, exposed for tests.
void* record_pool_malloc(std::size_t n, const char* file, int line);
void* record_pool_realloc(void* p, std::size_t n, const char* file, int line);
void record_pool_free(void* p, const char* file, int line);

/// Blocks held by this thread's pool now.
std::size_t record_pool_held();

} // namespace rampart::certs
