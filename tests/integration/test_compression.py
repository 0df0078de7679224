"""Compression of what the app servers send uncompressed (gzip, brotli).

A gateway with `compression: on` (gzip level 6, brotli quality 4) and a route that turns it off:

- negotiation: br when the client prefers it or ties (the server's order), gzip by q-value,
  nothing for q=0 or without Accept-Encoding; the decoded body is the app's, byte for byte, over
  HTTP/1.1 (chunked) and h2, for a body of known length (small and over the direct-relay
  threshold) and a chunked one;
- Vary: Accept-Encoding on every response that could be compressed, compressed or not; a strong
  ETag turns weak;
- left as they are: below min_size, a type not in the list, a response with Set-Cookie
  (BREACH), Cache-Control: no-transform, one the app already encoded, the answer to a POST, a
  route with compress: false; a HEAD gets the head fields a GET would get, without a body;
- the metrics count the bytes before and after.
"""

import gzip
import subprocess
import time
import zlib

import harness as h
import pytest

BODY_LINE = b"<li class=\"item\">Rampart serves www.foobar.com item %08d of the catalogue</li>\n"


def expected(n: int) -> bytes:
    return b"".join(BODY_LINE % i for i in range(n // 60 + 1))[:n]


def brotli_decode(data: bytes) -> bytes:
    # Debian's python3-brotli is not installed here: the brotli command line
    # (package brotli) or curl's own decoder does it.
    out = subprocess.run(["brotli", "-d", "-c"], input=data, capture_output=True, timeout=30)
    h.check(out.returncode == 0, f"brotli -d: {out.stderr[:200]!r}")
    return out.stdout


@pytest.fixture(scope="module")
def gw(certs, app1):
    g = h.Gateway(certs, {"app1": app1}, http=False, workers=1)
    g.config["gateway"]["compression"] = "on"
    g.config["gateway"]["routes"] = [
        {"path": "/plain/", "pool": "app", "compress": False},
        {"path": "/", "pool": "app"},
    ]
    return g.start()


def fetch(gw, path: str, accept: str | None) -> h.Response:
    conn = h.https_connection(gw)
    try:
        headers = {"Accept-Encoding": accept} if accept is not None else {"Accept-Encoding": ""}
        return h.request(conn, "GET", path, headers=headers)
    finally:
        conn.close()


def test_negotiation_and_round_trip(gw):
    for n, extra in ((5000, ""), (300_000, ""), (200_000, "&chunked=1")):
        path = f"/text?bytes={n}{extra}"
        want = expected(n)
        r = fetch(gw, path, "gzip, deflate, br")
        h.check(r.status == 200 and r.header("Content-Encoding") == "br", f"{path} br: {r.headers}")
        h.check(brotli_decode(r.body) == want and len(r.body) < n // 5, f"{path}: br {len(r.body)} bytes")
        r = fetch(gw, path, "br;q=0.5, gzip;q=0.9")
        h.check(r.header("Content-Encoding") == "gzip", f"{path} by q: {r.header('Content-Encoding')}")
        h.check(gzip.decompress(r.body) == want, f"{path}: gzip does not decode to the body")
        h.check(r.header("Content-Length") is None or int(r.header("Content-Length")) == len(r.body),
                f"{path}: Content-Length {r.header('Content-Length')} for {len(r.body)} bytes")
        h.check(r.header("Vary") == "Accept-Encoding", f"{path}: Vary {r.header('Vary')!r}")
        for accept in ("gzip;q=0, br;q=0", None, "identity"):
            r = fetch(gw, path, accept)
            h.check(r.header("Content-Encoding") is None and r.body == want, f"{path} {accept!r}: {r.headers}")
            h.check(r.header("Vary") == "Accept-Encoding", f"{path} {accept!r}: no Vary")
    # x-gzip and *
    h.check(fetch(gw, "/text?bytes=5000", "x-gzip").header("Content-Encoding") == "gzip", "x-gzip")
    h.check(fetch(gw, "/text?bytes=5000", "*").header("Content-Encoding") == "br", "*")
    h.check(fetch(gw, "/text?bytes=5000", "*, br;q=0").header("Content-Encoding") == "gzip", "*, br;q=0")


def test_h2_and_etag(gw):
    out = h.curl(gw, "/text?bytes=100000&etag=1", "--http2", "--compressed", "-w", "%{http_version}",
                 background=True).wait()
    h.check(out.status == 200 and out.body == expected(100_000), f"h2 --compressed: {out.status} {len(out.body)}")
    h.check(out.header("Content-Encoding") in ("br", "gzip") and out.header("ETag") == 'W/"v1"',
            f"h2 headers: {out.headers}")


def test_what_is_left_alone(gw):
    cases = {
        "/text?bytes=500": "below min_size",
        "/text?bytes=5000&type=image/png": "not a listed type",
        "/text?bytes=5000&cookie=1": "sets a cookie",
        "/text?bytes=5000&cache=public,%20no-transform": "no-transform",
        "/text?bytes=5000&encoding=deflate": "already encoded",
        "/plain/text?bytes=5000": "compress: false",
    }
    for path, why in cases.items():
        r = fetch(gw, path, "gzip, br")
        h.check(r.status == 200 and r.header("Content-Encoding") in (None, "deflate"), f"{why}: {r.headers}")
        h.check(len(r.body) == int(path.split("bytes=")[1].split("&")[0]), f"{why}: body changed")
    conn = h.https_connection(gw)
    try:
        # HEAD: the head fields a GET would get, no body.
        r = h.request(conn, "HEAD", "/text?bytes=5000", headers={"Accept-Encoding": "gzip"})
        h.check(r.header("Content-Encoding") == "gzip" and r.header("Content-Length") is None and r.body == b"",
                f"HEAD: {r.headers}")
        h.check(r.header("Vary") == "Accept-Encoding", f"HEAD: {r.headers}")
        # POST: its answer may echo the form beside a secret (BREACH): as it is.
        r = h.request(conn, "POST", "/text?bytes=5000", body=b"q=x", headers={"Accept-Encoding": "gzip"})
        h.check(r.status == 200 and r.header("Content-Encoding") is None and len(r.body) == 5000, f"POST: {r.headers}")
    finally:
        conn.close()


def test_metrics_count_bytes(gw):
    before = h.metrics(gw)
    fetch(gw, "/text?bytes=64000", "gzip")
    after = h.metrics(gw)
    grown_in = after['rampart_compression_bytes_total{stage="in"}'] - before['rampart_compression_bytes_total{stage="in"}']
    grown_out = after['rampart_compression_bytes_total{stage="out"}'] - before['rampart_compression_bytes_total{stage="out"}']
    h.check(grown_in == 64000 and 0 < grown_out < 64000 // 5, f"in {grown_in}, out {grown_out}")
    h.check(after["rampart_compressed_responses_total"] - before["rampart_compressed_responses_total"] == 1,
            "the response not counted")


def test_a_slow_stream_is_not_held_back(gw):
    """A chunked page whose second piece comes 3 s after the first: the client decodes the first
    piece's bytes before the second was even sent (the encoder flushes a short piece)."""
    conn = h.https_connection(gw, timeout=30)
    try:
        start = time.monotonic()
        conn.request("GET", "/text?bytes=32768&chunked=1&gap_ms=3000", headers={"Accept-Encoding": "gzip"})
        r = conn.getresponse()
        h.check(r.status == 200 and r.getheader("Content-Encoding") == "gzip", f"{r.status} {r.getheaders()}")
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        first = b""
        for _ in range(1000):  # bounded: each read returns what one chunk brought
            first += d.decompress(r.read1(65536))
            if first:
                break
        got_first = time.monotonic() - start
        rest = r.read()
        whole = first + d.decompress(rest) + d.flush()
        h.check(whole == expected(32768), f"decoded {len(whole)} bytes")
        # The second piece leaves the app server 3 s after the first: the first piece's text
        # must have been decoded before then (a generous margin for a busy machine).
        h.check(len(first) >= 16384 and got_first < 2.9, f"{len(first)} bytes after {got_first:.2f}s")
    finally:
        conn.close()
