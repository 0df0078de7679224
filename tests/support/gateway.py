"""The gateway and its backends for the integration tests: Rampart configuration
rendered from Python (``gateway_config()``, ``to_yaml()``), ``Backend``
(tests/support/backend.py as a child process, with its request log) and ``Gateway``
(``rampart serve`` with that configuration, its workers watched for crashes)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import backend as backend_module  # the deterministic /download content
from certificates import SITE, CertSet
from processes import (LOOPBACK, READY_TIMEOUT_S, SUPPORT_DIR, Process, ProcessError, children_of,
                       free_port, free_ports, identity, monitor, rampart_bin, status_fields, temp_dir,
                       wait_until, worker_started)

BACKEND_SCRIPT = SUPPORT_DIR / "backend.py"


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
        monitor(self)
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
        monitor(self)
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
                    if status_fields(p, ("Name",)).get("Name") != "rampart-ha-sent"]
            if len(kids) >= want and all(worker_started(p, seccomp) for p in kids):
                break
            if not self.process.running:
                raise ProcessError(f"{self.name} exited with {self.process.poll()} while its workers started"
                                   + self.process.stderr_excerpt())
            if time.monotonic() >= deadline:
                states = {p: status_fields(p, ("Name", "NoNewPrivs", "Seccomp")) for p in kids}
                raise ProcessError(f"{self.name}: {len(kids)} of {want} workers, not all started "
                                   f"{timeout:.0f}s after the port opened: {states}" + self.process.stderr_excerpt())
            time.sleep(0.02)
        self.workers = {p: identity(p) for p in kids}
        self.process.remember_tree()

    def check_health(self) -> None:
        """Master alive, no sanitizer report, and every recorded worker still the same process."""
        if self.process is None or self.process.stopping:
            return
        self.process.check_alive()
        dead = [p for p, ident in self.workers.items() if identity(p) != ident]
        if dead:
            raise ProcessError(f"{self.name}: worker(s) {dead} died (crash?)" + self.process.stderr_excerpt())

    def stop(self, timeout: float = 15.0) -> int:
        if self.process is None:
            return 0
        return self.process.stop(timeout)

    def url(self, path: str = "/", scheme: str = "https", host: str = SITE) -> str:
        port = self.https_port if scheme == "https" else self.http_port
        return f"{scheme}://{host}:{port}{path}"


def download_sha256(n: int) -> str:
    """SHA-256 of the backend's /download?bytes=n body."""
    return backend_module.content_sha256(n)
