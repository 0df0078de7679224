"""HTTP and TLS clients for the integration tests: ``curl()`` (the curl CLI),
``https_connection()`` (http.client over TLS, verified against the dev CA),
``RawTLS`` (byte-level requests), ``plain_exchange()`` (plain TCP), ``admin()`` and
``metrics()`` (the admin listener), ``Load`` (a bounded HTTPS load) and
``s_client()`` (openssl s_client). Traffic only to 127.0.0.1."""

from __future__ import annotations

import dataclasses
import http.client
import json
import re
import select
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from certificates import SITE
from gateway import Gateway
from processes import LOOPBACK, MiB, check, read_text, temp_dir, track_popen


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


def recv_until_close(sock, max_chunks: int = 1000) -> bytes:
    """What `sock` (plain or TLS, with its own timeout) receives until the peer closes; at most
    `max_chunks` reads of up to 64 KiB."""
    data = b""
    for _ in range(max_chunks):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


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
        track_popen(self.proc)
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
        head = read_text(self.head_path)
        if self.returncode != 0 and not head.strip():
            return Response(0, [], b"")
        status, headers = parse_curl_headers(head)
        body = b""
        if self.body_path.exists() and self.body_path.stat().st_size <= 1 * MiB:
            body = self.body_path.read_bytes()
        return Response(status, headers, body)



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


class LoopbackHTTPSConnection(http.client.HTTPSConnection):
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
    return LoopbackHTTPSConnection(gw.https_port, sni, client_context(gw.certs.ca), timeout)


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
