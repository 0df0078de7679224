#pragma once
// The blocklist API for the gateway's abuse detection: adds and removes
// addresses in blocklist4/blocklist6 of table inet rampart, which the prerouting
// chain drops before conntrack. Keeps its netlink socket open, so one call costs
// only the in-kernel part. Needs CAP_NET_ADMIN; call it from the master, never
// from a worker's request path (it blocks on netlink).

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace rampart::firewall {

namespace nft {
class session;
}

class blocklist {
public:
    /// Opens the netlink socket; throws std::runtime_error on failure.
    blocklist();
    ~blocklist();
    blocklist(const blocklist&) = delete;
    blocklist& operator=(const blocklist&) = delete;

    /// Blocks literal IPv4/IPv6 addresses for `timeout` (one atomic batch; an address
    /// already listed keeps its element). Throws std::invalid_argument for a bad
    /// address, std::runtime_error if the kernel refuses (e.g. no table applied yet).
    void add(const std::vector<std::string>& addresses, std::chrono::milliseconds timeout);
    /// Unblocks addresses; throws std::runtime_error if one is not listed.
    void remove(const std::vector<std::string>& addresses);

private:
    std::unique_ptr<nft::session> session_;
};

} // namespace rampart::firewall
