// The ha section: the keepalived pair and its traps, the peer check
// (check_ha.cpp).

#include "config/config.hpp"
#include "tests/unit/config/config_support.hpp"
#include "tests/unit/support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace rampart::config::test;

namespace {

// Two gateways and an app, the pair on 192.0.2.0/24; `ha_tail` adds lines
// under `ha:` (indented two spaces). Line 9 is `ha:`.
const std::string ha_head = R"(site: www.foobar.com
servers:
  gw1: { address: 192.0.2.11, role: gateway }
  gw2: { address: 192.0.2.12, role: gateway }
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1] } }
ha:
)";
const std::string ha_basics = R"(  vip: 192.0.2.10/24
  interface: eth0
  virtual_router_id: 51
  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }
)";

} // namespace

TEST_CASE("ha: the pair with its defaults and every setting", "[unit][config]") {
    const auto defaults = load_ok(ha_head + ha_basics);
    REQUIRE(defaults->ha_pair);
    const cfg::ha& h = *defaults->ha_pair;
    CHECK(h.vip.to_string() == "192.0.2.10/24");
    CHECK_FALSE(h.vip6);
    CHECK(h.interface == "eth0");
    CHECK(h.virtual_router_id == 51);
    REQUIRE(h.nodes.size() == 2);
    CHECK(h.nodes[0].name == "gw1");
    CHECK(h.nodes[0].address == "192.0.2.11");
    CHECK(h.nodes[0].priority == 150);
    CHECK(h.nodes[1].name == "gw2");
    CHECK(h.nodes[1].priority == 100);
    CHECK(h.peer_of("gw1")->name == "gw2");
    CHECK(h.peer_of("gw2")->name == "gw1");
    CHECK(h.peer_of("app1") == nullptr);
    CHECK(h.advert_int == 100ms);
    CHECK(h.unicast);
    CHECK_FALSE(h.preempt);
    CHECK(h.health.interval == 100ms);
    CHECK(h.health.require_backend);
    CHECK(h.health.weight == 0);
    CHECK(h.state_dir == "/run/rampart/ha");
    CHECK(h.ticket_secret_file.empty());
    CHECK_THAT(cfg::summary(*defaults), Contains("vip 192.0.2.10/24 on eth0, vrid 51, gw1 priority 150, gw2 priority "
                                                 "100; advert 100ms, unicast, no preempt"));

    const auto all = load_ok(ha_head + R"(  vip: 192.0.2.10/24
  vip6: 2001:db8::10/64
  interface: eth0
  virtual_router_id: 7
  nodes: { gw1: { priority: 200, interface: veth1 }, gw2: { priority: 100 } }
  advert_int: 1s
  unicast: false
  preempt: true
  health: { interval: 250ms, require_backend: false, weight: -150, track_process: false }
  state_dir: /var/run/rampart-ha/
)");
    const cfg::ha& a = *all->ha_pair;
    REQUIRE(a.vip6);
    CHECK(a.vip6->to_string() == "2001:db8::10/64");
    CHECK(a.nodes[0].interface == "veth1");
    CHECK(a.nodes[1].interface.empty());
    CHECK(a.advert_int == 1s);
    CHECK_FALSE(a.unicast);
    CHECK(a.preempt);
    CHECK(a.health.interval == 250ms);
    CHECK_FALSE(a.health.require_backend);
    CHECK(a.health.weight == -150);
    CHECK_FALSE(a.health.track_process);
    CHECK(h.health.track_process);
    CHECK(a.state_dir == "/var/run/rampart-ha");
}

