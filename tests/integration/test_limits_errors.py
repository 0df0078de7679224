"""Error answers: 400 (also for ambiguous framing), 431, 413, 408, 504 and 502, each followed by a normal request.

The main gateway has header timeout 2s, upstream_response 2s and body_bytes 1MiB.
Every rejected request carries a unique tag; the backend's request log must not
contain it (only the 504 case reaches the backend, by design). The 502 case uses
its own gateway whose only server is a port where nothing listens.
"""

import time

import harness as h
import pytest

HEADER_TIMEOUT_S = 2
UPSTREAM_RESPONSE_S = 2
BODY_LIMIT = 1 * h.MiB


@pytest.fixture(scope="module")
def gw(certs, app1) -> h.Gateway:
    return h.Gateway(certs, {"app1": app1}, http=False,
                     timeouts={"header": f"{HEADER_TIMEOUT_S}s", "upstream_response": f"{UPSTREAM_RESPONSE_S}s"},
                     limits={"body_bytes": "1MiB"}).start()


def _raw(gw):
    return h.RawTLS(gw.https_port, gw.certs.ca)


def _still_serves(gw):
    """A normal request after the error gets a normal answer from the backend."""
    tag = h.unique("after")
    r = h.curl(gw, f"/after?tag={tag}")
    h.check(r.status == 200 and r.json()["server"] == "app1", f"normal request after the error: {r}")


def _not_received(app1, tag):
    h.check(not app1.saw(tag), f"the backend received the rejected request {tag}")


def test_malformed_request_line_400(gw, app1):
    with _raw(gw) as c:
        c.send(b"GARBAGE\r\n\r\n")
        r = c.read_response(timeout=15)
    h.check(r is not None, f"no HTTP response to a malformed request line, got {c.received[:200]!r}")
    h.check(r.status == 400, f"malformed request line: status {r.status}, expected 400")
    _not_received(app1, "GARBAGE")
    _still_serves(gw)


def test_ambiguous_framing_400(gw, app1):
    """Request-smuggling shapes: the gateway answers 400, closes, and the backend sees nothing."""
    cases = {
        "cl-te": "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "cl-cl": "Content-Length: 5\r\nContent-Length: 6\r\n",
        "te-gzip": "Transfer-Encoding: gzip, chunked\r\n",
    }
    for name, framing in cases.items():
        tag = h.unique(f"smuggle-{name}")
        request = (f"POST /{tag} HTTP/1.1\r\nHost: {h.SITE}\r\n{framing}\r\n0\r\n\r\nhello").encode()
        with _raw(gw) as c:
            c.send(request)
            r = c.read_response(timeout=15)
            c.read_until_close(timeout=15)  # returns at the close: a guard against a hang
        h.check(r is not None and r.status == 400, f"{name}: expected 400, got {c.received[:120]!r}")
        h.check(c.closed, f"{name}: the connection stayed open after a 400")
        _not_received(app1, tag)
    _still_serves(gw)


def test_header_block_too_large_431(gw, app1):
    tag = h.unique("e431")
    request = (f"GET /{tag} HTTP/1.1\r\nHost: {h.SITE}\r\nX-Big: {'a' * 20 * 1024}\r\n\r\n").encode()
    with _raw(gw) as c:
        c.send(request)
        r = c.read_response(timeout=15)
    h.check(r is not None, f"no HTTP response to a 20 KiB header (reset={c.reset}), got {c.received[:200]!r}")
    h.check(r.status == 431, f"20 KiB header: status {r.status}, expected 431")
    _not_received(app1, tag)
    _still_serves(gw)


