"""Privilege separation, as the kernel sees it: started as root with
gateway.user nobody, every worker runs as nobody with no capability in any set,
NO_NEW_PRIVS and a seccomp filter (Seccomp: 2), and keeps serving HTTPS,
upstream keep-alive and a 1 MiB upload without one being killed by its
filter; the master keeps uid 0 with only CAP_NET_BIND_SERVICE, CAP_NET_ADMIN,
CAP_SETUID, CAP_SETGID and CAP_KILL effective (CAP_SETPCAP permitted, for the
workers' bounding set), and with those still replaces a dead worker, runs
health checks and drains on SIGTERM. The systemd unit passes
`systemd-analyze verify` and bounds the service to the master's set.

Everything but the unit checks and sd_notify needs root (SKIP otherwise).
"""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import harness as h
import pytest


# Capability numbers (linux/capability.h) and the sets privileges.hpp promises.
CAPS = {"CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
        "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12}
MASTER_EFFECTIVE = sum(1 << CAPS[c] for c in
                       ("CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"))
MASTER_PERMITTED = MASTER_EFFECTIVE | 1 << CAPS["CAP_SETPCAP"]
CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
HEALTH = {"path": "/health", "interval": "300ms", "timeout": "250ms", "rise": 1, "fall": 2}
UNIT = h.SOURCE_DIR / "systemd" / "rampart.service"


@pytest.fixture(scope="module")
def nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


@pytest.fixture(scope="module")
def gw(certs, app1, app2) -> h.Gateway:
    """The gateway the first tests share: started as root, workers as nobody, seccomp enforced."""
    return _gateway(certs, app1, app2)

def _status(pid: int) -> dict:
    """/proc/<pid>/status as name -> value (the text after the colon, stripped)."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _gateway(certs, app1, app2, seccomp=None, workers=2):
    gw = h.Gateway(certs, {"app1": app1, "app2": app2}, http=False, workers=workers)
    gw.config["gateway"]["user"] = "nobody"
    if seccomp is not None:
        gw.config["gateway"]["seccomp"] = seccomp
    gw.config["gateway"]["pools"]["app"]["health"] = HEALTH
    return gw.start()


def _check_worker_sandboxed(nobody, pid: int, seccomp_mode: int = 2) -> None:
    """A worker's sandbox, once it has finished starting: a worker that was just forked (the
    master's port is open before its workers have run their first lines) goes through the
    credential change, NO_NEW_PRIVS and the filter in that order before it accepts anything,
    so the fields are read again (bounded, 5 s) until its filter mode shows; a worker that
    never gets there fails the checks below with what it had."""
    deadline = time.monotonic() + 5
    for _ in range(500):
        st = _status(pid)
        if st["Seccomp"] == str(seccomp_mode) and st["NoNewPrivs"] == "1" or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    h.check(st["Name"] == "rampart-worker", f"pid {pid} is not a worker: {st['Name']}")
    h.check(st["Uid"].split() == [str(nobody.pw_uid)] * 4, f"worker {pid} uids {st['Uid']}, expected nobody's")
    h.check(st["Gid"].split() == [str(nobody.pw_gid)] * 4, f"worker {pid} gids {st['Gid']}, expected nobody's")
    h.check(st["Groups"] == "", f"worker {pid} keeps supplementary groups {st['Groups']}")
    for cap_set in CAP_SETS:
        h.check(int(st[cap_set], 16) == 0, f"worker {pid} {cap_set} = {st[cap_set]}, expected 0")
    h.check(st["NoNewPrivs"] == "1", f"worker {pid} NoNewPrivs = {st['NoNewPrivs']}")
    h.check(st["Seccomp"] == str(seccomp_mode), f"worker {pid} Seccomp = {st['Seccomp']}, expected {seccomp_mode}")


@pytest.mark.root("checks what a gateway started as root gives up")
def test_workers_run_as_user_with_no_capabilities_and_seccomp(gw, nobody):
    h.check(len(gw.workers) == 2, f"expected 2 workers, found {sorted(gw.workers)}")
    for pid in gw.workers:
        _check_worker_sandboxed(nobody, pid)


@pytest.mark.root("checks what a gateway started as root gives up")
def test_master_keeps_only_the_capabilities_it_needs(gw):
    st = _status(gw.pid)
    h.check(st["Uid"].split() == ["0"] * 4, f"master uids {st['Uid']}: it keeps uid 0 (root-owned keys)")
    got = {c: int(st[c], 16) for c in CAP_SETS}
    h.check(got["CapEff"] == MASTER_EFFECTIVE, f"master CapEff {got['CapEff']:#x}, expected {MASTER_EFFECTIVE:#x}")
    h.check(got["CapPrm"] == MASTER_PERMITTED, f"master CapPrm {got['CapPrm']:#x}, expected {MASTER_PERMITTED:#x}")
    h.check(got["CapBnd"] == MASTER_PERMITTED, f"master CapBnd {got['CapBnd']:#x}, expected {MASTER_PERMITTED:#x}")
    h.check(got["CapInh"] == 0 and got["CapAmb"] == 0, f"master CapInh/CapAmb {got['CapInh']:#x}/{got['CapAmb']:#x}")
    h.check("master capabilities: kill,setgid,setuid,net_bind_service,net_admin" in gw.process.read_stderr(),
            "the master did not log the capabilities it kept")


@pytest.mark.root("checks what a gateway started as root gives up")
def test_sandboxed_workers_serve_keepalive_and_uploads(gw):
    before = dict(gw.workers)
    r = h.curl(gw, "/sandboxed")
    h.check(r.status == 200, f"request through sandboxed workers: {r}")
    # One client connection, many requests: the workers reuse upstream
    # keep-alive connections (the peek before reuse, the pool sweep).
    conn = h.https_connection(gw)
    try:
        docs = [h.request(conn, "GET", f"/ka?i={i}").json() for i in range(20)]
    finally:
        conn.close()
    h.check(max(d["conn_requests"] for d in docs) >= 5, f"no upstream keep-alive reuse: {docs[-4:]}")
    # A 1 MiB upload (streamed past buffer_body_bytes) and a 1 MiB download.
    upload = h.temp_dir() / "upload-1mib.bin"
    digest = h.write_random_file(upload, h.MiB)
    r = h.curl(gw, "/upload", "-T", str(upload), "-H", "Expect:")
    h.check(r.status == 200 and r.json()["sha256"] == digest, f"1 MiB upload: {r}")
    out = h.temp_dir() / "download-1mib.bin"
    r = h.curl(gw, f"/download?bytes={h.MiB}&chunked=1", output=out)
    h.check(r.status == 200 and h.sha256_file(out) == h.download_sha256(h.MiB), f"1 MiB download: {r}")
    # A refused request takes the error path (431, connection closed).
    r = h.curl(gw, "/too-large", "-H", "X-Big: " + "a" * (20 * h.KiB), check_rc=False)
    h.check(r.status == 431, f"oversized header block: {r}")
    # A worker killed by its filter dies by SIGSYS and is replaced: same PIDs
    # means no call outside the list was made.
    after = {p: h.identity(p) for p in before}
    h.check(after == before, f"workers changed during the traffic: {before} -> {after}"
                             + gw.process.stderr_excerpt())
    h.check("died" not in gw.process.read_stderr(), "a worker died" + gw.process.stderr_excerpt())


@pytest.mark.root("checks what a gateway started as root gives up")
def test_master_still_supervises_checks_and_drains(gw, nobody):
    # Health checks from the restricted master (outgoing TCP), seen through
    # the admin listener it serves.
    def passed():
        status, body = h.admin(gw, "/api/servers")
        servers = json.loads(body)["servers"] if status == 200 else []
        return len(servers) == 2 and all(s["checks_passed"] >= 2 for s in servers)
    h.wait_until(passed, 5, what="health checks passing for app1 and app2")
    # A dead worker is replaced: fork, setgid/setuid to nobody (CAP_SETUID,
    # CAP_SETGID), then its own sandbox. The worker is this test's grandchild.
    victim = sorted(gw.workers)[0]
    h.unmonitor(gw)
    os.kill(victim, signal.SIGKILL)
    h.wait_until(lambda: h.identity(victim) is None and len(h.children_of(gw.pid)) == 2, 10,
                 what="a replacement worker")
    gw._record_workers()
    h.monitor(gw)
    h.check(victim not in gw.workers, f"worker {victim} still listed")
    for pid in gw.workers:
        _check_worker_sandboxed(nobody, pid)
    h.check(h.curl(gw, "/after-respawn").status == 200, "no answer after a worker was replaced")
    # SIGTERM: the master signals workers that run as nobody (CAP_KILL) and
    # exits 0 once they drained.
    rc = gw.stop()
    h.check(rc == 0, f"exit code {rc} after SIGTERM")
    h.check("ignored the drain" not in gw.process.read_stderr(), "a worker ignored the master's SIGTERM")


@pytest.mark.root("checks what a gateway started as root gives up")
def test_seccomp_log_and_off_modes(app1, app2, certs, nobody):
    gw = _gateway(certs, app1, app2, seccomp="log", workers=1)
    h.check(h.curl(gw, "/log-mode").status == 200, "no answer in log mode")
    for pid in gw.workers:
        _check_worker_sandboxed(nobody, pid, seccomp_mode=2)
    gw.stop()
    gw = _gateway(certs, app1, app2, seccomp="off", workers=1)
    h.check(h.curl(gw, "/off-mode").status == 200, "no answer without a filter")
    for pid in gw.workers:
        _check_worker_sandboxed(nobody, pid, seccomp_mode=0)  # still nobody, no capabilities, NO_NEW_PRIVS
    gw.stop()


@pytest.mark.root("checks what a gateway started as root gives up")
def test_key_owned_by_another_user_is_reported(app1, nobody):
    # A key the master can read at start but, without CAP_DAC_READ_SEARCH,
    # not again on a reload: the start-up log says so.
    certs = h.make_certs(h.temp_dir() / "certs-nobody")
    os.chown(certs.dir / "ecdsa.key", nobody.pw_uid, nobody.pw_gid)
    gw = h.Gateway(certs, {"app1": app1}, http=False, admin=False, workers=1)
    gw.config["gateway"]["user"] = "nobody"
    gw.start()
    h.check(h.curl(gw, "/").status == 200, "no answer")
    err = gw.process.read_stderr()
    h.check(re.search(r"ecdsa\.key is not readable .* chown root", err) is not None,
            "no warning about a key owned by nobody" + gw.process.stderr_excerpt())
    gw.stop()


def _unit_with_binary(tmp: Path) -> Path:
    """The unit with ExecStart/ExecReload pointing at the binary under test
    (verify checks that the command exists)."""
    text = UNIT.read_text().replace("/usr/local/bin/rampart", str(h.rampart_bin()))
    path = tmp / "rampart.service"
    path.write_text(text)
    return path


def test_systemd_unit_verifies():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not found")
    path = _unit_with_binary(h.temp_dir())
    r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    h.check(r.returncode == 0 and "rampart.service" not in r.stderr,
            f"systemd-analyze verify: rc {r.returncode}: {r.stdout}{r.stderr}")


def test_systemd_unit_matches_the_master():
    text = UNIT.read_text()
    settings = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings[key.strip()] = value.strip()
    bound = settings.get("CapabilityBoundingSet", "").split()
    h.check(sorted(bound) == sorted(CAPS), f"CapabilityBoundingSet {bound}, expected the master's {sorted(CAPS)}")
    h.check(settings.get("AmbientCapabilities", "") == "", "the master runs as root: no ambient capabilities")
    h.check("User" not in settings, "the master must start as root (keys, worker user)")
    for key, value in {"Type": "notify", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "PrivateTmp": "yes", "KillSignal": "SIGTERM", "KillMode": "mixed",
                       "LimitNOFILE": "1048576", "SystemCallArchitectures": "native"}.items():
        h.check(settings.get(key) == value, f"{key}={settings.get(key)}, expected {value}")
    for family in ("AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"):
        h.check(family in settings.get("RestrictAddressFamilies", "").split(), f"{family} not allowed")
    h.check(settings["ExecStart"].endswith("rampart serve -c /etc/rampart/rampart.yaml"), settings["ExecStart"])
    h.check(settings["ExecReload"].endswith("rampart reload -c /etc/rampart/rampart.yaml"), settings["ExecReload"])
    # The drain (30 s by default) plus the master's 5 s grace fit in the stop timeout.
    h.check(int(settings["TimeoutStopSec"].rstrip("s")) >= 35, f"TimeoutStopSec={settings['TimeoutStopSec']}")


def test_ready_and_stopping_reach_the_service_manager(app1, certs):
    # NOTIFY_SOCKET as systemd sets it: the master sends READY=1 once its
    # workers run and STOPPING=1 when SIGTERM starts the drain.
    name = f"rampart-it-notify-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(10)
    try:
        gw = h.Gateway(certs, {"app1": app1}, http=False, admin=False, workers=1)
        if os.geteuid() == 0:
            gw.config["gateway"]["user"] = "nobody"
        notify_env = dict(os.environ, NOTIFY_SOCKET="@" + name)
        h.write_config(gw.config_path, gw.config)
        gw.process = h.Process([h.rampart_bin(), "serve", "-c", gw.config_path], gw.name, env=notify_env).start()
        h.check(sock.recv(256) == b"READY=1", "no READY=1")
        gw.process.wait_port(gw.https_port)
        h.check(h.curl(gw, "/notify").status == 200, "no answer")
        gw.process.send_signal(signal.SIGTERM)
        h.check(sock.recv(256) == b"STOPPING=1", "no STOPPING=1")
        h.check(gw.stop() == 0, "exit code after SIGTERM")
    finally:
        sock.close()


def test_a_master_without_cap_net_admin_says_the_blocklist_cannot_work(app1, certs):
    # Started as root with CAP_NET_ADMIN out of its bounding set (as a unit's
    # CapabilityBoundingSet= could do): it serves, and says at start that
    # abusive clients cannot be blocked, instead of failing at the first block.
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv")
    gw = h.Gateway(certs, {"app1": app1}, http=False, workers=1)
    gw.config["gateway"]["user"] = "nobody"
    h.write_config(gw.config_path, gw.config)
    gw.process = h.Process(["setpriv", "--bounding-set=-net_admin", h.rampart_bin(), "serve", "-c", gw.config_path],
                           gw.name).start()
    gw.process.wait_port(gw.https_port)
    h.check(h.curl(gw, "/no-net-admin").status == 200, "no answer")
    master = _status(gw.process.pid)
    h.check(int(master["CapEff"], 16) & (1 << 12) == 0, f"the master has CAP_NET_ADMIN: {master['CapEff']}")
    h.wait_until(lambda: "no CAP_NET_ADMIN: abusive clients are counted but cannot be blocked in the firewall"
                 in gw.process.read_stderr(), 10, what="the warning on stderr")
    h.check(gw.stop() == 0, "exit code after SIGTERM")
    # With it (the default), not a word of it.
    normal = h.Gateway(certs, {"app1": app1}, http=False, workers=1).start()
    h.check(normal.stop() == 0, "exit code after SIGTERM")
    h.check("no CAP_NET_ADMIN" not in normal.process.read_stderr(), "warned although it has CAP_NET_ADMIN")
