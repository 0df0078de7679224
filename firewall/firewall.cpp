// The firewall commands: state directory, apply, rollback, confirm-or-revert,
// diff, status, block. Exceptions from the netlink layer end here as one line.

#include "firewall/firewall.hpp"

#include "firewall/blocklist.hpp"
#include "firewall/nft.hpp"

#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace rampart::firewall {

namespace {

namespace fs = std::filesystem;

using clock = std::chrono::system_clock;

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(clock::now().time_since_epoch()).count();
}

std::string time_text(std::int64_t ms) {
    const std::time_t t = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    ::localtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

std::optional<std::string> read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) {
        return std::nullopt;
    }
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// Written to a temporary file, then renamed over the old one: a process that
// dies mid-write leaves the old file or the new one, never half of either.
// No fsync: the state describes the kernel's ruleset, which does not survive a
// power loss either (after a reboot the next deploy applies afresh), and each
// fsync cost ~1.5 ms of every apply.
void write_file(const fs::path& p, const std::string& text) {
    const fs::path tmp = p.string() + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
    }
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            const int e = errno;
            ::close(fd);
            throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(e));
        }
        done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    if (::rename(tmp.c_str(), p.c_str()) != 0) {
        throw std::runtime_error("cannot rename " + tmp.string() + ": " + std::strerror(errno));
    }
}

void remove_file(const fs::path& p) {
    std::error_code ec;
    fs::remove(p, ec);
}

