#include "ha/status.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <sstream>

namespace rampart::ha {

std::vector<std::string> local_addresses() {
    std::vector<std::string> out;
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) {
        return out;
    }
    const std::unique_ptr<ifaddrs, decltype(&::freeifaddrs)> guard(list, &::freeifaddrs);
    for (const ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
        if (a->ifa_addr == nullptr) {
            continue;
        }
        char text[INET6_ADDRSTRLEN] = {};
        if (a->ifa_addr->sa_family == AF_INET) {
            ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr, text, sizeof text);
        } else if (a->ifa_addr->sa_family == AF_INET6) {
            ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a->ifa_addr)->sin6_addr, text, sizeof text);
        } else {
            continue;
        }
        out.emplace_back(text);
    }
    return out;
}

std::optional<notify_event> parse_notify_line(std::string_view line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
        line.remove_suffix(1);
    }
    notify_event e;
    const auto first_space = line.find(' ');
    if (first_space == std::string_view::npos) {
        return std::nullopt;
    }
    e.kind = line.substr(0, first_space);
    if (e.kind != "INSTANCE" && e.kind != "GROUP") {
        return std::nullopt;
    }
    std::string_view rest = line.substr(first_space + 1);
    if (!rest.starts_with('"')) {
        return std::nullopt;
    }
    const auto close = rest.find('"', 1);
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ' ') {
        return std::nullopt;
    }
    e.name = rest.substr(1, close - 1);
    rest = rest.substr(close + 2);
    const auto space = rest.find(' ');
    const std::string_view state = rest.substr(0, space);
    if (space != std::string_view::npos) {
        const std::string_view priority = rest.substr(space + 1);
        const auto [end, ec] = std::from_chars(priority.data(), priority.data() + priority.size(), e.priority);
        if (ec != std::errc{} || end != priority.data() + priority.size() || e.priority > 255) {
            return std::nullopt;
        }
    }
    static constexpr std::string_view states[] = {"MASTER", "BACKUP", "FAULT", "STOP", "DELETED"};
    if (std::find(std::begin(states), std::end(states), state) != std::end(states)) {
        e.state = state;
    } else if (state != "MASTER_PRIORITY" && state != "BACKUP_PRIORITY" && state != "MASTER_RX_LOWER_PRI") {
        return std::nullopt;
    }
    return e;
}

std::optional<bool> process_events_available() {
    const int fd = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    if (fd < 0) {
        return std::nullopt;
    }
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    local.nl_groups = CN_IDX_PROC;
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) {
        ::close(fd);
        return std::nullopt;
    }
    // What keepalived sends: subscribe to the process events, then leave.
    // netlink header, connector header, the operation, back to back.
    constexpr std::size_t size = sizeof(nlmsghdr) + sizeof(cn_msg) + sizeof(proc_cn_mcast_op);
    alignas(nlmsghdr) unsigned char buffer[size] = {};
    const auto send_op = [&](proc_cn_mcast_op op) {
        nlmsghdr header{};
        header.nlmsg_len = size;
        header.nlmsg_type = NLMSG_DONE;
        cn_msg message{};
        message.id.idx = CN_IDX_PROC;
        message.id.val = CN_VAL_PROC;
        message.len = sizeof op;
        std::memcpy(buffer, &header, sizeof header);
        std::memcpy(buffer + sizeof header, &message, sizeof message);
        std::memcpy(buffer + sizeof header + sizeof message, &op, sizeof op);
        return ::send(fd, buffer, size, 0) == static_cast<ssize_t>(size);
    };
    std::optional<bool> result;
    if (send_op(PROC_CN_MCAST_LISTEN)) {
        result = true;
        send_op(PROC_CN_MCAST_IGNORE);
    } else if (errno == ECONNREFUSED) {
        result = false; // no connector in this namespace: keepalived's errno 111
    }
    ::close(fd);
    return result;
}

bool keepalived_running(const std::vector<std::string>& pid_files) {
    for (const auto& file : pid_files) {
        std::ifstream in(file);
        long pid = 0;
        if (!(in >> pid) || pid <= 0) {
            continue;
        }
        std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
        std::string name;
        std::getline(comm, name);
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string line;
        std::getline(stat, line);
        const auto close = line.rfind(')');
        const char state = close != std::string::npos && close + 2 < line.size() ? line[close + 2] : 'X';
        if (name == "keepalived" && state != 'Z' && state != 'X') {
            return true;
        }
    }
    return false;
}

