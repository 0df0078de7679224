"""``rampart firewall``: the role policies enforced on real packets, in network namespaces.

Topology (tests/support/netns.py): hosts client, admin, gw1, gw2, app1, app2, db1, db2, each a
network namespace with a veth to one bridge that lives in a namespace of its own; TEST-NET
addresses only. Every server namespace has TCP listeners (sockets made inside it from this
process) on its service ports, on SSH (22) and on a port no policy opens (5000); every server
namespace also has two tables Rampart does not own (``inet other``, ``ip other4``) that must
survive every apply, revert and rollback byte for byte (handles included).

Then ``rampart firewall apply --host NAME`` runs in each server namespace and real connects
(0.5 s; a drop is a timeout, never a refusal) check every flow of the source x destination x
port matrix against the role policy. Also: VRRP (raw IP protocol 112) only from the peer
gateway, ICMP echo, counters and ``status --json``, a re-apply under an open connection, the
blocklist with a timeout, ``unblock``, a batch the kernel rejects (RAMPART_FIREWALL_TEST_REJECT),
confirm-or-revert (also with the applier's terminal killed the instant its commit lands: the
revert must already be armed then), confirm, rollback, ``diff`` against
hand-made drift, lint refusals and a run without CAP_NET_ADMIN that must change nothing (the
nftables generation id, read with NFT_MSG_GETGEN, proves that no transaction was committed).

Every nft and rampart command runs inside a test namespace (``ip netns exec``); the host's own
ruleset is never read or written. Needs root, ``ip netns`` and ``nft``: otherwise skipped (exit 77).
"""

import json
import os
import re
import signal
import subprocess
import time

import harness as h
import pytest
import netns

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.tools("ip")]
BUDGET_S = 240

ADMIN_NET = "192.0.2.248/29"   # admin (192.0.2.250) is inside, nobody else is
CLIENT_NET = "192.0.2.48/29"   # added to the admin networks by the "other" config: client gets SSH
HOSTS = {
    "client": "192.0.2.50",
    "admin": "192.0.2.250",
    "gw1": "192.0.2.11",
    "gw2": "192.0.2.12",
    "app1": "192.0.2.21",
    "app2": "192.0.2.22",
    "db1": "192.0.2.31",
    "db2": "192.0.2.32",
}
ROLES = {"gw1": "gateway", "gw2": "gateway", "app1": "app", "app2": "app", "db1": "db-primary",
         "db2": "db-replica"}
SERVERS = list(ROLES)
SSH, HTTP, HTTPS, ADMIN_PORT, APP_PORT, DB_PORT, UNUSED = 22, 80, 443, 9100, 8080, 3306, 5000
PORTS = {
    "gateway": [HTTP, HTTPS, ADMIN_PORT, SSH, UNUSED],
    "app": [APP_PORT, SSH, UNUSED],
    "db-primary": [DB_PORT, SSH, UNUSED],
    "db-replica": [DB_PORT, SSH, UNUSED],
}
PROBE_TIMEOUT = 0.5
CONFIRM_WINDOW = 3.0

OTHER_TABLES = """
table inet other {
    set keep { type ipv4_addr; elements = { 192.0.2.99 } }
    chain c { type filter hook input priority 10; policy accept; tcp dport 9 counter accept; }
}
table ip other4 {
    chain c2 { type filter hook output priority 0; policy accept; }
}
"""


# ---------------------------------------------------------------------------
# The expected policy
# ---------------------------------------------------------------------------


def allowed(src: str, dst: str, port: int) -> bool:
    role = ROLES[dst]
    if port == SSH:
        return src == "admin"
    if role == "gateway":
        if port in (HTTP, HTTPS):
            return True
        if port == ADMIN_PORT:
            return src == "admin"
    if role == "app" and port == APP_PORT:
        return src in ("gw1", "gw2")
    if role == "db-primary" and port == DB_PORT:
        return src in ("app1", "app2", "db2")
    if role == "db-replica" and port == DB_PORT:
        return src in ("app1", "app2")
    return False


def matrix() -> list:
    return [netns.Probe(src, HOSTS[dst], port)
            for dst in SERVERS for port in PORTS[ROLES[dst]] for src in HOSTS if src != dst]


def host_of(address: str) -> str:
    return next(n for n, a in HOSTS.items() if a == address)


# ---------------------------------------------------------------------------
# Configuration and commands
# ---------------------------------------------------------------------------


def deployment(certs, admin_networks: list) -> dict:
    servers = {}
    for name, role in ROLES.items():
        servers[name] = {"address": HOSTS[name], "role": role}
        if role == "app":
            servers[name]["port"] = APP_PORT
    return {
        "site": h.SITE,
        "servers": servers,
        "gateway": {
            "listen": {"https": f"[::]:{HTTPS}", "http": f"[::]:{HTTP}", "admin": f"{HOSTS['gw1']}:{ADMIN_PORT}"},
            "workers": 1,
            "user": "",
            "tls": {"certificates": certs.certificates},
            "pools": {"app": {"servers": ["app1", "app2"]}},
        },
        "firewall": {"admin_networks": admin_networks, "ssh_port": SSH, "db_port": DB_PORT},
    }


def write(name: str, config: dict) -> str:
    path = h.temp_dir() / name
    h.write_config(path, config)
    return str(path)


