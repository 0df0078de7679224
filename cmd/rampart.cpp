// The command line of `rampart` and `rampart-gateway`: parses argv, loads the
// configuration, calls one module entry point. Exceptions end here as one line
// on stderr and a non-zero exit.
//
// Two executables share this file. `rampart-gateway` links every module and
// runs every command. `rampart`, the one operators type, links neither
// OpenSSL nor Asio: `serve` and `certs` replace it with rampart-gateway
// (exec_gateway.cpp); check, reload, firewall and ha run in it directly, so a
// firewall apply starts without loading libssl/libcrypto (see
// cmd/CMakeLists.txt).

#include "cmd/commands.hpp"
#include "config/config.hpp"
#include "config/htpasswd.hpp"
#include "firewall/firewall.hpp"
#include "firewall/policy.hpp"
#include "ha/keepalived.hpp"
#include "ha/status.hpp"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace {

// SIGHUP (reload) and SIGUSR1 (reopen the access log) end a process by
// default. A reload or a logrotate reopen that reaches `serve` while the
// gateway starts must wait for the master to handle it (gateway/control/master.cpp
// unblocks them once its handlers are installed) instead of ending it. The
// mask is set from .preinit_array: the first code of the program that runs,
// before any library's or our own static constructors and before main; it
// survives the exec to rampart-gateway. What runs before it (the kernel's
// exec and the dynamic loader, well under a millisecond warm) cannot be
// covered by the program itself: only a parent that blocks the signals
// before the exec can.
void block_reload_signals_at_start(int argc, char** argv, char** /*envp*/) {
    if (argc < 2 || argv == nullptr || argv[1] == nullptr || std::strcmp(argv[1], "serve") != 0) {
        return;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    ::sigprocmask(SIG_BLOCK, &set, nullptr);
}

__attribute__((section(".preinit_array"),
               used)) void (*const block_reload_signals_entry)(int, char**, char**) = block_reload_signals_at_start;

constexpr const char* usage = R"(usage: rampart <command> [options]

commands:
  serve -c FILE             run the gateway (master + workers) until SIGTERM
  reload -c FILE            ask the running gateway (its admin listener) to reload FILE; exit 1 if it refused
  check -c FILE             validate FILE; print a summary (exit 0) or every error as file:line:column (exit 1)
  certs dev --out DIR [--name NAME]...
                            write a development CA and ECDSA + RSA server certificates
                            (default names: www.foobar.com foobar.com)
  certs status -c FILE      each configured certificate file (ACME's too): key, names, issuer,
                            serial, expiry; exit 1 if one is unreadable or expired
  firewall plan -c FILE (--host NAME | --role ROLE)
                            print the host's or role's ruleset in nft syntax (lint errors: exit 1)
  firewall apply -c FILE --host NAME [--confirm DURATION] [--state-dir DIR]
                            replace table inet rampart atomically; print what changed;
                            with --confirm, revert unless `firewall confirm` runs in time
  firewall confirm [--state-dir DIR]    keep the ruleset of a pending apply --confirm
  firewall rollback [--state-dir DIR]   restore the previously applied ruleset
  firewall diff -c FILE --host NAME     compare the kernel with the plan (0 in sync, 1 drift, 2 error)
  firewall status [--json] [--state-dir DIR]
                            rules with packet/byte counters, set sizes
  firewall block ADDR... [--timeout 10m]    drop these addresses until the timeout
  firewall unblock ADDR...                  remove them from the blocklist
  ha render -c FILE --node NAME --out DIR
                            write keepalived.conf for that gateway of the ha pair
  ha down -c FILE [--node NAME]
                            mark this node not ready in its track file, so keepalived gives up
                            the VIP (the unit runs it after the gateway ended, however it ended)
  ha status -c FILE [--node NAME]
                            this node's VRRP state, priority, peer, and whether it holds the VIP
                            (the node is the one whose address is local, unless --node says)
  passwd [--bcrypt] [USER]  read a password on stdin and print its yescrypt (or bcrypt) hash, as
                            USER:HASH when USER is given: a line of a basic_auth users file
  version                   print the version
)";

} // namespace

