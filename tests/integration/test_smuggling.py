"""Request smuggling and desync: malformed or ambiguous requests are refused with the right status, the
connection is closed, and nothing of them (nor of a request smuggled inside them) reaches the backend.

Every variant is sent as raw bytes over its own TLS connection. Its request target (or an X-Tag field when
the target cannot carry one) holds a unique marker such as /smuggle-17-<run>, and the inner request smuggled
after it holds the marker plus "-inner"; the backend logs every request line it receives (REQ/BAD lines),
so "never seen" means: no line of the backend log carries the marker, and the log did not grow at all while
the variants were sent.

Variants whose fault sits in a chunked body (BODY_VARIANTS) are detected while the body is read: bodies up
to limits.buffer_body_bytes are read whole before a backend is chosen, so they too never reach the backend.

A few unusual but valid requests must still pass and arrive normalised: absolute-form matching Host
(origin form at the backend), HTTP/1.0 without Host, chunked with extensions (re-chunked without them),
Content-Length with leading zeros, Transfer-Encoding in capitals, padded field values, h2c upgrade fields
(removed). The plain-HTTP listener applies the same rules before it redirects.
"""

import json
import os
import time

import harness as h
import pytest

RUN = f"{os.getpid()}x{time.monotonic_ns() % 10**9}"
HEADER_COUNT = 30
HOST = f"Host: {h.SITE}\r\n"


@pytest.fixture(scope="module")
def gw(certs, app1) -> h.Gateway:
    """HTTPS and plain HTTP, at most HEADER_COUNT header fields."""
    return h.Gateway(certs, {"app1": app1}, http=True, limits={"header_count": HEADER_COUNT}).start()

# ---------------------------------------------------------------------------
# The corpus. Each entry: (name, expected status, request text). "{T}" is replaced by the variant's marker
# path (/smuggle-NN-<run>); "{I}" by an inner request for {T}-inner, smuggled after the outer one. Text is
# sent as latin-1, so "\xe9" is one byte.
# ---------------------------------------------------------------------------

INNER = "GET {T}-inner HTTP/1.1\r\n" + HOST + "\r\n"
CHUNKED_END = "0\r\n\r\n"


def _post(framing: str, body: str = CHUNKED_END + "{I}") -> str:
    return "POST {T} HTTP/1.1\r\n" + HOST + framing + "\r\n" + body


def _get(fields: str, request_line: str = "GET {T} HTTP/1.1\r\n") -> str:
    return request_line + fields + "\r\n"