def test_body_too_large_413(gw, app1):
    tag = h.unique("e413")
    size = 2 * h.MiB
    head = (f"POST /upload?tag={tag} HTTP/1.1\r\nHost: {h.SITE}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    piece = b"x" * (64 * h.KiB)
    with _raw(gw) as c:
        c.send(head)
        c.poll(0.5)  # a gateway that checks Content-Length first answers right away
        sent = 0
        while sent < size and not c.received and not c.closed:
            if not c.send(piece):
                break
            sent += len(piece)
            c.poll(0)
        r = c.read_response(timeout=15)
    h.check(r is not None, f"no HTTP response to a {size} byte body (sent {sent}, reset={c.reset}), "
                           f"got {c.received[:200]!r}")
    h.check(r.status == 413, f"body over body_bytes: status {r.status}, expected 413")
    _not_received(app1, tag)
    _still_serves(gw)


def test_slow_header_408(gw, app1):
    tag = h.unique("e408")
    with _raw(gw) as c:
        t0 = time.monotonic()
        c.send(f"GET /{tag} HTTP/1.1\r\nHost: {h.SITE}\r\n".encode())
        for byte in b"X-Slow-Header: abcdefghijklmnop":  # one byte per 0.5 s, at most 16 s
            if c.closed or c.received or not c.send(bytes([byte])):
                break
            c.poll(0.5)
            if time.monotonic() - t0 > HEADER_TIMEOUT_S + 4:
                break
        c.read_until_close(timeout=max(0.5, t0 + HEADER_TIMEOUT_S + 4 - time.monotonic()))
        elapsed = time.monotonic() - t0
        closed = c.closed
    r = h.parse_head(c.received)
    h.check(r is not None and r.status == 408,
            f"slow header: expected a 408, got {c.received[:200]!r} after {elapsed:.1f}s")
    h.check(closed and elapsed < HEADER_TIMEOUT_S + 2.5,
            f"connection still open {elapsed:.1f}s after the first byte (header timeout {HEADER_TIMEOUT_S}s)")
    _not_received(app1, tag)
    _still_serves(gw)


def test_upstream_timeout_504(gw, app1):
    tag = h.unique("e504")
    t0 = time.monotonic()
    r = h.curl(gw, f"/stall?tag={tag}", max_time=UPSTREAM_RESPONSE_S + 10, check_rc=False)
    elapsed = time.monotonic() - t0
    h.check(r.status == 504, f"stalled backend: status {r.status}, expected 504 (curl: {r})")
    h.check(UPSTREAM_RESPONSE_S - 0.5 <= elapsed <= UPSTREAM_RESPONSE_S + 3,
            f"504 after {elapsed:.1f}s, upstream_response is {UPSTREAM_RESPONSE_S}s")
    h.check(app1.saw(tag), "the stalled request never reached the backend")
    _still_serves(gw)


UPSTREAM_CONNECT_S = 10


def test_dead_backend_502(certs, gw):
    dead_port = h.free_port()  # nothing listens here
    # A refused connection is answered at once, not after upstream_connect: with 10 s for it,
    # a 502 within 5 s (a curl started, a handshake, a refused connect) tells the two apart
    # even on a busy machine.
    dead_gw = h.Gateway(certs, {"dead": dead_port}, name="rampart-dead", http=False,
                        timeouts={"upstream_connect": f"{UPSTREAM_CONNECT_S}s"}).start()
    revived = None
    try:
        for attempt in range(2):  # the second one shows the gateway kept serving
            t0 = time.monotonic()
            r = h.curl(dead_gw, f"/dead?attempt={attempt}", check_rc=False, max_time=UPSTREAM_CONNECT_S + 10)
            elapsed = time.monotonic() - t0
            h.check(r.status == 502, f"attempt {attempt}: status {r.status}, expected 502")
            h.check(elapsed < UPSTREAM_CONNECT_S / 2,
                    f"attempt {attempt}: 502 took {elapsed:.1f}s for a refused connection "
                    f"(upstream_connect {UPSTREAM_CONNECT_S}s)")
        dead_gw.check_health()
        # Once something listens on that port the same gateway serves normally again.
        revived = h.Backend("app1", port=dead_port).start()

        def ok():
            r = h.curl(dead_gw, "/revived", check_rc=False, max_time=5)
            return r.status == 200 and r.json()["server"] == "app1"

        h.wait_until(ok, timeout=30, interval=0.5, what="a 200 once the server is back")
    finally:
        dead_gw.stop()
        if revived is not None:
            revived.stop()
    _still_serves(gw)
