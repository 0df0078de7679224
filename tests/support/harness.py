"""Integration-test harness for Rampart (Python 3.11 standard library only).

What it gives a test script:

* capabilities: ``require_rampart()``, ``require_tools()``; a missing one prints
  ``SKIP: <reason>`` and exits 77 (ctest's SKIP_RETURN_CODE);
* a per-run temp dir (``temp_dir()``), free loopback ports (``free_ports()``);
* ``make_certs()``: a dev CA and ECDSA + RSA certificates from ``rampart certs dev``;
* ``Process``: a child with stdout/stderr in files, readiness polled to a deadline,
  SIGTERM then SIGKILL by PID, and a crash (death by a signal, a sanitizer report,
  an unexpected exit code) turned into a test failure;
* ``Backend`` (tests/support/backend.py) and ``Gateway`` (``rampart serve`` with a
  config rendered from Python);
* clients: ``curl()``, ``https_connection()`` (http.client over TLS), ``RawTLS``
  (byte-level requests), ``s_client()`` and ``cert_info()`` (openssl CLI);
* ``tree_rss()``: resident memory of a process and its descendants from /proc;
* ``main(globals())``: a tiny runner. Every ``def test_*`` of the module runs in
  definition order after an optional ``setup_module()``; ``teardown_module()`` and
  the cleanup of every process and temp dir run also on failure, SIGTERM and
  timeout. It prints PASS/FAIL/SKIP per test and exits 0 only if all passed.

Environment: ``RAMPART_BIN`` (the binary; default ``<source>/build/cmd/rampart``),
``RAMPART_SOURCE_DIR`` (default: two levels above this file), ``RAMPART_KEEP_TMP=1``
keeps the temp dir for debugging.

Rules every helper follows: traffic only to 127.0.0.1; every wait and loop has a
deadline; only processes started here are signalled, always by PID.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

SUPPORT_DIR = Path(__file__).resolve().parent
SOURCE_DIR = Path(os.environ.get("RAMPART_SOURCE_DIR") or SUPPORT_DIR.parents[1]).resolve()
BACKEND_SCRIPT = SUPPORT_DIR / "backend.py"

sys.path.insert(0, str(SUPPORT_DIR))
import backend as backend_module  # noqa: E402  (the deterministic /download content)

SKIP_EXIT = 77
SITE = "www.foobar.com"
LOOPBACK = "127.0.0.1"
SUITE_BUDGET_S = 240  # one script; ctest's TIMEOUT is 300
# Readiness waits (a process listening, printing "ready", its workers started) are
# guards against a hang, not speed bounds: a fraction of a second on a quiet machine,
# sized here for a fresh machine whose CPU is shared with other builds and tests.
READY_TIMEOUT_S = 30.0

KiB = 1024
MiB = 1024 * 1024


# ---------------------------------------------------------------------------
# Skips and failures
# ---------------------------------------------------------------------------


class Skip(Exception):
    """Raised inside a test: that test is reported as SKIP, not FAIL."""


class ProcessError(AssertionError):
    """A child process crashed, exited unexpectedly or did not stop in time."""


def skip_module(reason: str) -> None:
    """A capability the whole script needs is missing: SKIP and exit 77."""
    print(f"SKIP: {reason}", flush=True)
    _cleanup()
    os._exit(SKIP_EXIT)


def debian_module(name: str, package: str):
    """Imports `name`, a module Debian ships for its own python3 (in
    /usr/lib/python3/dist-packages): when the running interpreter is another
    one (a pyenv python on PATH), the script runs again under /usr/bin/python3;
    without the package, the whole script is skipped."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError:
        if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
            os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
        skip_module(f"{package} is not installed")


def rampart_bin() -> Path:
    env = os.environ.get("RAMPART_BIN")
    return Path(env) if env else SOURCE_DIR / "build" / "cmd" / "rampart"


def require_rampart() -> Path:
    path = rampart_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        skip_module(f"rampart binary not found at {path} (set RAMPART_BIN)")
    return path


