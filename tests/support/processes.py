"""Processes, temp dirs and ports for the integration tests (Python 3.11 standard library only).

What it gives:

* ``rampart_bin()``: the binary under test (``RAMPART_BIN``; default
  ``<source>/build/cmd/rampart``);
* ``check()`` and ``wait_until()``: an assert that survives ``python -O``, a bounded poll;
* a per-run temp dir (``temp_dir()``), free loopback ports (``free_ports()``);
* ``Process``: a child with stdout/stderr in files, readiness polled to a deadline,
  SIGTERM then SIGKILL by PID, and a crash (death by a signal, a sanitizer report,
  an unexpected exit code) turned into a test failure;
* monitoring: objects with ``check_health()`` (backends, gateways) registered with
  ``monitor()`` are checked after every test (``check_monitored()``);
* ``tree_rss()``: resident memory of a process and its descendants from /proc;
* ``cleanup()``: stops every process still running (by PID) and removes the temp dir;
  it runs at the end of every test module (tests/integration/conftest.py) and at exit.

Environment: ``RAMPART_BIN``, ``RAMPART_SOURCE_DIR`` (default: two levels above this
file), ``RAMPART_KEEP_TMP=1`` keeps the temp dir for debugging.

Rules every helper follows: every wait and loop has a deadline; only processes
started here are signalled, always by PID.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

SUPPORT_DIR = Path(__file__).resolve().parent
SOURCE_DIR = Path(os.environ.get("RAMPART_SOURCE_DIR") or SUPPORT_DIR.parents[1]).resolve()

LOOPBACK = "127.0.0.1"
# Readiness waits (a process listening, printing "ready", its workers started) are
# guards against a hang, not speed bounds: a fraction of a second on a quiet machine,
# sized here for a fresh machine whose CPU is shared with other builds and tests.
READY_TIMEOUT_S = 30.0

KiB = 1024
MiB = 1024 * 1024

try:  # under pytest, a Skip raised in a fixture or a test skips it
    import pytest

    Skip = pytest.skip.Exception
except ImportError:  # the benchmarks use these modules without pytest
    class Skip(Exception):  # type: ignore[no-redef]
        """A capability is missing: what needed it is skipped, not failed."""


class ProcessError(AssertionError):
    """A child process crashed, exited unexpectedly or did not stop in time."""


def rampart_bin() -> Path:
    env = os.environ.get("RAMPART_BIN")
    return Path(env) if env else SOURCE_DIR / "build" / "cmd" / "rampart"


def check(condition: bool, message: str) -> None:
    """assert that survives python -O and always carries a message."""
    if not condition:
        raise AssertionError(message)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Polls predicate until it returns a truthy value (returned) or timeout (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Temp dir and ports
# ---------------------------------------------------------------------------

_TMP: Path | None = None


def temp_dir() -> Path:
    """The run's temp dir (created on first use, removed at exit)."""
    global _TMP
    if _TMP is None:
        _TMP = Path(tempfile.mkdtemp(prefix="rampart-it-"))
    return _TMP


def free_ports(n: int) -> list[int]:
    """n distinct loopback TCP ports that were free a moment ago (bind port 0, then close)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# /proc helpers
# ---------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, starttime) of a live pid; None if it does not exist or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # dead, waiting to be reaped by its parent
        return None
    return int(fields[1]), int(fields[19])


def identity(pid: int) -> int | None:
    """Start time of a live pid (tells a reused PID apart), or None."""
    st = proc_stat(pid)
    return st[1] if st else None


def children_of(pid: int) -> list[int]:
    """Direct children of pid (scans /proc: CONFIG_PROC_CHILDREN is often off)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st and st[0] == pid:
                out.append(int(entry))
    return sorted(out)


