"""Process lifecycle: SIGTERM while a slow request is in flight closes the
listeners at once, lets the request finish with 200, then exits 0 within the
drain deadline, leaving no worker behind; workers started as root run as the
configured unprivileged user.
"""

import os
import pwd
import signal
import time

import harness as h
import pytest

DRAIN_S = 10
SLOW_MS = 3000


def test_sigterm_drains_in_flight_request(certs, app1):
    gw = h.Gateway(certs, {"app1": app1}, http=False, workers=2,
                   timeouts={"drain": f"{DRAIN_S}s"}).start()
    h.curl(gw, "/warmup")
    tag = h.unique("drain")
    slow = h.curl(gw, f"/slow?ms={SLOW_MS}&tag={tag}", background=True, max_time=20)
    app1.wait_for_request(tag, timeout=5)

    t_term = time.monotonic()
    gw.process.send_signal(signal.SIGTERM)
    gw.process.stopping = True  # from here on an exit is expected

    # New connections are refused while the old request is still being served.
    h.wait_until(lambda: not h.port_open(gw.https_port, timeout=0.2), timeout=5,
                 what="the https listener to close after SIGTERM")
    h.check(not slow.done, "the slow request ended before the listener closed: test is void")
    refused = h.curl(gw, "/after-term", check_rc=False, max_time=5)
    h.check(refused.status == 0, f"a new request after SIGTERM got an answer: {refused}")

    r = slow.wait(check_rc=False)
    h.check(slow.returncode == 0 and r.status == 200,
            f"in-flight request: curl exit {slow.returncode} ({slow.stderr}), {r}")
    h.check(r.json()["server"] == "app1", f"in-flight request answered by {r}")

    rc = gw.process.wait(timeout=max(0.5, t_term + DRAIN_S + 2 - time.monotonic()))
    elapsed = time.monotonic() - t_term
    h.check(rc is not None, f"still running {elapsed:.1f}s after SIGTERM (drain {DRAIN_S}s)")
    h.check(rc == 0, f"exit code {rc} after SIGTERM, expected 0")
    gw.stop()  # reaps, and fails if a worker outlived the master or stderr has a sanitizer report


def _ids(pid: int) -> dict:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                fields[key] = value.split()
    return fields


@pytest.mark.root("checks that workers switch from root to 'nobody'")
def test_workers_drop_privileges(certs, app1):
    gw = h.Gateway(certs, {"app1": app1}, http=False, workers=2)
    gw.config["gateway"]["user"] = "nobody"
    gw.start()
    r = h.curl(gw, "/unprivileged")
    h.check(r.status == 200, f"request through unprivileged workers: {r}")
    nobody = pwd.getpwnam("nobody")
    h.check(len(gw.workers) == 2, f"expected 2 workers, found {sorted(gw.workers)}")
    for pid in gw.workers:
        ids = _ids(pid)
        h.check(ids["Uid"] == [str(nobody.pw_uid)] * 4, f"worker {pid} uids {ids['Uid']}, expected nobody's")
        h.check(ids["Gid"] == [str(nobody.pw_gid)] * 4, f"worker {pid} gids {ids['Gid']}, expected nobody's")
        h.check(ids.get("Groups", []) == [], f"worker {pid} kept supplementary groups {ids.get('Groups')}")
    h.check(_ids(gw.pid)["Uid"][0] == "0", "the master should keep root (it binds and supervises)")
    h.check(gw.stop() == 0, "exit code after SIGTERM")