int rampart::cmd::fail_usage(const std::string& why) {
    std::cerr << "rampart: " << why << "\n\n" << usage;
    return 2;
}

rampart::config::snapshot_ptr rampart::cmd::load_or_report(const std::string& path) {
    auto result = rampart::config::load(path);
    if (!result) {
        for (const auto& e : result.errors) {
            std::cerr << e.to_string() << '\n';
        }
    }
    return result.config;
}

std::string rampart::cmd::config_path(const std::vector<std::string>& args) {
    for (std::size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] == "-c" || args[i] == "--config") {
            return args[i + 1];
        }
    }
    return {};
}

namespace {

using rampart::cmd::config_path;
using rampart::cmd::fail_usage;
using rampart::cmd::load_or_report;

// A users-file line for basic_auth. The password comes from stdin (without
// echo on a terminal, asked twice), never from the command line, where other
// users could read it in /proc.
int cmd_passwd(const std::vector<std::string>& args) {
    bool bcrypt = false;
    std::string user;
    for (const auto& a : args) {
        if (a == "--bcrypt") {
            bcrypt = true;
        } else if (!a.empty() && a[0] == '-') {
            return rampart::cmd::fail_usage("passwd: unknown option " + a);
        } else if (user.empty()) {
            user = a;
        } else {
            return rampart::cmd::fail_usage("passwd: one user at a time");
        }
    }
    if (user.find(':') != std::string::npos ||
        std::any_of(user.begin(), user.end(), [](char c) { return c <= 0x20 || c >= 0x7f; })) {
        std::cerr << "rampart: passwd: a user name is printable ASCII without spaces or ':'\n";
        return 2;
    }
    const bool terminal = ::isatty(STDIN_FILENO) == 1;
    termios saved{};
    if (terminal && ::tcgetattr(STDIN_FILENO, &saved) == 0) {
        termios quiet = saved;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    const auto read_line = [&](const char* prompt) {
        if (terminal) {
            std::cerr << prompt << std::flush;
        }
        std::string line;
        std::getline(std::cin, line);
        if (terminal) {
            std::cerr << '\n';
        }
        return line;
    };
    std::string password = read_line("password: ");
    const bool again = !terminal || read_line("again: ") == password;
    if (terminal) {
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    }
    if (!again) {
        std::cerr << "rampart: passwd: the passwords differ\n";
        return 1;
    }
    if (password.empty()) {
        std::cerr << "rampart: passwd: an empty password\n";
        return 1;
    }
    const std::string hash = rampart::config::make_password_hash(password, bcrypt);
    std::fill(password.begin(), password.end(), '\0');
    std::cout << (user.empty() ? "" : user + ":") << hash << '\n';
    return 0;
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
    // The files the gateway will read at start: each must be there and
    // readable by whoever checks (the master reads them as root).
    bool files_ok = true;
    const auto& certificates = cfg->gw.tls_settings.certificates;
    for (std::size_t i = 0; i < certificates.size(); ++i) {
        const auto& c = certificates[i];
        if (c.acme) {
            continue; // the gateway makes it (a placeholder until ACME issues it)
        }
        for (const auto& [file, at, what] :
             {std::tuple{&c.cert_file, &c.cert_at, "cert"}, std::tuple{&c.key_file, &c.key_at, "key"}}) {
            struct stat st {};
            std::string why;
            if (::stat(file->c_str(), &st) != 0 || ::access(file->c_str(), R_OK) != 0) {
                why = std::strerror(errno);
            } else if (!S_ISREG(st.st_mode)) {
                why = "not a regular file";
            }
            if (!why.empty()) {
                const rampart::config::error e{*at, "gateway.tls.certificates[" + std::to_string(i) + "]." + what +
                                                        ": cannot read " + *file + ": " + why};
                std::cerr << e.to_string() << '\n';
                files_ok = false;
            }
        }
    }
    if (!files_ok) {
        return 1;
    }
    if (const auto warning = rampart::ha::track_process_warning(*cfg); !warning.empty()) {
        std::cerr << "rampart check: warning: " << warning << '\n';
    }
    for (const auto& w : rampart::config::route_warnings(*cfg)) {
        std::cerr << w.where.file << ':' << w.where.line << ':' << w.where.column << ": warning: " << w.what << '\n';
    }
    std::cout << rampart::config::summary(*cfg);
    return 0;
}

// POSTs to the running master's admin listener (named in the file) and
// prints its answer. A file that does not load is reported here, and the
// master is not asked.
int cmd_reload(const std::vector<std::string>& args) {
    auto path = config_path(args);
    if (path.empty()) {
        return fail_usage("reload needs -c FILE");
    }
    auto cfg = load_or_report(path);
    if (!cfg) {
        std::cerr << "rampart reload: " << path << " is not valid; the running configuration is unchanged\n";
        return 1;
    }
    if (!cfg->gw.listen.admin) {
        std::cerr << "rampart reload: " << path << " has no gateway.listen.admin; send SIGHUP to the master instead\n";
        return 1;
    }
    const auto& ep = *cfg->gw.listen.admin;
    std::string host = ep.host == "::" ? "::1" : ep.host == "0.0.0.0" ? "127.0.0.1" : ep.host;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), std::to_string(ep.port).c_str(), &hints, &res) != 0 || res == nullptr) {
        std::cerr << "rampart reload: bad admin address " << ep.to_string() << '\n';
        return 1;
    }
    const int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    // A reload loads certificates and forks workers: allow it some time.
    timeval tv{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const bool connected = fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0;
    ::freeaddrinfo(res);
    if (!connected) {
        std::cerr << "rampart reload: cannot reach the admin listener at " << ep.to_string() << ": "
                  << std::strerror(errno) << " (is rampart running?)\n";
        if (fd >= 0) {
            ::close(fd);
        }
        return 1;
    }
    std::string request = "POST /api/reload HTTP/1.1\r\nHost: rampart\r\nContent-Length: 0\r\nConnection: close\r\n";
    if (!cfg->gw.admin_token.empty()) {
        request += "Authorization: Bearer " + cfg->gw.admin_token + "\r\n";
    }
    request += "\r\n";
    std::string response;
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
        char buf[4096];
        for (int i = 0; i < 256; ++i) {
            const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) {
                break;
            }
            response.append(buf, static_cast<std::size_t>(n));
        }
    }
    ::close(fd);
    const auto body_at = response.find("\r\n\r\n");
    const bool ok = response.starts_with("HTTP/1.1 200");
    if (body_at == std::string::npos) {
        std::cerr << "rampart reload: no answer from the admin listener\n";
        return 1;
    }
    (ok ? std::cout : std::cerr) << response.substr(body_at + 4);
    return ok ? 0 : 1;
}