def descendants(pid: int) -> list[int]:
    """Every descendant of pid, breadth first (one /proc scan)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st:
                parent[int(entry)] = st[0]
    out, frontier = [], [pid]
    for _ in range(64):  # depth bound
        frontier = sorted(p for p, pp in parent.items() if pp in frontier)
        if not frontier:
            break
        out.extend(frontier)
    return out


def status_fields(pid: int, keys: Iterable[str]) -> dict[str, str]:
    """Fields of /proc/PID/status (value text, stripped); {} if the process is gone."""
    keys = set(keys)
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in keys:
                    out[key] = value.strip()
    except OSError:
        pass
    return out


def worker_started(pid: int, seccomp: bool = True) -> bool:
    """Whether a forked worker has gone through its start-up: named rampart-worker, past
    its credential change (NO_NEW_PRIVS is set right after it; the master never sets it)
    and, unless gateway.seccomp is off, with its filter installed. What is left after
    that is building its event loop; connections that come meanwhile wait in the
    listening socket's queue. (A kernel that shows no Seccomp field cannot tell, and
    is not asked.)"""
    st = status_fields(pid, ("Name", "NoNewPrivs", "Seccomp"))
    return (st.get("Name") == "rampart-worker" and st.get("NoNewPrivs") == "1"
            and (not seccomp or st.get("Seccomp", "?") != "0"))


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    """VmRSS of pid plus all its descendants, in bytes."""
    return sum(rss_bytes(p) for p in [pid, *descendants(pid)])


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

_PROCESSES: list["Process"] = []
MONITORED: list = []  # objects with check_health(), checked after every test

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "ThreadSanitizer")


class Process:
    """A child process with its output in files and a bounded, PID-only stop.

    ``expect_exit`` is the exit code a SIGTERM must produce; anything else
    (another code, death by a signal, needing SIGKILL) makes stop() raise.
    """

    def __init__(self, argv: list[str], name: str, *, expect_exit: int = 0, env: dict | None = None,
                 cwd: Path | None = None, pass_fds: tuple[int, ...] = (), leftover_grace: float = 0.0) -> None:
        self.argv = [str(a) for a in argv]
        # How long descendants may take to end by themselves after the process exited (a browser's
        # helper processes notice it is gone); what still runs after that is a leftover.
        self.leftover_grace = leftover_grace
        self.pass_fds = tuple(pass_fds)
        self.name = name
        self.expect_exit = expect_exit
        self.env = env
        self.cwd = cwd
        base = temp_dir() / "logs"
        base.mkdir(exist_ok=True)
        stem = f"{name}-{len(_PROCESSES)}"
        self.stdout_path = base / f"{stem}.out"
        self.stderr_path = base / f"{stem}.err"
        self.popen: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.killed = False
        self.stopping = False
        self._tree: dict[int, int] = {}  # pid -> starttime of descendants seen

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> "Process":
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          env=self.env, cwd=self.cwd, start_new_session=True,
                                          pass_fds=self.pass_fds)
        _PROCESSES.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def poll(self) -> int | None:
        if self.popen is None:
            return None
        if self.returncode is None:
            self.returncode = self.popen.poll()
        return self.returncode

    @property
    def running(self) -> bool:
        return self.popen is not None and self.poll() is None

    def remember_tree(self) -> dict[int, int]:
        """Records the current descendants (pid -> start time) to reap them later."""
        for p in descendants(self.pid) if self.running else []:
            ident = identity(p)
            if ident is not None:
                self._tree[p] = ident
        return dict(self._tree)

    def send_signal(self, sig: int) -> None:
        if self.running:
            self.remember_tree()
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """Waits up to timeout for the exit; returns the exit code or None."""
        if self.popen is None:
            return None
        try:
            self.returncode = self.popen.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait up to timeout, then SIGKILL (process and its recorded
        descendants, by PID). Raises ProcessError unless it exited by itself
        with expect_exit. Idempotent."""
        if self.popen is None:
            return 0
        self.stopping = True
        problems = []
        if self.running:
            self.send_signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.remember_tree()
                self._kill_pid(self.pid)
                self.killed = True
                self.wait(5.0)
                problems.append(f"did not exit within {timeout:.0f}s of SIGTERM; killed")
        rc = self.poll()
        leftovers = self._kill_leftovers()
        if leftovers:
            problems.append(f"descendant(s) {leftovers} outlived it; killed")
        if not self.killed:
            problems.extend(self.crash_reasons(rc))
        unmonitor(self)
        if problems:
            raise ProcessError(f"{self.name} (pid {self.pid}): " + "; ".join(problems) + self.stderr_excerpt())
        return rc if rc is not None else -1

    def crash_reasons(self, rc: int | None) -> list[str]:
        reasons = []
        if rc is not None and rc < 0:
            reasons.append(f"died by signal {signal.Signals(-rc).name}")
        elif rc is not None and rc != self.expect_exit:
            reasons.append(f"exit code {rc}, expected {self.expect_exit}")
        reasons.extend(self.sanitizer_reports())
        return reasons

    def sanitizer_reports(self) -> list[str]:
        text = self.read_stderr()
        return [f"stderr has '{m}'" for m in SANITIZER_MARKERS if m in text]

    def _kill_pid(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _kill_leftovers(self) -> list[int]:
        """SIGKILLs recorded descendants that still run (same PID and start time) once
        leftover_grace has passed."""
        deadline = time.monotonic() + self.leftover_grace
        while time.monotonic() < deadline and any(identity(p) == i for p, i in self._tree.items()):
            time.sleep(0.02)
        left = []
        for pid, ident in self._tree.items():
            if identity(pid) == ident:
                left.append(pid)
                self._kill_pid(pid)
        deadline = time.monotonic() + 3
        while left and time.monotonic() < deadline and any(identity(p) == self._tree[p] for p in left):
            time.sleep(0.02)
        return left

    def check_alive(self) -> None:
        """Raises ProcessError if the process exited although nobody stopped it."""
        if self.stopping or self.popen is None:
            return
        rc = self.poll()
        if rc is not None:
            why = "; ".join(self.crash_reasons(rc) if rc != 0 else []) or f"exit code {rc}"
            raise ProcessError(f"{self.name} (pid {self.pid}) exited unexpectedly: {why}" + self.stderr_excerpt())
        reports = self.sanitizer_reports()
        if reports:
            raise ProcessError(f"{self.name} (pid {self.pid}): " + "; ".join(reports) + self.stderr_excerpt())

    # -- readiness and output -------------------------------------------------

    def wait_port(self, port: int, timeout: float = READY_TIMEOUT_S, host: str = LOOPBACK) -> None:
        """Polls until port accepts a TCP connection; fails early if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ProcessError(f"{self.name} exited with {self.poll()} before listening on {port}"
                                   + self.stderr_excerpt())
            if port_open(port, host, timeout=0.25):
                return
            time.sleep(0.05)
        raise ProcessError(f"{self.name} not listening on {host}:{port} after {timeout:.0f}s" + self.stderr_excerpt())

    def wait_output(self, text: str, timeout: float = READY_TIMEOUT_S) -> None:
        """Polls until stdout contains text; fails early if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.read_stdout():
                return
            if not self.running:
                raise ProcessError(f"{self.name} exited with {self.poll()} before printing {text!r}"
                                   + self.stderr_excerpt())
            time.sleep(0.05)
        raise ProcessError(f"{self.name} did not print {text!r} within {timeout:.0f}s" + self.stderr_excerpt())

    def read_stdout(self) -> str:
        return read_text(self.stdout_path)

    def read_stderr(self) -> str:
        return read_text(self.stderr_path)

    def stderr_excerpt(self, lines: int = 15) -> str:
        tail = self.read_stderr().splitlines()[-lines:]
        if not tail:
            return ""
        return f"\n    --- last {len(tail)} stderr lines of {self.name} ---\n" + "\n".join("    " + t for t in tail)


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def unmonitor(obj) -> None:
    for i, o in enumerate(MONITORED):
        if o is obj or getattr(o, "process", None) is obj:
            del MONITORED[i]
            return


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 * MiB):
            h.update(piece)
    return h.hexdigest()