// The state directory and its lock, held for the object's lifetime.
class state {
public:
    explicit state(const std::string& dir) : dir_(dir) {
        std::error_code ec;
        fs::create_directories(dir_, ec);
        if (ec) {
            throw std::runtime_error("cannot create state directory " + dir + ": " + ec.message());
        }
        ::chmod(dir_.c_str(), 0700);
        fs::create_directories(dir_ / "pending", ec);
        lock_ = ::open((dir_ / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (lock_ < 0 || ::flock(lock_, LOCK_EX) != 0) {
            throw std::runtime_error("cannot lock " + (dir_ / "lock").string() + ": " + std::strerror(errno));
        }
    }
    ~state() {
        if (lock_ >= 0) {
            ::close(lock_);
        }
    }
    state(const state&) = delete;
    state& operator=(const state&) = delete;

    fs::path path(const char* name) const { return dir_ / name; }

    std::optional<ruleset> load(const char* name) const {
        const auto text = read_file(path(name));
        if (!text) {
            return std::nullopt;
        }
        std::string why;
        auto rs = deserialise(*text, &why);
        if (!rs) {
            throw std::runtime_error(path(name).string() + " is damaged: " + why);
        }
        return rs;
    }
    void store(const char* name, const std::optional<ruleset>& rs) const {
        if (rs) {
            write_file(path(name), serialise(*rs));
        } else {
            remove_file(path(name));
        }
    }
    bool pending() const { return fs::exists(path("pending/deadline")); }

private:
    fs::path dir_;
    int lock_ = -1;
};

void print_changes(const std::optional<ruleset>& before, const ruleset& after, std::ostream& out) {
    const auto lines = changes(before.value_or(ruleset{}), after);
    if (lines.empty()) {
        out << "no changes against the previously applied plan\n";
        return;
    }
    if (!before) {
        out << "no plan applied before; everything is new:\n";
    }
    for (const auto& l : lines) {
        out << l << "\n";
    }
}

std::size_t rule_count(const ruleset& rs) {
    std::size_t n = 0;
    for (const auto& c : rs.chains) {
        n += c.rules.size();
    }
    return n;
}

// Puts `rs` (or no table at all) into the kernel in one batch, through `s`.
// Blocklist elements in the kernel are run-time state: they are carried into
// the new table, in the same batch, with the time they have left.
//
// Callers keep `s` open until their state files are written and their
// output printed: closing a netfilter socket waits for the kernel to free the
// replaced table, one RCU grace period after the commit (5-20 ms here, longer
// than the whole apply), and that wait is better spent doing the rest.
void program(nft::session& s, const std::optional<ruleset>& rs, bool reject_for_test = false) {
    if (!rs) {
        s.commit(nft::delete_table(s.next_seq()));
        return;
    }
    ruleset programmed = *rs;
    for (auto& set : programmed.sets) {
        if (!set.timeout || set.dynamic || set.interval) {
            continue;
        }
        for (const auto& [p, ms] : s.timed_elements(set.name)) {
            if (p.fam == set.fam) {
                set.carried.emplace_back(p, ms);
            }
        }
    }
    s.commit(nft::replace_table(programmed, s.next_seq(), reject_for_test));
}

pid_t read_pid(const state& st) {
    const auto text = read_file(st.path("pending/watcher.pid"));
    return text ? static_cast<pid_t>(std::atol(text->c_str())) : 0;
}

// Stops the revert watcher, if it is still the process we started (its
// command line says so; a recycled PID belongs to someone else).
void stop_watcher(const state& st) {
    const pid_t pid = read_pid(st);
    if (pid <= 0 || pid == ::getpid()) {
        return;
    }
    const auto cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline");
    if (cmdline && cmdline->find("revert-watch") != std::string::npos) {
        ::kill(pid, SIGTERM);
    }
}

void clear_pending(const state& st) {
    for (const char* f : {"pending/deadline", "pending/watcher.pid", "pending/current.plan", "pending/previous.plan"}) {
        remove_file(st.path(f));
    }
}

// Restores the state from before the unconfirmed apply, kernel first.
void revert_pending(const state& st, std::ostream& out) {
    const auto restore = st.load("pending/current.plan");
    const auto restore_previous = st.load("pending/previous.plan");
    const auto unconfirmed = st.load("current.plan");
    nft::session s;
    program(s, restore);
    st.store("current.plan", restore);
    st.store("previous.plan", restore_previous);
    if (unconfirmed) {
        print_changes(unconfirmed, restore.value_or(ruleset{}), out);
    }
}

// Starts `rampart firewall revert-watch` detached from this process and its
// terminal. The child records its own PID before exec, so the record exists
// even if this process dies right after the fork.
pid_t start_watcher(const state& st, const apply_options& opt) {
    const std::string pid_file = st.path("pending/watcher.pid").string();
    const pid_t pid = ::fork();
    if (pid < 0) {
        const int e = errno;
        clear_pending(st);
        throw std::runtime_error(std::string("cannot start the revert watcher: ") + std::strerror(e));
    }
    if (pid == 0) {
        ::setsid();
        ::signal(SIGHUP, SIG_IGN);
        const int devnull = ::open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            ::dup2(devnull, 0);
            ::dup2(devnull, 1);
            ::dup2(devnull, 2);
        }
        const std::string text = std::to_string(::getpid()) + "\n";
        const int fd = ::open(pid_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
            ::_exit(126);
        }
        ::close(fd);
        const std::string dir = opt.state_dir;
        ::execl(opt.self_exe.c_str(), "rampart", "firewall", "revert-watch", "--state-dir", dir.c_str(),
                static_cast<char*>(nullptr));
        ::_exit(127);
    }
    // Wait (bounded) until the child has recorded itself, so that a
    // confirm or rollback right after apply finds the watcher to stop.
    for (int i = 0; i < 200 && read_pid(st) != pid; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return pid;
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += c;
        }
    }
    return out;
}

} // namespace

bool has_net_admin() {
    __user_cap_header_struct header{};
    header.version = _LINUX_CAPABILITY_VERSION_3;
    header.pid = 0;
    __user_cap_data_struct data[2] = {};
    if (::syscall(SYS_capget, &header, data) != 0) {
        return false;
    }
    return (data[CAP_NET_ADMIN / 32].effective & (1U << (CAP_NET_ADMIN % 32))) != 0;
}