std::vector<std::string> keepalived_pid_files(const config::ha& h, const std::string& node) {
    if (const auto* n = h.find_node(node); n != nullptr && !n->keepalived_pid_file.empty()) {
        return {n->keepalived_pid_file};
    }
    return {"/run/keepalived/vrrp.pid", "/run/vrrp.pid"};
}

std::string remove_address(const std::string& ifname, const config::network& address) {
    const unsigned index = ::if_nametoindex(ifname.c_str());
    if (index == 0) {
        return "no interface " + ifname;
    }
    unsigned char bytes[16] = {};
    const int family = address.v6 ? AF_INET6 : AF_INET;
    if (::inet_pton(family, address.address.c_str(), bytes) != 1) {
        return "not an address: " + address.address;
    }
    const std::size_t length = address.v6 ? 16 : 4;
    constexpr std::size_t space = NLMSG_SPACE(sizeof(ifaddrmsg)) + 2 * RTA_SPACE(16);
    alignas(nlmsghdr) unsigned char buffer[space] = {};
    auto* header = reinterpret_cast<nlmsghdr*>(buffer);
    header->nlmsg_type = RTM_DELADDR;
    header->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    header->nlmsg_seq = 1;
    header->nlmsg_len = NLMSG_LENGTH(sizeof(ifaddrmsg));
    auto* message = static_cast<ifaddrmsg*>(NLMSG_DATA(header));
    message->ifa_family = static_cast<unsigned char>(family);
    message->ifa_prefixlen = static_cast<unsigned char>(address.prefix);
    message->ifa_index = index;
    for (const unsigned short type :
         {static_cast<unsigned short>(IFA_LOCAL), static_cast<unsigned short>(IFA_ADDRESS)}) {
        auto* attribute = reinterpret_cast<rtattr*>(buffer + NLMSG_ALIGN(header->nlmsg_len));
        attribute->rta_type = type;
        attribute->rta_len = static_cast<unsigned short>(RTA_LENGTH(length));
        std::memcpy(RTA_DATA(attribute), bytes, length);
        header->nlmsg_len = NLMSG_ALIGN(header->nlmsg_len) + RTA_ALIGN(attribute->rta_len);
    }
    const int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) {
        return std::string("netlink socket: ") + std::strerror(errno);
    }
    std::string error;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    timeval timeout{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (::sendto(fd, buffer, header->nlmsg_len, 0, reinterpret_cast<const sockaddr*>(&kernel), sizeof kernel) < 0) {
        error = std::string("netlink send: ") + std::strerror(errno);
    } else {
        alignas(nlmsghdr) unsigned char reply[1024];
        const ssize_t n = ::recv(fd, reply, sizeof reply, 0);
        const auto* answer = reinterpret_cast<const nlmsghdr*>(reply);
        if (n < 0) {
            error = std::string("netlink receive: ") + std::strerror(errno);
        } else if (n >= static_cast<ssize_t>(NLMSG_LENGTH(sizeof(nlmsgerr))) && answer->nlmsg_type == NLMSG_ERROR) {
            const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(answer));
            if (e->error != 0) {
                error = std::strerror(-e->error);
            }
        }
    }
    ::close(fd);
    return error;
}

std::string track_process_warning(const config::snapshot& cfg) {
    if (!cfg.ha_pair || !cfg.ha_pair->health.track_process || process_events_available() != false) {
        return {};
    }
    return "ha.health.track_process is on, but this network namespace has no process events connector "
           "(only the initial namespace has one): keepalived would stay FAULT here. Set "
           "ha.health.track_process: false (the track file and the sentinel still follow the master).";
}

std::optional<std::pair<std::string, unsigned>> parse_state_line(const std::string& line) {
    std::istringstream in(line);
    std::string state;
    std::string priority;
    if (!(in >> state >> priority)) {
        return std::nullopt;
    }
    static constexpr std::string_view known[] = {"MASTER", "BACKUP", "FAULT", "STOP", "DELETED", "UNKNOWN"};
    if (std::find(std::begin(known), std::end(known), state) == std::end(known)) {
        return std::nullopt;
    }
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(priority.data(), priority.data() + priority.size(), value);
    if (ec != std::errc{} || end != priority.data() + priority.size() || value > 255) {
        return std::nullopt;
    }
    return std::pair{state, value};
}

