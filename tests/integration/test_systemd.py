"""The Debian package under a real systemd: rampart.service in a booted Debian 12 container.

What it does:

* makes the .deb from the build tree this test belongs to (``cpack`` in the directory above
  RAMPART_BIN's: nothing is compiled again);
* debootstraps a minimal Debian 12 root once (systemd, dbus, keepalived, nftables, curl,
  logrotate, iproute2 and the package's Depends) from the mirror the host's apt uses, and keeps
  it in /var/cache/rampart-tests/ (outside the clone). It is made again when missing or when its
  recorded package list changes; the test never writes to it: the container boots it with
  ``--volatile=overlay`` (a tmpfs over the read-only tree), so every run starts clean;
* boots it with ``systemd-nspawn --boot --register=no --keep-unit`` inside a network namespace
  it creates (unique name per run; removed on exit, also on failure), with ``eth0`` carrying
  the gateway's TEST-NET address 192.0.2.11/24 (its other end stays in the namespace), and runs
  commands inside with ``nsenter -t <container init> -a``;
* installs the package with ``dpkg -i``, makes certificates with the installed ``rampart certs
  dev`` (keys root's, 0600), writes /etc/rampart/rampart.yaml with an ``ha`` section (node gw1
  on eth0, ``track_process: false``: keepalived's process events do not exist outside the
  initial network namespace) and renders keepalived.conf with ``rampart ha render``. The app
  server is tests/support/backend.py, run from the host inside the same namespace;
  clients are sockets this process makes inside the namespace.

Checks: lintian finds no error in the package (skipped without lintian); the package's files
and conffiles, nothing enabled or started by the installation;
keepalived (started by the container's systemd, before rampart, as at boot) finds the HA state
directory; ``systemctl start`` returns only once HTTPS answers 200; ``systemctl reload`` moves
the generation on by one; the HA state files (health file, notify FIFO) exist and keepalived
follows the health file both ways; ``systemctl stop`` drains a request in flight and the unit
ends with status 0; the state directory and a "not able to serve" health file survive the stop,
and keepalived follows the gateway again after the next start; a reinstall (dpkg -i of the
package again) restarts the running gateway; a SIGSEGV of the master is restarted by
Restart=on-failure; logrotate rotates the access log and the gateway writes to the new file,
and the logrotate file does not fail with the service stopped; removal and purge.

Recorded, not asserted: what the health file says between a SIGKILL of the master and the
restart (KillMode=mixed kills the sentinel together with the master), sampled every few ms.

Needs root, ip netns, debootstrap, systemd-nspawn, dpkg-shlibdeps and file (these four installed
with apt-get when missing) and CMake's cpack; otherwise, or when debootstrap cannot download or
the container does not boot, skipped (exit 77). The first run downloads and installs the root (a few
minutes); later runs take well under a minute. Every wait and loop is bounded; only processes
these tests started are stopped, by PID.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import harness as h
import pytest
import netns
from systemd_root import BASE_PACKAGES, SHARE, Container, cached_root, depends_packages, make_deb, out

pytestmark = [pytest.mark.root("network namespaces, debootstrap, systemd-nspawn"), pytest.mark.netns]
BUDGET_S = 1500


GW_ADDR = "192.0.2.11"
PEER_ADDR = "192.0.2.12"
VIP = "192.0.2.10"
HTTPS, ADMIN_PORT, APP_PORT = 443, 9100, 8080
CONFIG = "/etc/rampart/rampart.yaml"
TLS_DIR = "/etc/rampart/tls"
STATE_DIR = "/run/rampart/ha"
HEALTH = f"{STATE_DIR}/gw1.health"
FIFO = f"{STATE_DIR}/gw1.fifo"
ACCESS_LOG = "/var/log/rampart/access.log"


# ---------------------------------------------------------------------------
# Clients inside the namespace
# ---------------------------------------------------------------------------


def https_get(ns, service, path: str = "/", timeout: float = 5.0) -> h.Response:
    """One GET over a new TLS connection to the gateway's address, from inside the namespace,
    verified against the container's dev CA."""
    raw = netns.socket_in_ns(ns, socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(timeout)
    try:
        raw.connect((GW_ADDR, HTTPS))
        tls = h.client_context(service.ca).wrap_socket(raw, server_hostname=h.SITE)
    except (OSError, ssl.SSLError):
        raw.close()
        raise
    with tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {h.SITE}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        for _ in range(100000):
            try:
                chunk = tls.recv(65536)
            except ssl.SSLError:
                break
            if not chunk:
                break
            data += chunk
    r = h.parse_head(data)
    if r is None:
        raise AssertionError(f"GET {path}: no HTTP response: {data[:200]!r}")
    return r


def serves(ns, service) -> bool:
    try:
        return https_get(ns, service, "/", timeout=2).status == 200
    except (OSError, ssl.SSLError, AssertionError):
        return False


def admin(ns, path: str, method: str = "GET") -> tuple[int, str]:
    data = netns.http_request(ns, "127.0.0.1", ADMIN_PORT, method, path)
    r = h.parse_head(data)
    h.check(r is not None, f"{method} {path}: no response: {data[:200]!r}")
    return r.status, r.body.decode(errors="replace")


def metrics(ns) -> dict[str, float]:
    status, body = admin(ns, "/metrics")
    h.check(status == 200, f"GET /metrics: {status} {body[:200]}")
    return h.parse_metrics(body)


def generation(ns) -> int:
    return int(metrics(ns)["rampart_config_generation"])


def vrrp_state(ns) -> str | None:
    """The VRRP state the master learned from keepalived's notify FIFO (1 in rampart_vrrp_state)."""
    for name, value in metrics(ns).items():
        m = re.match(r'rampart_vrrp_state\{node="gw1",state="(\w+)"\}', name)
        if m and value == 1:
            return m.group(1)
    return None


def holds_vip(ns) -> bool:
    r = subprocess.run(["ip", "-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"], capture_output=True,
                       text=True, timeout=10)
    return f" {VIP}/" in r.stdout


def service_mounts(container, main_pid: int) -> dict[str, str]:
    """Mount options of /, /run and /run/rampart* as the service sees them (its mount namespace)."""
    text = container.run(["cat", f"/proc/{main_pid}/mountinfo"]).stdout
    found = {}
    for line in text.splitlines():
        fields = line.split()
        point, options = fields[4], fields[5]
        if point in ("/", "/run") or point.startswith("/run/rampart"):
            found[point] = options.split(",")[0]
    return found


def wait(predicate, timeout: float, what: str, interval: float = 0.05):
    return h.wait_until(predicate, timeout, interval=interval, what=what)


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def deployment() -> dict:
    return {
        "site": h.SITE,
        "servers": {
            "gw1": {"address": GW_ADDR, "role": "gateway"},
            "gw2": {"address": PEER_ADDR, "role": "gateway"},
            "app1": {"address": "127.0.0.1", "role": "app", "port": APP_PORT},
        },
        "gateway": {
            "listen": {"https": f"0.0.0.0:{HTTPS}", "admin": f"127.0.0.1:{ADMIN_PORT}"},
            "workers": 2,
            "user": "nobody",
            "tls": {"certificates": [{"cert": f"{TLS_DIR}/ecdsa.pem", "key": f"{TLS_DIR}/ecdsa.key"}]},
            "pools": {"app": {"servers": ["app1"],
                              "health": {"interval": "200ms", "timeout": "150ms", "rise": 2, "fall": 2}}},
            "timeouts": {**h.DEFAULT_TIMEOUTS, "drain": "10s"},
            "limits": dict(h.DEFAULT_LIMITS),
            "access_log": ACCESS_LOG,
        },
        "ha": {
            "vip": f"{VIP}/24",
            "interface": "eth0",
            "virtual_router_id": 51,
            "nodes": {"gw1": {"priority": 150}, "gw2": {"priority": 100}},
            "health": {"track_process": False},
        },
    }


# ---------------------------------------------------------------------------
# Set-up and teardown
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Package:
    """The .deb made from the build tree (its file name in the shared directory), the Debian root
    it installs into, and how long making both took."""
    deb: str
    root: Path
    share: Path
    prepared_s: float


@dataclasses.dataclass
class Service:
    """What the tests learn about the installed service as they go: the dev CA its package made
    and the PID of the current master."""
    ca: Path | None = None
    main_pid: int = 0


@pytest.fixture(scope="module")
def package() -> Package:
    netns.ensure_packages({"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container",
                           "dpkg-shlibdeps": "dpkg-dev", "file": "file", "nsenter": "util-linux",
                           "ip": "iproute2"}, timeout=300)
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "cpack", "dpkg-deb", "dpkg-shlibdeps", "file", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found in PATH (after trying apt-get)")
    reason = netns.skip_reason(tools=("ip",))
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    share = h.temp_dir() / "share"
    deb = make_deb(share)
    root = cached_root(BASE_PACKAGES + depends_packages(deb))
    return Package(deb.name, root, share, time.monotonic() - t0)


@pytest.fixture(scope="module")
def lab(package) -> netns.Lab:
    """The container's network namespace, with eth0 (GW_ADDR) on a veth; removed at the end."""
    lab = netns.Lab("rsd")
    ns = lab.add_namespace("ct")
    try:
        lab.up()
        for args in (["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
                     ["addr", "add", f"{GW_ADDR}/24", "dev", "eth0"],
                     ["link", "set", "peer0", "up"], ["link", "set", "eth0", "up"]):
            lab._ip("-n", ns, *args)
        yield lab
    finally:
        left = lab.close()
        if left:
            print(f"    (stopped {len(left)} leftover process(es) in the namespace)", flush=True)
        h.check(ns not in netns.netns_names(), f"namespace {ns} still exists")


@pytest.fixture(scope="module")
def ns(lab) -> str:
    """The name of the container's network namespace."""
    return lab.ns("ct")


@pytest.fixture(scope="module")
def app(lab) -> h.Process:
    """The app server, inside the namespace on 127.0.0.1."""
    app = h.Process(lab.argv("ct", [sys.executable, h.BACKEND_SCRIPT, "--name", "app1", "--port", APP_PORT,
                                    "--host", "127.0.0.1"]), "backend-app1").start()
    try:
        app.wait_output("ready\n", timeout=10)
        yield app
    finally:
        app.stop(timeout=5)


@pytest.fixture(scope="module")
def container(package, ns, app) -> Container:
    """The Debian root booted with systemd-nspawn in the namespace; the cached root must come out unchanged."""
    c = Container(package.root, ns, package.share).start()
    try:
        yield c
    finally:
        c.stop()
        h.check(not (c.root / "etc" / "rampart").exists(),
                f"the cached root {c.root} was changed (it has /etc/rampart)")


@pytest.fixture(scope="module")
def service() -> Service:
    return Service()

# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_lintian_finds_no_errors(package):
    if shutil.which("lintian") is None:
        pytest.skip("lintian not installed (apt-get install lintian)")
    deb = h.temp_dir() / "share" / package.deb
    r = subprocess.run(["lintian", "--fail-on", "error", str(deb)], capture_output=True, text=True, timeout=300)
    tags = [line for line in r.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    print(f"    lintian: {len(tags)} error(s) and warning(s)" + "".join(f"\n      {t}" for t in tags), flush=True)
    h.check(r.returncode == 0 and not any(t.startswith("E: ") for t in tags), f"lintian: {out(r)}")


def test_package_installs_without_starting(container, package, service):
    c = container
    t0 = time.monotonic()
    r = c.run(["dpkg", "-i", f"{SHARE}/{package.deb}"], timeout=120)
    print(f"    dpkg -i: {time.monotonic() - t0:.1f}s", flush=True)
    h.check("systemctl enable --now rampart" in r.stdout + r.stderr, f"no hint to the operator: {out(r)}")
    for path in ("/usr/bin/rampart", "/usr/libexec/rampart/rampart-gateway"):
        h.check(os.access(c.path(path), os.X_OK), f"{path} missing or not executable")
    for path in ("/etc/logrotate.d/rampart", "/usr/share/doc/rampart/copyright",
                 "/usr/share/doc/rampart/changelog.Debian.gz", "/usr/share/man/man1/rampart.1.gz", CONFIG):
        h.check(c.path(path).is_file(), f"{path} missing")
    unit = c.run(["systemctl", "cat", "rampart.service"]).stdout
    h.check("ExecStart=/usr/bin/rampart serve -c /etc/rampart/rampart.yaml" in unit, f"ExecStart: {unit[:400]}")
    conffiles = c.run(["dpkg-query", "-W", "-f=${Conffiles}\n", "rampart"]).stdout
    for path in (CONFIG, "/etc/logrotate.d/rampart"):
        h.check(f" {path} " in conffiles, f"{path} is not a conffile: {conffiles!r}")
    enabled = c.run(["systemctl", "is-enabled", "rampart.service"], check=False).stdout.strip()
    active = c.run(["systemctl", "is-active", "rampart.service"], check=False).stdout.strip()
    h.check(enabled == "disabled" and active == "inactive",
            f"installing enabled or started the service: is-enabled {enabled}, is-active {active}")
    # `rampart certs` runs rampart-gateway: found in ../libexec/rampart relative to /usr/bin.
    c.run(["rampart", "certs", "dev", "--out", TLS_DIR])
    modes = c.run(["stat", "-c", "%n %a %U", f"{TLS_DIR}/ecdsa.key", f"{TLS_DIR}/rsa.key"]).stdout.split("\n")
    for line in filter(None, modes):
        h.check(line.endswith(" 600 root"), f"key not root's 0600: {line}")
    ca = h.temp_dir() / "ca.pem"
    ca.write_text(c.run(["cat", f"{TLS_DIR}/ca.pem"]).stdout)
    service.ca = ca
    print(f"    version: {c.run(['rampart', 'version']).stdout.strip()}", flush=True)


def test_keepalived_started_first_finds_the_state_dir(container, ns):
    c = container
    c.write(CONFIG, h.to_yaml(deployment()) + "\n")
    c.run(["rampart", "check", "-c", CONFIG])
    c.run(["rampart", "ha", "render", "-c", CONFIG, "--node", "gw1", "--out", "/etc/keepalived"])
    c.run(["keepalived", "--config-test", "-f", "/etc/keepalived/keepalived.conf"])
    # As at boot: keepalived may start before rampart. It drops a track file whose directory
    # does not exist and cannot make its notify FIFO there.
    c.run(["systemctl", "start", "keepalived.service"], timeout=60)
    h.check(c.run(["systemctl", "is-active", "keepalived.service"], check=False).stdout.strip() == "active",
            "keepalived did not start:\n" + c.journal("keepalived.service"))
    try:
        wait(lambda: c.read(HEALTH) is not None, 5, f"keepalived to create {HEALTH} (init_file 1)")
    except AssertionError:
        raise AssertionError(f"{STATE_DIR} not usable by a keepalived started before rampart "
                             f"(ls: {c.run(['ls', '-la', '/run/rampart'], check=False).stdout.strip()!r}):\n"
                             + c.journal("keepalived.service")) from None
    h.check(c.read(HEALTH).strip() == "1", f"{HEALTH} before rampart runs: {c.read(HEALTH)!r}")
    h.check(not holds_vip(ns), "keepalived took the VIP without rampart")


def test_start_returns_when_serving(container, ns, service):
    c = container
    t0 = time.monotonic()
    r = c.run(["systemctl", "start", "rampart.service"], timeout=60, check=False)
    took = time.monotonic() - t0
    h.check(r.returncode == 0, f"systemctl start: {out(r)}\n" + c.journal("rampart.service"))
    # One request, no retry: READY=1 must mean serving.
    resp = https_get(ns, service, "/")
    print(f"    systemctl start returned in {took:.2f}s; first request: {resp.status} from "
          f"{resp.header('X-Backend')}", flush=True)
    h.check(resp.status == 200 and resp.header("X-Backend") == "app1", f"right after start: {resp}")
    h.check(generation(ns) == 1, "generation after start is not 1")
    service.main_pid = c.main_pid()


def test_reload_moves_the_generation_on(container, ns, service):
    c = container
    before = generation(ns)
    t0 = time.monotonic()
    c.run(["systemctl", "reload", "rampart.service"], timeout=60)
    took = time.monotonic() - t0
    after = generation(ns)
    print(f"    systemctl reload returned in {took:.2f}s; generation {before} -> {after}", flush=True)
    h.check(after == before + 1, f"generation {before} -> {after} across systemctl reload")
    h.check(c.main_pid() == service.main_pid, "the master changed on a reload")
    h.check(serves(ns, service), "not serving after the reload")


def test_ha_state_files_and_keepalived(container, ns, service):
    c = container
    listing = c.run(["ls", "-la", STATE_DIR], check=False).stdout
    h.check(c.read(HEALTH) is not None, f"no health file {HEALTH}: {listing}\n" + c.journal("rampart.service"))
    kind = c.run(["stat", "-c", "%F", FIFO], check=False).stdout.strip()
    h.check(kind == "fifo", f"{FIFO}: {kind!r}\n{listing}")
    journal = c.journal("rampart.service", 200)
    h.check("ha: cannot" not in journal, f"the master could not use {STATE_DIR}:\n{journal}")
    # ProtectSystem=strict leaves /run read-only on a host (in this container systemd leaves the
    # container's /run writable, so the mount is what tells): RuntimeDirectory= is a writable mount.
    mounts = service_mounts(container, service.main_pid)
    print(f"    in the service's mount namespace: {mounts}", flush=True)
    h.check(mounts.get("/run/rampart") == "rw", f"/run/rampart is not a writable mount of the service: {mounts}")
    # keepalived reads the health file (track_file) and tells the master through the FIFO.
    t0 = time.monotonic()
    wait(lambda: c.read(HEALTH) == "0\n", 10, "the master to report healthy")
    wait(lambda: holds_vip(ns) and vrrp_state(ns) == "MASTER", 15, "keepalived MASTER with the VIP, as the master "
         "learned through the FIFO")
    print(f"    healthy -> MASTER with the VIP in {time.monotonic() - t0:.2f}s", flush=True)
    status, _ = admin(ns, "/api/ha/release", "POST")
    h.check(status == 200, f"POST /api/ha/release: {status}")
    wait(lambda: c.read(HEALTH) == "1\n" and vrrp_state(ns) == "FAULT" and not holds_vip(ns), 10,
         "FAULT after the release (track file 1)")
    status, _ = admin(ns, "/api/ha/resume", "POST")
    h.check(status == 200, f"POST /api/ha/resume: {status}")
    wait(lambda: holds_vip(ns) and vrrp_state(ns) == "MASTER", 15, "MASTER again after the resume")
    h.check(c.main_pid() == service.main_pid, "the master changed")


def test_stop_drains_and_exits_zero(app, container, ns, service):
    c = container
    result: dict = {}

    def slow() -> None:
        try:
            result["response"] = https_get(ns, service, "/slow?ms=1500", timeout=20)
        except Exception as e:  # noqa: BLE001
            result["error"] = repr(e)

    client = threading.Thread(target=slow, daemon=True)
    client.start()
    wait(lambda: any(line.startswith("REQ ") and "/slow" in line for line in app.read_stdout().splitlines()),
         5, "the slow request to reach the app server")
    t0 = time.monotonic()
    c.run(["systemctl", "stop", "rampart.service"], timeout=60)
    took = time.monotonic() - t0
    client.join(25)
    print(f"    systemctl stop returned in {took:.2f}s", flush=True)
    h.check("response" in result and result["response"].status == 200,
            f"the request in flight during the stop: {result}")
    props = c.show("rampart.service", "ExecMainStatus", "ExecMainCode", "Result", "ActiveState")
    print(f"    after stop: {props}", flush=True)
    h.check(props["ExecMainStatus"] == "0" and props["Result"] == "success" and props["ActiveState"] == "inactive",
            f"the unit did not end cleanly: {props}\n" + c.journal("rampart.service"))
    # What keepalived watches stays: the directory, and a health file that says "not able to serve".
    h.check(c.read(HEALTH) == "1\n", f"{HEALTH} after the stop: {c.read(HEALTH)!r} "
            f"({c.run(['ls', '-la', '/run/rampart'], check=False).stdout.strip()})")
    wait(lambda: not holds_vip(ns), 5, "keepalived to give the VIP up with rampart stopped")
    time.sleep(1.0)
    h.check(not holds_vip(ns), "keepalived took the VIP back while rampart is stopped")


def test_started_again_keepalived_follows(container, ns, service):
    c = container
    c.run(["systemctl", "start", "rampart.service"], timeout=60)
    h.check(serves(ns, service), "not serving after the second start")
    wait(lambda: holds_vip(ns) and vrrp_state(ns) == "MASTER", 15,
         "keepalived to follow the health file again after a stop and start")
    service.main_pid = c.main_pid()


def test_reinstall_restarts_the_running_gateway(container, ns, package, service):
    c = container
    before = service.main_pid
    t0 = time.monotonic()
    c.run(["dpkg", "-i", f"{SHARE}/{package.deb}"], timeout=120)
    print(f"    dpkg -i over the running gateway: {time.monotonic() - t0:.1f}s", flush=True)
    h.check(c.run(["systemctl", "is-active", "rampart.service"], check=False).stdout.strip() == "active",
            "not active after the reinstall")
    after = c.main_pid()
    h.check(after not in (0, before), f"MainPID {before} -> {after}: the postinst did not restart it")
    h.check(serves(ns, service), "not serving after the reinstall")
    h.check(c.read(CONFIG) == h.to_yaml(deployment()) + "\n", "the reinstall changed the edited conffile")
    service.main_pid = after


def test_crash_is_restarted(container, ns, service):
    c = container
    before = c.main_pid()
    restarts = int(c.show("rampart.service", "NRestarts")["NRestarts"])
    t0 = time.monotonic()
    c.run(["sh", "-c", f"kill -SEGV {before}"])  # the shell's kill: minbase has no procps
    new = wait(lambda: (p := c.main_pid()) not in (0, before) and p, 15, "a new MainPID after SIGSEGV",
               interval=0.1)
    t_new = time.monotonic() - t0
    wait(lambda: serves(ns, service), 10, "the restarted gateway to serve", interval=0.1)
    t_serving = time.monotonic() - t0
    n = int(c.show("rampart.service", "NRestarts")["NRestarts"])
    print(f"    SIGSEGV of {before}: new master {new} after {t_new:.2f}s, serving after {t_serving:.2f}s, "
          f"NRestarts {restarts} -> {n}", flush=True)
    h.check(n == restarts + 1, f"NRestarts {restarts} -> {n}")
    service.main_pid = new


MARKED_DOWN_WITHIN_S = 0.5


def test_sigkill_marks_the_node_down_before_the_restart(container, ns, service):
    """KillMode=mixed SIGKILLs the sentinel child together with the master, so the sentinel
    cannot be what says "not ready" after a crash: the unit's ExecStopPost (`rampart ha down`)
    writes "1" into the track file once systemd has seen the master die, and keepalived hands
    the VIP over then, not after the restart. The file is read every ~2 ms from the host; a
    thread watches for the new MainPID (nsenter + systemctl take ~20 ms, too slow for the
    sampling loop)."""
    c = container
    wait(lambda: c.read(HEALTH) == "0\n", 10, "healthy before the SIGKILL")
    before = c.main_pid()
    health = c.path(HEALTH)
    samples: list[tuple[float, str]] = []
    restarted: dict[str, float] = {}
    done = threading.Event()

    def watch_main_pid() -> None:
        for _ in range(100):  # every 0.1 s for at most 10 s
            if done.is_set():
                return
            try:
                p = c.main_pid()
            except AssertionError:
                p = 0
            if p not in (0, before):
                restarted["at"] = time.monotonic()
                return
            time.sleep(0.1)

    c.run(["sh", "-c", f"kill -KILL {before}"])
    t0 = time.monotonic()
    watcher = threading.Thread(target=watch_main_pid, daemon=True)
    watcher.start()
    for _ in range(5000):  # every ~2 ms for at most 8 s
        now = time.monotonic()
        if now - t0 > 8.0:
            break
        try:
            value = health.read_text().strip() or "(empty)"
        except OSError:
            value = "(missing)"
        if not samples or samples[-1][1] != value:
            samples.append((now - t0, value))
        if "at" in restarted and value == "0" and now > restarted["at"]:
            break
        time.sleep(0.002)
    done.set()
    watcher.join(5)
    new_at = restarted["at"] - t0 if "at" in restarted else None
    changes = ", ".join(f"{t * 1000:.0f} ms: {v}" for t, v in samples)
    print(f"    health file after SIGKILL of the master {before} (changes only): {changes}", flush=True)
    seen = [v for t, v in samples if new_at is None or t < new_at]
    print(f"    new master seen after {'(none within 8 s)' if new_at is None else f'{new_at:.2f}s'}; until then "
          f"the health file said {' then '.join(seen)}", flush=True)
    down_at = next((t for t, v in samples if v == "1"), None)
    h.check(down_at is not None and (new_at is None or down_at < new_at),
            f"nothing marked the node down between the SIGKILL and the restart: {changes}")
    h.check(down_at <= MARKED_DOWN_WITHIN_S, f"the node was marked down {down_at:.2f}s after the SIGKILL "
            f"(bound {MARKED_DOWN_WITHIN_S}s): {changes}")
    wait(lambda: serves(ns, service), 15, "serving again after the SIGKILL", interval=0.1)
    service.main_pid = c.main_pid()


def test_logrotate_reopens_the_access_log(container, ns, service):
    c = container
    for i in range(3):
        h.check(https_get(ns, service, f"/before-rotation-{i}").status == 200, "request before the rotation")
    wait(lambda: "before-rotation-2" in (c.read(ACCESS_LOG) or ""), 5, "the access log lines")
    before = generation(ns)
    r = c.run(["logrotate", "-v", "-f", "/etc/logrotate.d/rampart"], timeout=60, check=False)
    h.check(r.returncode == 0, f"logrotate: {out(r)}")
    rotated = c.read(ACCESS_LOG + ".1") or ""
    h.check("before-rotation-2" in rotated, f"{ACCESS_LOG}.1 lacks the old lines: {rotated[-300:]!r}")
    wait(lambda: generation(ns) == before + 1, 5, "SIGUSR1 to reopen the log (generation + 1)")
    h.check(https_get(ns, service, "/after-rotation").status == 200, "request after the rotation")
    wait(lambda: "after-rotation" in (c.read(ACCESS_LOG) or ""), 5, "the new line in the new access.log")
    h.check("after-rotation" not in (c.read(ACCESS_LOG + ".1") or ""), "the new line went to the old file")
    # With the service stopped, the postrotate script must not fail the rotation.
    c.run(["systemctl", "stop", "rampart.service"], timeout=60)
    r = c.run(["logrotate", "-v", "-f", "/etc/logrotate.d/rampart"], timeout=60, check=False)
    h.check(r.returncode == 0, f"logrotate with the service stopped: {out(r)}")
    h.check("running postrotate script" in r.stdout + r.stderr, f"the postrotate script did not run: {out(r)}")


def test_remove_and_purge(container, package):
    c = container
    c.run(["systemctl", "start", "rampart.service"], timeout=60)
    c.run(["systemctl", "enable", "rampart.service"])
    c.run(["dpkg", "-r", "rampart"], timeout=120)
    h.check(c.run(["systemctl", "is-active", "rampart.service"], check=False).stdout.strip() != "active",
            "still running after dpkg -r")
    h.check(not c.path("/usr/bin/rampart").exists(), "/usr/bin/rampart left after dpkg -r")
    h.check(c.path(CONFIG).exists(), "dpkg -r removed the conffile (only a purge does)")
    c.run(["dpkg", "--purge", "rampart"], timeout=120)
    h.check(not c.path(CONFIG).exists(), f"{CONFIG} left after the purge")
    h.check(c.path(f"{TLS_DIR}/ecdsa.key").exists(), "the purge removed the operator's keys")
    h.check(not c.path("/etc/systemd/system/multi-user.target.wants/rampart.service").exists(),
            "the enable link is left after the purge")
    print(f"    prepared (package + root) in {package.prepared_s:.0f}s", flush=True)
