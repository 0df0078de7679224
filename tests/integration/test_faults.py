"""Faults under load, against the real gateway and real backends on loopback:

- a worker SIGKILLed under keep-alive and new-connection load: the master
  starts its replacement within 100 ms, the gateway keeps serving, and a
  client that retries an idempotent request once on a broken connection (as
  browsers do) loses none; the requests broken per kill are reported;
- the access log's file system full (a 256 KiB tmpfs): every request is still
  served, lines are dropped and counted in rampart_access_log_dropped_total,
  the failure is logged once, and logging resumes when space returns;
- descriptors exhausted (RLIMIT_NOFILE 128, 300 idle clients): connections
  past the limit are closed at once instead of hanging, counted as
  rampart_connections_refused_total{limit="descriptors"}, nothing crashes,
  and service comes back when the idle clients leave.

The tmpfs needs root (otherwise that test SKIPs); the rest runs anywhere.
Every load is bounded in time and count; only processes started here are
stopped, by PID.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time

import harness as h
import pytest

REPLACE_WITHIN_S = 0.1


class RetryingLoad:
    """Like harness.Load (keep-alive and new-connection clients sending GETs for `seconds`,
    at most 100,000 requests each), but a client whose request dies with its connection
    (reset, EOF, a timeout) retries it once on a new connection, as browsers do for
    idempotent requests. `broken` holds the times of the first attempts that died;
    `failures` what failed after the retry too, or answered other than 200."""

    def __init__(self, gw, keepalive: int, fresh: int, seconds: float) -> None:
        self.gw, self.seconds = gw, seconds
        self.ok = 0
        self.broken: list[float] = []
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(True, i), daemon=True) for i in range(keepalive)]
        self.threads += [threading.Thread(target=self._run, args=(False, i), daemon=True) for i in range(fresh)]

    def start(self) -> "RetryingLoad":
        self.started = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def _attempt(self, conn, path: str):
        if conn is None:
            conn = h.https_connection(self.gw, timeout=10)
        return conn, h.request(conn, "GET", path, headers={"Host": h.SITE})

    def _run(self, keepalive: bool, index: int) -> None:
        end = self.started + self.seconds
        kind = "keep-alive" if keepalive else "new"
        conn = None
        for n in range(100_000):
            if time.monotonic() >= end:
                break
            path = f"/load?k={int(keepalive)}&t={index}&n={n}"
            try:
                conn, r = self._attempt(conn, path)
            except Exception:  # noqa: BLE001 (a broken connection: retried once below)
                with self.lock:
                    self.broken.append(time.monotonic())
                if conn is not None:
                    conn.close()
                conn = None
                try:
                    conn, r = self._attempt(None, path)
                except Exception as e:  # noqa: BLE001
                    with self.lock:
                        self.failures.append(f"{kind} #{n}: {type(e).__name__}: {e} (after a retry)")
                    if conn is not None:
                        conn.close()
                    conn = None
                    continue
            with self.lock:
                if r.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{kind} #{n}: status {r.status}")
            if not keepalive or r.header("Connection") == "close":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def join(self) -> "RetryingLoad":
        for t in self.threads:
            t.join(self.seconds + 30)
        stuck = sum(1 for t in self.threads if t.is_alive())
        if stuck:
            self.failures.append(f"{stuck} client thread(s) still waiting {self.seconds + 30:.0f}s after the end")
        return self


def _worker_ready(pid: int) -> bool:
    """The worker has finished its start (credentials, filter): it accepts from here on."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields.get("Name", "").strip() == "rampart-worker" and fields.get("Seccomp", "").strip() == "2"


