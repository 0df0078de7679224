"""WebSocket through the gateway: a real client and a real app server (python3-websockets).

An upgrade request (Upgrade: websocket with a valid Sec-WebSocket-Key and
version 13) is passed on with its upgrade fields; on the app server's 101 the
connection becomes a byte tunnel both ways until either side closes. Covered:
echo both ways (text and binary), a 4 MiB message, ping/pong, the app closing,
the client vanishing (the tunnel ends on both sides), a malformed handshake
(400, never reaches the app), the tunnel limit (503), the idle timeout
(timeouts.tunnel), 1,000 tunnels open at once, and a reload with tunnels open
(they keep working until timeouts.drain, then end; new ones reach new workers).
"""

import asyncio
import os
import resource
import ssl
import sys
import time

import harness as h
import pytest

websockets = pytest.importorskip("websockets", reason="python3-websockets is not installed")
pytest.importorskip("websockets.client", reason="python3-websockets is not installed")

WS_BACKEND = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support", "ws_backend.py")
DRAIN_S = 3
MANY = 1000


class WsBackend:
    def __init__(self) -> None:
        self.port = h.free_port()
        self.process = h.Process([sys.executable, WS_BACKEND, "--port", self.port], "ws-backend")

    def start(self) -> "WsBackend":
        self.process.start()
        self.process.wait_output("ready\n")
        return self

    def closed_count(self) -> int:
        return self.process.read_stdout().count("closed ")

    def stop(self) -> None:
        self.process.stop()


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))


@pytest.fixture(scope="module")
def ws_app() -> WsBackend:
    """The WebSocket app server (tests/support/ws_backend.py)."""
    app = WsBackend().start()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def gw(certs, ws_app) -> h.Gateway:
    """A gateway in front of ws1 (drain DRAIN_S, room for MANY tunnels from one client)."""
    _raise_fd_limit()
    gw = h.Gateway(certs, {"ws1": ws_app.port}, http=False,
                   timeouts={"drain": f"{DRAIN_S}s"},
                   limits={"max_connections_per_client": 4 * MANY})
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def small(certs, ws_app) -> h.Gateway:
    """A gateway of one test: at most 2 tunnels, each ended after 2 s of silence."""
    small = h.Gateway(certs, {"ws1": ws_app.port}, name="small", http=False,
                      timeouts={"tunnel": "2s"}, limits={"tunnels": 2}).start()
    yield small
    small.stop()

def _context(certs) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    return ctx


def _connect(gw, path="/ws", **kw):
    return websockets.client.connect(f"wss://{h.SITE}:{gw.https_port}{path}", ssl=_context(gw.certs), host=h.LOOPBACK,
                                     port=gw.https_port, server_hostname=h.SITE, max_size=16 * 1024 * 1024,
                                     ping_interval=None, open_timeout=30, close_timeout=10, **kw)


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _metric(gw, name):
    return h.metrics(gw).get(name, 0)


def test_echo_both_ways(gw):
    async def go():
        async with _connect(gw) as ws:
            await ws.send("hello")
            h.check(await ws.recv() == "hello", "text echo")
            await ws.send(b"\x00\x01\xff")
            h.check(await ws.recv() == b"\x00\x01\xff", "binary echo")
            await ws.send("headers")
            import json
            fields = {k.lower(): v for k, v in json.loads(await ws.recv())}
            h.check(fields.get("upgrade", "").lower() == "websocket", f"Upgrade reached the app: {fields}")
            h.check("upgrade" in fields.get("connection", "").lower(), f"Connection: {fields.get('connection')}")
            h.check(fields.get("x-forwarded-for") == h.LOOPBACK, f"X-Forwarded-For: {fields.get('x-forwarded-for')}")
            h.check("x-request-id" in fields, "X-Request-Id reached the app")
            return ws.response_headers
    headers = run(go())
    h.check(headers.get("Upgrade", "").lower() == "websocket", f"101 Upgrade field: {headers}")
    h.check("X-Request-Id" in headers, f"the 101 carries X-Request-Id: {headers}")


def test_large_message_and_ping(gw):
    payload = os.urandom(4 * h.MiB)

    async def go():
        async with _connect(gw) as ws:
            await ws.send(payload)
            got = await ws.recv()
            h.check(got == payload, f"4 MiB echo: {len(got)} bytes back")
            pong = await ws.ping(b"are-you-there")
            await asyncio.wait_for(pong, 10)
    run(go())


def test_app_closes(gw):
    async def go():
        async with _connect(gw) as ws:
            await ws.send("close-me")
            try:
                await asyncio.wait_for(ws.recv(), 15)
                h.check(False, "a message after the app closed")
            except websockets.ConnectionClosed as e:
                h.check(e.rcvd is not None and e.rcvd.code == 4000, f"close code from the app: {e}")
    run(go())
    h.wait_until(lambda: _metric(gw, "rampart_tunnels_active") == 0, 15, what="tunnels_active back to 0")