// `rampart firewall ...`: options shared by every subcommand.
struct firewall_args {
    std::string config;
    std::string host;
    std::string role;
    std::string state_dir = rampart::firewall::default_state_dir;
    std::optional<std::chrono::milliseconds> confirm;
    std::optional<std::chrono::milliseconds> timeout;
    bool json = false;
    std::vector<std::string> positional;
};

std::optional<firewall_args> parse_firewall_args(const std::string& sub, const std::vector<std::string>& args,
                                                 std::string& why) {
    firewall_args a;
    for (std::size_t i = 1; i < args.size(); ++i) {
        const std::string& k = args[i];
        const bool has_value = i + 1 < args.size();
        const auto duration = [&](std::optional<std::chrono::milliseconds>& out) {
            const auto d = rampart::config::parse_duration(args[++i]);
            if (!d) {
                why = k + " expects a duration like 60s or 10m, got '" + args[i] + "'";
                return false;
            }
            out = *d;
            return true;
        };
        if ((k == "-c" || k == "--config") && has_value) {
            a.config = args[++i];
        } else if (k == "--host" && has_value) {
            a.host = args[++i];
        } else if (k == "--role" && has_value) {
            a.role = args[++i];
        } else if (k == "--state-dir" && has_value) {
            a.state_dir = args[++i];
        } else if (k == "--confirm" && has_value && sub == "apply") {
            if (!duration(a.confirm)) {
                return std::nullopt;
            }
        } else if (k == "--timeout" && has_value && sub == "block") {
            if (!duration(a.timeout)) {
                return std::nullopt;
            }
        } else if (k == "--json" && sub == "status") {
            a.json = true;
        } else if (!k.starts_with("-") && (sub == "block" || sub == "unblock")) {
            a.positional.push_back(k);
        } else {
            why = "firewall " + sub + ": unexpected argument '" + k + "'";
            return std::nullopt;
        }
    }
    return a;
}

