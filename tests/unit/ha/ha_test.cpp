// ha: keepalived.conf rendered per node against golden files, every rendered
// variant accepted by the real `keepalived --config-test`, and the status
// pieces (state line, node by local address).

#include "config/config.hpp"
#include "ha/keepalived.hpp"
#include "ha/peer.hpp"
#include "ha/status.hpp"

#include "tests/unit/support.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace cfg = rampart::config;
namespace ha = rampart::ha;
using Catch::Matchers::Contains;
using namespace std::chrono_literals;

namespace {

using rampart::test::load_text;
using rampart::test::source_dir;

std::string golden_dir() {
    return source_dir() + "/tests/golden/ha";
}

std::string read(const std::string& path) {
    return rampart::test::read_file(path);
}

cfg::snapshot_ptr deployment() {
    return rampart::test::load_file(golden_dir() + "/deployment.yaml");
}

// The golden deployment with `ha:` replaced by `ha_text`.
std::string with_ha(const std::string& ha_text) {
    const std::string text = read(golden_dir() + "/deployment.yaml");
    return text.substr(0, text.find("ha:\n")) + ha_text;
}

} // namespace

TEST_CASE("keepalived.conf of each node matches its golden file", "[unit][ha][golden]") {
    const auto s = deployment();
    const bool update = std::getenv("RAMPART_UPDATE_GOLDEN") != nullptr;
    for (const char* node : {"gw1", "gw2"}) {
        const std::string path = golden_dir() + "/" + node + ".keepalived.conf";
        std::string text = ha::render_keepalived_conf(*s, node);
        // The source path is the machine's; the golden file holds a fixed one.
        const auto at = text.find(s->source_file);
        REQUIRE(at != std::string::npos);
        text.replace(at, s->source_file.size(), "deployment.yaml");
        if (update) {
            std::ofstream(path) << text;
        }
        INFO(path << " (regenerate with RAMPART_UPDATE_GOLDEN=1)");
        CHECK(text == read(path));
    }
}

TEST_CASE("keepalived.conf follows the settings", "[unit][ha]") {
    const std::string base = "ha:\n  vip: 192.0.2.10/24\n  interface: eth0\n  virtual_router_id: 9\n"
                             "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n";
    const auto defaults = ha::render_keepalived_conf(*load_text(with_ha(base)), "gw2");
    CHECK_THAT(defaults, Contains("    state BACKUP\n"));
    CHECK_THAT(defaults, Contains("    nopreempt\n"));
    CHECK_THAT(defaults, Contains("    advert_int 0.1\n"));
    CHECK_THAT(defaults, Contains("    priority 100\n"));
    CHECK_THAT(defaults, Contains("    unicast_src_ip 192.0.2.12\n    unicast_peer {\n        192.0.2.11\n    }\n"));
    CHECK_THAT(defaults, Contains("    process rampart-gw2\n"));
    CHECK_THAT(defaults, Contains("    file \"/run/rampart/ha/gw2.health\"\n"));
    CHECK_THAT(defaults, Contains("    vrrp_notify_fifo /run/rampart/ha/gw2.fifo\n"));
    CHECK_THAT(defaults, Contains("        rampart_gw2_health weight 0\n"));
    CHECK(defaults.find("virtual_ipaddress_excluded") == std::string::npos);

    const auto tuned =
        ha::render_keepalived_conf(*load_text(with_ha(base + "  preempt: true\n  unicast: false\n  advert_int: 1s\n"
                                                             "  health: { weight: -100, track_process: false }\n"
                                                             "  state_dir: /var/lib/rampart\n")),
                                   "gw1");
    CHECK(tuned.find("    nopreempt\n") == std::string::npos);
    CHECK(tuned.find("unicast_peer") == std::string::npos);
    CHECK_THAT(tuned, Contains("    state BACKUP\n"));
    CHECK_THAT(tuned, Contains("    advert_int 1\n"));
    CHECK_THAT(tuned, Contains("        rampart_gw1_health weight -100\n"));
    CHECK_THAT(tuned, Contains("    file \"/var/lib/rampart/gw1.health\"\n"));
    CHECK(tuned.find("vrrp_track_process") == std::string::npos);
    CHECK(tuned.find("    track_process {") == std::string::npos);
    CHECK_THAT(defaults, Contains("    track_process {\n        rampart_gw2_process\n    }\n"));

    CHECK(ha::decimal_seconds(250ms) == "0.25");
    CHECK(ha::decimal_seconds(1010ms) == "1.01");
    CHECK(ha::decimal_seconds(40s) == "40");
    CHECK_THROWS_AS(ha::render_keepalived_conf(*load_text(with_ha(base)), "app1"), ha::render_error);
    CHECK_THROWS_WITH(ha::render_keepalived_conf(*load_text(with_ha(base)), "gw3"),
                      "no node gw3 in ha.nodes (expected gw1 or gw2)");
    CHECK_THROWS_AS(ha::render_keepalived_conf(*load_text(with_ha("")), "gw1"), ha::render_error);
}