node_status read_status(const config::snapshot& cfg, const std::string& node, const std::vector<std::string>& local) {
    node_status s;
    s.node = node;
    if (!cfg.ha_pair) {
        return s;
    }
    const config::ha& h = *cfg.ha_pair;
    if (const auto* self = h.find_node(node)) {
        s.priority = self->priority;
    }
    if (const auto* peer = h.peer_of(node)) {
        s.peer = peer->name;
        s.peer_address = peer->address;
    }
    s.vip = h.vip.to_string();
    const auto held = [&](const std::string& address) {
        return std::find(local.begin(), local.end(), address) != local.end();
    };
    s.vip_held = held(h.vip.address);
    if (h.vip6) {
        s.vip6_held = held(h.vip6->address);
    }
    std::ifstream state(h.state_file(node));
    std::string line;
    if (std::getline(state, line)) {
        if (const auto parsed = parse_state_line(line)) {
            s.state = parsed->first;
            s.effective_priority = parsed->second;
        }
    }
    if (std::getline(state, line) && h.peer_check.enabled) {
        if (const auto parsed = parse_peer_line(line)) {
            s.peer_state = parsed->state;
            s.peer_vip_held = parsed->vip_held;
            s.peer_answered = parsed->answered;
        }
    }
    std::ifstream track(h.track_file(node));
    std::string value;
    if (track >> value) {
        s.health = value == "0" ? "ok" : "not ready (" + value + ")";
    }
    struct stat st {};
    timespec now{};
    if (::stat(h.track_file(node).c_str(), &st) == 0 && ::clock_gettime(CLOCK_REALTIME, &now) == 0) {
        const double age = static_cast<double>(now.tv_sec - st.st_mtim.tv_sec) +
                           static_cast<double>(now.tv_nsec - st.st_mtim.tv_nsec) / 1e9;
        if (age > stale_after_s) {
            s.stale_for = age;
        }
    }
    return s;
}

std::int64_t unix_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::optional<peer_line> parse_peer_line(const std::string& line) {
    std::istringstream in(line);
    std::string word, state, held;
    peer_line out;
    if (!(in >> word >> state >> held >> out.answered) || word != "peer" ||
        (held != "vip-held" && held != "vip-not-held")) {
        return std::nullopt;
    }
    out.state = state;
    out.vip_held = held == "vip-held";
    return out;
}

std::string mark_down(const config::snapshot& cfg, const std::string& node) {
    const std::string path = cfg.ha_pair->track_file(node);
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return "cannot write " + tmp + ": " + std::strerror(errno);
    }
    const bool written = ::write(fd, "1\n", 2) == 2;
    const int saved = errno;
    ::close(fd);
    if (!written) {
        ::unlink(tmp.c_str());
        return "cannot write " + tmp + ": " + std::strerror(saved);
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        return "cannot replace " + path + ": " + std::strerror(e);
    }
    return {};
}

std::string format_status(const node_status& s) {
    std::ostringstream out;
    out << "node       " << s.node << "\n"
        << "state      " << s.state << (s.state == "unknown" ? " (no state from the master yet)" : "");
    if (s.stale_for) {
        out << " (stale: nothing written for " << static_cast<long>(*s.stale_for)
            << " s; is the gateway running on this node?)";
    }
    out << "\n"
        << "priority   " << s.priority;
    if (s.effective_priority && *s.effective_priority != s.priority) {
        out << " (effective " << *s.effective_priority << ")";
    }
    out << "\n"
        << "health     " << s.health << "\n"
        << "peer       " << s.peer << " (" << s.peer_address << ")";
    if (s.peer_state) {
        out << ": " << *s.peer_state;
        if (*s.peer_state != "unknown") {
            out << (s.peer_vip_held ? ", holds the VIP" : ", does not hold the VIP");
        }
        const auto now = unix_seconds();
        if (s.peer_answered == 0) {
            out << " (peer check: no answer yet)";
        } else if (*s.peer_state == "unknown") {
            out << " (peer check: no answer for " << now - s.peer_answered << " s)";
        } else {
            out << " (peer check, " << now - s.peer_answered << " s ago)";
        }
    }
    out << "\n"
        << "vip        " << s.vip << (s.vip_held ? " held here" : " not held here") << "\n";
    if (s.vip6_held) {
        out << "vip6       " << (*s.vip6_held ? "held here" : "not held here") << "\n";
    }
    return out.str();
}

} // namespace rampart::ha
