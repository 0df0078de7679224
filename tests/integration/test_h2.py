"""HTTP/2 to clients: real clients (curl --http2, nghttp, h2load) and raw frames.

ALPN h2 is the default; each stream is one exchange (routes, pools, static
files, the access log), mapped to HTTP/1.1 for the app servers. Covered:
curl and nghttp over h2 and the SETTINGS the gateway announces; many streams
at once on one connection; bodies both ways larger than any window; the
h2 -> h1 downgrade rules (each malformed request refused with RST_STREAM or
400 and never seen by an app server; cookie crumbs joined); the attack
classes (Rapid Reset, CONTINUATION flood, HPACK bomb, PING / SETTINGS /
empty DATA / WINDOW_UPDATE floods, a window never opened, too many streams),
each ending the attacker's connection with GOAWAY ENHANCE_YOUR_CALM and a
violation while another client keeps being served; GOAWAY on reload with the
stream in flight finishing; the idle timeout; protocol in metrics.

Raw frames are written here (hpack, from Debian's python3-h2, encodes the
header blocks) so that a test can send exactly what a well-behaved library
refuses to.
"""

import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import harness as h
import pytest

pytestmark = pytest.mark.tools("curl", "openssl", "nghttp", "h2load")

hpack = pytest.importorskip("hpack", reason="python3-h2 (its hpack) is not installed")

BODY_TIMEOUT_S = 3

# Frame types and flags (RFC 9113 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 0x0, 0x1, 0x7, 0x8, 0xB
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def settings_frame(values: dict | None = None) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in (values or {}).items()))