TEST_CASE("status: the state line, the node by local address, the printout", "[unit][ha]") {
    CHECK(ha::parse_state_line("MASTER 150") == std::pair<std::string, unsigned>{"MASTER", 150});
    CHECK(ha::parse_state_line("BACKUP 100\n") == std::pair<std::string, unsigned>{"BACKUP", 100});
    CHECK_FALSE(ha::parse_state_line("MASTER"));
    CHECK_FALSE(ha::parse_state_line("LEADER 100"));
    CHECK_FALSE(ha::parse_state_line("MASTER 1000"));

    const auto master = ha::parse_notify_line("INSTANCE \"rampart_vrid51\" MASTER 150\n");
    REQUIRE(master);
    CHECK(master->kind == "INSTANCE");
    CHECK(master->name == "rampart_vrid51");
    CHECK(master->state == "MASTER");
    CHECK(master->priority == 150);
    const auto lowered = ha::parse_notify_line("INSTANCE \"rampart_vrid51\" BACKUP_PRIORITY 90");
    REQUIRE(lowered);
    CHECK(lowered->state.empty());
    CHECK(lowered->priority == 90);
    CHECK(ha::parse_notify_line("INSTANCE \"x\" STOP")->state == "STOP");
    CHECK_FALSE(ha::parse_notify_line("VS [192.0.2.1]:tcp:80 UP"));
    CHECK_FALSE(ha::parse_notify_line("INSTANCE rampart MASTER 100"));
    CHECK_FALSE(ha::parse_notify_line("INSTANCE \"x\" LEADER 100"));
    CHECK_FALSE(ha::parse_notify_line("INSTANCE \"x\" MASTER 100x"));

    const auto s = deployment();
    const cfg::ha& h = *s->ha_pair;
    CHECK(h.node_with_address({"127.0.0.1", "192.0.2.12"})->name == "gw2");
    CHECK(h.node_with_address({"127.0.0.1"}) == nullptr);
    CHECK(h.process_name("gw1") == "rampart-gw1");
    CHECK(h.process_name("a-very-long-gateway-name") == "rampart-a-very-");

    const auto dir = std::filesystem::temp_directory_path() / ("rampart-ha-unit-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto cfg = load_text(with_ha("ha:\n  vip: 192.0.2.10/24\n  interface: eth0\n  virtual_router_id: 9\n"
                                       "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n"
                                       "  state_dir: " +
                                       dir.string() + "\n"));
    std::ofstream(dir / "gw1.state") << "MASTER 150\n";
    std::ofstream(dir / "gw1.health") << "0\n";
    const auto st = ha::read_status(*cfg, "gw1", {"192.0.2.11", "192.0.2.10"});
    CHECK(st.state == "MASTER");
    CHECK(st.priority == 150);
    CHECK(st.health == "ok");
    CHECK(st.peer == "gw2");
    CHECK(st.vip_held);
    CHECK(ha::format_status(st) == "node       gw1\nstate      MASTER\npriority   150\nhealth     ok\n"
                                   "peer       gw2 (192.0.2.12)\nvip        192.0.2.10/24 held here\n");
    const auto other = ha::read_status(*cfg, "gw2", {"192.0.2.12"});
    CHECK(other.state == "unknown");
    CHECK_FALSE(other.vip_held);

    // A master that no longer runs stops rewriting the track file: its last
    // state is shown as stale.
    std::filesystem::last_write_time(dir / "gw1.health",
                                     std::filesystem::file_time_type::clock::now() - std::chrono::seconds(10));
    const auto stale = ha::read_status(*cfg, "gw1", {"192.0.2.11", "192.0.2.10"});
    REQUIRE(stale.stale_for);
    CHECK(*stale.stale_for >= 9.0);
    CHECK(ha::format_status(stale).find("state      MASTER (stale: nothing written for ") != std::string::npos);

    // `rampart ha down`: "1", whole, in place of what was there.
    CHECK(ha::mark_down(*cfg, "gw1").empty());
    CHECK(ha::read_status(*cfg, "gw1", {}).health == "not ready (1)");
    CHECK_FALSE(ha::read_status(*cfg, "gw1", {}).stale_for);
    CHECK_FALSE(std::filesystem::exists(dir / "gw1.health.tmp"));
    std::filesystem::remove_all(dir);
    CHECK_FALSE(ha::mark_down(*cfg, "gw1").empty()); // no state directory: the error, not a crash
}