int apply(const ruleset& rs, const apply_options& opt, std::ostream& out, std::ostream& err) {
    if (!has_net_admin()) {
        err << "rampart firewall apply: " << needs_net_admin << "\n";
        return 1;
    }
    try {
        state st(opt.state_dir);
        if (st.pending()) {
            err << "rampart firewall apply: an earlier apply is waiting for confirmation; run `rampart firewall "
                   "confirm` or `rampart firewall rollback` first\n";
            return 1;
        }
        const auto before = st.load("current.plan");
        const auto before_previous = st.load("previous.plan");
        std::int64_t deadline = 0;
        pid_t watcher = 0;
        if (opt.confirm) {
            // Confirm-or-revert: the watcher (its own session, so it survives
            // the terminal) is started *before* the commit. Whenever this
            // process dies from here on, even in the instant after the
            // kernel took the new table, the watcher restores `before` at the
            // deadline; if the commit never happens that restore is a no-op.
            st.store("pending/current.plan", before);
            st.store("pending/previous.plan", before_previous);
            deadline = now_ms() + opt.confirm->count();
            write_file(st.path("pending/deadline"), std::to_string(deadline) + "\n");
            watcher = start_watcher(st, opt);
        }
        // Opened inside the try (a failed open must also take the watcher
        // down) and after start_watcher (libmnl's socket is not CLOEXEC);
        // closed last, see program().
        std::optional<nft::session> s;
        try {
            s.emplace();
            program(*s, rs, opt.reject_for_test);
        } catch (...) {
            if (opt.confirm) {
                stop_watcher(st);
                clear_pending(st);
            }
            throw;
        }
        // The kernel holds the new table now; the state follows.
        st.store("previous.plan", before);
        st.store("current.plan", rs);
        remove_file(st.path("reverted"));
        out << "applied table inet " << table_name << " (" << rs.description << "): " << rs.sets.size() << " sets, "
            << rule_count(rs) << " rules\n";
        print_changes(before, rs, out);
        if (opt.confirm) {
            out << "waiting for confirmation: run `rampart firewall confirm` before " << time_text(deadline)
                << ", or this ruleset is reverted automatically (watcher pid " << watcher << ")\n";
        }
        return 0;
    } catch (const std::exception& e) {
        err << "rampart firewall apply: " << e.what() << "\n";
        return 1;
    }
}

int rollback(const std::string& state_dir, std::ostream& out, std::ostream& err) {
    if (!has_net_admin()) {
        err << "rampart firewall rollback: " << needs_net_admin << "\n";
        return 1;
    }
    try {
        state st(state_dir);
        if (st.pending()) {
            stop_watcher(st);
            revert_pending(st, out);
            clear_pending(st);
            out << "rolled back the unconfirmed apply\n";
            return 0;
        }
        const auto current = st.load("current.plan");
        const auto previous = st.load("previous.plan");
        nft::session s; // closed last, see program()
        program(s, previous);
        st.store("current.plan", previous);
        st.store("previous.plan", current);
        if (previous) {
            out << "restored the previous plan (" << previous->description << ")\n";
            print_changes(current, *previous, out);
        } else {
            out << "no previous plan: removed table inet " << table_name << "\n";
        }
        return 0;
    } catch (const std::exception& e) {
        err << "rampart firewall rollback: " << e.what() << "\n";
        return 1;
    }
}

int confirm(const std::string& state_dir, std::ostream& out, std::ostream& err) {
    if (!has_net_admin()) {
        err << "rampart firewall confirm: " << needs_net_admin << "\n";
        return 1;
    }
    try {
        state st(state_dir);
        if (!st.pending()) {
            if (const auto why = read_file(st.path("reverted"))) {
                err << "rampart firewall confirm: too late, " << *why;
            } else {
                err << "rampart firewall confirm: no apply is waiting for confirmation\n";
            }
            return 1;
        }
        stop_watcher(st);
        clear_pending(st);
        out << "confirmed; the applied ruleset stays\n";
        return 0;
    } catch (const std::exception& e) {
        err << "rampart firewall confirm: " << e.what() << "\n";
        return 1;
    }
}

int revert_watch(const std::string& state_dir) {
    std::int64_t deadline = 0;
    {
        const auto text = read_file(fs::path(state_dir) / "pending/deadline");
        if (!text) {
            return 0;
        }
        deadline = std::atoll(text->c_str());
    }
    while (now_ms() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min<std::int64_t>(deadline - now_ms(), 1000)));
    }
    try {
        state st(state_dir);
        // Confirmed (or rolled back) meanwhile, or a newer apply with its own watcher.
        if (!st.pending() || read_pid(st) != ::getpid()) {
            return 0;
        }
        std::ostringstream changes_text;
        revert_pending(st, changes_text);
        clear_pending(st);
        write_file(st.path("reverted"),
                   "the apply was not confirmed and was reverted at " + time_text(now_ms()) + "\n");
        return 0;
    } catch (const std::exception& e) {
        try {
            write_file(fs::path(state_dir) / "reverted", std::string("the revert failed: ") + e.what() + "\n");
        } catch (const std::exception&) {
        }
        return 1;
    }
}