class H2:
    """A raw HTTP/2 client over TLS: frames out exactly as built, frames in parsed."""

    def __init__(self, gw, settings: dict | None = None, timeout: float = 10.0) -> None:
        ctx = ssl.create_default_context(cafile=str(gw.certs.ca))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection((h.LOOPBACK, gw.https_port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=h.SITE)
        h.check(self.sock.selected_alpn_protocol() == "h2", f"ALPN chose {self.sock.selected_alpn_protocol()}")
        self.authority = f"{h.SITE}:{gw.https_port}"
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 65536
        self.buffer = b""
        self.closed = False
        self.goaway: tuple[int, int] | None = None  # (last stream id, error code)
        self.server_settings: dict[int, int] = {}
        self.streams: dict[int, dict] = {}
        self.send(PREFACE + settings_frame(settings))

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except (OSError, ssl.SSLError):
            self.closed = True
            return False

    def block(self, headers: list, huffman: bool = True) -> bytes:
        return self.encoder.encode(headers, huffman=huffman)

    def request_headers(self, path: str = "/", method: str = "GET", extra: list | None = None) -> list:
        return [(":method", method), (":scheme", "https"), (":path", path), (":authority", self.authority),
                *(extra or [])]

    def request(self, stream: int, path: str = "/", method: str = "GET", extra: list | None = None,
                body: bytes | None = None, headers: list | None = None) -> None:
        hdrs = headers if headers is not None else self.request_headers(path, method, extra)
        block = self.block(hdrs)
        # A block larger than a frame goes on in CONTINUATION frames.
        pieces = [block[i:i + 16384] for i in range(0, max(len(block), 1), 16384)]
        end = END_STREAM if body is None else 0
        out = frame(HEADERS, end | (END_HEADERS if len(pieces) == 1 else 0), stream, pieces[0])
        for i, piece in enumerate(pieces[1:], 2):
            out += frame(CONTINUATION, END_HEADERS if i == len(pieces) else 0, stream, piece)
        if body is not None:
            for i in range(0, max(len(body), 1), 16384):
                piece = body[i:i + 16384]
                out += frame(DATA, END_STREAM if i + 16384 >= len(body) else 0, stream, piece)
        self.send(out)

    def _stream(self, sid: int) -> dict:
        return self.streams.setdefault(sid, {"headers": [], "body": b"", "ended": False, "reset": None})

    def read_once(self, timeout: float) -> bool:
        """Reads what arrives within `timeout`; False when the connection closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return True
        except (OSError, ssl.SSLError):
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        self.buffer += data
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, flags = self.buffer[3], self.buffer[4]
            sid = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
            payload = self.buffer[9:9 + length]
            self.buffer = self.buffer[9 + length:]
            self._on_frame(kind, flags, sid, payload)
        return True

    def _on_frame(self, kind, flags, sid, payload) -> None:
        if kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload), 6):
                k, v = struct.unpack(">HI", payload[i:i + 6])
                self.server_settings[k] = v
            self.send(frame(SETTINGS, ACK, 0))
        elif kind == HEADERS:
            s = self._stream(sid)
            s["headers"] += [(k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
                             for k, v in self.decoder.decode(payload)]
            if flags & END_STREAM:
                s["ended"] = True
        elif kind == DATA:
            s = self._stream(sid)
            s["body"] += payload
            if flags & END_STREAM:
                s["ended"] = True
            if payload:
                # Keep both windows open: a client that reads.
                inc = struct.pack(">I", len(payload))
                self.send(frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, sid, inc))
        elif kind == RST_STREAM:
            self._stream(sid)["reset"] = struct.unpack(">I", payload)[0]
        elif kind == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7FFFFFFF, code)

    def response(self, sid: int, timeout: float = 20.0) -> dict:
        """The stream's response: {status, headers, body, reset}; waits until it ended or was reset."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.streams.get(sid)
            if s and (s["ended"] or s["reset"] is not None):
                break
            if not self.read_once(min(0.5, max(0.01, deadline - time.monotonic()))):
                break
        s = self._stream(sid)
        status = next((int(v) for k, v in s["headers"] if k == ":status" and v != "100"), None)
        return {"status": status, "headers": s["headers"], "body": s["body"], "reset": s["reset"],
                "ended": s["ended"]}

    def wait_closed(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.read_once(min(0.5, max(0.01, deadline - time.monotonic()))):
            pass
        return self.closed

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def header(resp: dict, name: str) -> str | None:
    return next((v for k, v in resp["headers"] if k == name), None)


# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def static_root() -> Path:
    """The root of the /files/ route."""
    root = h.temp_dir() / "h2-static"
    root.mkdir()
    return root


@pytest.fixture(scope="module")
def big_sha(static_root) -> str:
    """SHA-256 of /files/big.bin (5 MiB of random bytes)."""
    return h.write_random_file(static_root / "big.bin", 5 * 1024 * 1024)


@pytest.fixture(scope="module")
def access_log() -> Path:
    return h.temp_dir() / "h2-access.log"


@pytest.fixture(scope="module")
def gw(certs, backends, static_root, big_sha, access_log) -> h.Gateway:
    """One worker: static files under /files/, the rest to app1 and app2; an access log;
    abusive clients counted, not blocked."""
    gw = h.Gateway(certs, dict(backends), workers=1,
                   timeouts={"body": f"{BODY_TIMEOUT_S}s", "drain": "10s"},
                   limits={"max_connections_per_client": 5000})
    gw.config["gateway"]["routes"] = [
        {"path": "/files/", "static": {"root": str(static_root)}},
        {"path": "/", "pool": "app"},
    ]
    gw.config["gateway"]["access_log"] = {"path": str(access_log)}
    gw.config["gateway"]["abuse"] = {"block": False}
    gw.config["gateway"]["log_level"] = "debug"
    gw.start()
    yield gw
    gw.stop()

def _metrics(gw) -> dict:
    return h.metrics(gw)


def _abuse(gw, kind: str) -> float:
    return _metrics(gw).get(f'rampart_h2_abuse_total{{kind="{kind}"}}', 0.0)


def _never_reached(backends, marker: str) -> None:
    for b in ("app1", "app2"):
        h.check(not backends[b].saw(marker), f"{marker} reached {b}")


# ---------------------------------------------------------------------------
# Real clients
# ---------------------------------------------------------------------------


def test_curl_over_h2_and_access_log_protocol(gw, backends, certs, big_sha, access_log):
    r = h.curl(gw, "/curl-h2?x=1", "--http2", "-v")
    h.check(r.status == 200, f"curl --http2: {r}")
    # The -v trace is on stderr: ALPN and the h2 status line.
    job = h.CurlJob(gw.url("/curl-h2-trace"), "--http2", "-v", port=gw.https_port, ca=certs.ca)
    h.check("ALPN: server accepted h2" in job.stderr, f"ALPN h2 not negotiated: {job.stderr[-800:]}")
    h.check("< HTTP/2 200" in job.stderr, f"no HTTP/2 status line: {job.stderr[-800:]}")
    got = backends[r.header("x-backend")].wait_for_request("/curl-h2?x=1")
    h.check(got.method == "GET", f"the backend got {got.line}")
    # The app server speaks HTTP/1.1 and sees the usual forwarded fields.
    doc = r.json()
    names = {k.lower() for k, _ in doc["headers"]}
    h.check({"host", "x-forwarded-for", "x-forwarded-proto", "x-request-id"} <= names, f"headers: {doc['headers']}")
    # A 1 MiB static file and a 1 MiB chunked backend answer, intact.
    out = h.temp_dir() / "h2-big.bin"
    r = h.curl(gw, "/files/big.bin", "--http2", output=out)
    h.check(r.status == 200 and h.sha256_file(out) == big_sha, f"static over h2: {r.status}")
    r = h.curl(gw, "/download?bytes=3000000&chunked=1", "--http2", output=out)
    h.check(r.status == 200 and h.sha256_file(out) == h.download_sha256(3000000), "chunked download over h2")
    # An upload larger than any window and than buffer_body_bytes.
    up = h.temp_dir() / "h2-upload.bin"
    sha = h.write_random_file(up, 4 * 1024 * 1024)
    r = h.curl(gw, "/upload", "--http2", "--data-binary", f"@{up}")
    h.check(r.status == 200 and r.json()["sha256"] == sha and r.json()["bytes"] == 4 * 1024 * 1024,
            f"upload over h2: {r.status} {r.body[:200]!r}")

    def lines():
        import json
        return [json.loads(x) for x in access_log.read_text().splitlines() if x.strip()]
    rec = h.wait_until(lambda: next((x for x in lines() if x["path"] == "/curl-h2?x=1"), None), 10,
                       what="the access log line")
    h.check(rec["protocol"] == "h2" and rec["status"] == 200, f"access log: {rec}")
    up_rec = h.wait_until(lambda: next((x for x in lines() if x["path"] == "/upload"), None), 10,
                          what="the upload's access log line")
    h.check(up_rec["bytes_received"] == 4 * 1024 * 1024, f"upload logged: {up_rec}")


def test_nghttp_shows_the_settings(gw):
    out = subprocess.run(["nghttp", "-nv", "--timeout=10", f"https://{h.LOOPBACK}:{gw.https_port}/nghttp"],
                         capture_output=True, text=True, timeout=30).stdout
    for want in ("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100", "SETTINGS_INITIAL_WINDOW_SIZE(0x04):65536",
                 "SETTINGS_MAX_FRAME_SIZE(0x05):16384", "SETTINGS_HEADER_TABLE_SIZE(0x01):4096",
                 "SETTINGS_MAX_HEADER_LIST_SIZE(0x06):16384", "SETTINGS_ENABLE_PUSH(0x02):0",
                 "The negotiated protocol: h2", ":status: 200"):
        h.check(want in out, f"nghttp -nv lacks {want!r}:\n{out[:2000]}")


def test_streams_run_at_once_on_one_connection(gw):
    c = H2(gw)
    try:
        n = 40
        start = time.monotonic()
        for i in range(n):
            c.request(1 + 2 * i, f"/slow?ms=400&i={i}")
        results = [c.response(1 + 2 * i, timeout=60) for i in range(n)]
        took = time.monotonic() - start
        h.check(all(r["status"] == 200 for r in results), f"statuses {[r['status'] for r in results]}")
        ids = {header(r, "x-request-id") for r in results}
        h.check(len(ids) == n, "each stream is its own exchange")
        # One after another they would take 16 s; the bound is loose for a busy machine.
        h.check(took < 12, f"{n} streams of 400 ms took {took:.1f}s on one connection")
        print(f"    {n} streams of 400 ms on one connection: {took:.2f}s", flush=True)
    finally:
        c.close()


def test_connection_works_after_its_idle_pages_went_back(gw):
    """An h2 connection without streams for a second hands nghttp2's frame
    buffer and its all-zero pages (the stream map) back to the kernel; the
    next streams on it must find the session intact: the HPACK table the
    client built up, the stream map, the frame buffer."""
    c = H2(gw)
    try:
        extra = [("x-state", "-".join(["kept in the decoder dynamic table"] * 4))]
        for sid in (1, 3, 5):
            c.request(sid, f"/before?i={sid}", extra=extra)
        h.check(all(c.response(sid)["status"] == 200 for sid in (1, 3, 5)), "requests before the pause")
        releases = _metrics(gw).get("rampart_h2_idle_releases_total", 0.0)
        # idle_release is 1 s; on a busy machine the timer may fire later.
        h.wait_until(lambda: _metrics(gw).get("rampart_h2_idle_releases_total", 0.0) > releases, 30, 0.2,
                     "the idle connection's pages handed back")
        ids = [7 + 2 * i for i in range(30)]
        for sid in ids:
            c.request(sid, f"/after?i={sid}", extra=extra)
        results = [c.response(sid, timeout=30) for sid in ids]
        h.check(all(r["status"] == 200 for r in results), f"statuses {[r['status'] for r in results]}")
        h.check(all(f"/after?i={sid}" in r["body"].decode(errors="replace") for sid, r in zip(ids, results)),
                "each stream got its own response")
        h.check(len({header(r, "x-request-id") for r in results}) == len(ids), "one exchange per stream")
    finally:
        c.close()


def test_h2load_many_clients(gw):
    out = subprocess.run(["h2load", "-n", "2000", "-c", "16", "-m", "10", "--connect-to",
                          f"{h.LOOPBACK}:{gw.https_port}", f"https://{h.SITE}:{gw.https_port}/h2load"],
                         capture_output=True, text=True, timeout=120).stdout
    h.check("2000 succeeded, 0 failed, 0 errored" in out and "status codes: 2000 2xx" in out,
            f"h2load:\n{out[-1500:]}")


# ---------------------------------------------------------------------------
# The h2 -> h1 mapping
# ---------------------------------------------------------------------------


def _refused(gw, backends, name: str, headers: list, body: bytes | None = None) -> None:
    """Sends a request built from `headers` (`MARK` in :path is replaced by a marker);
    it must end in RST_STREAM or a 4xx, and never reach an app server."""
    marker = h.unique("/h2-bad-" + name.replace(" ", "-"))
    c = H2(gw)
    try:
        hdrs = [(k, v.replace("MARK", marker) if isinstance(v, str) else v) for k, v in headers]
        c.request(1, headers=hdrs, body=body)
        r = c.response(1, timeout=15)
        refused = r["reset"] is not None or (r["status"] is not None and 400 <= r["status"] < 500)
        h.check(refused, f"{name}: not refused: {r}")
        # The connection still serves a good request (a stream error, not a connection error).
        if not c.closed and c.goaway is None:
            c.request(3, "/after-bad")
            ok = c.response(3)
            h.check(ok["status"] == 200, f"{name}: the next stream got {ok}")
    finally:
        c.close()
    _never_reached(backends, marker)
    return r


def test_malformed_requests_never_reach_an_app_server(gw, backends):
    auth = f"{h.SITE}:{gw.https_port}"
    base = [(":method", "GET"), (":scheme", "https"), (":path", "MARK"), (":authority", auth)]
    without = lambda name: [x for x in base if x[0] != name]  # noqa: E731
    cases = {
        "no method": without(":method"),
        "no scheme": without(":scheme"),
        "no path": without(":path") + [("x-path", "MARK")],
        "scheme http": [(":method", "GET"), (":scheme", "http"), (":path", "MARK"), (":authority", auth)],
        "path not origin form": [(":method", "GET"), (":scheme", "https"), (":path", "x" + "MARK"),
                                 (":authority", auth)],
        "absolute path": [(":method", "GET"), (":scheme", "https"), (":path", f"https://{auth}MARK"),
                          (":authority", auth)],
        "empty path": [(":method", "GET"), (":scheme", "https"), (":path", ""), (":authority", auth),
                       ("x-mark", "MARK")],
        "authority and host disagree": base + [("host", "evil.example")],
        "no authority and no host": without(":authority"),
        "duplicate pseudo": base + [(":path", "/other")],
        "pseudo after regular": [(":method", "GET"), (":scheme", "https"), ("x-a", "1"), (":path", "MARK"),
                                 (":authority", auth)],
        "unknown pseudo": base + [(":protocol", "websocket")],
        "upper-case name": base + [("X-Upper", "1")],
        "connection": base + [("connection", "keep-alive")],
        "keep-alive": base + [("keep-alive", "timeout=5")],
        "proxy-connection": base + [("proxy-connection", "keep-alive")],
        "transfer-encoding": base + [("transfer-encoding", "chunked")],
        "upgrade": base + [("upgrade", "websocket")],
        "te gzip": base + [("te", "gzip")],
        "CR LF in a value": base + [("x-split", "a\r\nx-injected: 1")],
        "LF in a value": base + [("x-split", "a\nb")],
        "NUL in a value": base + [("x-nul", "a\x00b")],
        "CR in a name": base + [("x-a\rb", "1")],
        "space in a name": base + [("x a", "1")],
        "CONNECT": [(":method", "CONNECT"), (":authority", "evil.example:443"), ("x-mark", "MARK")],
    }
    refused = []
    for name, headers in cases.items():
        r = _refused(gw, backends, name, headers)
        refused.append(f"{name}: {'RST ' + str(r['reset']) if r['reset'] is not None else r['status']}")
    print("    " + ", ".join(refused), flush=True)


def test_content_length_must_match_the_data(gw, backends):
    auth = f"{h.SITE}:{gw.https_port}"

    def post(cl):
        return [(":method", "POST"), (":scheme", "https"), (":path", "MARK"), (":authority", auth),
                ("content-length", str(cl))]
    _refused(gw, backends, "content-length above the data", post(10), body=b"12345")
    _refused(gw, backends, "content-length below the data", post(5), body=b"1234567890")
    _refused(gw, backends, "content-length without data", post(5))
    _refused(gw, backends, "two content-lengths", post(5) + [("content-length", "6")], body=b"12345")
    # Beyond buffer_body_bytes the body streams: the app server may see the
    # start, never a request longer than the content-length promised.
    big = os.urandom(200_000)
    marker = "/upload?" + h.unique("h2-cl-stream")
    c = H2(gw)
    try:
        c.request(1, headers=[(":method", "POST"), (":scheme", "https"), (":path", marker), (":authority", auth),
                              ("content-length", str(len(big) - 1000))], body=big)
        r = c.response(1)
        h.check(r["reset"] is not None or (r["status"] or 0) >= 400, f"streamed body over its length: {r}")
    finally:
        c.close()
    # The app server got at most a request cut short (the last byte is held
    # until the client's END_STREAM proved the length): never a whole one.
    h.wait_until(lambda: backends["app1"].saw(marker) or backends["app2"].saw(marker), 10, what="the streamed request's head")
    time.sleep(0.5)
    for b in ("app1", "app2"):
        whole = [x for x in backends[b].process.read_stdout().splitlines() if x.startswith("UPLOADED " + marker)]
        h.check(not whole, f"an over-long streamed body reached {b} whole: {whole}")


def test_cookie_crumbs_joined_and_te_trailers_accepted(gw):
    c = H2(gw)
    try:
        c.request(1, "/cookies", extra=[("cookie", "a=1"), ("cookie", "b=2"), ("te", "trailers"),
                                        ("cookie", "c=3")])
        r = c.response(1)
        h.check(r["status"] == 200, f"cookies: {r}")
        import json
        doc = json.loads(r["body"])
        cookies = [v for k, v in doc["headers"] if k.lower() == "cookie"]
        h.check(cookies == ["a=1; b=2; c=3"], f"the app server got Cookie {cookies}")
        h.check(not any(k.lower() == "te" for k, _ in doc["headers"]), "te reached the app server")
        h.check(doc["path"] == "/cookies", f"path {doc['path']}")
    finally:
        c.close()


def test_expect_100_continue(gw):
    c = H2(gw)
    try:
        hdrs = c.request_headers("/upload", "POST", [("expect", "100-continue"), ("content-length", "5")])
        c.send(frame(HEADERS, END_HEADERS, 1, c.block(hdrs)))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and ("100" not in [v for k, v in c._stream(1)["headers"] if k == ":status"]):
            h.check(c.read_once(0.5), "the connection closed before 100 Continue")
        h.check((":status", "100") in c._stream(1)["headers"], f"no interim 100: {c._stream(1)}")
        c.send(frame(DATA, END_STREAM, 1, b"hello"))
        r = c.response(1)
        import json
        h.check(r["status"] == 200 and json.loads(r["body"])["bytes"] == 5, f"after 100 Continue: {r}")
    finally:
        c.close()


def test_oversized_header_list_is_refused(gw, backends):
    # Larger than limits.header_bytes (16 KiB) but not an HPACK bomb: 431.
    marker = h.unique("/h2-big-header")
    c = H2(gw)
    try:
        c.request(1, marker, extra=[(f"x-big-{i}", "v" * 1000) for i in range(20)])
        r = c.response(1)
        h.check(r["status"] == 431, f"oversized header list: {r} (GOAWAY {c.goaway})")
    finally:
        c.close()
    _never_reached(backends, marker)


# ---------------------------------------------------------------------------
# Attacks: each ends the attacker's connection with GOAWAY ENHANCE_YOUR_CALM
# and a violation; another client is served meanwhile.
# ---------------------------------------------------------------------------


class Bystander:
    """A well-behaved h2 client sending requests while an attack runs."""

    def __init__(self, gw) -> None:
        self.gw = gw
        self.ok = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                c = H2(self.gw)
                c.request(1, "/bystander")
                r = c.response(1, timeout=15)
                c.close()
                if r["status"] == 200:
                    self.ok += 1
                else:
                    self.failed.append(str(r))
            except Exception as e:  # noqa: BLE001 (reported as a failure)
                self.failed.append(repr(e))
            time.sleep(0.02)

    def __enter__(self) -> "Bystander":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        # At least a few answers during the attack, then stop.
        h.wait_until(lambda: self.ok >= 3 or self.failed, 30, what="the bystander to be served")
        self.stop.set()
        self.thread.join(30)
        h.check(not self.failed, f"the bystander failed during the attack: {self.failed[:3]}")
        h.check(self.ok >= 3, f"the bystander got {self.ok} answers")


def _attack(gw, kind: str, run) -> None:
    before_kind = _abuse(gw, kind)
    before_violations = _metrics(gw).get("rampart_abuse_violations_total", 0)
    with Bystander(gw):
        c = H2(gw)
        try:
            run(c)
            closed = c.wait_closed(30)
            h.check(closed, f"{kind}: the attacker's connection is still open")
            h.check(c.goaway is not None and c.goaway[1] == ENHANCE_YOUR_CALM,
                    f"{kind}: GOAWAY {c.goaway} (expected ENHANCE_YOUR_CALM)")
        finally:
            c.close()
    h.wait_until(lambda: _abuse(gw, kind) >= before_kind + 1, 10, what=f"rampart_h2_abuse_total{{kind={kind}}}")
    after = _metrics(gw).get("rampart_abuse_violations_total", 0)
    h.check(after >= before_violations + 1, f"{kind}: violations {before_violations} -> {after}")


def test_rapid_reset(gw):
    def run(c):
        out = b""
        for i in range(1000):
            sid = 1 + 2 * i
            out += frame(HEADERS, END_HEADERS | END_STREAM, sid, c.block(c.request_headers(f"/rapid/{i}")))
            out += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
        c.send(out)
    _attack(gw, "rapid_reset", run)


def test_continuation_flood(gw):
    def run(c):
        c.send(frame(HEADERS, 0, 1, c.block(c.request_headers("/continuation"))))
        for _ in range(200):
            if not c.send(frame(CONTINUATION, 0, 1, c.block([("x-flood", "a" * 100)]))):
                break
    _attack(gw, "continuation_flood", run)


def test_hpack_bomb(gw):
    def run(c):
        # One 4 KiB entry in the dynamic table (literal with incremental
        # indexing), then 2,000 one-byte references to it: ~6 KiB on the
        # wire, ~8 MiB decoded.
        name, value = b"x-bomb", b"a" * 4000
        literal = b"\x40" + bytes([len(name)]) + name + b"\x7f" + _hpack_int(len(value) - 127) + value
        block = c.block(c.request_headers("/bomb"), huffman=False) + literal + b"\xbe" * 2000
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    _attack(gw, "hpack_bomb", run)


def test_hpack_bomb_in_trailers(gw):
    def run(c):
        # A request with a body, then a trailer block that is the bomb.
        c.send(frame(HEADERS, END_HEADERS, 1, c.block(c.request_headers("/bomb-trailers", "POST"))))
        c.send(frame(DATA, 0, 1, b"x" * 100))
        name, value = b"x-bomb", b"a" * 4000
        literal = b"\x40" + bytes([len(name)]) + name + b"\x7f" + _hpack_int(len(value) - 127) + value
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, literal + b"\xbe" * 2000))
    _attack(gw, "hpack_bomb", run)