def test_killed_workers_are_replaced_at_once_and_retrying_clients_lose_nothing(certs, app1, app2):
    gw = h.Gateway(certs, {"app1": app1, "app2": app2}, http=False, workers=2)
    gw.start()
    h.wait_until(lambda: all(_worker_ready(p) for p in h.children_of(gw.pid)), 5,
                 what="both workers started")
    kills = 4
    load = RetryingLoad(gw, keepalive=4, fresh=2, seconds=2.0 + kills * 1.5).start()
    time.sleep(1.5)
    report = []
    for k in range(kills):
        before = set(h.children_of(gw.pid))
        victim = sorted(before)[k % len(before)]  # each worker killed has lived over a second
        gw.process.remember_tree()
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        forked = ready = None
        for _ in range(5000):  # 5 s at most
            now = time.monotonic()
            new = [p for p in h.children_of(gw.pid) if p not in before]
            if new and forked is None:
                forked = now - t0
            if new and _worker_ready(new[0]):
                ready = now - t0
                break
            if now - t0 > 5:
                break
            time.sleep(0.001)
        report.append((t0, forked, ready))
        h.check(ready is not None, f"kill {k + 1}: no replacement worker within 5 s (forked: {forked})")
        time.sleep(1.5 - (time.monotonic() - t0) if time.monotonic() - t0 < 1.5 else 0)
    load.join()
    gw._record_workers()  # the replacements are the workers now
    print(f"    {kills} worker kills under load: {load.ok} requests ok, {len(load.broken)} broken first attempts "
          f"({len(load.broken) / kills:.1f} per kill), {len(load.failures)} failed after one retry", flush=True)
    for k, (t0, forked, ready) in enumerate(report):
        broken = sum(1 for b in load.broken if t0 <= b < t0 + 1.5)
        print(f"    kill {k + 1}: replacement forked after {forked * 1000:.1f} ms, accepting after "
              f"{ready * 1000:.1f} ms; {broken} requests broken (each retried)", flush=True)
    h.check(not load.failures, f"{len(load.failures)} requests failed although retried: {load.failures[:5]}")
    h.check(load.ok > 200, f"only {load.ok} requests served during the kills")
    worst = max(r for _, _, r in report)
    h.check(worst <= REPLACE_WITHIN_S, f"a replacement took {worst * 1000:.0f} ms to accept (bound "
            f"{REPLACE_WITHIN_S * 1000:.0f} ms): {report}")
    restarts = h.metrics(gw).get("rampart_worker_restarts_total")
    h.check(restarts == kills, f"rampart_worker_restarts_total {restarts}, expected {kills}")
    h.check(h.curl(gw, "/after-kills").status == 200, "no answer after the kills")
    h.check(gw.stop() == 0, "exit code after SIGTERM")


def _mount_tmpfs(path, size: str) -> None:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                       capture_output=True, text=True, timeout=20)
    h.check(r.returncode == 0, f"mount tmpfs on {path}: {r.stderr.strip()}")


def _umount(path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=20)


@pytest.mark.root("mounts a small tmpfs for the access log")
def test_access_log_disk_full_keeps_serving_counts_drops_and_resumes(certs, app1):
    logs = h.temp_dir() / "full-fs"
    logs.mkdir()
    _mount_tmpfs(logs, "256k")
    gw = None
    try:
        path = logs / "access.log"
        filler = logs / "filler"
        # Most of the file system taken by a file of our own: the log fills the rest.
        with open(filler, "wb") as f:
            try:
                f.write(b"\0" * (256 * 1024 - 24 * 1024))
            except OSError:
                pass
        gw = h.Gateway(certs, {"app1": app1}, http=False, workers=2)
        gw.config["gateway"]["access_log"] = {"path": str(path)}
        gw.start()
        statuses = []
        conn = h.https_connection(gw)
        for i in range(600):  # ~300 bytes a line: twice what fits
            statuses.append(h.request(conn, "GET", f"/fill/{i}", headers={"Host": h.SITE}).status)
        conn.close()
        h.check(statuses.count(200) == len(statuses), f"requests failed while the log's disk filled: "
                f"{[s for s in statuses if s != 200][:5]}")
        # The writer thread works through its ring after the responses went out: every line is
        # accounted for (written whole, or dropped and counted) once it is done.
        def accounted():
            dropped = h.metrics(gw)["rampart_access_log_dropped_total"]
            written = path.read_bytes().count(b"\n")
            return (written, dropped) if dropped > 0 and written + dropped >= 600 else None

        written, dropped = h.wait_until(accounted, 10, what="every line written or counted as dropped")
        err = gw.process.read_stderr()
        h.check(err.count("access log: write failed: No space left on device") <= 2,
                "the disk-full error is logged more than once per worker")
        h.check("No space left on device" in err, "the disk-full error is not logged")
        print(f"    disk full: 600 requests served, {written} lines written, {dropped:.0f} dropped and counted",
              flush=True)

        filler.unlink()  # space again
        tag = h.unique("resume")
        for i in range(20):
            h.check(h.curl(gw, f"/{tag}/{i}").status == 200, "request after space returned")
        h.wait_until(lambda: path.read_bytes().count(tag.encode()) >= 20, 10,
                     what="the lines of the requests after space returned in the access log")
        lines = [line for line in path.read_text(errors="replace").splitlines() if tag in line]
        for line in lines:
            json.loads(line)  # whole lines, each JSON, after the failure
        h.check("access log: writes succeed again" in gw.process.read_stderr(), "the recovery is not logged")
        h.check(gw.stop() == 0, "exit code after SIGTERM")
        gw = None
    finally:
        if gw is not None:
            try:
                gw.stop()
            finally:
                _umount(logs)
        else:
            _umount(logs)


