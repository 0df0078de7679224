"""A VRRP gateway pair in network namespaces, for the HA integration test, the HA benchmark and
the deployment demo.

The lab of tests/integration/test_ha.py (which builds it from here and keeps only its
assertions), bench/ha/failover_bench.py and scripts/deployment_demo.py, as a reusable object:
one namespace per host on one bridge (tests/support/netns.py), TEST-NET addresses only, the
real ``rampart serve`` and the real keepalived on each gateway with the keepalived.conf that
``rampart ha render`` writes from the one deployment file, the sample app
(tests/support/backend.py) on the app servers, optionally the seed's database tier (either TCP
listeners on 3306 standing in for it, or real MariaDB: db1 the primary, db2 its replica, with
www.foobar.com's application tests/support/foobar_app.py on the app servers) and every server's
firewall (``rampart firewall apply --host NAME``).

    lab = HaLab("rhab", rampart_bin, hosts=HOSTS)
    lab.up(); lab.configure(advert_int="1s"); lab.start_apps(); lab.start_pair()
    master = lab.wait_master()
    result = lab.failover("link")          # fault the MASTER, measure, repair
    lab.close()                            # also at exit, SIGINT, SIGTERM (netns / harness)

A test that asserts on the figures before the repair splits the last step:

    result = lab.failover("link", repair=False)   # fault the MASTER and measure
    ...                                           # check result.first_ok_s, result.via_backup_s
    lab.rejoin(result)                            # repair, no preemption, one VIP holder

Fault kinds (``FAULTS``), each applied to the current MASTER and repaired after the takeover:
rampart SIGKILL, keepalived SIGKILL, link down, all backends lost (blackhole routes to the app
servers on that gateway only), admin release (POST /api/ha/release), and the whole gateway
powered off (rampart and keepalived SIGKILL, link down).

Rules (DESIGN.md, "Test hosts"): traffic only between the lab's namespaces; every wait and loop
is bounded in count and time; only processes started here are signalled, by PID; the
namespaces (and with them every link) are removed at exit, also on failure.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness as h
import mariadb
import netns

GATEWAYS = ("gw1", "gw2")
HOSTS = {
    "client": "192.0.2.100",
    "gw1": "192.0.2.11",
    "gw2": "192.0.2.12",
    "app1": "192.0.2.21",
    "app2": "192.0.2.22",
}
DB_HOSTS = {"db1": "192.0.2.31", "db2": "192.0.2.32"}
SITE_APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "foobar_app.py")
ROLES = {"gw1": "gateway", "gw2": "gateway", "app1": "app", "app2": "app", "db1": "db-primary",
         "db2": "db-replica"}
VIP = "192.0.2.10"

FAULTS = {
    "rampart": "rampart SIGKILL",
    "keepalived": "keepalived SIGKILL",
    "link": "link down",
    "backends": "all backends lost",
    "release": "admin release",
    "power": "gateway powered off",
}

CLIENT_PERIOD_S = 0.02      # one new HTTPS connection to the VIP every ~20 ms
CONNECT_TIMEOUT_S = 0.25
REQUEST_TIMEOUT_S = 0.5     # a request caught in flight by the takeover fails after this
MAX_LOOP_S = 20.0           # a client loop never runs longer than this
TAKEOVER_LIMIT_S = 15.0     # no takeover within this: the failover failed

# Pool health checks: fast, so that losing the backends is seen within ~0.4 s (fall 2 x 200 ms).
POOL_HEALTH = {"interval": "200ms", "timeout": "150ms", "rise": 2, "fall": 2}


class LabError(RuntimeError):
    pass


@dataclass
class Failover:
    """One measured failover; times in seconds after the fault."""
    kind: str
    master: str
    backup: str
    vip_s: float | None = None          # the backup holds the VIP
    first_ok_s: float | None = None     # first success that started after the fault (the old MASTER
                                        # may still serve some, as when only its keepalived died)
    back_s: float | None = None         # end of the client's outage (0: no request failed)
    via_backup_s: float | None = None   # first success that started once the backup held the VIP
    failed: int = 0                     # failed requests that ended after the fault
    total: int = 0
    error: str | None = None
    t_fault: float = 0.0                # when the fault was injected (time.monotonic)
    samples: int = 0                    # both nodes sampled, from the fault until the measurement ends
    two_holders: int = 0                # of those, samples in which both held the VIP


@dataclass
class ClientLoop:
    """HTTPS GET / to the VIP from the client namespace, one new connection every ~20 ms, bounded."""
    lab: "HaLab"
    results: list = field(default_factory=list)   # (start, end, ok)
    stop_flag: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def run(self) -> None:
        deadline = time.monotonic() + MAX_LOOP_S
        for _ in range(int(MAX_LOOP_S / CLIENT_PERIOD_S)):
            if self.stop_flag.is_set() or time.monotonic() > deadline:
                return
            t0 = time.monotonic()
            ok = self.lab.fetch_ok()
            self.results.append((t0, time.monotonic(), ok))
            time.sleep(max(0.0, CLIENT_PERIOD_S - (time.monotonic() - t0)))

    def start(self) -> "ClientLoop":
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        if self.thread:
            self.thread.join(timeout=MAX_LOOP_S + 5)

    def first_success_after(self, t: float) -> float | None:
        return next((end for start, end, ok in list(self.results) if ok and start >= t), None)


class HaLab:
    """See the module comment. Not thread-safe except fetch_ok(), holders() and holds_vip()."""

    def __init__(self, tag: str, rampart_bin: str | Path, *, hosts: dict[str, str] | None = None,
                 vip: str = VIP, vrid: int = 42, https_port: int = 443, http_port: int | None = None,
                 admin_port: int = 9100, app_port: int = 8080, db_port: int = 3306,
                 firewall: dict | None = None, workers: int = 2, peer_check: str | None = None,
                 log=None) -> None:
        os.environ["RAMPART_BIN"] = str(rampart_bin)  # harness.make_certs and friends read it
        self.bin = str(rampart_bin)
        self.tag = tag
        self.hosts = dict(hosts or HOSTS)
        self.vip = vip
        self.vrid = vrid
        self.https_port, self.http_port, self.admin_port = https_port, http_port, admin_port
        self.app_port, self.db_port = app_port, db_port
        self.firewall = firewall
        self.workers = workers
        self.peer_check = peer_check  # ha.peer_check.interval, or None for no peer check
        self.log = log or (lambda msg: print(msg, flush=True))
        self.apps = [n for n in self.hosts if ROLES.get(n) == "app"]
        self.dbs = [n for n in self.hosts if ROLES.get(n, "").startswith("db-")]
        self.lab: netns.Lab | None = None
        self.tmp = h.temp_dir()
        self.rampart: dict[str, h.Process] = {}
        self.keepalived: dict[str, h.Process] = {}
        self.backends: dict[str, h.Backend] = {}
        self.db_listeners: netns.TcpListeners | None = None
        self.databases: dict[str, mariadb.MariaDB] = {}
        self.site_apps: dict[str, h.Process] = {}
        self.config: str | None = None
        self.conf: dict[str, str] = {}
        self.advert_int: str | None = None
        self.closed = False

    # -- building ---------------------------------------------------------------

    def up(self) -> "HaLab":
        """Namespaces and links, development certificates, the shared ticket secret."""
        try:
            pwd.getpwnam("nobody")
            self.user = "nobody"
        except KeyError:
            self.user = ""
        self.state_dir = self.tmp / "ha-state"
        self.certs = h.make_certs(self.tmp / "certs")
        self.tls = h.client_context(self.certs.ca)
        self.secret = self.tmp / "ticket.secret"
        self.secret.write_text(os.urandom(32).hex() + "\n")
        os.chmod(self.secret, 0o600)
        self.peer_secret = self.tmp / "peer.secret"
        self.peer_secret.write_text(os.urandom(32).hex() + "\n")
        os.chmod(self.peer_secret, 0o600)
        self.lab = netns.Lab(self.tag)
        for name, addr in self.hosts.items():
            self.lab.add_host(name, addr)
        self.lab.up()
        return self

    def ifname(self, host: str) -> str:
        return self.lab.hosts[host].ifname

    def deployment(self, advert_int: str | None = None) -> dict:
        """The one deployment file of the lab (every host gets the same), as a dict."""
        servers = {}
        for name in self.hosts:
            if name not in ROLES:
                continue
            servers[name] = {"address": self.hosts[name], "role": ROLES[name]}
            if ROLES[name] == "app":
                servers[name]["port"] = self.app_port
        listen = {"https": f"0.0.0.0:{self.https_port}"}
        if self.http_port:
            listen["http"] = f"0.0.0.0:{self.http_port}"
        # The peer check asks the other gateway's admin listener at its own address.
        listen["admin"] = f"{'0.0.0.0' if self.peer_check else '127.0.0.1'}:{self.admin_port}"
        ha = {
            "vip": f"{self.vip}/24",
            "interface": self.ifname("gw1"),
            "virtual_router_id": self.vrid,
            # Each keepalived has pid files of its own here (several run on this machine): the
            # master removes a VIP its dead keepalived left behind.
            "nodes": {gw: {"priority": prio, "interface": self.ifname(gw),
                           "keepalived_pid_file": str(self._keepalived_dir(gw) / "vrrp.pid")}
                      for gw, prio in (("gw1", 150), ("gw2", 100))},
        }
        if advert_int:
            ha["advert_int"] = advert_int
        ha.update({
            "state_dir": str(self.state_dir),
            "ticket_secret_file": str(self.secret),
            # keepalived's track_process needs the kernel's process connector, which exists only
            # in the initial network namespace; here the master's sentinel reports its death.
            "health": {"track_process": False},
        })
        if self.peer_check:
            ha["peer_check"] = {"secret_file": str(self.peer_secret), "interval": self.peer_check}
        config = {
            "site": h.SITE,
            "servers": servers,
            "gateway": {
                "listen": listen,
                "workers": self.workers,
                "user": self.user,
                "tls": {"certificates": self.certs.certificates},
                "pools": {"app": {"balance": "round_robin", "servers": list(self.apps),
                                  "health": dict(POOL_HEALTH)}},
                "timeouts": {**h.DEFAULT_TIMEOUTS, "handshake": "3s", "header": "3s", "drain": "1s",
                             "upstream_connect": "500ms"},
                "limits": dict(h.DEFAULT_LIMITS),
            },
        }
        if self.firewall:
            config["firewall"] = dict(self.firewall)
        config["ha"] = ha
        return config

    def configure(self, advert_int: str | None = None) -> str:
        """Writes the deployment file, checks it, renders and config-tests keepalived.conf per gateway."""
        self.advert_int = advert_int
        suffix = advert_int or "default"
        self.config = str(h.write_config(self.tmp / f"deploy-{suffix}.yaml", self.deployment(advert_int)))
        r = subprocess.run([self.bin, "check", "-c", self.config], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise LabError(f"rampart check rejects {self.config}: {_out(r)}")
        for gw in GATEWAYS:
            d = self.tmp / f"render-{gw}-{suffix}"
            r = subprocess.run([self.bin, "ha", "render", "-c", self.config, "--node", gw, "--out", str(d)],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise LabError(f"rampart ha render --node {gw}: {_out(r)}")
            self.conf[gw] = str(d / "keepalived.conf")
            r = self.lab.exec(gw, ["keepalived", "--config-test", "-f", self.conf[gw]], timeout=30)
            if r.returncode != 0:
                raise LabError(f"keepalived --config-test on {gw}'s file: {_out(r)}")
        return self.config

    def apply_firewall(self, host: str) -> str:
        """``rampart firewall apply -c FILE --host NAME`` inside the host's namespace; its output."""
        state = self.tmp / f"firewall-{host}"
        state.mkdir(exist_ok=True)
        r = self.lab.exec(host, [self.bin, "firewall", "apply", "-c", self.config, "--host", host,
                                 "--state-dir", state], timeout=60)
        if r.returncode != 0:
            raise LabError(f"rampart firewall apply --host {host}: {_out(r)}")
        return r.stdout

    def firewall_rules(self, host: str) -> int:
        """Rules in the host's table inet rampart (nft inside its namespace)."""
        r = self.lab.exec(host, ["nft", "list", "table", "inet", "rampart"], timeout=30)
        return sum(1 for line in r.stdout.splitlines() if " counter packets " in line)

    # -- processes ----------------------------------------------------------------

    def start_apps(self, site: bool = False) -> None:
        """The sample app on every app server; with `site`, www.foobar.com's application on the
        databases of start_databases() (which must run first)."""
        if site:
            for app in self.apps:
                p = h.Process(self.lab.argv(app, [sys.executable, SITE_APP, "--name", app, "--port", self.app_port,
                                                  "--host", self.hosts[app], "--primary", self.hosts["db1"],
                                                  "--replica", self.hosts["db2"], "--db-port", self.db_port,
                                                  "--password-file", self.app_db_secret]), f"site-app-{app}")
                p.start()
                p.wait_output("ready\n", timeout=h.READY_TIMEOUT_S)
                self.site_apps[app] = p
            return
        for app in self.apps:
            backend = h.Backend(app, port=self.app_port, host=self.hosts[app])
            backend.process.argv = self.lab.argv(app, backend.process.argv)
            backend.process.start()
            backend.process.wait_output("ready\n", timeout=h.READY_TIMEOUT_S)
            self.backends[app] = backend

    def start_dbs(self) -> None:
        """Database stand-ins: a TCP listener on db_port in each db namespace (accept, echo)."""
        self.db_listeners = netns.TcpListeners(max_conns=64)
        for db in self.dbs:
            self.db_listeners.listen(self.lab, db, self.db_port)
        self.db_listeners.start()

    def start_databases(self) -> None:
        """MariaDB (tests/support/mariadb.py): db1 the primary, db2 its replica through binary-log
        replication, the site's schema and the app servers' user, all replicated. Raises with the
        server's log when one cannot start; mariadb.skip_reason() says beforehand whether it can."""
        self.app_db_secret = self.tmp / "app-db.secret"
        self.app_db_secret.write_text(os.urandom(16).hex() + "\n")
        os.chmod(self.app_db_secret, 0o600)
        primary = mariadb.MariaDB(self.lab, "db1", self.tmp, server_id=1, port=self.db_port)
        replica = mariadb.MariaDB(self.lab, "db2", self.tmp, server_id=2, port=self.db_port)
        self.databases = {"db1": primary, "db2": replica}
        primary.install().start(primary=True)
        replica.install().start(primary=False)
        mariadb.replicate(primary, replica, os.urandom(16).hex())
        mariadb.create_site(primary, [self.hosts[a] for a in self.apps], self.app_db_secret.read_text().strip())
        mariadb.wait_replicated(primary, replica)

    def mysql_login(self, host: str, db: str, timeout: float = 3.0) -> tuple[bool, str]:
        """A real MySQL login as the app user from `host`'s namespace to `db` (the mariadb client,
        `timeout` to connect): (logged in and counted the visits, what the client said)."""
        argv = ["mariadb", "--no-defaults", f"--connect-timeout={int(timeout)}", "-h", self.hosts[db],
                "-P", str(self.db_port), "-u", mariadb.APP_USER, "-N", "-B", "-e",
                f"SELECT COUNT(*) FROM {mariadb.SITE_DB}.visits"]
        env = {**os.environ, "MYSQL_PWD": self.app_db_secret.read_text().strip()}
        r = self.lab.exec(host, argv, timeout=timeout + 15, env=env)
        return r.returncode == 0, (r.stdout.strip() or r.stderr.strip())

    def start_rampart(self, gw: str) -> h.Process:
        p = h.Process(self.lab.argv(gw, [self.bin, "serve", "-c", self.config]), f"rampart-{gw}")
        p.start()  # ip netns exec execs rampart: the PID is the master's
        deadline = time.monotonic() + h.READY_TIMEOUT_S  # a guard against a hang
        while not (self.lab.connects(gw, "127.0.0.1", self.admin_port)
                   and self.lab.connects(gw, self.hosts[gw], self.https_port)):
            if not p.running:
                raise LabError(f"{p.name} exited with {p.poll()} before listening" + p.stderr_excerpt())
            if time.monotonic() > deadline:
                raise LabError(f"{p.name} not listening after {h.READY_TIMEOUT_S:.0f} s" + p.stderr_excerpt())
            time.sleep(0.05)
        p.remember_tree()
        self.rampart[gw] = p
        return p

    def wait_ready(self, gw: str, timeout: float = h.READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not self.admin_get(gw, "/readyz", check=False).startswith("ready"):
            if time.monotonic() > deadline:
                raise LabError(f"{gw}: /readyz not ready after {timeout:.0f} s")
            time.sleep(0.05)

    def _keepalived_dir(self, gw: str) -> Path:
        return self.tmp / f"keepalived-{gw}"

    def start_keepalived(self, gw: str) -> h.Process:
        """keepalived in the foreground (-n), VRRP only, its own pid files: several run on this machine."""
        run = self._keepalived_dir(gw)
        run.mkdir(exist_ok=True)
        # After a SIGKILL the pid files stay, and an orphaned VRRP child may linger as a zombie
        # until the namespace's init reaps it: keepalived would take it for a running daemon.
        for f in ("keepalived.pid", "vrrp.pid", "checkers.pid"):
            (run / f).unlink(missing_ok=True)
        argv = ["keepalived", "-n", "-l", "-D", "-P", "-f", self.conf[gw],
                "-p", run / "keepalived.pid", "-r", run / "vrrp.pid", "-c", run / "checkers.pid"]
        p = h.Process(self.lab.argv(gw, argv), f"keepalived-{gw}")
        p.start()
        self.keepalived[gw] = p
        deadline = time.monotonic() + h.READY_TIMEOUT_S  # a guard against a hang
        while not (run / "vrrp.pid").exists():
            if not p.running:
                raise LabError(f"{p.name} exited with {p.poll()}" + p.stderr_excerpt())
            if time.monotonic() > deadline:
                raise LabError(f"{p.name}: no VRRP process after {h.READY_TIMEOUT_S:.0f} s" + p.stderr_excerpt())
            time.sleep(0.05)
        p.remember_tree()
        return p

    def vrrp_pid(self, gw: str) -> int | None:
        try:
            return int((self._keepalived_dir(gw) / "vrrp.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def start_pair(self) -> None:
        """Rampart on both, both ready, keepalived on both; returns once both keepalived run VRRP:
        the lower priority's keepalived waits vrrp_startup_delay (2 s and 3 adverts, see
        `rampart ha render`) before it would take over, and a fault before then measures that
        delay, not the failover."""
        for gw in GATEWAYS:
            self.start_rampart(gw)
        for gw in GATEWAYS:
            self.wait_ready(gw)
        for gw in GATEWAYS:
            self.start_keepalived(gw)
        time.sleep(self.startup_delay_s())

    def startup_delay_s(self) -> float:
        """How long after its start the lower-priority node's keepalived waits before it would take
        over (vrrp_startup_delay: 2 s and 3 adverts), and a margin."""
        advert_s = float(self.advert_int[:-2]) / 1000 if (self.advert_int or "").endswith("ms") else \
            float((self.advert_int or "0.1s").rstrip("s"))
        return 2.0 + 3 * advert_s + 0.2

    def stop_pair(self) -> list[str]:
        """keepalived, then rampart, on both gateways (SIGTERM then SIGKILL, by PID). Problems found."""
        problems = []
        for group in (self.keepalived, self.rampart):
            for gw, p in list(group.items()):
                if not p.stopping:
                    try:
                        p.stop(timeout=10)
                    except h.ProcessError as e:
                        problems.append(str(e))
                else:
                    reap_tree(p)
                del group[gw]
        # A keepalived killed with SIGKILL leaves the VIP on its interface.
        for gw in GATEWAYS:
            if self.holds_vip(gw):
                self.lab.exec(gw, ["ip", "addr", "del", f"{self.vip}/24", "dev", self.ifname(gw)])
        return problems

    # -- observing ----------------------------------------------------------------

    def holds_vip(self, gw: str) -> bool:
        r = subprocess.run(["ip", "-n", self.lab.ns(gw), "-o", "-4", "addr", "show"], capture_output=True,
                           text=True, timeout=10)
        return f" {self.vip}/" in r.stdout

    def holders(self) -> list[str]:
        return [gw for gw in GATEWAYS if self.holds_vip(gw)]

    def ha_status(self, gw: str) -> dict[str, str]:
        r = self.lab.exec(gw, [self.bin, "ha", "status", "-c", self.config], timeout=20)
        if r.returncode != 0:
            raise LabError(f"rampart ha status on {gw}: {_out(r)}")
        fields = {}
        for line in r.stdout.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
        return fields

    def admin_request(self, gw: str, path: str, method: str = "GET", headers: dict | None = None,
                      from_host: str | None = None) -> h.Response:
        """One request to `gw`'s admin listener: on its loopback, or from host `from_host`'s namespace
        to gw's own address (the admin listener then has to listen there). Raises LabError when no
        whole response arrives."""
        s = self.lab.socket(from_host or gw)
        s.settimeout(5)
        data = b""
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        try:
            s.connect((self.hosts[gw] if from_host else "127.0.0.1", self.admin_port))
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n".encode())
            for _ in range(10000):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            raise LabError(f"{method} {path} on {gw}: {e}") from None
        finally:
            s.close()
        r = h.parse_head(data)
        if r is None:
            raise LabError(f"{method} {path} on {gw}: {data[:300]!r}")
        return r

    def admin_get(self, gw: str, path: str, method: str = "GET", check: bool = True) -> str:
        """The body of a 200 answer to `method path` on gw's admin listener; "" for anything else
        (or LabError when `check`)."""
        try:
            r = self.admin_request(gw, path, method)
        except LabError:
            if check:
                raise
            return ""
        if r.status != 200:
            if check:
                raise LabError(f"{method} {path} on {gw}: {r.status} {r.body[:300]!r}")
            return ""
        return r.body.decode(errors="replace")

    def wait_master(self, timeout: float = 15.0, expected: str | None = None) -> str:
        """Waits until exactly one gateway (`expected`, when given) holds the VIP and says it is
        MASTER; returns its name."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.holders()
            if (len(now) == 1 and (expected is None or now == [expected])
                    and self.ha_status(now[0])["state"].startswith("MASTER")):
                return now[0]
            if time.monotonic() > deadline:
                who = f"{expected} as the only" if expected else "a single"
                raise LabError(f"no {who} MASTER after {timeout:.0f} s (VIP held by {now})")
            time.sleep(0.05)

    def fetch_ok(self) -> bool:
        """One HTTPS GET / through the VIP from the client namespace, new connection; True on 200."""
        return self.fetch()[0] == 200

    def fetch(self, path: str = "/") -> tuple[int, str]:
        """(status or 0, X-Backend) of one HTTPS GET through the VIP, new connection, short timeouts."""
        r = self.get(path)
        return (r.status, r.header("X-Backend") or "") if r else (0, "")

    def get(self, path: str = "/") -> "h.Response | None":
        """One HTTPS GET through the VIP from the client namespace (new connection, short
        timeouts): the response, or None when there was none."""
        try:
            return self._get(path, CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S)[0]
        except (OSError, ssl.SSLError):
            return None

    def tls_get(self, session: ssl.SSLSession | None = None,
                timeout: float = 5.0) -> tuple[int, ssl.SSLSession | None, bool]:
        """One HTTPS GET / through the VIP from the client namespace on a new connection that offers
        `session` for resumption: (status or 0, the connection's session, read after the response so
        that it holds the ticket TLS 1.3 sends after the handshake, whether it was resumed).
        A connection or TLS error raises."""
        r, session, reused = self._get("/", timeout, timeout, session)
        return (r.status if r else 0), session, reused

    def _get(self, path: str, connect_timeout: float, timeout: float,
             session: ssl.SSLSession | None = None) -> tuple[h.Response | None, ssl.SSLSession | None, bool]:
        s = self.lab.socket("client")
        s.settimeout(connect_timeout)
        try:
            s.connect((self.vip, self.https_port))
            s.settimeout(timeout)
            tls = self.tls.wrap_socket(s, server_hostname=h.SITE, session=session)
            s = tls
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {h.SITE}\r\nConnection: close\r\n\r\n".encode())
            data = h.recv_until_close(tls, max_chunks=100)
            return h.parse_head(data), tls.session, tls.session_reused
        finally:
            s.close()

    # -- faults -------------------------------------------------------------------

    def _routes(self, gw: str, action: str) -> None:
        for app in self.apps:
            self.lab.exec(gw, ["ip", "route", action, "blackhole", f"{self.hosts[app]}/32"], check=True)

    def _link(self, gw: str, state: str) -> None:
        self.lab.exec(gw, ["ip", "link", "set", self.ifname(gw), state], check=True)

    def inject(self, kind: str, gw: str) -> None:
        if kind == "rampart":
            kill_hard(self.rampart[gw])
        elif kind == "keepalived":
            pid = self.vrrp_pid(gw)
            kill_hard(self.keepalived[gw], [pid] if pid else [])
        elif kind == "link":
            self._link(gw, "down")
        elif kind == "backends":
            self._routes(gw, "add")
        elif kind == "release":
            if '"released":true' not in self.admin_get(gw, "/api/ha/release", "POST").replace(" ", ""):
                raise LabError(f"{gw}: /api/ha/release refused")
        elif kind == "power":
            self._link(gw, "down")
            pid = self.vrrp_pid(gw)
            kill_hard(self.keepalived[gw], [pid] if pid else [])
            kill_hard(self.rampart[gw])
        else:
            raise ValueError(f"unknown fault kind {kind}")

    def repair(self, kind: str, gw: str) -> None:
        if kind == "rampart":
            reap_tree(self.rampart[gw])
            self.start_rampart(gw)
        elif kind == "keepalived":
            reap_tree(self.keepalived[gw])
            # The killed keepalived left the VIP on the interface; the restarted one starts as
            # BACKUP and removes it. Until then the backup's gratuitous ARP steered the clients.
            self.start_keepalived(gw)
            if gw == "gw2":  # the lower priority: its startup delay, before the next fault
                time.sleep(self.startup_delay_s())
        elif kind == "link":
            self._link(gw, "up")
        elif kind == "backends":
            self._routes(gw, "del")
        elif kind == "release":
            if '"released":false' not in self.admin_get(gw, "/api/ha/resume", "POST").replace(" ", ""):
                raise LabError(f"{gw}: /api/ha/resume refused")
        elif kind == "power":
            reap_tree(self.keepalived[gw])
            reap_tree(self.rampart[gw])
            # A machine that boots again has no VIP on its interface (the killed keepalived left it).
            if self.holds_vip(gw):
                self.lab.exec(gw, ["ip", "addr", "del", f"{self.vip}/24", "dev", self.ifname(gw)], check=True)
            self._link(gw, "up")
            self.start_rampart(gw)
            self.wait_ready(gw)
            self.start_keepalived(gw)
            if gw == "gw2":
                time.sleep(self.startup_delay_s())
        else:
            raise ValueError(f"unknown fault kind {kind}")

    def wait_rejoined(self, gw: str, timeout: float = 20.0) -> None:
        """gw is BACKUP and healthy again (after a repair)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.ha_status(gw)
            if st.get("state") == "BACKUP" and st.get("health") == "ok":
                return
            if time.monotonic() > deadline:
                raise LabError(f"{gw} not back as a healthy BACKUP after {timeout:.0f} s: {st}")
            time.sleep(0.1)

    def sample_single_holder(self, expected: str, duration: float = 1.0, min_samples: int = 5) -> int:
        """At every sample (~every 50 ms, at most 200) exactly `expected` holds the VIP (no split
        brain), for `duration` and at least `min_samples` samples (a sample runs `ip` twice: on a
        busy machine a second holds fewer). Returns the number of samples taken."""
        deadline = time.monotonic() + duration
        for n in range(200):
            if time.monotonic() > deadline and n >= min_samples:
                return n
            now = self.holders()
            if now != [expected]:
                raise LabError(f"sample {n}: VIP held by {now}, expected only {expected}")
            time.sleep(0.05)
        return 200

    def failover(self, kind: str, *, repair: bool = True, takeover_limit_s: float = TAKEOVER_LIMIT_S) -> Failover:
        """Faults the current MASTER with `kind` while a client loop runs, measures the takeover and
        the client's outage, then (repair=True) repairs the old MASTER, which must rejoin as BACKUP
        while the VIP stays where it is (``rejoin``). Raises LabError when the pair misbehaves: no
        takeover within `takeover_limit_s`, no success through the backup within 5 s of it."""
        before = self.holders()
        if len(before) != 1:
            raise LabError(f"{kind}: VIP held by {before} before the fault")
        master = before[0]
        backup = next(gw for gw in GATEWAYS if gw != master)
        res = Failover(kind, master, backup)
        loop = ClientLoop(self).start()
        try:
            deadline = time.monotonic() + 15  # a guard against a hang
            while not any(ok for _, _, ok in list(loop.results)):
                if time.monotonic() > deadline:
                    raise LabError(f"{kind}: no success through the VIP via {master} before the fault")
                time.sleep(0.02)
            t_fault = res.t_fault = time.monotonic()
            self.inject(kind, master)

            def sample() -> list[str]:
                # Both nodes, every ~20 ms from the fault on: a split brain shows as two holders.
                now = self.holders()
                res.samples += 1
                res.two_holders += len(now) == 2
                return now
            t_vip = None
            for _ in range(int(takeover_limit_s / 0.02)):
                if backup in sample():
                    t_vip = time.monotonic()
                    break
                if time.monotonic() - t_fault > takeover_limit_s:
                    break
                time.sleep(0.02)
            if t_vip is None:
                raise LabError(f"{kind}: {backup} did not take the VIP within {takeover_limit_s:.0f} s")
            deadline = time.monotonic() + 5
            while loop.first_success_after(t_vip) is None:
                if time.monotonic() > deadline or not loop.thread.is_alive():
                    raise LabError(f"{kind}: no success through the VIP within 5 s of {backup} taking it")
                sample()
                time.sleep(0.02)
            # A little longer (at least 1 s after the fault in all), still sampling.
            end = max(time.monotonic() + 0.3, t_fault + 1.0)
            for _ in range(200):
                if time.monotonic() >= end:
                    break
                sample()
                time.sleep(0.02)
        finally:
            loop.stop()
        results = list(loop.results)
        res.total = len(results)
        res.vip_s = t_vip - t_fault
        res.first_ok_s = loop.first_success_after(t_fault) - t_fault
        res.via_backup_s = loop.first_success_after(t_vip) - t_fault
        failures = [(start, end) for start, end, ok in results if not ok and end >= t_fault]
        res.failed = len(failures)
        if not failures:
            res.back_s = 0.0
        else:
            last_end = max(end for _, end in failures)
            back = next((end for start, end, ok in results if ok and start >= last_end), None)
            res.back_s = None if back is None else back - t_fault
        if repair:
            self.rejoin(res)
        return res

    def rejoin(self, res: Failover, *, timeout: float = 20.0, sample_s: float = 1.0) -> None:
        """After ``failover``: repairs the old MASTER, which must be back as a healthy BACKUP within
        `timeout` while the new MASTER keeps the VIP alone at every sample for `sample_s` (no
        preemption, no split brain) and still says MASTER. Raises LabError otherwise."""
        self.repair(res.kind, res.master)
        self.wait_rejoined(res.master, timeout)
        self.sample_single_holder(res.backup, sample_s)
        if not self.ha_status(res.backup)["state"].startswith("MASTER"):
            raise LabError(f"{res.kind}: {res.backup} no longer MASTER after {res.master} came back")

    # -- teardown -------------------------------------------------------------------

    def close(self) -> list[str]:
        """Stops everything this lab started (by PID) and deletes its namespaces. Idempotent."""
        if self.closed:
            return []
        self.closed = True
        problems = []
        try:
            if self.lab is not None and not self.lab.closed:
                problems += self.stop_pair()
        except Exception as e:  # noqa: BLE001 (removing the namespaces matters more)
            problems.append(f"stopping the pair: {e}")
        for backend in self.backends.values():
            try:
                backend.process.stop(timeout=5)
            except h.ProcessError as e:
                problems.append(str(e))
        for app in self.site_apps.values():
            try:
                app.stop(timeout=5)
            except h.ProcessError as e:
                problems.append(str(e))
        for db in self.databases.values():
            try:
                db.stop()
            except Exception as e:  # noqa: BLE001 (removing the namespaces matters more)
                problems.append(f"stopping mariadbd on {db.host}: {e}")
        if self.db_listeners is not None:
            self.db_listeners.close()
        if self.lab is not None:
            left = self.lab.close()
            if left:
                problems.append(f"processes still inside the namespaces were stopped: {left}")
        return problems


def kill_hard(p: h.Process, extra: list[int] = ()) -> None:
    """SIGKILL by PID (p and the given PIDs); p is then marked stopped so cleanup does not call it a crash.

    Every PID is stopped (SIGSTOP) before any is killed: keepalived's VRRP child gets SIGTERM
    when its parent dies (PR_SET_PDEATHSIG) and, if it runs before its own SIGKILL lands, shuts
    down cleanly (a priority-0 advert, the VIP removed): a graceful stop, not the crash meant."""
    p.remember_tree()
    pids = [p.pid, *extra]
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in reversed(pids):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    p.stopping = True
    p.wait(5)


def reap_tree(p: h.Process, timeout: float = 5.0) -> None:
    """Waits (bounded) for the recorded descendants of a killed process, then SIGKILLs any left, by PID."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(h.identity(pid) == ident for pid, ident in p._tree.items()):
        time.sleep(0.05)
    p._kill_leftovers()


def skip_reason(need_nft: bool = False, rampart_bin: str | Path | None = None) -> str | None:
    """Why this machine cannot run the lab (root, ip netns, keepalived, nft; with `rampart_bin`,
    no executable there, or a rampart without the ``ha`` command), or None.
    Installs iproute2 / keepalived / nftables with apt-get first when root and missing."""
    tools = {"ip": "iproute2", "keepalived": "keepalived"}
    if need_nft:
        tools["nft"] = "nftables"
    netns.ensure_packages(tools)
    reason = netns.skip_reason(("ip", "nft") if need_nft else ("ip",))
    if reason:
        return reason
    if shutil.which("keepalived") is None:
        return "keepalived is not installed"
    if rampart_bin is not None:
        if not (os.path.isfile(rampart_bin) and os.access(rampart_bin, os.X_OK)):
            return f"no rampart binary at {rampart_bin}"
        # A rampart with the ha command answers a bare `rampart ha` with its own
        # usage error; one without it calls `ha` an unknown command.
        try:
            r = subprocess.run([str(rampart_bin), "ha"], capture_output=True, text=True, timeout=30)
        except OSError as e:
            return f"cannot run {rampart_bin}: {e}"
        if "ha needs a subcommand" not in r.stderr:
            return f"{rampart_bin} has no ha subcommand"
    return None


def _out(r: subprocess.CompletedProcess) -> str:
    return f"exit {r.returncode}; stdout: {r.stdout.strip()[-1500:]!r}; stderr: {r.stderr.strip()[-1500:]!r}"


__all__ = ["HaLab", "Failover", "ClientLoop", "LabError", "FAULTS", "GATEWAYS", "HOSTS", "DB_HOSTS", "ROLES",
           "VIP", "skip_reason", "kill_hard", "reap_tree"]