def _hpack_int(n: int) -> bytes:
    out = b""
    while n >= 128:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def test_ping_flood(gw):
    _attack(gw, "ping_flood", lambda c: c.send(b"".join(frame(PING, 0, 0, struct.pack(">Q", i)) for i in range(2000))))


def test_settings_flood(gw):
    _attack(gw, "settings_flood", lambda c: c.send(b"".join(settings_frame({4: 65535}) for _ in range(2000))))


def test_empty_data_flood(gw):
    def run(c):
        c.send(frame(HEADERS, END_HEADERS, 1, c.block(c.request_headers("/empty-data", "POST"))))
        c.send(b"".join(frame(DATA, 0, 1) for _ in range(2000)))
    _attack(gw, "empty_data_flood", run)


def test_window_update_flood(gw):
    _attack(gw, "window_update_flood",
            lambda c: c.send(b"".join(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)) for _ in range(5000))))


def test_too_many_streams(gw):
    def run(c):
        # Wait for the SETTINGS exchange, then open 150 streams that never end.
        c.read_once(2)
        out = b""
        for i in range(250):
            out += frame(HEADERS, END_HEADERS, 1 + 2 * i, c.block(c.request_headers(f"/many/{i}", "POST")))
        c.send(out)
    before = _metrics(gw).get("rampart_abuse_violations_total", 0)
    # nghttp2 answers a stream beyond the acknowledged limit with GOAWAY
    # PROTOCOL_ERROR itself; either code ends the connection.
    with Bystander(gw):
        c = H2(gw)
        try:
            run(c)
            h.check(c.wait_closed(30), "the connection with 250 open streams is still open")
            h.check(c.goaway is not None and c.goaway[1] in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR),
                    f"GOAWAY {c.goaway}")
        finally:
            c.close()
    h.wait_until(lambda: _abuse(gw, "too_many_streams") >= 1, 10, what="too_many_streams counted")
    h.check(_metrics(gw).get("rampart_abuse_violations_total", 0) > before, "no violation counted")


