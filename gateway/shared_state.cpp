#include "gateway/shared_state.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>

namespace rampart::gateway {

static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared counters must be lock-free across processes");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

shared_region::shared_region() {
    void* p = ::mmap(nullptr, sizeof(shared_block), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        throw std::system_error(errno, std::generic_category(), "mmap shared state");
    }
    // Anonymous pages are zeroed; placement-new gives the atomics their
    // lifetime without changing the bytes.
    block_ = new (p) shared_block();
}

shared_region::~shared_region() { ::munmap(block_, sizeof(shared_block)); }

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

}  // namespace rampart::gateway