TEST_CASE("ha: values and the traps that block failover are refused at their position", "[unit][config]") {
    const std::string nodes = "  vip: 192.0.2.10/24\n  interface: eth0\n  virtual_router_id: 51\n";
    CHECK(only_error(ha_head + "  vip: 192.0.2.10\n  interface: eth0\n  virtual_router_id: 51\n"
                               "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n") ==
          "config.yaml:10:8: ha.vip: expected an IPv4 address with prefix like 192.0.2.10/24, got \"192.0.2.10\"");
    CHECK(only_error(ha_head + "  vip: 198.51.100.10/24\n  interface: eth0\n  virtual_router_id: 51\n"
                               "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n") ==
          "config.yaml:10:8: ha.vip: gw1 (192.0.2.11) and gw2 (192.0.2.12) outside 198.51.100.10/24; the VIP must "
          "be on the nodes' link");
    CHECK(only_error(ha_head + ha_basics + "  vip6: 192.0.2.10/24\n") ==
          "config.yaml:14:9: ha.vip6: expected an IPv6 address with prefix like 2001:db8::10/64, got "
          "\"192.0.2.10/24\"");
    CHECK(only_error(ha_head + nodes + "  nodes: { gw1: { priority: 150 }, gw2: { priority: 150 } }\n") ==
          "config.yaml:13:53: ha.nodes.gw2.priority: both nodes have priority 150; give them different priorities "
          "so the first MASTER is predictable");
    CHECK(only_error(ha_head + nodes + "  nodes: { gw1: { priority: 255 }, gw2: { priority: 100 } }\n") ==
          "config.yaml:13:29: ha.nodes.gw1.priority: 255 makes keepalived treat the node as the address owner, "
          "which never gives the VIP up for a failed health check; use 1 to 254");
    CHECK(only_error(ha_head + nodes + "  nodes: { gw1: { priority: 150 }, app1: { priority: 100 } }\n") ==
          "config.yaml:13:36: ha.nodes.app1: server \"app1\" has role app; HA nodes must be gateways");
    CHECK(only_error(ha_head + nodes + "  nodes: { gw1: { priority: 150 } }\n") ==
          "config.yaml:13:10: ha.nodes: expected exactly two nodes (the gateways of the pair), got 1");
    CHECK(only_error(ha_head + nodes + "  nodes: { gw1: { priority: 150 }, gw3: { priority: 100 } }\n") ==
          "config.yaml:13:36: ha.nodes.gw3: unknown server \"gw3\", expected a gateway from servers");
    CHECK(only_error(ha_head + ha_basics + "  advert_int: 15ms\n") ==
          "config.yaml:14:15: ha.advert_int: expected a multiple of 10ms up to 40s (VRRPv3 counts in centiseconds), "
          "got \"15ms\"");
    CHECK(only_error(ha_head + ha_basics + "  health: { weight: -60 }\n") ==
          "config.yaml:14:21: ha.health.weight: a priority weight never fails over with preempt off (the backup "
          "keeps deferring to a live master, however low its priority); use weight 0 (fault) or preempt: true");
    CHECK(only_error(ha_head + ha_basics + "  preempt: true\n  health: { weight: -50 }\n") ==
          "config.yaml:15:21: ha.health.weight: weight -50 does not bring priority 150 below 100, so an unhealthy "
          "MASTER keeps the VIP; use a weight below -50, or 0 (fault)");
    CHECK(only_error(ha_head + ha_basics + "  health: { weight: 5 }\n") ==
          "config.yaml:14:21: ha.health.weight: expected 0 or a negative integer down to -253, got \"5\"");
    CHECK(only_error(ha_head + ha_basics + "  interface2: eth1\n") ==
          "config.yaml:14:3: ha.interface2: unknown key, did you mean 'interface'?");
    CHECK(only_error(ha_head + "  vip: 192.0.2.10/24\n  interface: eth0 lo\n  virtual_router_id: 51\n"
                               "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n") ==
          "config.yaml:11:14: ha.interface: expected an interface name like eth0 (at most 15 letters, digits, '.', "
          "'_', '-'), got \"eth0 lo\"");
    CHECK(only_error(ha_head + ha_basics + "  state_dir: run/ha\n") ==
          "config.yaml:14:14: ha.state_dir: expected an absolute directory path without spaces or quotes, got "
          "\"run/ha\"");
    CHECK(only_error(ha_head + "  interface: eth0\n  virtual_router_id: 51\n"
                               "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n") ==
          "config.yaml:10:3: ha: missing required key 'vip' (an IPv4 address with prefix like 192.0.2.10/24)");
}