def test_zero_window_slow_read(gw):
    def run(c):
        # SETTINGS_INITIAL_WINDOW_SIZE 0 was announced (see below): the
        # response can never be sent.
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, c.block(c.request_headers("/files/big.bin"))))
        start = time.monotonic()
        c.closed_after = None
        # No WINDOW_UPDATE ever: read only frames, never open a window.
        while time.monotonic() - start < 30:
            try:
                c.sock.settimeout(0.5)
                data = c.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except (OSError, ssl.SSLError):
                break
            if not data:
                break
            c.buffer += data
            while len(c.buffer) >= 9:
                length = int.from_bytes(c.buffer[:3], "big")
                if len(c.buffer) < 9 + length:
                    break
                kind = c.buffer[3]
                payload = c.buffer[9:9 + length]
                if kind == GOAWAY:
                    c.goaway = tuple(x & 0x7FFFFFFF for x in struct.unpack(">II", payload[:8]))
                elif kind == SETTINGS and not c.buffer[4] & ACK:
                    c.send(frame(SETTINGS, ACK, 0))
                c.buffer = c.buffer[9 + length:]
        c.closed = True
        c.took = time.monotonic() - start

    before_kind = _abuse(gw, "zero_window")
    with Bystander(gw):
        c = H2(gw, settings={4: 0})
        try:
            run(c)
            h.check(c.goaway is not None and c.goaway[1] == ENHANCE_YOUR_CALM, f"GOAWAY {c.goaway}")
            # Never before timeouts.body; the upper bound only guards against a hang.
            h.check(BODY_TIMEOUT_S - 0.5 <= c.took < 25, f"closed after {c.took:.1f}s (timeouts.body "
                                                          f"{BODY_TIMEOUT_S}s)")
        finally:
            c.close()
    h.wait_until(lambda: _abuse(gw, "zero_window") >= before_kind + 1, 10, what="zero_window counted")


