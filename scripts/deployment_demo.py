#!/usr/bin/env python3
"""The whole deployment of www.foobar.com in network namespaces: what ./scripts/demo.sh runs as root.

    python3 scripts/deployment_demo.py --rampart BIN [--requests N] [--fault KIND]

Hosts (one network namespace each, on one bridge; TEST-NET addresses of
config/examples/foobar.yaml; a unique name prefix per run):

    client  192.0.2.100  curl https://www.foobar.com, resolved to the VIP
    gw1     192.0.2.11   rampart serve + keepalived (priority 150)   } a VRRP pair on the
    gw2     192.0.2.12   rampart serve + keepalived (priority 100)   } VIP 192.0.2.10
    app1    192.0.2.21   www.foobar.com's app (tests/support/foobar_app.py) on :8080
    app2    192.0.2.22   the same app on :8080
    db1     192.0.2.31   MariaDB, the primary, on :3306 (the app writes each visit here)
    db2     192.0.2.32   MariaDB, its replica (binary-log replication), on :3306 (the app reads here)

One deployment file for every host (servers and roles, gateway, firewall, ha). Each server's
firewall is applied from it (``rampart firewall apply --host NAME``), the keepalived.conf of each
gateway is rendered from it (``rampart ha render``), then one connect per flow shows the firewall
roles (the client cannot reach the databases; app servers can), real MySQL logins show them for
the database tier (an app logs in; the client and a gateway are dropped, with the nftables counter
that dropped them) and replication runs through db1's firewall, and the client fetches
https://www.foobar.com through the VIP (each fetch writes a visit to the primary and reads the
count from the replica) while the demo takes the MASTER down (default: power off, i.e. link down
and rampart + keepalived SIGKILL) and shows the backup taking over.

Without --requests it fetches once a second until Ctrl-C (at most an hour): the MASTER goes down
after 5 fetches, comes back 8 fetches after the takeover (as BACKUP: no preemption). With
--requests N: N fetches (half before the fault, half after the takeover, plus the fast fetches
that probe the failover), then exit 0 if every fetch but the probes was answered through the
expected gateway (the MASTER before the fault, the backup after it), 1 otherwise.

Exit 77 with ``SKIP: ...`` when this machine cannot run it (not root, no ip netns, no keepalived,
nft or MariaDB): demo.sh then runs the loopback demo. Everything is torn down on exit, also on failure
and Ctrl-C; only processes started here are stopped, by PID.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
import ha_lab  # noqa: E402
import mariadb  # noqa: E402
import netns  # noqa: E402

HOSTS = {**ha_lab.HOSTS, **ha_lab.DB_HOSTS}
FIREWALL = {"admin_networks": ["198.51.100.0/24"], "ssh_port": 22, "db_port": 3306,
            "conn_rate": {"rate": "50/second", "burst": 100}}
APP_PORT, DB_PORT = 8080, 3306
FAULT_HELP = {
    "power": "power off: link down, rampart and keepalived SIGKILL",
    "rampart": "rampart SIGKILL",
    "keepalived": "keepalived SIGKILL",
    "link": "link down",
}
MAX_INTERACTIVE_FETCHES = 3600   # about an hour at one a second
PROBE_PERIOD_S = 0.1             # fetches while the failover is under way
PROBE_LIMIT_S = 15.0


def say(msg: str = "") -> None:
    print(msg, flush=True)


def drop_counter(lab: ha_lab.HaLab, host: str) -> int:
    """Packets counted by the 'default drop' rule of the host's table inet rampart."""
    r = lab.lab.exec(host, ["nft", "list", "chain", "inet", "rampart", "input"], timeout=30)
    for line in r.stdout.splitlines():
        if '"default drop"' in line and "counter packets" in line:
            words = line.split()
            return int(words[words.index("packets") + 1])
    return 0