int diff(const ruleset& rs, std::ostream& out, std::ostream& err) {
    if (!has_net_admin()) {
        err << "rampart firewall diff: " << needs_net_admin << "\n";
        return 2;
    }
    try {
        nft::session s;
        const auto kernel = s.dump();
        if (!kernel.exists) {
            out << "table inet " << table_name << " is not in the kernel\n";
            return 1;
        }
        const auto planned = nft::canonical(rs);
        std::multiset<std::string> want(planned.begin(), planned.end());
        std::multiset<std::string> have(kernel.canonical.begin(), kernel.canonical.end());
        std::vector<std::string> missing;
        std::vector<std::string> extra;
        for (const auto& l : planned) {
            if (const auto it = have.find(l); it != have.end()) {
                have.erase(it);
            } else {
                missing.push_back(l);
            }
        }
        for (const auto& l : kernel.canonical) {
            if (const auto it = want.find(l); it != want.end()) {
                want.erase(it);
            } else {
                extra.push_back(l);
            }
        }
        // Same rules, other order: also drift (the first match wins).
        const auto rules_only = [](const std::vector<std::string>& v) {
            std::vector<std::string> r;
            std::copy_if(v.begin(), v.end(), std::back_inserter(r),
                         [](const auto& l) { return l.starts_with("rule "); });
            return r;
        };
        const bool reordered = missing.empty() && extra.empty() && rules_only(planned) != rules_only(kernel.canonical);
        if (missing.empty() && extra.empty() && !reordered) {
            out << "in sync: table inet " << table_name << " matches the plan (" << rs.description << ")\n";
            return 0;
        }
        out << "drift: table inet " << table_name << " differs from the plan (" << rs.description << ")\n";
        for (const auto& l : missing) {
            out << "- " << l << "   (planned, not in the kernel)\n";
        }
        for (const auto& l : extra) {
            out << "+ " << l << "   (in the kernel, not planned)\n";
        }
        if (reordered) {
            out << "~ the rules are the planned ones in another order\n";
        }
        return 1;
    } catch (const std::exception& e) {
        err << "rampart firewall diff: " << e.what() << "\n";
        return 2;
    }
}

int status(const std::string& state_dir, bool json, std::ostream& out, std::ostream& err) {
    if (!has_net_admin()) {
        err << "rampart firewall status: " << needs_net_admin << "\n";
        return 1;
    }
    try {
        std::optional<ruleset> applied;
        bool pending = false;
        std::int64_t deadline = 0;
        if (fs::exists(state_dir)) {
            state st(state_dir);
            applied = st.load("current.plan");
            pending = st.pending();
            if (pending) {
                deadline = std::atoll(read_file(st.path("pending/deadline")).value_or("0").c_str());
            }
        }
        nft::session s;
        const auto kernel = s.dump();
        const std::uint32_t generation = s.generation();
        if (json) {
            out << "{\"table\":\"inet " << table_name << "\",\"present\":" << (kernel.exists ? "true" : "false")
                << ",\"generation\":" << generation
                << ",\"plan\":" << (applied ? "\"" + json_escape(applied->description) + "\"" : std::string("null"))
                << ",\"confirm_pending\":" << (pending ? "true" : "false");
            if (pending) {
                out << ",\"confirm_deadline_ms\":" << deadline;
            }
            out << ",\"sets\":[";
            for (std::size_t i = 0; i < kernel.sets.size(); ++i) {
                out << (i ? "," : "") << "{\"name\":\"" << json_escape(kernel.sets[i].name)
                    << "\",\"elements\":" << kernel.sets[i].elements << "}";
            }
            out << "],\"rules\":[";
            for (std::size_t i = 0; i < kernel.rules.size(); ++i) {
                const auto& r = kernel.rules[i];
                out << (i ? "," : "") << "{\"chain\":\"" << json_escape(r.chain) << "\",\"handle\":" << r.handle
                    << ",\"comment\":\"" << json_escape(r.comment) << "\",\"packets\":" << r.packets
                    << ",\"bytes\":" << r.bytes << ",\"expressions\":\"" << json_escape(r.text) << "\"}";
            }
            out << "]}\n";
            return 0;
        }
        if (!kernel.exists) {
            out << "table inet " << table_name << ": not present\n";
            return 0;
        }
        out << "table inet " << table_name;
        if (applied) {
            out << " (" << applied->description << ")";
        }
        out << ", ruleset generation " << generation << "\n";
        if (pending) {
            out << "confirm pending: reverts at " << time_text(deadline) << " unless `rampart firewall confirm` runs\n";
        }
        out << "\nsets:\n";
        for (const auto& st : kernel.sets) {
            out << "  " << st.name << ": " << st.elements << " elements\n";
        }
        std::map<std::string, std::vector<std::string>> rule_text;
        if (applied) {
            for (const auto& c : applied->chains) {
                for (const auto& r : c.rules) {
                    rule_text[c.name].push_back(render_rule(r));
                }
            }
        }
        std::map<std::string, std::size_t> index;
        std::string chain;
        for (const auto& r : kernel.rules) {
            if (r.chain != chain) {
                chain = r.chain;
                out << "\nchain " << chain << ":\n";
                char head[96];
                std::snprintf(head, sizeof head, "  %12s %14s  %s\n", "packets", "bytes", "rule");
                out << head;
            }
            const std::size_t i = index[r.chain]++;
            // The plan's nft text when the kernel still holds the plan's rule here.
            std::string text = r.comment;
            const auto& texts = rule_text[r.chain];
            if (i < texts.size() && !r.comment.empty()) {
                text = texts[i] + "  # " + r.comment;
            } else if (r.comment.empty()) {
                text = "(not from the plan) " + r.text;
            }
            char line[64];
            std::snprintf(line, sizeof line, "  %12llu %14llu  ", static_cast<unsigned long long>(r.packets),
                          static_cast<unsigned long long>(r.bytes));
            out << line << text << "\n";
        }
        return 0;
    } catch (const std::exception& e) {
        err << "rampart firewall status: " << e.what() << "\n";
        return 1;
    }
}

