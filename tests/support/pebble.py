"""Pebble, Let's Encrypt's ACME test server, on loopback for the gateway's ACME tests.

Debian's ``pebble`` package (2.4.0) ships ``/usr/bin/pebble`` and ``/usr/bin/pebble-challtestsrv``.
``Pebble`` runs both as children (``processes.Process``), everything they read or write under one
work directory:

* ``pebble-challtestsrv`` only as a DNS server, on a free loopback port (UDP and TCP), answering
  every A query with 127.0.0.1 and no AAAA query at all (``-defaultIPv6 ""``: pebble's validator
  connects to the *first* address it resolves, and puts the AAAA answers first, so the default ::1
  would send it to [::1] where the gateway does not listen). Its challenge listeners are turned off
  (empty ``-http01``, ``-https01``, ``-tlsalpn01``); its management listener cannot be, and gets a
  free loopback port (``challtestsrv()`` posts to it, e.g. ``/add-a`` to point a name elsewhere);
* ``pebble -config FILE -dnsserver 127.0.0.1:DNS [-strict]``: the ACME server on
  ``https://127.0.0.1:PORT/dir`` and its management listener (roots, intermediates) on another
  free loopback port, both with a TLS certificate for 127.0.0.1 and localhost signed by a small
  development CA made here with the openssl command (Debian ships no example certificate);
  ``ca_file`` is that CA, to trust in the gateway's ACME client. Its validator resolves every name
  through challtestsrv, so validating www.foobar.com connects to 127.0.0.1:``http_port`` (http-01;
  the Host header carries the port: ``www.foobar.com:PORT``) or 127.0.0.1:``tls_port``
  (tls-alpn-01), where the gateway under test listens. Each validation makes 3 concurrent
  attempts (pebble's ``concurrentValidations``): expect the challenge to be fetched 3 times.

API::

    Pebble(work, http_port, tls_port, *, validity_s=None, nonce_reject=0, authz_reuse=0, strict=False)
        .directory_url      https://127.0.0.1:PORT/dir
        .management_url     https://127.0.0.1:MGMT
        .ca_file            PEM of the CA of pebble's own HTTPS certificate (exists once constructed)
        .dns_port           challtestsrv's DNS port (pebble's -dnsserver)
        .start()            both processes; returns once GET /dir and GET /roots/0 answer over TLS
                            verified with ca_file (bounded); returns self
        .stop()             SIGTERM by PID, both processes; idempotent
        .restart()          stop + start on the same ports with the same TLS certificate; pebble
                            makes a new root, intermediate and empty account/order store each start
        .directory()        the directory JSON as a dict
        .request(method, port, path, body=None, headers=None)  one HTTPS request verified with
                            ca_file, e.g. HEAD newNonce -> (status, headers (lower-case), body)
        .roots_pem()        GET /roots/0 of the management listener (the current issuing root)
        .intermediates_pem() GET /intermediates/0
        .issued_log()       pebble's output of every start so far (it logs to stdout)
        .challtestsrv(path, payload)  POST JSON to challtestsrv's management listener
        .check_health()     both processes alive (registered with processes.monitor while running)
    with Pebble(...) as p: ...   start() on entry, stop() on exit
    make_listener_certificate(dir)  the development CA and leaf (openssl); dns_query(port, name, qtype)

``validity_s`` sets ``certificateValidityPeriod`` (short-lived certificates for renewal tests;
pebble's default is 5 years; notAfter - notBefore comes out 1 s shorter: 300 gives 299 s).
``nonce_reject`` and ``authz_reuse`` (0..100, percent) are ``PEBBLE_WFE_NONCEREJECT`` (pebble's
default is 5: set here to 0 unless asked) and ``PEBBLE_AUTHZREUSE`` (pebble's default is 50).
``PEBBLE_VA_NOSLEEP=1`` always (no random delay of up to 5 s before each validation); every other
``PEBBLE_*`` variable of the environment is dropped (in particular ``PEBBLE_VA_ALWAYS_VALID``, which
would skip the validation under test).

pebble has no signal handler: SIGTERM ends it by the signal (Go's default), which is its normal
stop here, not a crash; challtestsrv exits 0 on SIGTERM. ``skip_reason()`` says why pebble cannot
run here (binaries missing), or None.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

from processes import (LOOPBACK, READY_TIMEOUT_S, Process, ProcessError, check, free_ports, monitor,
                       unmonitor)

PEBBLE_BIN = "/usr/bin/pebble"
CHALLTESTSRV_BIN = "/usr/bin/pebble-challtestsrv"
HTTP_TIMEOUT_S = 10.0  # one request to pebble on loopback; a guard against a hang
PROBE_TIMEOUT_S = 2.0  # one readiness probe: short, so that a pebble that exited is noticed soon


def skip_reason() -> str | None:
    for tool in (PEBBLE_BIN, CHALLTESTSRV_BIN):
        if not os.access(tool, os.X_OK):
            return f"{tool} missing (Debian pebble; scripts/setup.sh installs it)"
    if shutil.which("openssl") is None:
        return "openssl missing (makes pebble's TLS certificate)"
    return None


class _PebbleProcess(Process):
    """A Process whose stop by SIGTERM ends it by that signal (pebble installs no handler)."""

    def crash_reasons(self, rc: int | None) -> list[str]:
        if self.stopping and rc == -signal.SIGTERM:
            rc = self.expect_exit
        return super().crash_reasons(rc)


# ---------------------------------------------------------------------------
# TLS certificate for pebble's own listeners
# ---------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, f"openssl {' '.join(args[:2])} failed ({r.returncode}): {r.stderr.strip()}")


def make_listener_certificate(directory: Path, address: str = LOOPBACK) -> tuple[Path, Path, Path]:
    """A development CA and a leaf for `address` (127.0.0.1 by default) and localhost it signed
    (ECDSA P-256, 30 days), with the openssl command; returns (ca.pem, leaf.pem, leaf.key). Keys
    are mode 600."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, ca_key = directory / "ca.pem", directory / "ca.key"
    leaf_pem, leaf_key, leaf_csr = directory / "leaf.pem", directory / "leaf.key", directory / "leaf.csr"
    ext = directory / "leaf.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_pem), "-days", "30",
             "-subj", "/CN=Rampart test pebble listener CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash")
    _openssl("req", "-new", *ec, "-keyout", str(leaf_key), "-out", str(leaf_csr), "-subj", "/CN=localhost")
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\n"
                   f"subjectAltName=IP:{address},DNS:localhost\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid\n")
    _openssl("x509", "-req", "-in", str(leaf_csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
             "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "30",
             "-extfile", str(ext), "-out", str(leaf_pem))
    for key in (ca_key, leaf_key):
        key.chmod(0o600)
    return ca_pem, leaf_pem, leaf_key


# ---------------------------------------------------------------------------
# Ports and DNS
# ---------------------------------------------------------------------------


def _free_dns_port(avoid: set[int]) -> int:
    """A loopback port free for both UDP and TCP a moment ago (pebble asks over UDP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = udp.getsockname()[1]
            if port in avoid:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
            return port
    raise AssertionError("no loopback port free for both UDP and TCP in 50 tries")


def _plain_socket(family: int, type_: int) -> socket.socket:
    return socket.socket(family, type_)


def dns_query(port: int, name: str, qtype: int = 1, timeout: float = 1.0, sock=_plain_socket) -> list[bytes]:
    """The answers' RDATA of one query (qtype 1: A, 28: AAAA) to 127.0.0.1:port over UDP.
    Raises OSError (socket.timeout included) when nothing answers."""
    qid = int.from_bytes(os.urandom(2), "big")
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    question += qtype.to_bytes(2, "big") + b"\0\1"
    with sock(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(qid.to_bytes(2, "big") + b"\1\0\0\1\0\0\0\0\0\0" + question, (LOOPBACK, port))
        data, _ = s.recvfrom(4096)
    check(data[:2] == qid.to_bytes(2, "big"), "DNS answer with another id")
    check(data[3] & 0x0F == 0, f"DNS rcode {data[3] & 0x0F} for {name}")
    count = int.from_bytes(data[6:8], "big")
    pos, answers = 12 + len(question), []
    for _ in range(count):
        while data[pos] and data[pos] < 0xC0:  # owner name: labels, ended by 0 or a pointer
            pos += data[pos] + 1
        pos += 2 if data[pos] >= 0xC0 else 1
        length = int.from_bytes(data[pos + 8:pos + 10], "big")
        answers.append(data[pos + 10:pos + 10 + length])
        pos += 10 + length
    return answers


# ---------------------------------------------------------------------------
# Pebble
# ---------------------------------------------------------------------------


class Pebble:
    """pebble and pebble-challtestsrv on loopback; see the module docstring."""

    def __init__(self, work: Path, http_port: int, tls_port: int, *, validity_s: int | None = None,
                 nonce_reject: int = 0, authz_reuse: int = 0, strict: bool = False, host: str = LOOPBACK,
                 answer: str = LOOPBACK, netns=None) -> None:
        """host: the address pebble listens on (and its certificate's); answer: the address
        challtestsrv gives every name (where validations go); netns: (lab, host name) of
        tests/support/netns.py to run both processes in that host's namespace (probes and requests
        then go through lab.socket)."""
        check(0 <= nonce_reject <= 100 and 0 <= authz_reuse <= 100, "nonce_reject and authz_reuse are percents")
        check(validity_s is None or validity_s > 0, "validity_s must be positive")
        self.work = Path(work) / f"pebble-{http_port}-{tls_port}"
        self.work.mkdir(parents=True, exist_ok=True)
        self.http_port, self.tls_port = http_port, tls_port
        self.validity_s, self.strict = validity_s, strict
        self.host, self.answer, self.netns = host, answer, netns
        self.nonce_reject, self.authz_reuse = nonce_reject, authz_reuse
        avoid = {http_port, tls_port}
        for _ in range(20):  # the caller's ports may be free (not yet bound) too: never reuse them
            ports = free_ports(3)
            if not avoid & set(ports):
                break
        else:
            raise AssertionError(f"free_ports kept returning {avoid}")
        self.port, self.management_port, self.challtestsrv_port = ports
        self.dns_port = _free_dns_port(avoid | set(ports))
        self.directory_url = f"https://{host}:{self.port}/dir"
        self.management_url = f"https://{host}:{self.management_port}"
        self.ca_file, self.cert_file, self.key_file = make_listener_certificate(self.work / "tls", host)
        self.config_path = self.work / "pebble-config.json"
        self.pebble: Process | None = None
        self.dns: Process | None = None
        self._runs: list[Process] = []  # every pebble process started, for issued_log()

    # -- configuration ----------------------------------------------------------

    def config(self) -> dict:
        """pebble's configuration file, as a dict."""
        conf = {
            "listenAddress": f"{self.host}:{self.port}",
            "managementListenAddress": f"{self.host}:{self.management_port}",
            "certificate": str(self.cert_file),
            "privateKey": str(self.key_file),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity_s is not None:
            conf["certificateValidityPeriod"] = self.validity_s
        return {"pebble": conf}

    def challtestsrv_argv(self) -> list[str]:
        return [CHALLTESTSRV_BIN, "-dns01", f"{LOOPBACK}:{self.dns_port}", "-http01", "", "-https01", "",
                "-tlsalpn01", "", "-management", f"{LOOPBACK}:{self.challtestsrv_port}",
                "-defaultIPv4", self.answer, "-defaultIPv6", ""]

    def pebble_argv(self) -> list[str]:
        argv = [PEBBLE_BIN, "-config", str(self.config_path), "-dnsserver", f"{LOOPBACK}:{self.dns_port}"]
        return argv + (["-strict"] if self.strict else [])

    def pebble_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
        env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT=str(self.nonce_reject),
                   PEBBLE_AUTHZREUSE=str(self.authz_reuse))
        return env

    # -- lifecycle --------------------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT_S) -> "Pebble":
        """challtestsrv (ready once its DNS answers), then pebble (ready once GET /dir and
        GET /roots/0 answer over TLS verified with ca_file); each bounded by timeout."""
        check(self.pebble is None and self.dns is None, "Pebble already started")
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")
        try:
            self.dns = Process(self._wrap(self.challtestsrv_argv()), "pebble-challtestsrv", cwd=self.work).start()
            self._wait(self.dns, lambda: dns_query(self.dns_port, "www.foobar.com", sock=self._socket)
                       == [socket.inet_aton(self.answer)], timeout, f"challtestsrv's DNS on {LOOPBACK}:{self.dns_port}")
            self.pebble = _PebbleProcess(self._wrap(self.pebble_argv()), "pebble", env=self.pebble_env(),
                                         cwd=self.work).start()
            self._runs.append(self.pebble)
            # No wait_port: a bare TCP probe makes pebble log a TLS handshake error.
            self._wait(self.pebble, lambda: "newNonce" in self._get_ok(self.port, "/dir", PROBE_TIMEOUT_S),
                       timeout, f"GET {self.directory_url}")
            self._wait(self.pebble, lambda: "BEGIN CERTIFICATE" in self._get_ok(self.management_port, "/roots/0",
                                                                                 PROBE_TIMEOUT_S),
                       timeout, f"GET {self.management_url}/roots/0")
        except BaseException:
            try:
                self.stop()
            except ProcessError:
                pass  # the start's own error says more
            raise
        monitor(self)
        return self

    @staticmethod
    def _wait(process: Process, probe, timeout: float, what: str) -> None:
        """Polls probe until it is true (errors count as not yet); fails early if process exits."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                if probe():
                    return
            except (OSError, ValueError, AssertionError, http.client.HTTPException) as e:
                last = f" (last: {e!r})"
            if not process.running:
                raise ProcessError(f"{process.name} exited with {process.poll()} while waiting for {what}"
                                   + process.stderr_excerpt() + _tail(process.read_stdout()))
            if time.monotonic() >= deadline:
                raise ProcessError(f"{process.name}: no {what} after {timeout:.0f}s{last}"
                                   + process.stderr_excerpt() + _tail(process.read_stdout()))
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM by PID, pebble then challtestsrv (SIGKILL after timeout); idempotent.
        Raises ProcessError if either crashed or had to be killed (after stopping both)."""
        unmonitor(self)
        procs, self.pebble, self.dns = [self.pebble, self.dns], None, None
        errors = []
        for proc in procs:
            if proc is None:
                continue
            try:
                proc.stop(timeout)
            except ProcessError as e:
                errors.append(str(e))
        if errors:
            raise ProcessError("; ".join(errors))

    def restart(self, timeout: float = READY_TIMEOUT_S) -> None:
        """stop() then start() on the same ports and certificate. pebble forgets its accounts and
        orders and makes a new root and intermediate: fetch roots_pem() again."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> "Pebble":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def process(self) -> Process | None:
        """The pebble process (what processes.check_monitored stops when check_health fails)."""
        return self.pebble

    @property
    def running(self) -> bool:
        return self.pebble is not None and self.pebble.running

    def check_health(self) -> None:
        for proc in (self.pebble, self.dns):
            if proc is not None:
                proc.check_alive()

    # -- HTTPS to pebble ----------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _wrap(self, argv: list[str]) -> list[str]:
        return self.netns[0].argv(self.netns[1], argv) if self.netns else argv

    def _socket(self, family: int, type_: int) -> socket.socket:
        return self.netns[0].socket(self.netns[1], family, type_) if self.netns else socket.socket(family, type_)

    def request(self, method: str, port: int, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, dict[str, str], bytes]:
        """One HTTPS request to host:port verified with ca_file (no proxy); (status, headers, body)."""
        conn = _Connection(self.host, port, self._context(), timeout, self._socket)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def _get_ok(self, port: int, path: str, timeout: float = HTTP_TIMEOUT_S) -> str:
        status, _, body = self.request("GET", port, path, timeout=timeout)
        check(status == 200, f"GET https://{self.host}:{port}{path}: status {status}: {body[:200]!r}")
        return body.decode()

    def directory(self) -> dict:
        return json.loads(self._get_ok(self.port, "/dir"))

    def roots_pem(self) -> str:
        """The root that signs this run's intermediate (new at every start)."""
        return self._get_ok(self.management_port, "/roots/0")

    def intermediates_pem(self) -> str:
        return self._get_ok(self.management_port, "/intermediates/0")

    def challtestsrv(self, path: str, payload: dict) -> None:
        """POSTs JSON to challtestsrv's management listener (plain HTTP), e.g.
        ``challtestsrv("/add-a", {"host": "www.foobar.com", "addresses": ["127.0.0.2"]})``."""
        conn = http.client.HTTPConnection(LOOPBACK, self.challtestsrv_port, timeout=HTTP_TIMEOUT_S)
        try:
            conn.request("POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        check(resp.status == 200, f"challtestsrv POST {path}: status {resp.status}: {body[:200]!r}")

    # -- output ---------------------------------------------------------------------

    def issued_log(self) -> str:
        """pebble's output (stdout, then stderr) of every start so far, oldest first."""
        parts = []
        for i, proc in enumerate(self._runs):
            parts.append(f"--- pebble start {i + 1} (pid {proc.pid}) ---\n{proc.read_stdout()}{proc.read_stderr()}")
        return "\n".join(parts)


class _Connection(http.client.HTTPSConnection):
    """An HTTPSConnection whose socket comes from `sock` (a namespace's, say)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, timeout: float, sock) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._make_socket = sock

    def connect(self) -> None:
        raw = self._make_socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(self.timeout)
        try:
            raw.connect((self.host, self.port))
        except OSError:
            raw.close()
            raise
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def _tail(text: str, lines: int = 15) -> str:
    tail = text.splitlines()[-lines:]
    return ("\n    --- last stdout lines ---\n" + "\n".join("    " + t for t in tail)) if tail else ""