// keepalived itself is the judge of the rendered files. It also checks that
// the interfaces exist, so the check runs in a namespace of its own holding
// eth0 and ens3 (a veth pair) (as root). Without keepalived or root the case prints
// SKIP and exits 77 (ctest: Skipped).
TEST_CASE("keepalived --config-test accepts every rendered file", "[unit][ha][keepalived]") {
    if (std::system("command -v keepalived >/dev/null 2>&1 && command -v ip >/dev/null 2>&1") != 0) {
        std::cout << "SKIP: keepalived or ip is not installed\n";
        std::exit(77);
    }
    if (::geteuid() != 0) {
        std::cout << "SKIP: needs root (a network namespace with the configured interfaces)\n";
        std::exit(77);
    }
    const auto s = deployment();
    const std::string ns = "rampart-ha-unit-" + std::to_string(::getpid());
    if (std::system(("ip netns add " + ns + " 2>/dev/null").c_str()) != 0) {
        std::cout << "SKIP: cannot create a network namespace\n";
        std::exit(77);
    }
    // Removed however the test ends (a failed REQUIRE throws).
    struct namespace_guard {
        std::string name;
        ~namespace_guard() { (void)std::system(("ip netns del " + name + " 2>/dev/null").c_str()); }
    } guard{ns};
    // A veth pair: the dummy module is not always there.
    REQUIRE(std::system(("ip -n " + ns + " link add eth0 type veth peer name ens3").c_str()) == 0);
    const auto dir = std::filesystem::temp_directory_path() / ("rampart-ha-conftest-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string base = "ha:\n  vip: 192.0.2.10/24\n  interface: eth0\n  virtual_router_id: 9\n"
                             "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n";
    const std::vector<cfg::snapshot_ptr> variants{
        s,
        load_text(with_ha(base)),
        load_text(with_ha(base + "  preempt: true\n  unicast: false\n  advert_int: 1s\n  health: { weight: -100 }\n")),
        load_text(with_ha(base + "  advert_int: 10ms\n  health: { require_backend: false, track_process: false }\n")),
    };
    int n = 0;
    for (const auto& variant : variants) {
        for (const auto& node : variant->ha_pair->nodes) {
            const auto path = dir / ("keepalived-" + std::to_string(n++) + ".conf");
            std::ofstream(path) << ha::render_keepalived_conf(*variant, node.name);
            const auto log = path.string() + ".log";
            const std::string cmd = "ip netns exec " + ns + " keepalived --config-test=" + log + " -f " +
                                    path.string() + " >/dev/null 2>&1";
            const int rc = std::system(cmd.c_str());
            INFO(path.string() << ":\n" << read(path.string()) << "\nkeepalived says:\n" << read(log));
            CHECK(rc == 0);
            // Warnings count too: keepalived starts with them, but something is off.
            CHECK(read(log).find("WARNING") == std::string::npos);
        }
    }
    // And a broken file is refused, so the check above means something.
    const auto broken = dir / "broken.conf";
    std::ofstream(broken) << ha::render_keepalived_conf(*s, "gw1") << "vrrp_instance x {\n    interface nosuchif0\n}\n";
    CHECK(std::system(("ip netns exec " + ns + " keepalived --config-test=" + broken.string() + ".log -f " +
                       broken.string() + " >/dev/null 2>&1")
                          .c_str()) != 0);
    std::filesystem::remove_all(dir);
}

TEST_CASE("peer check: a request proves the secret, the node and the time; an answer is bound to its request",
          "[unit][ha]") {
    const std::string secret(40, 's');
    const std::string nonce = ha::random_nonce();
    REQUIRE(nonce.size() == 32);
    CHECK(ha::random_nonce() != nonce);
    // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
    CHECK(ha::hmac_hex("Jefe", "what do ya want for nothing?") ==
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    const std::int64_t now = 1'765'000'000;
    const std::string header = ha::sign_peer_request(secret, "gw1", now, nonce);
    CHECK(header.find(secret) == std::string::npos);
    const auto claim = ha::parse_peer_claim(header);
    REQUIRE(claim);
    CHECK(claim->node == "gw1");
    CHECK(claim->time == now);
    CHECK(claim->nonce == nonce);
    CHECK(ha::check_peer_claim(*claim, secret, "gw1", now).empty());
    CHECK(ha::check_peer_claim(*claim, secret, "gw1", now + ha::peer_max_skew_s).empty());

    CHECK(ha::check_peer_claim(*claim, std::string(40, 't'), "gw1", now) ==
          "the proof does not verify (a different secret?)");
    CHECK(ha::check_peer_claim(*claim, secret, "gw2", now) == "node gw1 is not this node's peer");
    CHECK(ha::check_peer_claim(*claim, secret, "gw1", now + 31) ==
          "its clock is -31 s off this node's (more than 30 s)");
    // Changing any signed field breaks the proof.
    for (const auto& forged : {ha::sign_peer_request(secret, "gw1", now, nonce).replace(5, 3, "gw2"),
                               "node=gw1, time=" + std::to_string(now + 1) + header.substr(header.find(", nonce"))}) {
        const auto c = ha::parse_peer_claim(forged);
        REQUIRE(c);
        CHECK(ha::check_peer_claim(*c, secret, c->node, now) == "the proof does not verify (a different secret?)");
    }
    for (const std::string& bad :
         std::vector<std::string>{"", "node=gw1", "node=gw1, time=1, nonce=00, mac=00", header + ", extra=1",
                                  "node=gw 1, time=1, nonce=" + nonce + ", mac=" + claim->mac,
                                  "node=gw1, time=-1, nonce=" + nonce + ", mac=" + claim->mac,
                                  "node=gw1, node=gw1, time=1, nonce=" + nonce + ", mac=" + claim->mac}) {
        CHECK_FALSE(ha::parse_peer_claim(bad));
    }

    ha::peer_view v{"gw2", "BACKUP", false, true, 100};
    const std::string body = ha::peer_answer_body(v);
    CHECK(body == "{\"node\":\"gw2\",\"state\":\"BACKUP\",\"vip_held\":false,\"healthy\":true,\"priority\":100}\n");
    const auto back = ha::parse_peer_answer(body);
    REQUIRE(back);
    CHECK(back->node == "gw2");
    CHECK(back->state == "BACKUP");
    CHECK_FALSE(back->vip_held);
    CHECK(back->healthy);
    CHECK(back->priority == 100);
    CHECK_FALSE(ha::parse_peer_answer("{\"node\":\"gw2\",\"state\":\"LEADER\",\"vip_held\":false,\"healthy\":true,"
                                      "\"priority\":100}"));
    CHECK_FALSE(ha::parse_peer_answer("{\"node\":\"gw2\"}"));
    const std::string mac = ha::sign_peer_answer(secret, nonce, body);
    CHECK(ha::same_mac(mac, ha::sign_peer_answer(secret, nonce, body)));
    CHECK_FALSE(ha::same_mac(mac, ha::sign_peer_answer(secret, ha::random_nonce(), body))); // a replayed answer
    v.vip_held = true;
    CHECK_FALSE(ha::same_mac(mac, ha::sign_peer_answer(secret, nonce, ha::peer_answer_body(v))));
    CHECK_FALSE(ha::same_mac(mac, mac.substr(1)));
}

TEST_CASE("status: the peer's state from the peer check", "[unit][ha]") {
    const auto line = ha::parse_peer_line("peer MASTER vip-held 1765000000");
    REQUIRE(line);
    CHECK(line->state == "MASTER");
    CHECK(line->vip_held);
    CHECK(line->answered == 1'765'000'000);
    CHECK_FALSE(ha::parse_peer_line("peer MASTER yes 1"));
    CHECK_FALSE(ha::parse_peer_line("MASTER 150"));

    const auto dir = std::filesystem::temp_directory_path() / ("rampart-ha-peer-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto secret = dir / "peer.secret";
    std::ofstream(secret) << std::string(32, 'p') << "\n";
    std::filesystem::permissions(secret, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    std::string text = with_ha("ha:\n  vip: 192.0.2.10/24\n  interface: eth0\n  virtual_router_id: 9\n"
                               "  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }\n"
                               "  state_dir: " +
                               dir.string() + "\n  peer_check: { secret_file: " + secret.string() + " }\n");
    const auto at = text.find("{ http: \"127.0.0.1:8080\" }");
    REQUIRE(at != std::string::npos);
    text.replace(at, 26, "{ http: \"127.0.0.1:8080\", admin: \"0.0.0.0:9100\" }");
    const auto cfg = load_text(text);
    const auto now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    std::ofstream(dir / "gw1.state") << "BACKUP 150\npeer MASTER vip-held " << now - 2 << "\n";
    std::ofstream(dir / "gw1.health") << "0\n";
    const auto st = ha::read_status(*cfg, "gw1", {"192.0.2.11"});
    REQUIRE(st.peer_state);
    CHECK(*st.peer_state == "MASTER");
    CHECK(st.peer_vip_held);
    CHECK_THAT(ha::format_status(st), Catch::Matchers::Contains("peer       gw2 (192.0.2.12): MASTER, holds the VIP "
                                                                "(peer check, "));
    std::ofstream(dir / "gw1.state") << "BACKUP 150\npeer unknown vip-not-held 0\n";
    CHECK_THAT(ha::format_status(ha::read_status(*cfg, "gw1", {"192.0.2.11"})),
               Catch::Matchers::Contains("peer       gw2 (192.0.2.12): unknown (peer check: no answer yet)"));
    std::filesystem::remove_all(dir);
}