class Demo:
    def __init__(self, args) -> None:
        self.args = args
        self.lab = ha_lab.HaLab("rdemo", args.rampart, hosts=HOSTS, http_port=80, firewall=FIREWALL, log=say)
        self.down: set[str] = set()     # gateways taken down by the demo
        self.fetches = 0
        self.visits = "?"               # the X-Visits of the last answer

    # -- set-up -------------------------------------------------------------------

    def build(self) -> None:
        lab = self.lab
        lab.up()
        config = lab.configure()
        self.macs = {}
        for gw in ha_lab.GATEWAYS:
            r = lab.lab.exec(gw, ["ip", "-o", "link", "show", lab.ifname(gw)], check=True)
            words = r.stdout.split()
            self.macs[gw] = words[words.index("link/ether") + 1]
        say(f"== www.foobar.com, the whole deployment, in network namespaces {lab.lab.prefix}-* ==")
        say()
        say("   client  192.0.2.100   curl https://www.foobar.com (resolved to the VIP)")
        say("   gw1     192.0.2.11    gateway: rampart + keepalived, priority 150   VIP 192.0.2.10")
        say("   gw2     192.0.2.12    gateway: rampart + keepalived, priority 100")
        say("   app1    192.0.2.21    app: www.foobar.com's app on :8080 (visits: write db1, read db2)")
        say("   app2    192.0.2.22    app: the same app on :8080")
        say("   db1     192.0.2.31    db-primary: MariaDB on :3306")
        say("   db2     192.0.2.32    db-replica: MariaDB on :3306, replicating db1")
        say()
        say(f"One deployment file for every host ({config}; RAMPART_KEEP_TMP=1 keeps it); rampart check:")
        r = subprocess.run([lab.bin, "check", "-c", config], capture_output=True, text=True, timeout=30)
        keep = False
        for line in r.stdout.splitlines():
            if not line.startswith(" "):
                keep = line.split(" ", 1)[0] in ("site", "servers", "listen", "pool", "firewall", "ha")
            if keep:
                say("   " + line)
        say()

        say("Firewall: rampart firewall apply -c FILE --host NAME, in each server's namespace")
        for host in ha_lab.ROLES:
            lab.apply_firewall(host)
            say(f"   {host:<5} {ha_lab.ROLES[host]:<10}  table inet rampart: {lab.firewall_rules(host)} rules, "
                f"input policy drop")
        say()

        t0 = time.monotonic()
        lab.start_databases()
        say(f"Databases: mariadbd on db1 (primary) and db2 (replica), replication started, schema "
            f"foobar.visits and the app user made on db1 and replicated to db2 ({time.monotonic() - t0:.1f} s)")
        lab.start_apps(site=True)
        say("Services: app1, app2 answer on :8080; GET /health there fails when a database does not answer")
        say("HA: rampart ha render --node gw1|gw2 -> keepalived.conf (keepalived --config-test: ok); "
            "starting rampart serve and keepalived on both gateways")
        lab.start_pair()
        master = lab.wait_master(20)
        other = "gw2" if master == "gw1" else "gw1"
        deadline = time.monotonic() + 10
        while lab.ha_status(other).get("state") != "BACKUP":
            if time.monotonic() > deadline:
                raise ha_lab.LabError(f"{other} is not BACKUP after 10 s")
            time.sleep(0.1)
        say(f"   {master} is MASTER and holds the VIP {lab.vip}; {other} is BACKUP "
            f"(rampart ha status on each)")
        say()

    def firewall_proof(self) -> bool:
        """One connect per flow (0.5 s), all at once: what the roles allow and what they drop."""
        lab = self.lab
        flows = [
            ("client", "db1", DB_PORT, False, "the client cannot reach the database primary"),
            ("client", "db2", DB_PORT, False, "nor the replica"),
            ("client", "app1", APP_PORT, False, "nor an app server directly"),
            ("gw1", "db1", DB_PORT, False, "a gateway has no business with the database"),
            ("gw1", "app1", APP_PORT, True, "gateway -> app"),
            ("gw2", "app2", APP_PORT, True, "gateway -> app"),
            ("app1", "db1", DB_PORT, True, "app -> primary"),
            ("app2", "db1", DB_PORT, True, "app -> primary"),
            ("app1", "db2", DB_PORT, True, "app -> replica (reads)"),
            ("db2", "db1", DB_PORT, True, "replica -> primary (replication)"),
        ]
        probes = [netns.Probe(src, lab.hosts[dst], port) for src, dst, port, _, _ in flows]
        got = netns.probe_tcp(lab.lab, probes, timeout=0.5)
        say("Firewall roles, one connect per flow (0.5 s timeout; every destination has a listener):")
        ok = True
        for (src, dst, port, allowed, why), probe in zip(flows, probes):
            result = got[probe]
            observed = "connected" if result == "open" else ("dropped" if result == "timeout" else result)
            good = (result == "open") == allowed and (allowed or result == "timeout")
            ok &= good
            say(f"   {src:<6} -> {dst:<4} {lab.hosts[dst]}:{port:<5} {observed:<10} "
                f"{'ok' if good else 'UNEXPECTED'}   ({why})")
        say()
        return ok

    def database_proof(self) -> bool:
        """Real MySQL logins per flow, the counter of db1's default drop, and replication's state."""
        lab = self.lab
        say("Database tier, real MySQL logins as the app user (mariadb client, 2 s to connect):")
        ok = True
        for src, db, allowed, why in (("app1", "db1", True, "app -> primary"),
                                      ("app2", "db2", True, "app -> replica (reads)"),
                                      ("client", "db1", False, "the client has no business with the database"),
                                      ("gw1", "db1", False, "nor has a gateway")):
            before = drop_counter(lab, db)
            logged_in, said = lab.mysql_login(src, db, timeout=2)
            dropped = drop_counter(lab, db) - before
            good = logged_in == allowed and (allowed or dropped > 0)
            ok &= good
            last = said.splitlines()[-1][:64].strip() if said else ""
            what = f"logged in, {said} visits" if logged_in else f"no login ({last})"
            extra = "" if allowed else f"; db1's 'default drop' counted {dropped} packets" if db == "db1" else ""
            say(f"   {src:<6} -> {db}  {what}{extra}   {'ok' if good else 'UNEXPECTED'}   ({why})")
        st = mariadb.replica_status(lab.databases["db2"])
        running = st.get("Slave_IO_Running") == "Yes" and st.get("Slave_SQL_Running") == "Yes"
        ok &= running
        say(f"   db2 SHOW SLAVE STATUS: Slave_IO_Running: {st.get('Slave_IO_Running')}, Slave_SQL_Running: "
            f"{st.get('Slave_SQL_Running')}, Master_Host: {st.get('Master_Host')} (through db1's firewall)   "
            f"{'ok' if running else 'UNEXPECTED'}")
        say()
        return ok

    # -- fetching -------------------------------------------------------------------

    def serving(self) -> str:
        """The gateway the client's packets to the VIP go to: the owner of the MAC address in the
        client's neighbour entry for the VIP (what the gratuitous ARP of a takeover changes)."""
        r = subprocess.run(["ip", "-n", self.lab.lab.ns("client"), "neigh", "show", self.lab.vip],
                           capture_output=True, text=True, timeout=10)
        words = r.stdout.split()
        mac = words[words.index("lladdr") + 1] if "lladdr" in words[:-1] else ""
        for gw, gw_mac in self.macs.items():
            if mac == gw_mac:
                return gw
        now = [gw for gw in self.lab.holders() if gw not in self.down]
        return "+".join(now) if now else "nobody"

    def curl(self, url: str, *extra: str, max_time: float = 2.0, connect_timeout: float = 1.0):
        """curl in the client namespace: (exit code, status, X-Backend, Location, seconds, error);
        the X-Visits header, when there is one, goes to self.visits."""
        port = 80 if url.startswith("http:") else 443
        argv = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "--max-time", str(max_time),
                "--connect-timeout", str(connect_timeout), "--resolve", f"www.foobar.com:{port}:{self.lab.vip}",
                "--cacert", str(self.lab.certs.ca), "-w", "time=%{time_total}\n", *extra, url]
        try:
            r = self.lab.lab.exec("client", argv, timeout=max_time + 5)
        except AssertionError as e:
            return 28, 0, "", "", max_time, str(e)
        status, backend, location, took = 0, "", "", 0.0
        for line in r.stdout.splitlines():
            line = line.strip()
            low = line.lower()
            if line.startswith("HTTP/"):
                parts = line.split()
                status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            elif low.startswith("x-backend:"):
                backend = line.split(":", 1)[1].strip()
            elif low.startswith("x-visits:"):
                self.visits = line.split(":", 1)[1].strip()
            elif low.startswith("location:"):
                location = line.split(":", 1)[1].strip()
            elif line.startswith("time="):
                took = float(line[5:])
        err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        return r.returncode, status, backend, location, took, err

    def fetch(self, label: str = "", quick: bool = False) -> tuple[bool, str, str]:
        """One fetch of https://www.foobar.com/demo/N through the VIP, printed. (ok, app, gateway)"""
        self.fetches += 1
        n = self.fetches
        kw = {"max_time": 1.0, "connect_timeout": 0.3} if quick else {}
        rc, status, backend, _, took, err = self.curl(f"https://www.foobar.com/demo/{n}", **kw)
        via = self.serving()
        ok = rc == 0 and status == 200
        if ok:
            say(f"   fetch {n:<3} {status}  answered by {backend:<4}  via {via:<4}  {took * 1000:4.0f} ms  "
                f"visits {self.visits:>4} (on the replica){label}")
        else:
            say(f"   fetch {n:<3} ---  failed: {err or f'curl exit {rc}, status {status}'}{label}")
        return ok, backend, via

    # -- the failover -----------------------------------------------------------------

    def take_down(self, master: str) -> dict:
        """Faults the MASTER, fetches every 0.1 s until one succeeds through the backup, and
        reports the takeover: {'backup', 'vip_s', 'back_s', 'failed'}; raises if none in 15 s."""
        lab = self.lab
        kind = self.args.fault
        backup = "gw2" if master == "gw1" else "gw1"
        say(f"== Taking the MASTER {master} down ({FAULT_HELP[kind]}); {backup} must take over ==")
        t_vip: list[float] = []

        def watch() -> None:
            for _ in range(int(PROBE_LIMIT_S / 0.02)):
                if lab.holds_vip(backup):
                    t_vip.append(time.monotonic())
                    return
                if time.monotonic() - t_fault > PROBE_LIMIT_S:
                    return
                time.sleep(0.02)

        t_fault = time.monotonic()
        lab.inject("power" if kind == "power" else kind, master)
        if kind in ("power", "link"):
            self.down.add(master)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        failed = 0
        probes = 0
        back = None
        for _ in range(int(PROBE_LIMIT_S / PROBE_PERIOD_S)):
            t0 = time.monotonic()
            probes += 1
            ok, _, via = self.fetch("   (failover probe)", quick=True)
            if ok and via == backup:
                back = time.monotonic() - t_fault
                break
            failed += not ok
            if time.monotonic() - t_fault > PROBE_LIMIT_S:
                break
            time.sleep(max(0.0, PROBE_PERIOD_S - (time.monotonic() - t0)))
        watcher.join(timeout=PROBE_LIMIT_S + 1)
        if not t_vip or back is None:
            raise ha_lab.LabError(f"{backup} did not take over within {PROBE_LIMIT_S:.0f} s")
        st = lab.ha_status(backup)
        vip_s = t_vip[0] - t_fault
        say(f"   {backup} holds the VIP {vip_s * 1000:.0f} ms after the fault "
            f"(rampart ha status on {backup}: state {st.get('state')}, vip {st.get('vip')});")
        say(f"   the first fetch through it succeeded {back * 1000:.0f} ms after the fault; "
            f"{failed} of {probes} probe fetches failed")
        say()
        return {"backup": backup, "vip_s": vip_s, "back_s": back, "failed": failed, "probes": probes}

    def bring_back(self, gw: str, now_master: str) -> None:
        kind = self.args.fault
        say(f"== {gw} comes back ({'powered on' if kind == 'power' else 'repaired'}) ==")
        self.lab.repair(kind, gw)
        self.down.discard(gw)
        self.lab.wait_rejoined(gw)
        holders = self.lab.holders()
        say(f"   {gw} rejoined as BACKUP; the VIP stays on {'+'.join(holders)} (no preemption, no flapping)")
        say()

    # -- the two modes --------------------------------------------------------------------

    def show_redirect(self) -> None:
        rc, status, _, location, _, err = self.curl("http://www.foobar.com/hello")
        if rc == 0:
            say(f"   http://www.foobar.com/hello -> {status} Location: {location}")
        else:
            say(f"   http://www.foobar.com/hello failed: {err}")

    def run_requests(self, n: int) -> int:
        before = max(1, math.ceil(n / 2))
        after = n - before
        say(f"The client fetches https://www.foobar.com through the VIP {self.lab.vip} "
            f"({before} before the fault, {after} after the takeover):")
        self.show_redirect()
        good = 0
        apps = set()
        master = self.lab.holders()[0]
        for _ in range(before):
            ok, app, via = self.fetch()
            good += ok and via == master
            apps.add(app)
            time.sleep(0.3)
        say()
        t = self.take_down(master)
        for _ in range(after):
            ok, app, via = self.fetch()
            good += ok and via == t["backup"]
            apps.add(app)
            time.sleep(0.3)
        say()
        apps.discard("")
        say(f"demo: {good} of {n} fetches answered as expected ({before} via {master} before the fault, {after} via "
            f"{t['backup']} after the takeover), by {' and '.join(sorted(apps)) or 'nobody'}; {master} went down "
            f"({FAULT_HELP[self.args.fault]}), {t['backup']} held the VIP {t['vip_s'] * 1000:.0f} ms later and "
            f"answered {t['back_s'] * 1000:.0f} ms after the fault ({t['failed']} of {t['probes']} probe fetches "
            f"failed in between)")
        return 0 if good == n else 1

    def run_forever(self) -> int:
        say(f"The client fetches https://www.foobar.com through the VIP {self.lab.vip} once a second "
            f"(Ctrl-C to stop; at most an hour). The MASTER goes down after 5 fetches.")
        self.show_redirect()
        master = self.lab.holders()[0]
        took_over_at = None
        for i in range(MAX_INTERACTIVE_FETCHES):
            if i == 5:
                say()
                t = self.take_down(master)
                took_over_at = self.fetches
            if took_over_at is not None and self.fetches == took_over_at + 8:
                say()
                self.bring_back(master, t["backup"])
                took_over_at = None
            self.fetch()
            time.sleep(1)
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description="The whole deployment of www.foobar.com in network namespaces.")
    ap.add_argument("--rampart", default=str(ROOT / "build" / "cmd" / "rampart"), help="the rampart binary")
    ap.add_argument("--requests", type=int, default=0, help="N fetches, then exit 0/1 (N >= 2)")
    ap.add_argument("--fault", choices=list(FAULT_HELP), default="power",
                    help="how the MASTER goes down (default: power)")
    args = ap.parse_args()
    if args.requests == 1 or args.requests < 0:
        print("deployment_demo: --requests needs at least 2 (before and after the failover)", file=sys.stderr)
        return 2
    reason = ha_lab.skip_reason(need_nft=True, rampart_bin=args.rampart)
    if reason:
        print(f"SKIP: {reason}", flush=True)
        return 77
    if shutil.which("curl") is None:
        print("SKIP: curl not found", flush=True)
        return 77
    reason = mariadb.skip_reason()
    if reason:
        print(f"SKIP: {reason}", flush=True)
        return 77

    netns.install_signal_handlers()
    demo = Demo(args)
    rc = 1
    try:
        demo.build()
        firewall_ok = demo.firewall_proof()
        firewall_ok &= demo.database_proof()
        rc = demo.run_requests(args.requests) if args.requests else demo.run_forever()
        if not firewall_ok:
            say("demo: a firewall flow was not what the roles say")
            rc = 1
    except KeyboardInterrupt:
        say()
        say("demo: interrupted")
        rc = 130
    except ha_lab.LabError as e:
        say(f"demo: {e}")
        for p in list(demo.lab.rampart.values()) + list(demo.lab.keepalived.values()):
            excerpt = p.stderr_excerpt(8)
            if excerpt:
                say(excerpt.lstrip("\n"))
        rc = 1
    finally:
        say("demo: tearing down (processes by PID, then the namespaces)")
        for problem in demo.lab.close():
            say(f"demo: cleanup: {problem.splitlines()[0]}")
        left = [n for n in netns.netns_names() if demo.lab.lab and n.startswith(demo.lab.lab.prefix + "-")]
        if left:
            say(f"demo: namespaces left behind: {left}")
            rc = rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