def require_tools(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            skip_module(f"{name} not found in PATH")


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


def _proc_stat(pid: int) -> tuple[int, int] | None:
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


def _identity(pid: int) -> int | None:
    """Start time of a live pid (tells a reused PID apart), or None."""
    st = _proc_stat(pid)
    return st[1] if st else None


def children_of(pid: int) -> list[int]:
    """Direct children of pid (scans /proc: CONFIG_PROC_CHILDREN is often off)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st and st[0] == pid:
                out.append(int(entry))
    return sorted(out)


def descendants(pid: int) -> list[int]:
    """Every descendant of pid, breadth first (one /proc scan)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st:
                parent[int(entry)] = st[0]
    out, frontier = [], [pid]
    for _ in range(64):  # depth bound
        frontier = sorted(p for p, pp in parent.items() if pp in frontier)
        if not frontier:
            break
        out.extend(frontier)
    return out


def _status_fields(pid: int, keys: Iterable[str]) -> dict[str, str]:
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
    st = _status_fields(pid, ("Name", "NoNewPrivs", "Seccomp"))
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
_MONITORED: list = []  # objects with check_health(), checked after every test

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
            ident = _identity(p)
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
        _unmonitor(self)
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
        while time.monotonic() < deadline and any(_identity(p) == i for p, i in self._tree.items()):
            time.sleep(0.02)
        left = []
        for pid, ident in self._tree.items():
            if _identity(pid) == ident:
                left.append(pid)
                self._kill_pid(pid)
        deadline = time.monotonic() + 3
        while left and time.monotonic() < deadline and any(_identity(p) == self._tree[p] for p in left):
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
        return _read_text(self.stdout_path)

    def read_stderr(self) -> str:
        return _read_text(self.stderr_path)

    def stderr_excerpt(self, lines: int = 15) -> str:
        tail = self.read_stderr().splitlines()[-lines:]
        if not tail:
            return ""
        return f"\n    --- last {len(tail)} stderr lines of {self.name} ---\n" + "\n".join("    " + t for t in tail)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _unmonitor(obj) -> None:
    for i, o in enumerate(_MONITORED):
        if o is obj or getattr(o, "process", None) is obj:
            del _MONITORED[i]
            return


# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class CertSet:
    dir: Path
    names: list[str]

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ecdsa(self) -> dict:
        return {"cert": str(self.dir / "ecdsa.pem"), "key": str(self.dir / "ecdsa.key")}

    @property
    def rsa(self) -> dict:
        return {"cert": str(self.dir / "rsa.pem"), "key": str(self.dir / "rsa.key")}

    @property
    def certificates(self) -> list[dict]:
        """Config entries: ECDSA first, then RSA."""
        return [self.ecdsa, self.rsa]


CERT_FILES = ("ca.pem", "ca.key", "ecdsa.pem", "ecdsa.key", "rsa.pem", "rsa.key")


def make_certs(directory: Path | str | None = None, names: Iterable[str] | None = None) -> CertSet:
    """Runs ``rampart certs dev --out DIR [--name N ...]`` and checks its output files."""
    names = list(names or [])
    directory = Path(directory or temp_dir() / ("certs-" + (names[0] if names else "default")))
    directory.mkdir(parents=True, exist_ok=True)
    argv = [str(rampart_bin()), "certs", "dev", "--out", str(directory)]
    for n in names:
        argv += ["--name", n]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    for f in CERT_FILES:
        check((directory / f).is_file(), f"rampart certs dev did not write {f}")
    for f in ("ca.key", "ecdsa.key", "rsa.key"):
        mode = (directory / f).stat().st_mode & 0o777
        check(mode == 0o600, f"{f} has mode {mode:o}, expected 600")
    return CertSet(directory, names or [SITE, "foobar.com"])


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z0-9_/][A-Za-z0-9_./@+-]*$")
_NUMERIC = re.compile(r"^[-+]?(\.?\d[\d_]*(\.\d*)?([eE][-+]?\d+)?|0x[0-9a-fA-F]+|0o[0-7]+|\.inf|\.nan)$", re.I)
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return "null"
    s = str(value)
    if _PLAIN.match(s) and s.lower() not in _YAML_WORDS and not _NUMERIC.match(s):
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars (enough for Rampart configs)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, (dict, list)):
                lines.append(f"{pad}{k}: {'{}' if isinstance(v, dict) else '[]'}")
            else:
                lines.append(f"{pad}{k}: {yaml_scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict) and item:
                body = to_yaml(item, indent + 2).splitlines()
                lines.append(f"{pad}- {body[0].lstrip()}")
                lines.extend(body[1:])
            elif isinstance(item, (dict, list)):
                lines.append(f"{pad}- {to_yaml(item, indent + 2).lstrip()}")
            else:
                lines.append(f"{pad}- {yaml_scalar(item)}")
    else:
        lines.append(pad + yaml_scalar(obj))
    return "\n".join(lines)


DEFAULT_TIMEOUTS = {
    "handshake": "10s", "header": "10s", "body": "30s", "idle": "60s",
    "upstream_connect": "3s", "upstream_response": "30s", "drain": "5s",
}
DEFAULT_LIMITS = {"header_bytes": "16KiB", "header_count": 100, "body_bytes": "10MiB"}


def gateway_config(*, https_port: int | None, http_port: int | None = None, admin_port: int | None = None,
                   certificates: list[dict], servers: dict[str, int | dict], members: list | None = None,
                   balance: str = "round_robin", workers: int | str = 2, timeouts: dict | None = None,
                   limits: dict | None = None, pool: str = "app") -> dict:
    """The config as a dict, in the key order of the contract.

    servers: name -> port, or name -> dict of server keys (port, weight, address).
    members: pool members (names or {server, weight}); default all servers.
    """
    srv = {}
    for name, spec in servers.items():
        entry = {"address": LOOPBACK, "role": "app"}
        entry.update({"port": spec} if isinstance(spec, int) else spec)
        srv[name] = entry
    listen = {}
    if https_port:
        listen["https"] = f"{LOOPBACK}:{https_port}"
    if http_port:
        listen["http"] = f"{LOOPBACK}:{http_port}"
    if admin_port:
        listen["admin"] = f"{LOOPBACK}:{admin_port}"
    return {
        "site": SITE,
        "servers": srv,
        "gateway": {
            "listen": listen,
            "workers": workers,
            "user": "",
            "tls": {"certificates": certificates},
            "hsts": {"max_age": "365d", "include_subdomains": True},
            "pools": {pool: {"balance": balance, "servers": members if members is not None else list(srv)}},
            "timeouts": {**DEFAULT_TIMEOUTS, **(timeouts or {})},
            "limits": {**DEFAULT_LIMITS, **(limits or {})},
        },
    }


def write_config(path: Path | str, config: dict | str) -> Path:
    path = Path(path)
    path.write_text(config if isinstance(config, str) else to_yaml(config) + "\n")
    return path


# ---------------------------------------------------------------------------
# Backend and gateway
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class LoggedRequest:
    kind: str  # "REQ" or "BAD"
    peer_port: int
    conn_requests: int
    method: str
    target: str
    line: str


class Backend:
    """tests/support/backend.py as a child process, with its request log."""

    def __init__(self, name: str, port: int | None = None, host: str = LOOPBACK, extra_args: tuple = ()) -> None:
        self.name = name
        self.port = port or free_port()
        self.host = host
        self.process = Process([sys.executable, BACKEND_SCRIPT, "--name", name, "--port", self.port,
                                "--host", host, *extra_args], f"backend-{name}")

    def start(self) -> "Backend":
        self.process.start()
        self.process.wait_output("ready\n", timeout=READY_TIMEOUT_S)
        _MONITORED.append(self)
        return self

    def stop(self) -> None:
        self.process.stop(timeout=15)

    def check_health(self) -> None:
        self.process.check_alive()

    def requests(self) -> list[LoggedRequest]:
        out = []
        for line in self.process.read_stdout().splitlines():
            parts = line.split(" ", 4)
            if parts[0] == "REQ" and len(parts) == 5:
                out.append(LoggedRequest("REQ", int(parts[1]), int(parts[2]), parts[3].split(" ")[0],
                                         parts[4], line))
            elif parts[0] == "BAD":
                out.append(LoggedRequest("BAD", int(parts[1]), 0, "", line.split(" ", 2)[-1], line))
        return out

    def saw(self, text: str) -> bool:
        """True if any logged request line (good or bad) contains text."""
        return any(text in r.line for r in self.requests())

    def count(self, text: str) -> int:
        return sum(text in r.line for r in self.requests())

    def wait_for_request(self, text: str, timeout: float = 15.0) -> LoggedRequest:
        def find():
            return next((r for r in self.requests() if text in r.line), None)
        return wait_until(find, timeout, what=f"backend {self.name} to receive {text!r}")


class Gateway:
    """``rampart serve -c FILE`` with a config rendered from Python.

    Adjust ``self.config`` (a dict, see gateway_config) before start() if needed.
    """

    def __init__(self, certs: CertSet, servers: dict, *, name: str = "rampart", http: bool = True,
                 admin: bool = True, extra_certificates: list[dict] | None = None, **config_args) -> None:
        self.certs = certs
        self.name = name
        self.https_port, self.http_port, self.admin_port = free_ports(3)
        if not http:
            self.http_port = None
        if not admin:
            self.admin_port = None
        servers = {k: (v.port if isinstance(v, Backend) else v) for k, v in servers.items()}
        self.config = gateway_config(https_port=self.https_port, http_port=self.http_port,
                                     admin_port=self.admin_port,
                                     certificates=certs.certificates + list(extra_certificates or []),
                                     servers=servers, **config_args)
        self.config_path = temp_dir() / f"{name}-{self.https_port}.yaml"
        self.process: Process | None = None
        self.workers: dict[int, int] = {}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = READY_TIMEOUT_S) -> "Gateway":
        write_config(self.config_path, self.config)
        self.process = Process([rampart_bin(), "serve", "-c", self.config_path], self.name).start()
        self.process.wait_port(self.https_port or self.http_port, timeout=timeout)
        self._record_workers(timeout)
        _MONITORED.append(self)
        return self

    def _record_workers(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Waits until the workers have started, then remembers their PIDs (direct
        children), to detect a worker that dies later (the master would replace it
        silently).

        The master's port is open before it forks its workers, and a worker that was
        just forked is still the master's copy (root, no sandbox, no threads of its
        own): start() returns only once every worker has gone through its start-up
        (worker_started), so that a test looking at a worker's user, sandbox or
        threads sees the worker, not a fork in progress. Bounded: a gateway whose
        workers are not up within `timeout` fails here."""
        want = self.config["gateway"]["workers"]
        want = want if isinstance(want, int) else 1
        seccomp = self.config["gateway"].get("seccomp", "enforce") != "off"
        deadline = time.monotonic() + timeout
        while True:
            # Every child but the HA sentinel (a child that waits for the master's death).
            kids = [p for p in children_of(self.pid)
                    if _status_fields(p, ("Name",)).get("Name") != "rampart-ha-sent"]
            if len(kids) >= want and all(worker_started(p, seccomp) for p in kids):
                break
            if not self.process.running:
                raise ProcessError(f"{self.name} exited with {self.process.poll()} while its workers started"
                                   + self.process.stderr_excerpt())
            if time.monotonic() >= deadline:
                states = {p: _status_fields(p, ("Name", "NoNewPrivs", "Seccomp")) for p in kids}
                raise ProcessError(f"{self.name}: {len(kids)} of {want} workers, not all started "
                                   f"{timeout:.0f}s after the port opened: {states}" + self.process.stderr_excerpt())
            time.sleep(0.02)
        self.workers = {p: _identity(p) for p in kids}
        self.process.remember_tree()

    def check_health(self) -> None:
        """Master alive, no sanitizer report, and every recorded worker still the same process."""
        if self.process is None or self.process.stopping:
            return
        self.process.check_alive()
        dead = [p for p, ident in self.workers.items() if _identity(p) != ident]
        if dead:
            raise ProcessError(f"{self.name}: worker(s) {dead} died (crash?)" + self.process.stderr_excerpt())

    def stop(self, timeout: float = 15.0) -> int:
        if self.process is None:
            return 0
        return self.process.stop(timeout)

    def url(self, path: str = "/", scheme: str = "https", host: str = SITE) -> str:
        port = self.https_port if scheme == "https" else self.http_port
        return f"{scheme}://{host}:{port}{path}"


# ---------------------------------------------------------------------------
# HTTP responses and clients
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.headers} {self.body[:200]!r}"


def plain_exchange(port: int, data: bytes, timeout: float = 15.0) -> bytes:
    """Sends data over plain TCP to a loopback port and reads until the peer
    closes, resets or timeout passes; returns what arrived."""
    received = b""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            received += chunk
    return received


def parse_head(data: bytes) -> Response | None:
    """Parses the status line and headers at the start of data (None if incomplete/absent)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        return None
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return Response(int(m.group(1)), headers, data[end + 4 :])