def test_client_vanishes(gw, ws_app):
    before = ws_app.closed_count()

    async def go():
        ws = await _connect(gw)
        await ws.send("x")
        await ws.recv()
        ws.transport.abort()  # no close frame, no TLS close_notify: a reset
    run(go())
    h.wait_until(lambda: ws_app.closed_count() > before, 15, what="the app saw the tunnel end")
    h.wait_until(lambda: _metric(gw, "rampart_tunnels_active") == 0, 15, what="tunnels_active back to 0")


def test_bad_handshake_400(gw, ws_app, certs):
    tag = h.unique("badws")
    for fields in ("Sec-WebSocket-Version: 13\r\n",  # no key
                   "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n",
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n"):
        with h.RawTLS(gw.https_port, certs.ca) as c:
            c.send(f"GET /ws?{tag} HTTP/1.1\r\nHost: {h.SITE}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"{fields}\r\n".encode())
            r = c.read_response(timeout=15)
        h.check(r is not None and r.status == 400, f"bad handshake ({fields.strip()!r}): {r}")
    h.check(tag not in ws_app.process.read_stdout(), "a bad handshake reached the app")


def test_h2c_upgrade_not_tunnelled(gw, certs):
    """Another Upgrade is not a tunnel: the fields go, the request is served as a plain one."""
    with h.RawTLS(gw.https_port, certs.ca) as c:
        c.send(f"GET / HTTP/1.1\r\nHost: {h.SITE}\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               f"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n".encode())
        r = c.read_response(timeout=15)
    # The WebSocket app answers a plain GET with 426 (Upgrade Required); the gateway passes it on.
    h.check(r is not None and r.status != 101, f"h2c upgrade: {r}")


def test_many_tunnels(gw):
    async def go():
        sockets = []
        sem = asyncio.Semaphore(100)  # handshakes in flight at once

        async def one(i):
            async with sem:
                ws = await _connect(gw)
            sockets.append(ws)
            await ws.send(f"m{i}")
            h.check(await ws.recv() == f"m{i}", f"echo on tunnel {i}")

        await asyncio.gather(*(one(i) for i in range(MANY)))
        open_now = _metric(gw, "rampart_tunnels_active")
        h.check(open_now == MANY, f"rampart_tunnels_active with {MANY} open: {open_now}")
        # Every tunnel still works with all of them open.
        await asyncio.gather(*(ws.send("again") for ws in sockets))
        got = await asyncio.gather(*(ws.recv() for ws in sockets))
        h.check(all(g == "again" for g in got), "a second echo on every tunnel")
        await asyncio.gather(*(ws.close() for ws in sockets))
    t0 = time.monotonic()
    run(go(), timeout=600)
    print(f"    {MANY} tunnels opened, used twice and closed in {time.monotonic() - t0:.1f}s")
    h.wait_until(lambda: _metric(gw, "rampart_tunnels_active") == 0, 30, what="tunnels_active back to 0")
    h.check(_metric(gw, "rampart_tunnels_total") >= MANY, "rampart_tunnels_total counts them")


def test_reload_with_tunnels_open(gw):
    async def go():
        old = [await _connect(gw) for _ in range(5)]
        status, body = h.admin(gw, "/api/reload", "POST")
        h.check(status == 200, f"reload: {status} {body}")
        # The old workers drain: their tunnels still carry bytes ...
        for ws in old:
            await ws.send("still")
            h.check(await ws.recv() == "still", "a tunnel of the old workers works during the drain")
        # ... new tunnels are served by the new workers ...
        async with _connect(gw) as ws:
            await ws.send("new")
            h.check(await ws.recv() == "new", "a tunnel after the reload")
        # ... and the old ones end when the drain deadline passes.
        t0 = time.monotonic()
        for ws in old:
            try:
                await asyncio.wait_for(ws.recv(), DRAIN_S + 30)
                h.check(False, "a message on a drained tunnel")
            except websockets.ConnectionClosed:
                pass
        return time.monotonic() - t0
    waited = run(go())
    h.check(waited <= DRAIN_S + 30, f"old tunnels ended {waited:.1f}s after the reload")
    gw._record_workers()


def test_limit_and_idle_timeout(small):
    async def go():
        a = await _connect(small)
        opened_a = time.monotonic()  # the 101 arrived: the gateway armed the idle deadline before it
        b = await _connect(small)
        opened_b = time.monotonic()
        try:
            await _connect(small)
            h.check(False, "a third tunnel over limits.tunnels 2")
        except websockets.InvalidStatusCode as e:
            h.check(e.status_code == 503, f"over the limit: {e.status_code}")
        h.check(_metric(small, "rampart_tunnels_refused_total") >= 1, "refused tunnels are counted")
        # Idle for longer than timeouts.tunnel: the gateway ends both, and
        # never before 2 s of silence (the 30 s bound only guards a hang).
        idle = []
        for ws, opened in ((a, opened_a), (b, opened_b)):
            try:
                await asyncio.wait_for(ws.recv(), 30)
                h.check(False, "a message on an idle tunnel")
            except websockets.ConnectionClosed:
                idle.append(time.monotonic() - opened)
        return idle
    idle = run(go())
    h.check(len(idle) == 2 and all(1.9 <= t <= 32 for t in idle),
            f"idle tunnels ended after {', '.join(f'{t:.1f}s' for t in idle)} of silence (timeouts.tunnel 2s)")