TEST_CASE("ha: the ticket secret file must be private", "[unit][config]") {
    const auto dir = std::filesystem::temp_directory_path() / ("rampart-ha-secret-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto secret = (dir / "ticket.secret").string();
    {
        std::ofstream out(secret);
        out << std::string(64, 'a') << "\n";
    }
    std::filesystem::permissions(secret, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    const auto ok = load_ok(ha_head + ha_basics + "  ticket_secret_file: " + secret + "\n");
    CHECK(ok->ha_pair->ticket_secret_file == secret);
    std::filesystem::permissions(secret, std::filesystem::perms::group_read, std::filesystem::perm_options::add);
    CHECK(only_error(ha_head + ha_basics + "  ticket_secret_file: " + secret + "\n") ==
          "config.yaml:14:23: ha.ticket_secret_file: the ticket secret file " + secret +
              " is readable by group or others; run: chmod 600 " + secret);
    std::filesystem::remove_all(dir);
}

TEST_CASE("ha: the peer check needs a private secret and an admin listener the peer can reach", "[unit][config]") {
    const auto dir = std::filesystem::temp_directory_path() / ("rampart-ha-peer-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto secret = (dir / "peer.secret").string();
    {
        std::ofstream out(secret);
        out << std::string(40, 'k') << "\n";
    }
    std::filesystem::permissions(secret, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    std::string head = ha_head;
    head.replace(head.find("{ http: \"127.0.0.1:8080\" }"), 26,
                 "{ http: \"127.0.0.1:8080\", admin: \"0.0.0.0:9100\" }");
    const std::string peer = "  peer_check: { secret_file: " + secret + " }\n";

    const auto ok = load_ok(head + ha_basics + peer);
    const cfg::ha_peer_check& p = ok->ha_pair->peer_check;
    CHECK(p.enabled);
    CHECK(p.secret_file == secret);
    CHECK(p.secret == std::string(40, 'k'));
    CHECK(p.interval == 1s);
    CHECK(p.timeout == 500ms);
    CHECK_THAT(cfg::summary(*ok), Contains("; peer check every 1s"));
    CHECK_THAT(cfg::summary(*ok), !Contains(std::string(40, 'k')));
    CHECK_FALSE(load_ok(head + ha_basics)->ha_pair->peer_check.enabled);
    // A short interval brings the default timeout down with it.
    const auto fast = load_ok(head + ha_basics + "  peer_check: { secret_file: " + secret + ", interval: 200ms }\n");
    CHECK(fast->ha_pair->peer_check.interval == 200ms);
    CHECK(fast->ha_pair->peer_check.timeout == 200ms);

    CHECK(only_error(head + ha_basics + "  peer_check: { secret_file: " + secret + ", interval: 1s, timeout: 2s }\n") ==
          "config.yaml:14:" + std::to_string(55 + secret.size()) +
              ": ha.peer_check.timeout: must not be longer than the interval (1s)");
    CHECK(only_error(ha_head + ha_basics + peer) ==
          "config.yaml:14:15: ha.peer_check: the peer check asks the peer's admin listener; add "
          "gateway.listen.admin (e.g. 0.0.0.0:9100)");
    std::string loopback = ha_head;
    loopback.replace(loopback.find("{ http: \"127.0.0.1:8080\" }"), 26,
                     "{ http: \"127.0.0.1:8080\", admin: \"127.0.0.1:9100\" }");
    CHECK(only_error(loopback + ha_basics + peer) ==
          "config.yaml:14:15: ha.peer_check: the peer check reaches the admin listener at each node's own address, "
          "but gateway.listen.admin is 127.0.0.1:9100; listen on 0.0.0.0:9100 (the firewall opens the port to the "
          "admin networks and the peer only)");
    CHECK(only_error(head + ha_basics + "  peer_check: { interval: 1s }\n") ==
          "config.yaml:14:15: ha.peer_check: missing required key 'secret_file' (the path of the pair's shared "
          "secret (mode 0600))");

    {
        std::ofstream out(secret);
        out << "short-secret\n";
    }
    CHECK(only_error(head + ha_basics + peer) ==
          "config.yaml:14:30: ha.peer_check.secret_file: the HA peer secret in " + secret +
              " must be at least 32 printable characters without spaces");
    std::filesystem::permissions(secret, std::filesystem::perms::others_read, std::filesystem::perm_options::add);
    CHECK(only_error(head + ha_basics + peer) ==
          "config.yaml:14:30: ha.peer_check.secret_file: the HA peer secret file " + secret +
              " is readable by group or others; run: chmod 600 " + secret);
    std::filesystem::remove_all(dir);
}