# ---------------------------------------------------------------------------
# Life cycle
# ---------------------------------------------------------------------------


def test_goaway_on_reload_lets_the_stream_finish(gw):
    c = H2(gw)
    try:
        c.request(1, "/slow?ms=1500&reload")
        time.sleep(0.3)  # the request is at the app server
        os.kill(gw.pid, signal.SIGHUP)
        r = c.response(1, timeout=30)
        h.check(r["status"] == 200, f"the stream in flight during the reload: {r}")
        h.check(c.wait_closed(20), "the old worker's connection did not close after its last stream")
        h.check(c.goaway is not None and c.goaway[1] == NO_ERROR, f"GOAWAY {c.goaway} (expected NO_ERROR)")
        h.check(c.goaway[0] >= 1, f"GOAWAY's last stream {c.goaway[0]} excludes the stream that was served")
    finally:
        c.close()
    # New connections reach the new worker; the old one exits once drained.
    r = h.curl(gw, "/after-reload", "--http2")
    h.check(r.status == 200, f"after the reload: {r}")
    h.wait_until(lambda: len(h.children_of(gw.pid)) == 1, 30, what="the old worker to exit")
    gw.workers = {p: h.identity(p) for p in h.children_of(gw.pid)}


def test_idle_connection_gets_goaway(backends, certs):
    gw = h.Gateway(certs, {"app1": backends["app1"]}, workers=1, timeouts={"idle": "2s"})
    gw.start()
    c = H2(gw)
    try:
        c.request(1, "/before-idle")
        h.check(c.response(1)["status"] == 200, "first request")
        start = time.monotonic()
        h.check(c.wait_closed(30), "an idle h2 connection stayed open")
        took = time.monotonic() - start
        h.check(c.goaway is not None and c.goaway[1] == NO_ERROR, f"GOAWAY {c.goaway}")
        h.check(1.5 <= took < 25, f"closed after {took:.1f}s of silence (timeouts.idle 2s)")
    finally:
        c.close()
        gw.stop()


def test_metrics_count_by_protocol(gw):
    m = _metrics(gw)
    h.check(m.get("rampart_h2_connections_total", 0) >= 10, f"h2 connections {m.get('rampart_h2_connections_total')}")
    h2req = m.get('rampart_requests_by_protocol_total{protocol="h2"}', 0)
    h.check(h2req >= 2000, f"h2 requests {h2req}")
    h.check('rampart_connections_by_protocol{protocol="h2"}' in m, "connections by protocol missing")
    code, text = h.admin(gw, "/api/status")
    import json
    doc = json.loads(text)
    protocols = {p["protocol"]: p for p in doc["protocols"]}
    h.check(protocols["h2"]["total"] >= 10 and protocols["h2"]["requests"] >= 2000, f"status: {protocols}")