// Loads the file and builds the plan; every config or lint error goes to stderr.
std::optional<rampart::firewall::ruleset> firewall_plan(const firewall_args& a) {
    auto cfg = load_or_report(a.config);
    if (!cfg) {
        return std::nullopt;
    }
    rampart::firewall::target who;
    who.host = a.host;
    if (!a.role.empty()) {
        who.role = rampart::config::parse_role(a.role);
        if (!who.role) {
            std::cerr << "rampart firewall: unknown role '" << a.role
                      << "', expected one of gateway, app, db-primary or db-replica\n";
            return std::nullopt;
        }
    }
    auto result = rampart::firewall::build(*cfg, who);
    for (const auto& e : result.errors) {
        std::cerr << e.to_string() << '\n';
    }
    return std::move(result.rules);
}

int cmd_firewall(const std::vector<std::string>& args) {
    namespace fw = rampart::firewall;
    if (args.empty()) {
        return fail_usage("firewall needs a subcommand: plan, apply, confirm, rollback, diff, status, block, unblock");
    }
    const std::string& sub = args[0];
    std::string why;
    const auto a = parse_firewall_args(sub, args, why);
    if (!a) {
        return fail_usage(why);
    }
    if (sub == "plan" || sub == "apply" || sub == "diff") {
        if (a->config.empty()) {
            return fail_usage("firewall " + sub + " needs -c FILE");
        }
        const bool host_only = sub != "plan";
        if (host_only ? a->host.empty() || !a->role.empty() : a->host.empty() == a->role.empty()) {
            return fail_usage(host_only ? "firewall " + sub + " needs --host NAME"
                                        : "firewall plan needs either --host NAME or --role ROLE");
        }
        const auto plan = firewall_plan(*a);
        if (!plan) {
            return sub == "diff" ? 2 : 1;
        }
        if (sub == "plan") {
            std::cout << fw::render_nft(*plan);
            return 0;
        }
        if (sub == "diff") {
            return fw::diff(*plan, std::cout, std::cerr);
        }
        fw::apply_options opt;
        opt.state_dir = a->state_dir;
        opt.confirm = a->confirm;
        // Test hook, see fw::apply_options::reject_for_test.
        const char* reject = std::getenv("RAMPART_FIREWALL_TEST_REJECT");
        opt.reject_for_test = reject != nullptr && std::string(reject) == "1";
        return fw::apply(*plan, opt, std::cout, std::cerr);
    }
    if (sub == "confirm") {
        return fw::confirm(a->state_dir, std::cout, std::cerr);
    }
    if (sub == "rollback") {
        return fw::rollback(a->state_dir, std::cout, std::cerr);
    }
    if (sub == "status") {
        return fw::status(a->state_dir, a->json, std::cout, std::cerr);
    }
    if (sub == "block" || sub == "unblock") {
        if (a->positional.empty()) {
            return fail_usage("firewall " + sub + " needs at least one address");
        }
        return fw::block(a->positional, a->timeout.value_or(std::chrono::minutes(10)), sub == "unblock", std::cout,
                         std::cerr);
    }
    if (sub == "revert-watch") {
        return fw::revert_watch(a->state_dir);
    }
    return fail_usage("unknown firewall subcommand '" + sub + "'");
}

