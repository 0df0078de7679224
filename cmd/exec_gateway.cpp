// `rampart`'s half of rampart::cmd::gateway_command: `serve` and `certs` need
// OpenSSL and Asio, which `rampart` does not link, so it replaces itself with
// rampart-gateway, same PID, same arguments and environment. The binary is
// found from /proc/self/exe (never from PATH or argv[0]): next to `rampart`
// (the build tree), else in RAMPART_GATEWAY_RELDIR from its directory (the
// installed layout: libexecdir/rampart relative to bindir, set by
// cmd/CMakeLists.txt; ../libexec/rampart with the default directories).

#include "cmd/commands.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

int rampart::cmd::gateway_command(const std::string& /*command*/, const std::vector<std::string>& /*args*/,
                                  char** argv) {
    // For `serve`, SIGHUP and SIGUSR1 are blocked since the program's first
    // instruction (rampart.cpp); the mask survives execv.
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (ec) {
        std::cerr << "rampart: cannot find its own binary (/proc/self/exe): " << ec.message() << '\n';
        return 1;
    }
    const fs::path dir = self.parent_path();
    const fs::path candidates[] = {dir / "rampart-gateway",
                                   (dir / RAMPART_GATEWAY_RELDIR / "rampart-gateway").lexically_normal()};
    for (const auto& path : candidates) {
        if (::access(path.c_str(), X_OK) == 0) {
            ::execv(path.c_str(), argv);
            std::cerr << "rampart: cannot run " << path.string() << ": " << std::strerror(errno) << '\n';
            return 1;
        }
    }
    std::cerr << "rampart: " << argv[1] << " needs rampart-gateway, which is neither at " << candidates[0].string()
              << " nor at " << candidates[1].string() << '\n';
    return 1;
}