def write_random_file(path: Path, size: int) -> str:
    """Writes size random bytes to path; returns their SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            piece = os.urandom(min(left, 1 * MiB))
            h.update(piece)
            f.write(piece)
            left -= len(piece)
    return h.hexdigest()


def unique(prefix: str) -> str:
    """A tag unlikely to appear elsewhere in a backend log."""
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns()}"


_POPENS: list[subprocess.Popen] = []  # short-lived clients (curl) started without a Process


def track_popen(popen: subprocess.Popen) -> subprocess.Popen:
    """Registers a client process that cleanup() kills (by PID) if it still runs."""
    _POPENS.append(popen)
    return popen


def monitor(obj) -> None:
    """Registers an object with check_health() (a backend, a gateway) to check after every test."""
    MONITORED.append(obj)


def cleanup() -> list[str]:
    """Stops every process still running (by PID) and removes the temp dir; returns
    problems (a process that crashed or did not stop). Safe to call again: later
    calls deal with what was started since."""
    global _TMP
    problems: list[str] = []
    for p in _POPENS:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    _POPENS.clear()
    for proc in reversed(_PROCESSES):
        if proc.popen is None or proc.stopping and proc.poll() is not None:
            continue
        try:
            proc.stop(timeout=15)
        except ProcessError as e:
            problems.append(str(e))
        except Exception as e:  # noqa: BLE001 (cleanup must go on)
            problems.append(f"{proc.name}: {e!r}")
    _PROCESSES.clear()
    MONITORED.clear()
    if _TMP is not None and _TMP.exists():
        if os.environ.get("RAMPART_KEEP_TMP"):
            print(f"(kept temp dir {_TMP})", flush=True)
        else:
            shutil.rmtree(_TMP, ignore_errors=True)
    _TMP = None
    return problems


atexit.register(cleanup)


def check_monitored() -> None:
    """Health of every running backend and gateway. A failed one is reported once:
    it is stopped at once (reaping its leftover workers) and no longer monitored."""
    for obj in list(MONITORED):
        try:
            obj.check_health()
        except ProcessError:
            unmonitor(obj)
            try:
                obj.process.stop(timeout=5)
            except ProcessError:
                pass  # the same crash, already being reported
            raise
