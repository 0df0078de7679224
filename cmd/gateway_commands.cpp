// `serve` and `certs`, the commands that need the gateway (OpenSSL, Asio,
// Beast), run in-process: this is rampart-gateway's half of
// rampart::cmd::gateway_command.

#include "certs/acme.hpp"
#include "certs/certs.hpp"
#include "certs/record_pool.hpp"
#include "cmd/commands.hpp"
#include "firewall/blocklist.hpp"
#include "firewall/firewall.hpp"
#include "gateway/control/master.hpp"
#include "gateway/log.hpp"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

using rampart::cmd::config_path;
using rampart::cmd::fail_usage;
using rampart::cmd::load_or_report;

int cmd_serve(const std::vector<std::string>& args) {
    // SIGHUP and SIGUSR1 are blocked already (rampart.cpp, .preinit_array).
    auto path = config_path(args);
    if (path.empty()) {
        return fail_usage("serve needs -c FILE");
    }
    auto cfg = load_or_report(path);
    if (!cfg) {
        return 1;
    }
    // gateway.log_level, unless RAMPART_LOG names a level (debug, info, warn, error).
    using rampart::gateway::log_level;
    constexpr std::pair<rampart::config::log_level, log_level> levels[] = {
        {rampart::config::log_level::debug, log_level::debug},
        {rampart::config::log_level::info, log_level::info},
        {rampart::config::log_level::warn, log_level::warn},
        {rampart::config::log_level::error, log_level::error},
    };
    auto level = log_level::info;
    const char* env = std::getenv("RAMPART_LOG");
    for (const auto& [configured, runtime] : levels) {
        if (configured == cfg->gw.error_log_level) {
            level = runtime;
        }
    }
    for (const auto& [configured, runtime] : levels) {
        if (env != nullptr && std::strcmp(env, rampart::config::to_string(configured)) == 0) {
            level = runtime;
        }
    }
    rampart::gateway::set_log_level(level);
    // The gateway's control plane reaches the firewall only through these.
    rampart::gateway::control_links links;
    auto list = std::make_shared<std::unique_ptr<rampart::firewall::blocklist>>();
    links.block = [list](const std::vector<std::string>& addresses, std::chrono::milliseconds timeout) {
        if (!*list) {
            *list = std::make_unique<rampart::firewall::blocklist>(); // netlink, opened on first use
        }
        (*list)->add(addresses, timeout);
    };
    links.can_block = [] { return rampart::firewall::has_net_admin(); };
    return rampart::gateway::run_master(cfg, std::move(links));
}

/// `rampart certs status -c FILE`: what each configured certificate file
/// holds (ACME's included): names, issuer, serial, expiry. Exit 1 when one
/// cannot be read or has expired.
int cmd_certs_status(const std::vector<std::string>& args) {
    auto path = config_path(std::vector<std::string>(args.begin() + 1, args.end()));
    if (path.empty()) {
        return fail_usage("certs status needs -c FILE");
    }
    auto cfg = load_or_report(path);
    if (!cfg) {
        return 1;
    }
    namespace acme = rampart::certs::acme;
    const auto now = std::chrono::system_clock::now();
    const auto& tls = cfg->gw.tls_settings;
    int rc = 0;
    if (tls.certificates.empty()) {
        std::cout << "no certificates configured\n";
    }
    for (const auto& c : tls.certificates) {
        std::cout << c.cert_file << (c.acme ? " (acme)" : "") << '\n';
        std::string pem;
        try {
            if (!acme::read_file(c.cert_file, pem)) {
                std::cout << "  missing" << (c.acme ? ": the gateway makes a placeholder at start" : "") << '\n';
                rc = c.acme ? rc : 1;
                continue;
            }
            const auto f = acme::inspect_chain(pem);
            OPENSSL_cleanse(pem.data(), pem.size());
            const auto left = std::chrono::duration_cast<std::chrono::hours>(f.not_after - now).count();
            std::string names;
            for (const auto& n : f.names) {
                names += (names.empty() ? "" : ", ") + n;
            }
            const std::time_t end = std::chrono::system_clock::to_time_t(f.not_after);
            char when[32] = {};
            std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&end));
            std::cout << "  key:      " << f.key_type << '\n'
                      << "  names:    " << names << '\n'
                      << "  issuer:   " << f.issuer
                      << (c.acme && f.issuer == "Rampart placeholder" ? " (not issued yet)" : "") << '\n'
                      << "  serial:   " << f.serial << '\n'
                      << "  expires:  " << when << " ("
                      << (left < 0 ? "expired"
                                   : "in " + std::to_string(left / 24) + " d " + std::to_string(left % 24) + " h")
                      << ")\n";
            if (left < 0) {
                rc = 1;
            }
        } catch (const std::exception& e) {
            OPENSSL_cleanse(pem.data(), pem.size());
            std::cout << "  unreadable: " << e.what() << '\n';
            rc = 1;
        }
    }
    if (tls.acme_settings) {
        std::cout << "acme: " << tls.acme_settings->directory << ", " << tls.acme_settings->challenge << ", renewed "
                  << std::chrono::duration_cast<std::chrono::hours>(tls.acme_settings->renew_before).count() / 24
                  << " d before the end; the running gateway's next attempt and last error: /api/status\n";
    }
    return rc;
}

int cmd_certs(const std::vector<std::string>& args) {
    if (!args.empty() && args[0] == "status") {
        return cmd_certs_status(args);
    }
    if (args.empty() || args[0] != "dev") {
        return fail_usage("certs needs a subcommand: dev, status");
    }
    std::string out;
    std::vector<std::string> names;
    for (std::size_t i = 1; i < args.size(); ++i) {
        if ((args[i] == "--out" || args[i] == "-o") && i + 1 < args.size()) {
            out = args[++i];
        } else if (args[i] == "--name" && i + 1 < args.size()) {
            names.push_back(args[++i]);
        } else {
            return fail_usage("certs dev: unexpected argument '" + args[i] + "'");
        }
    }
    if (out.empty()) {
        return fail_usage("certs dev needs --out DIR");
    }
    if (names.empty()) {
        names = {"www.foobar.com", "foobar.com"};
    }
    rampart::certs::make_dev_certificates(out, names);
    std::cout << "wrote ca.pem, ecdsa.pem, ecdsa.key, rsa.pem, rsa.key to " << out << '\n';
    return 0;
}

} // namespace

int rampart::cmd::gateway_command(const std::string& command, const std::vector<std::string>& args, char** /*argv*/) {
    // Before OpenSSL allocates anything (certs/record_pool.hpp says why).
    rampart::certs::install_record_pool();
    return command == "serve" ? cmd_serve(args) : cmd_certs(args);
}