// `rampart ha render|status`: keepalived's configuration for one node, and
// what that node knows of the pair.
int cmd_ha(const std::vector<std::string>& args) {
    if (args.empty() || (args[0] != "render" && args[0] != "status" && args[0] != "down")) {
        return fail_usage("ha needs a subcommand: render, status, down");
    }
    const std::string sub = args[0];
    std::string path;
    std::string node;
    std::string out;
    for (std::size_t i = 1; i < args.size(); ++i) {
        const bool has_value = i + 1 < args.size();
        if ((args[i] == "-c" || args[i] == "--config") && has_value) {
            path = args[++i];
        } else if (args[i] == "--node" && has_value) {
            node = args[++i];
        } else if (sub == "render" && args[i] == "--out" && has_value) {
            out = args[++i];
        } else {
            return fail_usage("ha " + sub + ": unexpected argument '" + args[i] + "'");
        }
    }
    if (path.empty()) {
        return fail_usage("ha " + sub + " needs -c FILE");
    }
    auto cfg = load_or_report(path);
    if (!cfg) {
        return 1;
    }
    if (!cfg->ha_pair) {
        if (sub == "down") {
            std::cout << "rampart ha down: " << path << " has no ha section: nothing to mark\n";
            return 0; // the unit runs it after every stop, with or without a pair
        }
        std::cerr << "rampart ha: " << path << " has no ha section\n";
        return 1;
    }
    if (sub == "render") {
        if (node.empty() || out.empty()) {
            return fail_usage("ha render needs --node NAME and --out DIR");
        }
        if (const auto warning = rampart::ha::track_process_warning(*cfg); !warning.empty()) {
            std::cerr << "rampart ha render: warning: " << warning << '\n';
        }
        const auto files = rampart::ha::render(*cfg, node);
        std::filesystem::create_directories(out);
        for (const auto& f : files) {
            const auto target = std::filesystem::path(out) / f.name;
            std::ofstream file(target, std::ios::trunc);
            file << f.content;
            file.close();
            if (!file) {
                throw std::runtime_error("cannot write " + target.string());
            }
            std::cout << "wrote " << target.string() << '\n';
        }
        return 0;
    }
    const auto local = rampart::ha::local_addresses();
    if (node.empty()) {
        const auto* self = cfg->ha_pair->node_with_address(local);
        if (self == nullptr) {
            std::cerr << "rampart ha " << sub
                      << ": no address of ha.nodes is on this host; name the node with --node\n";
            return 1;
        }
        node = self->name;
    } else if (cfg->ha_pair->find_node(node) == nullptr) {
        std::cerr << "rampart ha " << sub << ": no node " << node << " in ha.nodes\n";
        return 1;
    }
    if (sub == "down") {
        const std::string error = rampart::ha::mark_down(*cfg, node);
        if (!error.empty()) {
            std::cerr << "rampart ha down: " << error << '\n';
            return 1;
        }
        std::cout << "node " << node << " marked not ready in " << cfg->ha_pair->track_file(node) << '\n';
        return 0;
    }
    std::cout << rampart::ha::format_status(rampart::ha::read_status(*cfg, node, local));
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        return fail_usage("missing command");
    }
    std::string command = args.front();
    args.erase(args.begin());
    try {
        if (command == "serve" || command == "certs") {
            return rampart::cmd::gateway_command(command, args, argv);
        }
        if (command == "check") {
            return cmd_check(args);
        }
        if (command == "passwd") {
            return cmd_passwd(args);
        }
        if (command == "reload") {
            return cmd_reload(args);
        }
        if (command == "firewall") {
            return cmd_firewall(args);
        }
        if (command == "ha") {
            return cmd_ha(args);
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