def parse_curl_headers(text: str) -> tuple[int, list[tuple[str, str]]]:
    """Status and headers of the last response block in a curl -D dump."""
    blocks = [b for b in re.split(r"\r?\n\r?\n", text) if b.strip()]
    check(bool(blocks), "curl wrote no response headers")
    lines = blocks[-1].splitlines()
    m = re.match(r"HTTP/[\d.]+ (\d{3})", lines[0])
    check(m is not None, f"bad status line from curl: {lines[0]!r}")
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return int(m.group(1)), headers


class CurlJob:
    """A curl run (possibly in the background) whose result is a Response."""

    _seq = 0

    def __init__(self, url: str, *args: str, port: int, host: str = SITE, ca: Path | None = None,
                 max_time: float = 20, output: Path | None = None, background: bool = False) -> None:
        CurlJob._seq += 1
        base = temp_dir() / "curl"
        base.mkdir(exist_ok=True)
        self.head_path = base / f"{CurlJob._seq}.head"
        self.body_path = Path(output) if output else base / f"{CurlJob._seq}.body"
        self.max_time = max_time
        self.argv = ["curl", "-sS", "--max-time", str(max_time), "--resolve", f"{host}:{port}:{LOOPBACK}",
                     "-D", str(self.head_path), "-o", str(self.body_path)]
        if ca:
            self.argv += ["--cacert", str(ca)]
        self.argv += [*args, url]
        self.started = time.monotonic()
        self.finished: float | None = None
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        _CURLS.append(self.proc)
        if not background:
            self.wait()

    @property
    def done(self) -> bool:
        return self.proc.poll() is not None

    def wait(self, check_rc: bool = True) -> Response:
        try:
            out, err = self.proc.communicate(timeout=self.max_time + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError(f"curl did not finish: {' '.join(self.argv)}") from None
        if self.finished is None:
            self.finished = time.monotonic()
        self.stdout = out.decode(errors="replace")  # what -w writes (the body goes to a file)
        self.stderr = err.decode(errors="replace").strip()
        self.returncode = self.proc.returncode
        if check_rc and self.returncode != 0:
            raise AssertionError(f"curl exit {self.returncode}: {self.stderr} ({' '.join(self.argv)})")
        head = _read_text(self.head_path)
        if self.returncode != 0 and not head.strip():
            return Response(0, [], b"")
        status, headers = parse_curl_headers(head)
        body = b""
        if self.body_path.exists() and self.body_path.stat().st_size <= 1 * MiB:
            body = self.body_path.read_bytes()
        return Response(status, headers, body)


_CURLS: list[subprocess.Popen] = []


def curl(gw: Gateway, path: str = "/", *args: str, scheme: str = "https", host: str = SITE,
         max_time: float = 20, output: Path | None = None, background: bool = False,
         check_rc: bool = True):
    """curl -sS --max-time T --resolve HOST:PORT:127.0.0.1 --cacert ca.pem ARGS URL.

    Returns a Response (or, with background=True, the CurlJob to wait() on)."""
    port = gw.https_port if scheme == "https" else gw.http_port
    job = CurlJob(gw.url(path, scheme, host), *args, port=port, host=host,
                  ca=gw.certs.ca if scheme == "https" else None, max_time=max_time, output=output,
                  background=True)
    if background:
        return job
    return job.wait(check_rc=check_rc)


def client_context(ca: Path | None, alpn: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class _LoopbackHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:port with SNI and certificate checks for another name."""

    def __init__(self, port: int, sni: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(sni, port, context=context, timeout=timeout)
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((LOOPBACK, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


def https_connection(gw: Gateway, sni: str = SITE, timeout: float = 10.0) -> http.client.HTTPSConnection:
    """One keep-alive HTTPS connection to the gateway (http.client, verified against the dev CA)."""
    return _LoopbackHTTPSConnection(gw.https_port, sni, client_context(gw.certs.ca), timeout)


def request(conn: http.client.HTTPConnection, method: str, path: str, body=None,
            headers: dict | None = None) -> Response:
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return Response(r.status, list(r.getheaders()), data)


def admin(gw: "Gateway", path: str, method: str = "GET", timeout: float = 30.0) -> tuple[int, str]:
    """One request to the gateway's admin listener: (status, body), also for an error status."""
    req = urllib.request.Request(f"http://{LOOPBACK}:{gw.admin_port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition: each sample's name (with its labels) -> its value."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def metrics(gw: "Gateway") -> dict[str, float]:
    """The gateway's /metrics, parsed (parse_metrics)."""
    status, text = admin(gw, "/metrics")
    check(status == 200, f"/metrics: {status} {text[:200]}")
    return parse_metrics(text)


class Load:
    """A bounded HTTPS load on a gateway: `keepalive` clients, each on its own
    connection (reopened after `Connection: close` or an error), and `fresh`
    clients that open a new connection per request, each sending GET `path`
    in a loop for `seconds` or until stop() (and at most 100,000 requests). A
    request fails when it gets no response or a non-200; every failure is
    recorded.

    `connect(gw)` makes a connection (default: https_connection). After
    join(): `ok`, `failures`, `latencies` (seconds, every request) and
    `servers` (X-Backend value -> the monotonic start times of the requests it
    answered with 200: a request that started after an event cannot have been
    answered before it, however late its client thread got to run)."""

    def __init__(self, gw: Gateway, *, keepalive: int = 6, fresh: int = 0, seconds: float = 8.0,
                 path: str = "/load", connect: Callable[[Gateway], http.client.HTTPConnection] | None = None) -> None:
        self.gw, self.seconds, self.path = gw, seconds, path
        self.connect = connect or (lambda g: https_connection(g, timeout=10))
        self.ok = 0
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.servers: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.ended: float | None = None
        self.threads = [threading.Thread(target=self._run, args=(True, i), daemon=True) for i in range(keepalive)]
        self.threads += [threading.Thread(target=self._run, args=(False, i), daemon=True) for i in range(fresh)]

    def start(self) -> "Load":
        self.started = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def _run(self, keepalive: bool, index: int) -> None:
        end = self.started + self.seconds
        kind = "keep-alive" if keepalive else "new"
        conn = None
        n = 0
        while time.monotonic() < end and n < 100_000 and not self._stop.is_set():
            n += 1
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = self.connect(self.gw)
                r = request(conn, "GET", f"{self.path}?k={int(keepalive)}&t={index}&n={n}", headers={"Host": SITE})
                dt = time.monotonic() - t0
                with self.lock:
                    self.latencies.append(dt)
                    if r.status == 200:
                        self.ok += 1
                        self.servers.setdefault(r.header("X-Backend") or "", []).append(t0)
                    else:
                        self.failures.append(f"{kind} #{n}: status {r.status} after {dt:.2f}s")
                if not keepalive or r.header("Connection") == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 (every failure counts)
                with self.lock:
                    self.failures.append(f"{kind} #{n}: {type(e).__name__}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def stop(self) -> "Load":
        """Ends the load before `seconds` are up: every client stops after its current request."""
        self._stop.set()
        return self

    def join(self) -> "Load":
        for t in self.threads:
            t.join(max(self.started + self.seconds - time.monotonic(), 0) + 30)
        stuck = sum(1 for t in self.threads if t.is_alive())
        if stuck:
            with self.lock:
                self.failures.append(f"{stuck} client thread(s) still waiting 30s after the end")
        self.ended = time.monotonic()
        ran = max(self.ended - self.started, 0.001)
        total = self.ok + len(self.failures)
        lat = sorted(self.latencies) or [0.0]
        print(f"    load: {total} requests in {ran:.0f}s ({total / ran:.0f}/s), "
              f"{len(self.failures)} failed, p50 {lat[len(lat) // 2] * 1000:.1f} ms, max {lat[-1] * 1000:.0f} ms",
              flush=True)
        return self


class RawTLS:
    """A TLS connection for byte-level requests: send pieces, read what comes back."""

    def __init__(self, port: int, ca: Path | None, sni: str = SITE, timeout: float = 10.0) -> None:
        raw = socket.create_connection((LOOPBACK, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = client_context(ca).wrap_socket(raw, server_hostname=sni)
        self.received = b""
        self.closed = False       # reading hit the end: FIN, close_notify or reset
        self.reset = False        # ... and it was a reset
        self.send_failed = False  # writing failed (the peer closed or reset); reading may still work

    def send(self, data: bytes) -> bool:
        """Sends data; False if the connection can no longer be written to."""
        if self.closed or self.send_failed:
            return False
        try:
            self.sock.sendall(data)
            return True
        except (OSError, ssl.SSLError):
            self.send_failed = True
            return False

    def poll(self, timeout: float = 0.0) -> bytes:
        """Reads whatever arrives within timeout; sets closed on EOF/reset."""
        new = b""
        deadline = time.monotonic() + timeout
        for _ in range(100000):  # bounded; each pass reads up to 64 KiB
            remaining = deadline - time.monotonic()
            if self.closed or (remaining < 0 and new):
                break
            if self.sock.pending() == 0:
                readable, _, _ = select.select([self.sock], [], [], max(remaining, 0))
                if not readable:
                    break
            try:
                chunk = self.sock.recv(65536)
            except ssl.SSLWantReadError:
                continue
            except ConnectionResetError:
                self.closed = self.reset = True
                break
            except (ssl.SSLError, OSError):
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            new += chunk
        self.received += new
        return new

    def read_until_close(self, timeout: float) -> bytes:
        """Reads until the peer closes or timeout; returns everything received so far."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.poll(min(0.2, max(deadline - time.monotonic(), 0)))
        return self.received

    def read_response(self, timeout: float) -> Response | None:
        """Reads until a full response head arrived (or close/timeout); body as far as received,
        completed up to Content-Length when it is given."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = parse_head(self.received)
            if resp is not None:
                length = resp.header("Content-Length")
                if length is None or len(resp.body) >= int(length) or self.closed:
                    return resp
            if self.closed:
                break
            self.poll(min(0.2, max(deadline - time.monotonic(), 0)))
        return parse_head(self.received)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawTLS":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------
# openssl CLI
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class SClient:
    returncode: int
    out: str
    err: str

    @property
    def handshake_ok(self) -> bool:
        m = re.search(r"^New, (\S+), Cipher is (\S+)", self.out, re.M)
        return self.returncode == 0 and m is not None and m.group(2) != "(NONE)"

    @property
    def protocol(self) -> str | None:
        """The negotiated version. "New, X, Cipher is" names the cipher's version, not the
        connection's, so prefer the session's "Protocol :" line; TLS 1.3 sessions are only
        printed once a ticket arrived, but only TLS 1.3 uses TLS 1.3 cipher suites."""
        m = re.search(r"^\s+Protocol\s*: (TLSv[\d.]+)", self.out, re.M)
        if m:
            return m.group(1)
        m = re.search(r"^New, TLSv1\.3, Cipher is", self.out, re.M)
        return "TLSv1.3" if m else None

    @property
    def cipher(self) -> str | None:
        m = re.search(r"^New, \S+, Cipher is (\S+)", self.out, re.M)
        return m.group(1) if m else None

    @property
    def alpn(self) -> str | None:
        m = re.search(r"^ALPN protocol: (\S+)", self.out, re.M)
        return m.group(1) if m else None

    @property
    def peer_signature_type(self) -> str | None:
        m = re.search(r"^Peer signature type: (\S+)", self.out, re.M)
        return m.group(1) if m else None

    @property
    def verify_ok(self) -> bool:
        return "Verify return code: 0 (ok)" in self.out

    @property
    def cert_pem(self) -> str | None:
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", self.out, re.S)
        return m.group(0) if m else None

    def summary(self) -> str:
        err = self.err.strip().splitlines()
        return (f"rc={self.returncode} protocol={self.protocol} cipher={self.cipher} alpn={self.alpn} "
                f"sig={self.peer_signature_type} err={err[-1] if err else ''}")


def s_client(port: int, *args: str, sni: str | None = SITE, ca: Path | None = None,
             timeout: float = 30.0) -> SClient:
    """openssl s_client -connect 127.0.0.1:PORT [-servername SNI] [-CAfile ca] ARGS, stdin closed."""
    argv = ["openssl", "s_client", "-connect", f"{LOOPBACK}:{port}"]
    if sni:
        argv += ["-servername", sni]
    if ca:
        argv += ["-CAfile", str(ca)]
    argv += list(args)
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from None
    return SClient(r.returncode, r.stdout, r.stderr)


@dataclasses.dataclass
class CertInfo:
    names: list[str]  # SAN DNS names
    key_type: str     # "EC" or "RSA"
    subject: str


def cert_info(pem: str) -> CertInfo:
    """SAN DNS names, public key type and subject of a PEM certificate (openssl x509)."""
    r = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem, capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 0, f"openssl x509 failed: {r.stderr.strip()}")
    names = re.findall(r"DNS:([^,\s]+)", r.stdout)
    algo = re.search(r"Public Key Algorithm: (\S+)", r.stdout)
    key = {"id-ecPublicKey": "EC", "rsaEncryption": "RSA"}.get(algo.group(1) if algo else "", "?")
    subject = re.search(r"Subject: (.*)", r.stdout)
    return CertInfo(names, key, subject.group(1).strip() if subject else "")


# ---------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------


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


def download_sha256(n: int) -> str:
    """SHA-256 of the backend's /download?bytes=n body."""
    return backend_module.content_sha256(n)


def unique(prefix: str) -> str:
    """A tag unlikely to appear elsewhere in a backend log."""
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns()}"


# ---------------------------------------------------------------------------
# Cleanup and runner
# ---------------------------------------------------------------------------

_CLEANED = False


def _cleanup() -> list[str]:
    """Stops every process still running (by PID) and removes the temp dir. Returns problems."""
    global _CLEANED
    problems: list[str] = []
    if _CLEANED:
        return problems
    _CLEANED = True
    for p in _CURLS:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    for proc in reversed(_PROCESSES):
        if proc.popen is None or proc.stopping and proc.poll() is not None:
            continue
        try:
            proc.stop(timeout=15)
        except ProcessError as e:
            problems.append(str(e))
        except Exception as e:  # noqa: BLE001 (cleanup must go on)
            problems.append(f"{proc.name}: {e!r}")
    if _TMP is not None and _TMP.exists():
        if os.environ.get("RAMPART_KEEP_TMP"):
            print(f"(kept temp dir {_TMP})", flush=True)
        else:
            shutil.rmtree(_TMP, ignore_errors=True)
    return problems


atexit.register(_cleanup)


def _check_monitored() -> None:
    """Health of every running backend and gateway. A failed one is reported once:
    it is stopped at once (reaping its leftover workers) and no longer monitored."""
    for obj in list(_MONITORED):
        try:
            obj.check_health()
        except ProcessError:
            _unmonitor(obj)
            try:
                obj.process.stop(timeout=5)
            except ProcessError:
                pass  # the same crash, already being reported
            raise


def _where(exc: BaseException, test_file: str | None) -> str:
    """file:line of the innermost frame in the test script (or the last frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    target = os.path.abspath(test_file) if test_file else None
    pick = [f for f in frames if target and os.path.abspath(f.filename) == target] or frames
    if not pick:
        return ""
    f = pick[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno}"


class _Timeout(BaseException):
    pass


_BUDGET = [SUITE_BUDGET_S]


def _on_alarm(signum, frame):
    raise _Timeout(f"script exceeded its {_BUDGET[0]}s time budget")


def _on_term(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(namespace: dict, tools: Iterable[str] = ("curl", "openssl"), budget_s: int = SUITE_BUDGET_S) -> None:
    """Runs setup_module(), every test_* in definition order, teardown_module(); exits.

    Exit code: 0 if every test passed (or skipped, with at least one pass), 77 if
    all were skipped, 1 otherwise. Cleanup runs whatever happens."""
    test_file = namespace.get("__file__")
    script = os.path.basename(test_file or "?")
    require_rampart()
    require_tools(*tools)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGALRM, _on_alarm)
    _BUDGET[0] = budget_s
    signal.alarm(budget_s)

    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    results: dict[str, str] = {}
    t_start = time.monotonic()
    print(f"== {script}: {len(tests)} tests, rampart = {rampart_bin()}", flush=True)

    def report(name: str, exc: BaseException, t0: float) -> None:
        results[name] = "FAIL"
        where = _where(exc, test_file)
        msg = str(exc) or type(exc).__name__
        where = "" if msg.startswith("after the test") else f" [{where}]"
        print(f"FAIL {name} ({time.monotonic() - t0:.1f}s){where}: {msg}", flush=True)
        if not isinstance(exc, (AssertionError, _Timeout, KeyboardInterrupt)):
            traceback.print_exception(exc, file=sys.stdout)
        for obj in _MONITORED:
            if isinstance(obj, Gateway) and obj.process is not None and not isinstance(exc, ProcessError):
                excerpt = obj.process.stderr_excerpt(10)
                if excerpt:
                    print(excerpt.lstrip("\n"), flush=True)

    aborted = False
    try:
        setup = namespace.get("setup_module")
        if setup:
            t0 = time.monotonic()
            try:
                setup()
            except Skip as e:
                print(f"SKIP: {e}", flush=True)
                problems = _cleanup()
                for p in problems:
                    print(f"FAIL cleanup: {p}", flush=True)
                signal.alarm(0)
                os._exit(1 if problems else SKIP_EXIT)
            except BaseException as e:  # noqa: BLE001
                report("setup_module", e, t0)
                aborted = True
        for name, fn in tests:
            if aborted:
                results[name] = "FAIL"
                print(f"FAIL {name}: not run (earlier abort)", flush=True)
                continue
            t0 = time.monotonic()
            try:
                fn()
                try:
                    _check_monitored()
                except ProcessError as e:
                    raise ProcessError(f"after the test: {e}") from None
            except Skip as e:
                results[name] = "SKIP"
                print(f"SKIP {name}: {e}", flush=True)
                continue
            except (_Timeout, KeyboardInterrupt) as e:
                report(name, e, t0)
                aborted = True
                continue
            except BaseException as e:  # noqa: BLE001
                report(name, e, t0)
                continue
            results[name] = "PASS"
            print(f"PASS {name} ({time.monotonic() - t0:.1f}s)", flush=True)
    finally:
        teardown = namespace.get("teardown_module")
        if teardown:
            try:
                teardown()
            except BaseException as e:  # noqa: BLE001
                report("teardown_module", e, time.monotonic())
        for p in _cleanup():
            results["cleanup"] = "FAIL"
            print(f"FAIL cleanup: {p}", flush=True)
        signal.alarm(0)

    failed = [n for n, r in results.items() if r == "FAIL"]
    passed = [n for n, r in results.items() if r == "PASS"]
    print(f"== {script}: {len(passed)} passed, {len(failed)} failed, "
          f"{sum(r == 'SKIP' for r in results.values())} skipped in {time.monotonic() - t_start:.1f}s", flush=True)
    sys.stdout.flush()
    if failed:
        os._exit(1)
    os._exit(0 if passed else SKIP_EXIT)