def _blocked_signals(pid: int) -> int | None:
    """The SigBlk mask of pid, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigBlk:"):
                    return int(line.split()[1], 16)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return 0


def test_reload_and_reopen_signals_during_start_are_not_fatal(certs, app1):
    """SIGHUP and SIGUSR1 end a process by default. Sent while the gateway is
    still starting (a reload, or logrotate's reopen, during a restart), they
    must wait for the master, which then handles them, and must never reach
    the master through a worker it has just forked.

    What can be promised: from the program's first instruction of its own
    (rampart.cpp blocks both from .preinit_array, before any constructor and
    before main) on. Before that the kernel is still in exec or the dynamic
    loader is mapping libraries, and a signal's default action applies; no
    program can change that, only a parent blocking them before the exec. So
    each signal goes out a fixed delay after the mask shows in /proc, however
    long the exec took on this machine (seen here: a cold start on a loaded
    machine took longer than 2 ms)."""
    log = h.temp_dir() / "early-signals.log"
    gw = h.Gateway(certs, {"app1": app1}, http=False, workers=2)
    gw.config["gateway"]["access_log"] = {"path": str(log)}
    h.write_config(gw.config_path, gw.config)
    wanted = (1 << (signal.SIGHUP - 1)) | (1 << (signal.SIGUSR1 - 1))
    for i, (sig, delay) in enumerate((s, d / 1000) for d in (0, 2, 4, 6, 8, 10, 15, 20, 30)
                                     for s in (signal.SIGUSR1, signal.SIGHUP)):
        proc = h.Process([h.rampart_bin(), "serve", "-c", gw.config_path], f"rampart-early-{i}").start()
        # Bounded: 2,000 polls of 1 ms or 10 s. The mask is set before main, so
        # no other step of the start-up can come first.
        deadline = time.monotonic() + 10
        for _ in range(2000):
            mask = _blocked_signals(proc.pid)
            if mask is None or mask & wanted == wanted or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        h.check(mask is not None and mask & wanted == wanted,
                f"rampart serve did not block SIGHUP and SIGUSR1 at its start (SigBlk {mask})")
        time.sleep(delay)
        proc.send_signal(sig)
        proc.wait_port(gw.https_port, timeout=10)
        h.wait_until(lambda: "reload (" in proc.read_stderr(), timeout=5,
                     what=f"the master handling {sig.name} sent {delay * 1000:.0f} ms after the mask")
        r = h.curl(gw, f"/early/{i}")
        h.check(r.status == 200, f"after {sig.name} at {delay * 1000:.0f} ms: {r}")
        h.check(proc.stop() == 0, f"exit code after {sig.name} at {delay * 1000:.0f} ms and SIGTERM")


def _alive(pid: int) -> bool:
    """pid runs (exists and is not a zombie waiting for its new parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _descriptors(pid: int) -> dict[int, tuple[str, int]]:
    """fd -> (what it points to, its open flags) for every descriptor of pid."""
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
        except (FileNotFoundError, StopIteration):
            continue
        out[fd] = (target, flags)
    return out


def _listening_inodes(pid: int, port: int) -> set[str]:
    """Socket inodes listening on port, from pid's view of /proc/net/tcp{,6}."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in list(f)[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                    inodes.add(cols[9])
    return inodes


def test_workers_end_with_a_killed_master_and_hold_only_their_own_descriptors(certs, app1):
    """A SIGKILLed master (no supervisor around it) takes its workers with it: they stop
    listening and exit at once, also when they run as another user (setuid clears the
    parent-death signal, so it is armed after it, and the master's life line covers the rest),
    and a new gateway binds the same ports right away. While they run, workers hold neither
    the admin listener nor the write end of any pipe of the master's."""
    gw = h.Gateway(certs, {"app1": app1}, http=False, workers=2)
    if os.geteuid() == 0:
        gw.config["gateway"]["user"] = "nobody"
    gw.start()
    h.check(h.curl(gw, "/before-kill").status == 200, "no answer before the kill")
    workers = sorted(gw.workers)
    h.check(len(workers) == 2, f"expected 2 workers, found {workers}")
    admin = _listening_inodes(gw.pid, gw.admin_port)
    h.check(admin, f"the master has no socket listening on the admin port {gw.admin_port}")
    master_fds = _descriptors(gw.pid)
    master_pipes = {t for t, _ in master_fds.values() if t.startswith("pipe:")}
    for pid in workers:
        for fd, (target, flags) in _descriptors(pid).items():
            h.check(target.removeprefix("socket:[").rstrip("]") not in admin,
                    f"worker {pid} holds the admin listener (fd {fd})")
            h.check(not (target in master_pipes and flags & 0o3 == os.O_WRONLY),
                    f"worker {pid} holds the write end of the master's {target} (fd {fd})")

    gw.process.send_signal(signal.SIGKILL)
    gw.process.stopping = True
    gw.process.killed = True
    t0 = time.monotonic()
    h.check(gw.process.wait(5) == -signal.SIGKILL, "the master did not die of SIGKILL")
    left = workers
    for _ in range(300):  # 3 s at most; the bound checked is 1 s
        left = [p for p in workers if _alive(p)]
        if not left or time.monotonic() - t0 > 3:
            break
        time.sleep(0.01)
    gone_after = time.monotonic() - t0
    print(f"    workers gone {gone_after * 1000:.0f} ms after the master's SIGKILL", flush=True)
    h.check(not left, f"workers {left} outlived their master by {gone_after:.1f}s")
    h.check(gone_after <= 1.0, f"the workers took {gone_after:.2f}s to end after their master")
    gw.stop()  # reaps the killed master; fails if a descendant it had is still alive
    gw.start()  # the same ports
    h.check(h.curl(gw, "/after-kill").status == 200, "a new gateway on the same ports does not answer")
    h.check(gw.stop() == 0, "exit code of the new gateway after SIGTERM")