def fw(lab, host: str, *args, env: dict | None = None, timeout: float = 60, wrap: list | None = None):
    """rampart firewall ARGS inside host's namespace."""
    argv = [*(wrap or []), str(h.rampart_bin()), "firewall", *[str(a) for a in args]]
    return lab.exec(host, argv, env=env, timeout=timeout)


def state(host: str) -> str:
    d = h.temp_dir() / f"state-{host}"
    d.mkdir(exist_ok=True)
    return str(d)


def apply(cfg_a, lab, host: str, config: str | None = None, *extra, env: dict | None = None):
    return fw(lab, host, "apply", "-c", config or cfg_a, "--host", host, "--state-dir", state(host), *extra,
              env=env)


def out(r) -> str:
    return f"exit {r.returncode}; stdout: {r.stdout.strip()[-1500:]!r}; stderr: {r.stderr.strip()[-1500:]!r}"


def nft(lab, host: str, *args, check: bool = True, input: str | None = None):
    return netns.nft(lab, host, *args, check=check, input=input)


def rampart_listing(lab, host: str) -> str | None:
    """The kernel's `table inet rampart` without counters (nft -s), normalized; None if absent."""
    r = nft(lab, host, "-s", "list", "table", "inet", "rampart", check=False)
    return netns.normalize_ruleset(r.stdout) if r.returncode == 0 else None


def whole_ruleset(lab, host: str) -> str:
    """The whole ruleset of host's namespace, with handles, without counters."""
    return netns.normalize_ruleset(nft(lab, host, "-a", "-s", "list", "ruleset").stdout)


def other_tables(lab, host: str) -> str:
    a = nft(lab, host, "-a", "-s", "list", "table", "inet", "other").stdout
    b = nft(lab, host, "-a", "-s", "list", "table", "ip", "other4").stdout
    return netns.normalize_ruleset(a + b)


def check_other_tables(lab, other, host: str, when: str) -> None:
    now = other_tables(lab, host)
    h.check(now == other[host], f"{host}: the tables Rampart does not own changed {when}:\n"
                                     f"before:\n{other[host]}\nafter:\n{now}")


COUNTER = re.compile(r"\s*counter packets (\d+) bytes (\d+)")


def counters(lab, host: str) -> list[tuple[str, int]]:
    """(rule text without its counter, packets) for every counted line of table inet rampart."""
    text = nft(lab, host, "list", "table", "inet", "rampart").stdout
    rows = []
    for line in text.splitlines():
        m = COUNTER.search(line)
        if m:
            rows.append((COUNTER.sub("", line).strip(), int(m.group(1))))
    return rows


def packets(lab, host: str, *words: str, any_of: tuple = ()) -> int:
    """Packets counted by the rules whose text contains every word (and one of any_of)."""
    return sum(p for text, p in counters(lab, host)
               if all(w in text for w in words) and (not any_of or any(w in text for w in any_of)))


def probe(lab, src: str, dst_host: str, port: int, timeout: float = PROBE_TIMEOUT) -> str:
    p = netns.Probe(src, HOSTS[dst_host], port)
    return netns.probe_tcp(lab, [p], timeout)[p]


def wait_for(predicate, timeout: float, interval: float = 0.1):
    """(value, seconds) once predicate() is truthy, or (last value, None) at the deadline."""
    t0 = time.monotonic()
    value = None
    for _ in range(int(timeout / interval) + 2):
        value = predicate()
        if value:
            return value, time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            break
        time.sleep(interval)
    return value, None


