// The `rampart` command: parses argv, loads the configuration, calls one
// module entry point. Exceptions end here as one line on stderr and a
// non-zero exit.

#include "certs/certs.hpp"
#include "config/config.hpp"
#include "gateway/log.hpp"
#include "gateway/master.hpp"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

namespace {

constexpr const char* usage = R"(usage: rampart <command> [options]

commands:
  serve -c FILE             run the gateway (master + workers) until SIGTERM
  check -c FILE             validate FILE; print a summary (exit 0) or every error as file:line:column (exit 1)
  certs dev --out DIR [--name NAME]...
                            write a development CA and ECDSA + RSA server certificates
                            (default names: www.foobar.com foobar.com)
  version                   print the version
)";

int fail_usage(const std::string& why) {
    std::cerr << "rampart: " << why << "\n\n" << usage;
    return 2;
}

/// Finds "-c FILE" / "--config FILE" in args.
std::string config_path(const std::vector<std::string>& args) {
    for (std::size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] == "-c" || args[i] == "--config") {
            return args[i + 1];
        }
    }
    return {};
}

rampart::config::snapshot_ptr load_or_report(const std::string& path) {
    auto result = rampart::config::load(path);
    if (!result) {
        for (const auto& e : result.errors) {
            std::cerr << e.to_string() << '\n';
        }
    }
    return result.config;
}

int cmd_check(const std::vector<std::string>& args) {
    auto path = config_path(args);
    if (path.empty()) {
        return fail_usage("check needs -c FILE");
    }
    auto cfg = load_or_report(path);
    if (!cfg) {
        return 1;
    }
    std::cout << rampart::config::summary(*cfg);
    return 0;
}

int cmd_serve(const std::vector<std::string>& args) {
    auto path = config_path(args);
    if (path.empty()) {
        return fail_usage("serve needs -c FILE");
    }
    if (const char* level = std::getenv("RAMPART_LOG"); level != nullptr && std::strcmp(level, "debug") == 0) {
        rampart::gateway::set_log_level(rampart::gateway::log_level::debug);
    }
    auto cfg = load_or_report(path);
    if (!cfg) {
        return 1;
    }
    return rampart::gateway::run_master(cfg);
}

int cmd_certs(const std::vector<std::string>& args) {
    if (args.empty() || args[0] != "dev") {
        return fail_usage("certs needs a subcommand: dev");
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

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        return fail_usage("missing command");
    }
    std::string command = args.front();
    args.erase(args.begin());
    try {
        if (command == "serve") {
            return cmd_serve(args);
        }
        if (command == "check") {
            return cmd_check(args);
        }
        if (command == "certs") {
            return cmd_certs(args);
        }
        if (command == "version" || command == "--version") {
            std::cout << "rampart 0.1.0\n";
            return 0;
        }
        if (command == "help" || command == "--help" || command == "-h") {
            std::cout << usage;
            return 0;
        }
        return fail_usage("unknown command '" + command + "'");
    } catch (const std::exception& e) {
        std::cerr << "rampart: " << e.what() << '\n';
        return 1;
    }
}