int block(const std::vector<std::string>& addresses, std::chrono::milliseconds timeout, bool remove, std::ostream& out,
          std::ostream& err) {
    const char* name = remove ? "rampart firewall unblock: " : "rampart firewall block: ";
    if (!has_net_admin()) {
        err << name << needs_net_admin << "\n";
        return 1;
    }
    try {
        blocklist bl;
        if (remove) {
            bl.remove(addresses);
            out << "unblocked " << addresses.size() << " address(es)\n";
        } else {
            bl.add(addresses, timeout);
            out << "blocked " << addresses.size() << " address(es) for "
                << std::chrono::duration_cast<std::chrono::seconds>(timeout).count() << "s\n";
        }
        return 0;
    } catch (const std::exception& e) {
        err << name << e.what() << "\n";
        return 1;
    }
}

// ---- blocklist -------------------------------------------------------------------

blocklist::blocklist() : session_(std::make_unique<nft::session>()) {}
blocklist::~blocklist() = default;

namespace {

std::pair<std::vector<prefix>, std::vector<prefix>> split_families(const std::vector<std::string>& addresses) {
    std::pair<std::vector<prefix>, std::vector<prefix>> out;
    for (const auto& a : addresses) {
        const auto p = prefix::parse(a);
        if (!p || !p->is_host()) {
            throw std::invalid_argument("expected a literal IPv4 or IPv6 address, got \"" + a + "\"");
        }
        (p->fam == family::ipv4 ? out.first : out.second).push_back(*p);
    }
    return out;
}

void commit_elements(nft::session& s, const std::vector<prefix>& v4, const std::vector<prefix>& v6,
                     std::uint64_t timeout_ms, nft::element_op op) {
    // Both families in one batch: all of it or none of it.
    const auto b = nft::set_elements({{"blocklist4", v4}, {"blocklist6", v6}}, timeout_ms, op, s.next_seq());
    try {
        s.commit(b);
    } catch (const std::runtime_error& e) {
        throw std::runtime_error(std::string(e.what()) +
                                 (op == nft::element_op::add
                                      ? " (is the firewall applied? `rampart firewall apply` creates the blocklist)"
                                      : " (an address that is not blocked cannot be unblocked)"));
    }
}

} // namespace

void blocklist::add(const std::vector<std::string>& addresses, std::chrono::milliseconds timeout) {
    const auto [v4, v6] = split_families(addresses);
    commit_elements(*session_, v4, v6, static_cast<std::uint64_t>(timeout.count()), nft::element_op::add);
}

void blocklist::remove(const std::vector<std::string>& addresses) {
    const auto [v4, v6] = split_families(addresses);
    commit_elements(*session_, v4, v6, 0, nft::element_op::remove);
}

} // namespace rampart::firewall