def background(bg, lab, host: str, *args) -> subprocess.Popen:
    """rampart firewall ARGS in host's namespace, not waited for (stopped by PID in teardown)."""
    log = h.temp_dir() / f"bg-{len(bg)}.log"
    with open(log, "wb") as f:
        p = subprocess.Popen(lab.argv(host, [h.rampart_bin(), "firewall", *args]), stdin=subprocess.DEVNULL,
                             stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    bg.append((p, log))
    return p


def bg_output(bg, p: subprocess.Popen) -> str:
    for q, log in bg:
        if q is p:
            return log.read_text(errors="replace")[-1500:]
    return ""


# ---------------------------------------------------------------------------
# Set-up and tear-down
# ---------------------------------------------------------------------------


def _firewall_command_exists() -> bool:
    r = subprocess.run([str(h.rampart_bin())], capture_output=True, text=True, timeout=30)
    return "firewall" in r.stdout + r.stderr


@pytest.fixture(scope="module")
def capable() -> None:
    """ip and nft usable in a network namespace, and a rampart with the firewall subcommand."""
    netns.ensure_packages({"ip": "iproute2", "nft": "nftables"})
    reason = netns.skip_reason(("ip", "nft"))
    if reason:
        pytest.skip(reason)
    if not _firewall_command_exists():
        pytest.skip(f"{h.rampart_bin()} has no firewall subcommand")
    netns.install_signal_handlers()


@pytest.fixture(scope="module")
def cfg_a(capable, certs) -> str:
    """The test deployment: SSH from the admin network only."""
    path = write("deploy-a.yaml", deployment(certs, [ADMIN_NET]))
    r = subprocess.run([str(h.rampart_bin()), "check", "-c", path], capture_output=True, text=True,
                       timeout=30)
    h.check(r.returncode == 0, f"rampart check rejects the test deployment: {out(r)}")
    return path


@pytest.fixture(scope="module")
def cfg_b(capable, certs) -> str:
    """The deployment with the client's network allowed SSH too."""
    return write("deploy-b.yaml", deployment(certs, [ADMIN_NET, CLIENT_NET]))  # client may use SSH


@pytest.fixture(scope="module")
def cfg_lint(capable, certs) -> str:
    """The deployment without any admin network (a lint error)."""
    return write("deploy-lint.yaml", deployment(certs, []))


@pytest.fixture(scope="module")
def lab(capable, cfg_a) -> netns.Lab:
    """One namespace per host and an empty one (scratch: nft -c of the plans); removed at the end."""
    lab = netns.Lab("rfw")
    try:
        for name, addr in HOSTS.items():
            lab.add_host(name, addr)
        lab.add_namespace("scratch")  # an empty namespace: nft -c of the plans
        lab.up()
        yield lab
    finally:
        left = lab.close()
        h.check(not left, f"processes still inside the test namespaces were stopped: {left}")


@pytest.fixture(scope="module", autouse=True)
def listeners(lab) -> netns.TcpListeners:
    """Every server's ports listening (and echoing), from the start."""
    listeners = netns.TcpListeners().start()
    try:
        for name in SERVERS:
            for port in PORTS[ROLES[name]]:
                listeners.listen(lab, name, port)
        yield listeners
    finally:
        listeners.close()


@pytest.fixture(scope="module", autouse=True)
def other(lab, listeners) -> dict[str, str]:
    """host -> its tables Rampart does not own (installed here), which no apply may touch."""
    other = {}
    for name in SERVERS:
        nft(lab, name, "-f", "-", input=OTHER_TABLES)
        other[name] = other_tables(lab, name)
    return other


@pytest.fixture(scope="module")
def listings(other) -> dict[str, str]:
    """host -> listing of table inet rampart after the first apply of config A (filled by the tests)."""
    return {}


@pytest.fixture(scope="module")
def bg(lab) -> list:
    """(process, log) of the firewall commands started in the background; killed by PID at the end."""
    bg = []
    yield bg
    problems = []
    for p, _ in bg:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            problems.append(f"pid {p.pid} did not die")
    h.check(not problems, "; ".join(problems))

# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_plan_is_valid_nft_for_every_host_and_role(cfg_a, lab):
    for host in SERVERS:
        r = fw(lab, "scratch", "plan", "-c", cfg_a, "--host", host)
        h.check(r.returncode == 0, f"plan --host {host}: {out(r)}")
        h.check("table inet rampart" in r.stdout, f"plan --host {host} has no 'table inet rampart': {r.stdout[:300]!r}")
        c = nft(lab, "scratch", "-c", "-f", "-", input=r.stdout, check=False)
        h.check(c.returncode == 0, f"nft -c rejects plan --host {host}: {c.stderr.strip()[:1500]}")
    for role in sorted(set(ROLES.values())):
        r = fw(lab, "scratch", "plan", "-c", cfg_a, "--role", role)
        h.check(r.returncode == 0, f"plan --role {role}: {out(r)}")
        h.check("table inet rampart" in r.stdout, f"plan --role {role}: no table in {r.stdout[:300]!r}")
    h.check(whole_ruleset(lab, "scratch") == "", "plan or nft -c committed something in the scratch namespace")


def test_baseline_every_port_reachable_without_firewall(lab):
    """Before any apply every listener answers from everywhere: a later timeout is the firewall's doing."""
    results = netns.probe_tcp(lab, matrix(), timeout=2.0)
    bad = {f"{p.src}->{host_of(p.dst)}:{p.port}": r for p, r in results.items() if r != "open"}
    h.check(not bad, f"without a firewall these did not connect: {bad}")


def test_apply_every_server(cfg_a, lab, listings, other):
    for host in SERVERS:
        r = apply(cfg_a, lab, host)
        h.check(r.returncode == 0, f"apply --host {host}: {out(r)}")
        listing = rampart_listing(lab, host)
        h.check(listing is not None, f"{host}: no table inet rampart after apply")
        listings[host] = listing
        check_other_tables(lab, other, host, "by apply")
        d = fw(lab, host, "diff", "-c", cfg_a, "--host", host)
        h.check(d.returncode == 0, f"diff right after apply on {host}: {out(d)}")
    for host in ("client", "admin"):
        h.check(whole_ruleset(lab, host) == "", f"{host}: a ruleset appeared in a namespace nobody applied to")


def test_every_allowed_flow_connects_and_every_other_is_dropped(lab):
    results = netns.probe_tcp(lab, matrix(), timeout=PROBE_TIMEOUT)
    # An allowed flow that did not answer within 0.5 s gets one more try of 0.9 s (still below
    # the 1 s SYN retransmission, so a dropped first SYN cannot pass): a slow machine is not a bug.
    slow = [p for p, r in results.items() if r == "timeout" and allowed(p.src, host_of(p.dst), p.port)]
    if slow:
        results.update(netns.probe_tcp(lab, slow, timeout=0.9))
    wrong = []
    for p, r in sorted(results.items(), key=lambda x: (x[0].dst, x[0].port, x[0].src)):
        want = "open" if allowed(p.src, host_of(p.dst), p.port) else "timeout"
        if r != want:
            wrong.append(f"{p.src}->{host_of(p.dst)}:{p.port} {r} (want {want})")
    n_open = sum(allowed(p.src, host_of(p.dst), p.port) for p in results)
    h.check(not wrong, f"{len(wrong)} of {len(results)} flows wrong:\n  " + "\n  ".join(wrong))
    h.check(n_open >= 20 and len(results) - n_open >= 100, f"matrix too small: {n_open} open of {len(results)}")


def test_icmp_echo_and_loopback(lab):
    for src, dst in (("client", "gw1"), ("client", "db1"), ("admin", "app2")):
        h.check(netns.ping(lab, src, HOSTS[dst]), f"ICMP echo {src}->{dst} got no reply")
    # loopback is accepted: the unused port answers on 127.0.0.1 inside the host itself
    for host in ("gw1", "db2"):
        p = netns.Probe(host, "127.0.0.1", UNUSED)
        r = netns.probe_tcp(lab, [p], timeout=1.0)[p]
        h.check(r == "open", f"{host}: 127.0.0.1:{UNUSED} from itself is {r}, loopback must be accepted")


def test_vrrp_only_from_the_peer_gateway(lab):
    markers = iter(range(0x52460001, 0x52460100))
    for receiver, peer in (("gw1", "gw2"), ("gw2", "gw1")):
        rx = netns.RawReceiver(lab, receiver)
        try:
            vrrp_before = packets(lab, receiver, any_of=("vrrp", "112"))
            sent = {}
            for src in (peer, "client", "app1", "admin"):
                for dst in (netns.VRRP_GROUP, HOSTS[receiver]):
                    m = next(markers)
                    netns.send_vrrp(lab, src, dst, m)
                    sent[(src, dst)] = m
            # The peer's packets must arrive (returns when they do: 5 s is a guard against a hang);
            # the others must not: a short look, and a second one 0.3 s later.
            got = {k: rx.got_vrrp(m, 5.0 if k[0] == peer else 0.05) for k, m in sent.items()}
            time.sleep(0.3)
            got = {k: got[k] or rx.got_vrrp(m, 0) for k, m in sent.items()}
            wrong = [f"{src}->{dst}: {'passed' if g else 'dropped'}" for (src, dst), g in got.items()
                     if g != (src == peer)]
            h.check(not wrong, f"VRRP to {receiver}: " + "; ".join(wrong))
            # >= 1, not 2: a peer's unicast packet can be the reply direction of a conntrack entry
            # made by an earlier packet the other way, and then the established rule counts it.
            moved = packets(lab, receiver, any_of=("vrrp", "112")) - vrrp_before
            h.check(moved >= 1, f"{receiver}: the VRRP rule counted no packet from {peer}")
        finally:
            rx.close()


def test_counters_move_and_status_json(lab):
    db3306 = lambda: packets(lab, "db1", str(DB_PORT))  # noqa: E731
    drops = lambda: packets(lab, "db1", any_of=("drop", "log"))  # noqa: E731
    before, drop_before = db3306(), drops()
    for src in ("app1", "app2", "db2"):
        h.check(probe(lab, src, "db1", DB_PORT, 2.0) == "open", f"{src}->db1:{DB_PORT} does not connect")
    h.check(probe(lab, "client", "db1", DB_PORT) == "timeout", "client->db1:3306 not dropped")
    after, drop_after = db3306(), drops()
    h.check(after - before >= 3, f"the {DB_PORT} rules counted {after - before} packets for 3 new connections "
                                 f"({counters(lab, 'db1')})")
    h.check(drop_after > drop_before, f"no drop/log counter moved for a dropped SYN ({counters(lab, 'db1')})")

    # status --json names each rule by its comment: the rules nft shows matching port 3306 must be
    # there with the same counts (read after nft's, so at least as large).
    nft_db = {}
    for line in nft(lab, "db1", "list", "table", "inet", "rampart").stdout.splitlines():
        m = re.search(r'dport 3306 .*counter packets (\d+) bytes \d+ accept comment "([^"]+)"', line)
        if m:
            nft_db[m.group(2)] = nft_db.get(m.group(2), 0) + int(m.group(1))
    h.check(sum(nft_db.values()) >= 3, f"nft shows no {DB_PORT} rule with its packets: {nft_db}")
    r = fw(lab, "db1", "status", "--json", "--state-dir", state("db1"))
    h.check(r.returncode == 0, f"status --json: {out(r)}")
    try:
        doc = json.loads(r.stdout)
    except ValueError as e:
        raise AssertionError(f"status --json is not JSON ({e}): {r.stdout[:500]!r}") from None
    rules = doc.get("rules") if isinstance(doc, dict) else None
    h.check(isinstance(rules, list) and rules, f"status --json has no list of rules: {r.stdout[:500]}")
    status_db = {}
    for rule in rules:
        if rule.get("comment") in nft_db:
            status_db[rule["comment"]] = status_db.get(rule["comment"], 0) + int(rule.get("packets", -1))
    h.check(set(status_db) == set(nft_db) and all(status_db[c] >= nft_db[c] for c in nft_db),
            f"status --json counters {status_db} do not match nft's {nft_db}")
    h.check(all("packets" in x and "bytes" in x for x in rules), "status --json: a rule without packets/bytes")
    t = fw(lab, "db1", "status", "--state-dir", state("db1"))
    h.check(t.returncode == 0 and all(c in t.stdout for c in nft_db), f"status (text): {out(t)}")


def test_reapply_keeps_established_connections(cfg_a, lab, listings):
    conns = [("client", "gw1", HTTPS), ("gw1", "app1", APP_PORT), ("app2", "db1", DB_PORT)]
    socks = []
    try:
        for src, dst, port in conns:
            s = netns.tcp_connect(lab, src, HOSTS[dst], port)
            s.sendall(b"one")
            h.check(s.recv(16) == b"one", f"{src}->{dst}:{port}: no echo")
            socks.append(s)
        for host in ("gw1", "app1", "db1"):
            r = apply(cfg_a, lab, host)
            h.check(r.returncode == 0, f"re-apply on {host}: {out(r)}")
        for (src, dst, port), s in zip(conns, socks):
            s.sendall(b"two")
            try:
                data = s.recv(16)
            except OSError as e:
                data = repr(e).encode()
            h.check(data == b"two", f"{src}->{dst}:{port}: the open connection broke over a re-apply ({data!r})")
    finally:
        for s in socks:
            s.close()
    for host in ("gw1", "app1", "db1"):
        listings[host] = rampart_listing(lab, host)


def test_blocklist_drops_a_source_until_its_timeout(lab):
    h.check(probe(lab, "client", "gw1", HTTPS, 0.9) == "open", "client->gw1:443 does not connect before the block")
    # The block starts while the command runs: the lower bound counts from before it, the
    # upper one from its exit (a busy machine makes `ip netns exec rampart ...` slow to start).
    t0 = time.monotonic()
    r = fw(lab, "gw1", "block", HOSTS["client"], "--timeout", "3s")
    t1 = time.monotonic()
    h.check(r.returncode == 0, f"block --timeout 3s: {out(r)}")
    h.check(probe(lab, "client", "gw1", HTTPS) == "timeout", "client->gw1:443 still connects after block")
    h.check(probe(lab, "admin", "gw1", HTTPS, 0.9) == "open", "block of the client also dropped admin->gw1:443")
    h.check(probe(lab, "client", "gw2", HTTPS, 0.9) == "open", "block on gw1 also dropped client->gw2:443")
    listing = nft(lab, "gw1", "list", "table", "inet", "rampart").stdout
    h.check(HOSTS["client"] in listing, f"the blocked address is not in any set of gw1:\n{listing}")
    _, took = wait_for(lambda: probe(lab, "client", "gw1", HTTPS, 0.3) == "open", timeout=15.0, interval=0.2)
    now = time.monotonic()
    h.check(took is not None, "client->gw1:443 still dropped 15 s after a 3 s block")
    h.check(now - t0 >= 2.5, f"the 3 s block ended after only {now - t0:.1f}s")
    h.check(now - t1 <= 4.5, f"the 3 s block lasted {now - t1:.1f}s after the command returned")


BLOCK_S = 8.0     # the block carried over the re-apply
REAPPLY_AT = 3.0  # seconds into it: a timeout restarted by the re-apply would end 3 s late


def test_blocklist_survives_a_reapply_with_its_remaining_time(cfg_a, lab):
    h.check(probe(lab, "client", "gw1", HTTPS, 0.9) == "open", "client->gw1:443 does not connect before the block")
    t0 = time.monotonic()
    r = fw(lab, "gw1", "block", HOSTS["client"], "--timeout", f"{BLOCK_S:g}s")
    t1 = time.monotonic()
    h.check(r.returncode == 0, f"block --timeout {BLOCK_S:g}s: {out(r)}")
    time.sleep(max(t1 + REAPPLY_AT - time.monotonic(), 0))  # a deliberate delay, not a wait for anything
    r = apply(cfg_a, lab, "gw1")  # a deploy: the same plan again, a new table
    h.check(r.returncode == 0, f"re-apply: {out(r)}")
    h.check(probe(lab, "client", "gw1", HTTPS) == "timeout", "the re-apply emptied the blocklist: client connects")
    _, took = wait_for(lambda: probe(lab, "client", "gw1", HTTPS, 0.3) == "open", timeout=BLOCK_S + 15, interval=0.2)
    now = time.monotonic()
    h.check(took is not None, f"client->gw1:443 still dropped {now - t0:.0f} s after a {BLOCK_S:g} s block "
                              "carried over a re-apply")
    h.check(now - t0 >= BLOCK_S - 0.5, f"the carried {BLOCK_S:g} s block ended after only {now - t0:.1f}s")
    # Carried: it ends BLOCK_S after the block command; restarted: BLOCK_S after the re-apply,
    # REAPPLY_AT (3 s) later. The bound sits between, counted from the block command's exit.
    h.check(now - t1 <= BLOCK_S + 1.5,
            f"the carried {BLOCK_S:g} s block lasted {now - t1:.1f}s after the command: its timeout restarted")


def test_unblock(lab, other):
    r = fw(lab, "gw2", "block", HOSTS["client"], "--timeout", "10m")
    h.check(r.returncode == 0, f"block --timeout 10m: {out(r)}")
    h.check(probe(lab, "client", "gw2", HTTP) == "timeout", "client->gw2:80 still connects after block")
    r = fw(lab, "gw2", "unblock", HOSTS["client"])
    h.check(r.returncode == 0, f"unblock: {out(r)}")
    h.check(probe(lab, "client", "gw2", HTTP, 1.0) == "open", "client->gw2:80 still dropped after unblock")
    check_other_tables(lab, other, "gw2", "by block/unblock")


def test_rejected_batch_changes_nothing(cfg_a, cfg_b, lab, listings, other):
    reject = dict(os.environ, RAMPART_FIREWALL_TEST_REJECT="1")
    # 1. over an applied ruleset, trying to program a different one (config B opens SSH to the client)
    gen, text, before = netns.nft_genid(lab, "app1"), whole_ruleset(lab, "app1"), counters(lab, "app1")
    r = apply(cfg_a, lab, "app1", cfg_b, env=reject)
    h.check(r.returncode == 1, f"apply with a batch the kernel rejects must exit 1: {out(r)}")
    h.check(netns.nft_genid(lab, "app1") == gen, "the generation id moved: something was committed")
    h.check(whole_ruleset(lab, "app1") == text, "the ruleset (or its handles) changed after a rejected batch")
    after = counters(lab, "app1")
    h.check([t for t, _ in after] == [t for t, _ in before], "the rules changed after a rejected batch")
    h.check(all(a >= b for (_, a), (_, b) in zip(after, before)), "counters were reset by a rejected batch")
    h.check(probe(lab, "client", "app1", SSH) == "timeout", "client->app1:22 connects: config B got in")
    h.check(probe(lab, "gw1", "app1", APP_PORT, 2.0) == "open", "gw1->app1:8080 no longer connects")
    check_other_tables(lab, other, "app1", "by a rejected batch")
    d = fw(lab, "app1", "diff", "-c", cfg_a, "--host", "app1")
    h.check(d.returncode == 0, f"diff against the old policy after a rejected batch: {out(d)}")
    # 2. into a namespace without any ruleset: still nothing, not even an empty table
    gen = netns.nft_genid(lab, "client")
    try:
        r = fw(lab, "client", "apply", "-c", cfg_a, "--host", "app1", "--state-dir", state("client"), env=reject)
        h.check(r.returncode == 1, f"first apply with a rejected batch must exit 1: {out(r)}")
        h.check(netns.nft_genid(lab, "client") == gen, "first apply: the generation id moved")
        h.check(whole_ruleset(lab, "client") == "", f"first apply left a ruleset: {whole_ruleset(lab, 'client')}")
    finally:
        nft(lab, "client", "flush", "ruleset")  # whatever happened, the client keeps working
    # 3. the same apply without the injected error goes through (so the error was the only difference)
    gen = netns.nft_genid(lab, "app1")
    r = apply(cfg_a, lab, "app1")
    h.check(r.returncode == 0, f"apply after the rejected one: {out(r)}")
    h.check(netns.nft_genid(lab, "app1") != gen, "a successful apply did not move the generation id")
    h.check(rampart_listing(lab, "app1") == listings["app1"], "re-apply of the same policy changed the table")


def _policy_b_in_force(lab, listings, host: str) -> bool:
    return rampart_listing(lab, host) not in (None, listings[host]) and probe(lab, "client", host, SSH, 0.9) == "open"


def _wait_commit(lab, host: str, p: subprocess.Popen, gen: int) -> float | None:
    """Waits (at most 20 s, a guard against a hang) for the generation id of host's namespace
    to move, i.e. for the applier's commit; its time, or None if the applier exited first or
    it did not come."""
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and p.poll() is None:
        if netns.nft_genid(lab, host) != gen:
            return time.monotonic()
        time.sleep(0.0002)
    return time.monotonic() if netns.nft_genid(lab, host) != gen else None


def _kill_at_commit(lab, host: str, p: subprocess.Popen, gen: int) -> tuple[bool, float | None]:
    """Waits for the applier's commit (_wait_commit) and kills the applier's terminal at once.
    (True if the kill came before the applier had exited by itself, the commit's time)."""
    committed = _wait_commit(lab, host, p, gen)
    alive = p.poll() is None
    _terminal_dies(p)
    return alive, committed


def _confirm_run(bg, cfg_b, lab, listings, other, host: str, kill_applier: bool) -> None:
    gen = netns.nft_genid(lab, host)
    t0 = time.monotonic()
    p = background(bg, lab, host, "apply", "-c", cfg_b, "--host", host, "--state-dir", state(host),
                   "--confirm", f"{CONFIRM_WINDOW:g}s")
    # The window runs from the commit: the revert's time is counted from there (upper bound)
    # and, conservatively, from before the applier started (lower bound); a busy machine
    # makes the applier slow to start, which is not part of the window.
    if kill_applier:
        killed_early, committed = _kill_at_commit(lab, host, p, gen)
    else:
        killed_early, committed = False, _wait_commit(lab, host, p, gen)
    h.check(committed is not None, f"apply --confirm committed nothing: exit {p.poll()}: {bg_output(bg, p)}")
    ok_exits = (None, 0, -signal.SIGHUP, -signal.SIGKILL) if kill_applier else (None, 0)
    in_force, _ = wait_for(lambda: p.poll() not in ok_exits or _policy_b_in_force(lab, listings, host), 20.0, 0.05)
    h.check(p.poll() in ok_exits, f"apply --confirm failed: exit {p.poll()}: {bg_output(bg, p)}")
    h.check(in_force, f"apply --confirm: the new policy never came into force ({bg_output(bg, p)})")
    if time.monotonic() - committed < CONFIRM_WINDOW - 1.5:
        h.check(_policy_b_in_force(lab, listings, host), "reverted long before the window ended")
    _, took = wait_for(lambda: rampart_listing(lab, host) == listings[host], CONFIRM_WINDOW + 15.0, 0.1)
    now = time.monotonic()
    h.check(took is not None, f"not reverted {now - committed:.1f}s after the commit of apply --confirm "
                              f"{CONFIRM_WINDOW:g}s (applier killed at its commit: {killed_early}); output: "
                              f"{bg_output(bg, p)!r}; state dir: {_state_files(host)}")
    h.check(now - t0 >= CONFIRM_WINDOW - 0.5, f"reverted after {now - t0:.1f}s, before the window ended")
    h.check(now - committed <= CONFIRM_WINDOW + 2.5,
            f"reverted only {now - committed:.1f}s after the commit (window {CONFIRM_WINDOW:g}s)")
    h.check(probe(lab, "client", host, SSH) == "timeout", "client->SSH still connects after the revert")
    h.check(probe(lab, "gw2", host, APP_PORT, 2.0) == "open", "gw2->app:8080 broken after the revert")
    check_other_tables(lab, other, host, f"by a confirm-or-revert (killed applier: {kill_applier})")
    if not kill_applier:
        try:
            rc = p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            rc = None
        h.check(rc == 0, f"apply --confirm (not confirmed) did not exit 0 by the end of its window: {rc}: "
                         f"{bg_output(bg, p)}")
    # Whatever reverted must not linger in the namespace.
    _, gone = wait_for(lambda: not _ns_pids(lab, host), 15.0, 0.2)
    h.check(gone is not None, f"processes still inside {host} after the revert: {_ns_pids(lab, host)}")


def _state_files(host: str) -> list[str]:
    root = state(host)
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def _terminal_dies(p: subprocess.Popen) -> None:
    """What a hang-up does to the applier's terminal session: SIGHUP to every process still in
    its process group (the applier and whatever it started without leaving the group), then
    SIGKILL to the applier. Each by PID; the group is the one this test made for it."""
    group = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            fields = data[data.rfind(b")") + 2:].split()
            if int(fields[2]) == p.pid and fields[0] not in (b"Z", b"X"):
                group.append(int(entry))
    for pid in group:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            pass
    if p.poll() is None:
        os.kill(p.pid, signal.SIGKILL)


def _ns_pids(lab, host: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", lab.ns(host)], capture_output=True, text=True, timeout=10)
    return [int(x) for x in r.stdout.split() if x.isdigit()]


def test_confirm_window_reverts_when_not_confirmed(bg, cfg_b, lab, listings, other):
    _confirm_run(bg, cfg_b, lab, listings, other, "app2", kill_applier=False)


def test_confirm_window_reverts_when_the_applier_is_killed(bg, cfg_a, cfg_b, lab, listings, other):
    try:
        _confirm_run(bg, cfg_b, lab, listings, other, "app2", kill_applier=True)
    finally:
        _restore(cfg_a, lab, listings, "app2")


def _restore(cfg_a, lab, listings, host: str) -> None:
    """Back to config A on host whatever a failed test left (a pending apply, another table)."""
    if rampart_listing(lab, host) == listings[host]:
        return
    fw(lab, host, "confirm", "--state-dir", state(host))  # ends a pending apply, if any
    r = apply(cfg_a, lab, host)
    h.check(r.returncode == 0 and rampart_listing(lab, host) == listings[host], f"cannot restore {host}: {out(r)}")


def test_confirm_keeps_then_rollback_restores(bg, cfg_a, cfg_b, lab, listings, other):
    host = "app2"
    p = background(bg, lab, host, "apply", "-c", cfg_b, "--host", host, "--state-dir", state(host),
                   "--confirm", f"{CONFIRM_WINDOW:g}s")
    in_force, _ = wait_for(lambda: p.poll() not in (None, 0) or _policy_b_in_force(lab, listings, host), 20.0, 0.05)
    h.check(p.poll() in (None, 0) and in_force, f"apply --confirm: exit {p.poll()}, in force {in_force}: "
                                                f"{bg_output(bg, p)}")
    r = fw(lab, host, "confirm", "--state-dir", state(host))
    h.check(r.returncode == 0, f"confirm: {out(r)}")
    try:
        rc = p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        rc = None
    h.check(rc == 0, f"apply --confirm did not end with 0 after confirm: {rc}: {bg_output(bg, p)}")
    kept = rampart_listing(lab, host)
    time.sleep(CONFIRM_WINDOW + 1.5)
    h.check(rampart_listing(lab, host) == kept and probe(lab, "client", host, SSH, 0.9) == "open",
            "the confirmed policy was reverted after its window")
    d = fw(lab, host, "diff", "-c", cfg_b, "--host", host)
    h.check(d.returncode == 0, f"diff against the confirmed policy: {out(d)}")
    r = fw(lab, host, "rollback", "--state-dir", state(host))
    h.check(r.returncode == 0, f"rollback: {out(r)}")
    h.check(rampart_listing(lab, host) == listings[host], "rollback did not restore the previous table")
    h.check(probe(lab, "client", host, SSH) == "timeout", "client->app2:22 still connects after rollback")
    h.check(probe(lab, "gw1", host, APP_PORT, 2.0) == "open", "gw1->app2:8080 broken after rollback")
    d = fw(lab, host, "diff", "-c", cfg_a, "--host", host)
    h.check(d.returncode == 0, f"diff against the restored policy: {out(d)}")
    check_other_tables(lab, other, host, "by confirm and rollback")


def _input_chain(lab, host: str) -> str:
    doc = json.loads(nft(lab, host, "-j", "list", "chains", "inet").stdout)
    for item in doc.get("nftables", []):
        c = item.get("chain")
        if c and c.get("table") == "rampart" and c.get("hook") == "input":
            return c["name"]
    raise AssertionError(f"{host}: no input chain in table inet rampart")


def test_diff_detects_a_rule_added_by_hand(cfg_a, cfg_b, lab):
    host = "db1"
    d = fw(lab, host, "diff", "-c", cfg_a, "--host", host)
    h.check(d.returncode == 0, f"diff before any change: {out(d)}")
    chain = _input_chain(lab, host)
    nft(lab, host, "add", "rule", "inet", "rampart", chain, "tcp", "dport", "7", "counter", "accept")
    d = fw(lab, host, "diff", "-c", cfg_a, "--host", host)
    h.check(d.returncode == 1, f"diff after a rule was added by hand must exit 1: {out(d)}")
    # the added rule, as nft syntax or as libnftnl's expressions (port 7 in network order)
    h.check(re.search(r"dport 7\b|0x00000700", d.stdout + d.stderr), f"diff does not show the added rule: {out(d)}")
    handles = [re.search(r"# handle (\d+)", line) for line in
               nft(lab, host, "-a", "list", "chain", "inet", "rampart", chain).stdout.splitlines() if "dport 7 " in line]
    h.check(handles and handles[0], "cannot find the hand-made rule's handle")
    nft(lab, host, "delete", "rule", "inet", "rampart", chain, "handle", handles[0].group(1))
    d = fw(lab, host, "diff", "-c", cfg_a, "--host", host)
    h.check(d.returncode == 0, f"diff after the hand-made rule was removed: {out(d)}")
    d = fw(lab, host, "diff", "-c", cfg_b, "--host", host)
    h.check(d.returncode == 1, f"diff against another policy must exit 1: {out(d)}")
    d = fw(lab, host, "diff", "-c", str(h.temp_dir() / "missing.yaml"), "--host", host)
    h.check(d.returncode == 2, f"diff with a missing config must exit 2: {out(d)}")


def test_lint_refuses_before_touching_the_kernel(cfg_a, cfg_lint, lab):
    host = "db2"
    gen, text = netns.nft_genid(lab, host), whole_ruleset(lab, host)
    r = fw(lab, host, "plan", "-c", cfg_lint, "--host", host)
    h.check(r.returncode == 1, f"plan with no admin network must exit 1: {out(r)}")
    r = apply(cfg_a, lab, host, cfg_lint)
    h.check(r.returncode == 1, f"apply with no admin network must exit 1: {out(r)}")
    h.check("admin" in r.stderr.lower(), f"the lint error does not name the admin networks: {out(r)}")
    r = fw(lab, host, "apply", "-c", cfg_a, "--host", "nosuchhost", "--state-dir", state(host))
    h.check(r.returncode != 0, f"apply --host of an unknown server: {out(r)}")
    h.check(netns.nft_genid(lab, host) == gen and whole_ruleset(lab, host) == text, "a refused apply changed the kernel")


def test_without_cap_net_admin_nothing_changes(cfg_b, lab):
    host = "db2"
    gen, text = netns.nft_genid(lab, host), whole_ruleset(lab, host)
    drop = ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--"]
    r = fw(lab, host, "apply", "-c", cfg_b, "--host", host, "--state-dir", state(host), wrap=drop)
    h.check(r.returncode == 1, f"apply without CAP_NET_ADMIN must exit 1: {out(r)}")
    h.check(re.search(r"cap_net_admin|permission|not permitted", r.stderr, re.I),
            f"no clear error without CAP_NET_ADMIN: {out(r)}")
    h.check(netns.nft_genid(lab, host) == gen and whole_ruleset(lab, host) == text,
            "an apply without CAP_NET_ADMIN changed the kernel")
    h.check(probe(lab, "client", host, SSH) == "timeout", "client->db2:22 connects after a failed apply")


def test_tables_rampart_does_not_own_survived_everything(lab, other):
    for host in SERVERS:
        check_other_tables(lab, other, host, "during the run")
        h.check(nft(lab, host, "list", "table", "inet", "rampart", check=False).returncode == 0,
                f"{host}: table inet rampart missing at the end")