def test_descriptors_exhausted_refuse_new_connections_cleanly_and_recover(certs, app1):
    nofile = 128
    idle_clients = 300
    gw = h.Gateway(certs, {"app1": app1}, http=False, workers=2,
                   timeouts={"handshake": "60s"})
    h.write_config(gw.config_path, gw.config)
    # prlimit sets the limit and execs rampart (same PID): the master cannot raise the soft limit
    # above the hard one.
    gw.process = h.Process(["prlimit", f"--nofile={nofile}:{nofile}", "--", h.rampart_bin(), "serve", "-c",
                            gw.config_path], gw.name).start()
    gw.process.wait_port(gw.https_port, timeout=10)
    gw._record_workers()
    h.monitor(gw)
    h.check(h.curl(gw, "/before").status == 200, "no answer before the flood")
    held = []
    try:
        for _ in range(idle_clients):
            s = socket.create_connection((h.LOOPBACK, gw.https_port), timeout=5)
            held.append(s)
        # Each worker has about 110 descriptors left for clients: the rest are refused. A refused
        # connection is closed by the gateway at once (EOF), not left waiting in the queue.
        t0 = time.monotonic()
        closed = 0
        for s in held:
            s.settimeout(max(0.05, 5 - (time.monotonic() - t0)))
            try:
                if s.recv(1) == b"":
                    closed += 1
            except (TimeoutError, socket.timeout):
                pass
            except OSError:
                closed += 1
        refused = h.metrics(gw)['rampart_connections_refused_total{limit="descriptors"}']
        print(f"    RLIMIT_NOFILE {nofile}: {idle_clients} idle clients, {closed} closed by the gateway at once, "
              f"{refused:.0f} counted as refused for want of descriptors", flush=True)
        h.check(closed > 0 and refused >= closed, f"{closed} closed, {refused} counted as refused")
        h.check(closed < idle_clients, "every idle connection was closed: the test is void")
        # A new client now gets a prompt end, not a hang.
        probe = socket.create_connection((h.LOOPBACK, gw.https_port), timeout=5)
        probe.settimeout(3)
        t1 = time.monotonic()
        try:
            ended = probe.recv(1) == b""
        except OSError:
            ended = True
        probe.close()
        h.check(ended, "a new connection was neither served nor closed while descriptors were exhausted")
        print(f"    a new connection while exhausted ended after {(time.monotonic() - t1) * 1000:.0f} ms", flush=True)
        gw.check_health()
    finally:
        for s in held:
            s.close()
    # The idle clients gone, service comes back.
    h.wait_until(lambda: h.curl(gw, "/after", check_rc=False, max_time=5).status == 200, 15,
                 what="service after the idle clients left")
    gw.check_health()
    text = gw.process.read_stderr()
    h.check(text.count("out of descriptors") <= 4, "the descriptor shortage was logged more than once per 10 s")
    h.check(gw.stop() == 0, "exit code after SIGTERM")