VARIANTS = [
    # Framing: Content-Length and Transfer-Encoding
    ("cl-then-te", 400, _post(f"Content-Length: {len(CHUNKED_END)}\r\nTransfer-Encoding: chunked\r\n")),
    ("te-then-cl", 400, _post(f"Transfer-Encoding: chunked\r\nContent-Length: {len(CHUNKED_END)}\r\n")),
    ("cl-cl-conflicting", 400, _post("Content-Length: 5\r\nContent-Length: 40\r\n")),
    ("cl-cl-identical", 400, _post("Content-Length: 5\r\nContent-Length: 5\r\n")),
    ("cl-list", 400, _post("Content-Length: 5, 5\r\n")),
    ("cl-plus-sign", 400, _post("Content-Length: +5\r\n")),
    ("cl-negative", 400, _post("Content-Length: -1\r\n")),
    ("cl-hex", 400, _post("Content-Length: 0x5\r\n")),
    ("cl-inner-space", 400, _post("Content-Length: 1 0\r\n")),
    ("cl-empty", 400, _post("Content-Length:\r\n")),
    ("cl-overflow", 400, _post("Content-Length: 99999999999999999999999\r\n")),
    ("te-gzip-chunked", 400, _post("Transfer-Encoding: gzip, chunked\r\n")),
    ("te-chunked-not-final", 400, _post("Transfer-Encoding: chunked, gzip\r\n")),
    ("te-chunked-twice", 400, _post("Transfer-Encoding: chunked, chunked\r\n")),
    ("te-two-fields", 400, _post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")),
    ("te-xchunked", 400, _post("Transfer-Encoding: xchunked\r\n")),
    ("te-identity", 400, _post("Transfer-Encoding: identity\r\n")),
    ("te-quoted", 400, _post('Transfer-Encoding: "chunked"\r\n')),
    ("te-empty", 400, _post("Transfer-Encoding:\r\n")),
    ("te-obs-fold", 400, _post("Transfer-Encoding:\r\n chunked\r\n")),
    ("te-vertical-tab", 400, _post("Transfer-Encoding:\x0bchunked\r\n")),
    ("te-space-before-colon", 400, _post("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n")),
    ("te-underscore", 400, _post("Transfer_Encoding: chunked\r\nContent-Length: 5\r\n")),
    ("cl-underscore", 400, _get(HOST + "Content_Length: 40\r\n") + "{I}"),
    ("te-in-http10", 400, "POST {T} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_END + "{I}"),
    # Line structure
    ("obs-fold-space", 400, _get(HOST + "X-A: b\r\n c\r\n")),
    ("obs-fold-tab", 400, _get(HOST + "X-A: b\r\n\tc\r\n")),
    ("space-before-first-field", 400, _get(" " + HOST)),
    ("bare-cr-in-value", 400, _get(HOST + "X-A: b\rc\r\n")),
    ("bare-cr-line-end", 400, _get(HOST + "X-A: b\rTransfer-Encoding: chunked\r\n")),
    ("bare-lf-line-end", 400, _get(HOST + "X-A: b\nTransfer-Encoding: chunked\r\n")),
    ("bare-lf-request-line", 400, _get(HOST, "GET {T} HTTP/1.1\n")),
    ("lf-only-head", 400, "GET {T} HTTP/1.1\n" + HOST.replace("\r\n", "\n") + "\n"),
    ("space-before-colon-host", 400, _get(f"Host : {h.SITE}\r\n")),
    ("nul-in-value", 400, _get(HOST + "X-A: b\x00c\r\n")),
    ("del-in-value", 400, _get(HOST + "X-A: b\x7fc\r\n")),
    ("escape-in-value", 400, _get(HOST + "X-A: \x1b[31mred\r\n")),
    ("control-in-name", 400, _get(HOST + "X\x01A: b\r\n")),
    ("non-ascii-in-name", 400, _get(HOST + "X\xe9A: b\r\n")),
    ("empty-field-name", 400, _get(HOST + ": b\r\n")),
    ("field-without-colon", 400, _get(HOST + "X-A b\r\n")),
    ("leading-empty-line", 400, "\r\n" + _get(HOST)),
    # Request line
    ("method-lowercase-head", 501, _get(HOST, "head {T} HTTP/1.1\r\n")),
    ("method-unknown", 501, _get(HOST, "FOO {T} HTTP/1.1\r\n")),
    ("method-not-token", 400, _get(HOST, "G(T {T} HTTP/1.1\r\n")),
    ("double-space", 400, _get(HOST, "GET  {T} HTTP/1.1\r\n")),
    ("tab-separator", 400, _get(HOST, "GET\t{T} HTTP/1.1\r\n")),
    ("space-after-version", 400, _get(HOST, "GET {T} HTTP/1.1 \r\n")),
    ("version-1.2", 505, _get(HOST, "GET {T} HTTP/1.2\r\n")),
    ("version-2.0", 505, _get(HOST, "GET {T} HTTP/2.0\r\n")),
    ("version-0.9", 505, _get(HOST, "GET {T} HTTP/0.9\r\n")),
    ("version-01.1", 400, _get(HOST, "GET {T} HTTP/01.1\r\n")),
    ("version-1.10", 400, _get(HOST, "GET {T} HTTP/1.10\r\n")),
    ("version-lowercase", 400, _get(HOST, "GET {T} http/1.1\r\n")),
    ("target-fragment", 400, _get(HOST, "GET {T}#frag HTTP/1.1\r\n")),
    ("target-non-ascii", 400, _get(HOST, "GET {T}/caf\xe9 HTTP/1.1\r\n")),
    ("absolute-other-host", 400, _get(HOST, "GET http://evil.example{T} HTTP/1.1\r\n")),
    ("absolute-other-port", 400, _get(HOST, f"GET https://{h.SITE}:8443{{T}} HTTP/1.1\r\n")),
    ("absolute-userinfo", 400, _get(HOST, f"GET https://user@{h.SITE}{{T}} HTTP/1.1\r\n")),
    ("absolute-ftp", 400, _get(HOST, f"GET ftp://{h.SITE}{{T}} HTTP/1.1\r\n")),
    ("asterisk-not-options", 400, _get(HOST + "X-Tag: {T}\r\n", "GET * HTTP/1.1\r\n")),
    ("authority-form-get", 400, _get(HOST + "X-Tag: {T}\r\n", f"GET {h.SITE}:443 HTTP/1.1\r\n")),
    ("connect", 405, _get(HOST + "X-Tag: {T}\r\n", f"CONNECT {h.SITE}:443 HTTP/1.1\r\n")),
    # Host
    ("host-missing", 400, _get("X-A: b\r\n")),
    ("host-twice", 400, _get(HOST + "Host: evil.example\r\n")),
    ("host-with-path", 400, _get("Host: evil.example/x\r\n")),
    ("host-bad-port", 400, _get(f"Host: {h.SITE}:44x3\r\n")),
    # Limits
    ("header-too-large", 431, _get(HOST + "X-Big: " + "a" * 20 * 1024 + "\r\n")),
    ("body-over-limit", 413, _post("Content-Length: 999999999\r\n", "hello{I}")),
    ("too-many-fields", 431, _get(HOST + "".join(f"X-F{i}: {i}\r\n" for i in range(HEADER_COUNT + 5)))),
]

CHUNKED_HEAD = "POST {T} HTTP/1.1\r\n" + HOST + "Transfer-Encoding: chunked\r\n\r\n"

BODY_VARIANTS = [
    ("chunk-size-0x", 400, CHUNKED_HEAD + "0x5\r\nhello\r\n" + CHUNKED_END + "{I}"),
    ("chunk-size-negative", 400, CHUNKED_HEAD + "-5\r\nhello\r\n" + CHUNKED_END + "{I}"),
    ("chunk-size-leading-space", 400, CHUNKED_HEAD + " 5\r\nhello\r\n" + CHUNKED_END + "{I}"),
    ("chunk-size-overflow", 400, CHUNKED_HEAD + "fffffffffffffffff5\r\nhello\r\n" + CHUNKED_END + "{I}"),
    ("chunk-size-not-hex", 400, CHUNKED_HEAD + "5g\r\nhello\r\n" + CHUNKED_END + "{I}"),
    ("chunk-size-bare-lf", 400, CHUNKED_HEAD + "5\nhello\r\n" + CHUNKED_END + "{I}"),
    ("chunk-ext-bare-lf-quoted", 400, CHUNKED_HEAD + '5;a="x\ny"\r\nhello\r\n' + CHUNKED_END + "{I}"),
    ("chunk-ext-control", 400, CHUNKED_HEAD + "5;a\x01=b\r\nhello\r\n" + CHUNKED_END + "{I}"),
    ("chunk-ext-no-name", 400, CHUNKED_HEAD + "5;=b\r\nhello\r\n" + CHUNKED_END + "{I}"),
    ("chunk-data-too-long", 400, CHUNKED_HEAD + "3\r\nhello\r\n" + CHUNKED_END + "{I}"),
    ("chunk-data-bare-lf", 400, CHUNKED_HEAD + "5\r\nhello\n" + CHUNKED_END + "{I}"),
]


def _marker(index: int) -> str:
    return f"/smuggle-{index:02d}-{RUN}"


def _render(text: str, marker: str) -> bytes:
    inner = INNER.replace("{T}", marker)
    return text.replace("{I}", inner).replace("{T}", marker).encode("latin-1")


def _send_variant(gw, name: str, status: int, data: bytes) -> tuple[list[str], h.RawTLS]:
    """One variant on its own connection: the exact status, one response only, then the gateway closes."""
    problems = []
    with h.RawTLS(gw.https_port, gw.certs.ca) as c:
        c.send(data)
        # Both return as soon as the answer is in and the gateway closed: guards against a hang.
        r = c.read_response(timeout=15)
        c.read_until_close(timeout=15)
    if r is None:
        problems.append(f"{name}: no response, got {c.received[:120]!r} (closed={c.closed}, reset={c.reset})")
        return problems, c
    if r.status != status:
        problems.append(f"{name}: status {r.status}, expected {status}")
    if not c.closed:
        problems.append(f"{name}: the connection stayed open after {r.status}")
    if c.received.count(b"HTTP/1.") != 1:
        problems.append(f"{name}: more than one response: {c.received[:300]!r}")
    http11 = c.received.startswith(b"HTTP/1.1 ")
    if http11 and (r.header("Connection") or "").lower() != "close":
        problems.append(f"{name}: HTTP/1.1 error response without Connection: close ({r.headers})")
    return problems, c


def _log_lines(app1) -> list[str]:
    return app1.process.read_stdout().splitlines()


def _unseen(app1, names_markers) -> list[str]:
    log = "\n".join(_log_lines(app1))
    return [f"{name}: the backend received {marker} (or its inner request)"
            for name, marker in names_markers if marker in log]


def _barrier(gw, app1) -> None:
    """A normal request through the gateway, waited for in the backend's log: anything the
    gateway forwarded before it had its time to be logged (on a busy machine a fixed pause
    could be too short); the control line is left out of the checks by its tag."""
    tag = h.unique("/smuggle-barrier")
    r = h.curl(gw, tag)
    h.check(r.status == 200, f"control request: {r}")
    app1.wait_for_request(tag)


def _grown(app1, before: int) -> list[str]:
    return [line for line in _log_lines(app1)[before:] if "/smuggle-barrier" not in line]


def _still_serves(gw):
    tag = h.unique("/after")
    r = h.curl(gw, f"{tag}?x=1")
    h.check(r.status == 200 and r.json()["path"] == f"{tag}?x=1", f"normal request after the corpus: {r}")


def _echo(gw, data: bytes, status: int = 200) -> tuple[h.Response, dict, h.RawTLS]:
    """Sends one valid raw request; returns the response, the backend's JSON echo and the connection."""
    with h.RawTLS(gw.https_port, gw.certs.ca) as c:
        c.send(data)
        r = c.read_response(timeout=10)
    h.check(r is not None, f"no response to {data[:80]!r}: {c.received[:200]!r}")
    h.check(r.status == status, f"{data[:80]!r}: status {r.status}, expected {status}: {r.body[:200]!r}")
    return r, (json.loads(r.body) if status == 200 else {}), c


def _received_headers(doc: dict) -> dict:
    out = {}
    for k, v in doc["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_corpus_size():
    names = [v[0] for v in VARIANTS + BODY_VARIANTS]
    h.check(len(set(names)) == len(names), "variant names are not unique")
    h.check(len(VARIANTS) + len(BODY_VARIANTS) >= 40, f"only {len(names)} variants")
    print(f"    {len(VARIANTS)} header variants, {len(BODY_VARIANTS)} chunked-body variants", flush=True)


def test_backend_log_is_live(gw, app1):
    """The check below relies on the backend's log: a normal request must show up in it."""
    tag = h.unique("/smuggle-control")
    r = h.curl(gw, tag)
    h.check(r.status == 200, f"control request: {r}")
    app1.wait_for_request(tag, timeout=5)


def test_header_variants_refused_and_never_forwarded(gw, app1):
    before = len(_log_lines(app1))
    problems = []
    markers = []
    for i, (name, status, text) in enumerate(VARIANTS):
        marker = _marker(i)
        markers.append((name, marker))
        found, _ = _send_variant(gw, name, status, _render(text, marker))
        problems += found
    _barrier(gw, app1)  # anything forwarded by mistake is logged by now
    problems += _unseen(app1, markers)
    grown = _grown(app1, before)
    if grown:
        problems.append(f"the backend log grew by {len(grown)} line(s) while only refused requests were sent: "
                        f"{grown[:5]}")
    h.check(not problems, f"{len(problems)} problem(s) over {len(VARIANTS)} variants:\n    " +
            "\n    ".join(problems))
    _still_serves(gw)


def test_chunked_body_variants_refused(gw, app1):
    before = len(_log_lines(app1))
    problems = []
    markers = []
    for i, (name, status, text) in enumerate(BODY_VARIANTS):
        marker = _marker(100 + i)
        markers.append((name, marker))
        found, _ = _send_variant(gw, name, status, _render(text, marker))
        problems += found
    _barrier(gw, app1)
    # Neither the request nor the inner one is forwarded: the body is read whole first.
    inner = "\n".join(_log_lines(app1))
    problems += [f"{name}: the backend received the smuggled {marker}-inner"
                 for name, marker in markers if f"{marker}-inner" in inner]
    problems += _unseen(app1, markers)
    grown = _grown(app1, before)
    if grown:
        problems.append(f"the backend log grew by {len(grown)} line(s): {grown[:5]}")
    h.check(not problems, f"{len(problems)} problem(s) over {len(BODY_VARIANTS)} variants:\n    " +
            "\n    ".join(problems))
    _still_serves(gw)


def test_absolute_form_matching_host_arrives_in_origin_form(gw, app1):
    for i, target in enumerate([f"https://{h.SITE.upper()}{{T}}?x=1", f"https://{h.SITE}:443{{T}}?x=1",
                                f"http://{h.SITE}:80{{T}}?x=1"]):
        marker = h.unique(f"/ok-absolute-{i}")
        data = _render(_get(HOST, f"GET {target} HTTP/1.1\r\n"), marker)
        _, doc, _ = _echo(gw, data)
        h.check(doc["path"] == f"{marker}?x=1", f"{target}: the backend saw target {doc['path']!r}")
        logged = app1.wait_for_request(marker)
        h.check(logged.target == f"{marker}?x=1", f"backend request line: {logged.line!r}")


def test_http10_without_host_passes(gw):
    marker = h.unique("/ok-http10")
    r, doc, c = _echo(gw, _render("GET {T} HTTP/1.0\r\n\r\n", marker))
    h.check(doc["path"] == marker, f"HTTP/1.0: the backend saw {doc['path']!r}")
    h.check(c.received.startswith(b"HTTP/1.0 200"), f"HTTP/1.0 client got {c.received[:40]!r}")


def test_chunked_with_extensions_is_rechunked(gw):
    marker = h.unique("/ok-chunked-ext")
    body = '5;name=value\r\nhello\r\n6;q="a b";x\r\n world\r\n0;last=1\r\nX-Trailer: t\r\n\r\n'
    data = _render(CHUNKED_HEAD + body, marker)
    _, doc, _ = _echo(gw, data)
    got = _received_headers(doc)
    h.check(doc["body_bytes"] == 11, f"body bytes at the backend: {doc['body_bytes']}")
    h.check(got.get("transfer-encoding") == ["chunked"] and "content-length" not in got,
            f"framing at the backend: {doc['headers']}")


def test_framing_fields_normalised(gw):
    marker = h.unique("/ok-cl-zeros")
    _, doc, _ = _echo(gw, _render(_post("Content-Length: 005\r\n", "hello"), marker))
    got = _received_headers(doc)
    h.check(got.get("content-length") == ["5"] and doc["body_bytes"] == 5,
            f"Content-Length: 005 reached the backend as {got.get('content-length')} ({doc['body_bytes']} bytes)")
    marker = h.unique("/ok-te-caps")
    _, doc, _ = _echo(gw, _render(_post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"), marker))
    got = _received_headers(doc)
    h.check(got.get("transfer-encoding") == ["chunked"] and doc["body_bytes"] == 5,
            f"Transfer-Encoding: CHUNKED reached the backend as {got.get('transfer-encoding')}")


def test_field_whitespace_and_upgrade_normalised(gw):
    marker = h.unique("/ok-fields")
    fields = HOST + "X-Pad: \t padded value \t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" \
                    "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    _, doc, _ = _echo(gw, _render(_get(fields), marker))
    got = _received_headers(doc)
    h.check(got.get("x-pad") == ["padded value"], f"X-Pad at the backend: {got.get('x-pad')}")
    for name in ("upgrade", "http2-settings"):
        h.check(name not in got, f"{name} reached the backend: {doc['headers']}")


def test_pipelined_requests_arrive_one_by_one(gw, app1, certs):
    first, second = h.unique("/ok-pipe-1"), h.unique("/ok-pipe-2")
    data = (f"GET {first} HTTP/1.1\r\n{HOST}\r\nGET {second} HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n")
    with h.RawTLS(gw.https_port, certs.ca) as c:
        c.send(data.encode())
        c.read_until_close(timeout=10)
    h.check(c.received.count(b"HTTP/1.1 200") == 2, f"two pipelined requests: {c.received[:300]!r}")
    for tag in (first, second):
        app1.wait_for_request(tag)


def _plain(gw, data: bytes, timeout: float = 15.0) -> bytes:
    """Sends data to the plain-HTTP listener and reads until it closes (bounded)."""
    return h.plain_exchange(gw.http_port, data, timeout)


def test_plain_http_listener_applies_the_same_rules(gw):
    cases = [
        ("obs-fold", _get(HOST + "X-A: b\r\n c\r\n"), 400),
        ("version-2.0", _get(HOST, "GET {T} HTTP/2.0\r\n"), 505),
        ("bare-lf", _get(HOST + "X-A: b\nX-B: c\r\n"), 400),
        ("absolute-other-host", _get(HOST, "GET http://evil.example{T} HTTP/1.1\r\n"), 400),
        ("host-twice", _get(HOST + "Host: evil.example\r\n"), 400),
    ]
    problems = []
    for name, text, status in cases:
        got = _plain(gw, _render(text, h.unique("/plain")))
        r = h.parse_head(got)
        if r is None or r.status != status or r.header("Location"):
            problems.append(f"{name}: expected {status} without Location, got {got[:150]!r}")
    marker = h.unique("/plain-ok")
    got = _plain(gw, _render(_get(HOST, f"GET http://{h.SITE}{{T}}?a=1 HTTP/1.1\r\n"), marker))
    r = h.parse_head(got)
    want = f"https://{h.SITE}:{gw.https_port}{marker}?a=1"
    if r is None or r.status != 301 or r.header("Location") != want:
        problems.append(f"absolute-form redirect: expected 301 to {want}, got {got[:200]!r}")
    h.check(not problems, "\n    ".join(problems))


def test_gateway_still_serves(gw):
    _still_serves(gw)
