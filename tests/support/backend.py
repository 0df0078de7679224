#!/usr/bin/env python3
"""A named HTTP/1.1 test backend: the sample app server of the demo and of the tests.

Run it as

    python3 tests/support/backend.py --name app1 --port 18081 [--host 127.0.0.1]

It prints ``ready`` on stdout once it listens, then one line per request it
receives (see "Request log" below), and serves until SIGTERM or Ctrl-C.

Endpoints (any method unless noted; every response has Content-Length unless it
is chunked, and the header ``X-Backend: NAME``):

``GET|HEAD <any path>``
    200, JSON ``{"server", "method", "path" (with query), "headers": [[name,
    value], ...] in received order, "peer_port": the client's source port,
    "conn_requests": requests seen so far on this TCP connection (1 for the
    first), "body_bytes": request body length}``.
``GET /download?bytes=N[&chunked=1]``
    N deterministic bytes (see ``content()``), with Content-Length or chunked.
``POST|PUT /upload``
    Reads the body (Content-Length or chunked) in 64 KiB pieces without keeping
    it and answers JSON ``{"server", "bytes": n, "sha256": hex}``.
``/slow?ms=N``
    Sleeps N ms (at most 120 s), then answers like the catch-all.
``/stall``
    Never answers: holds the connection until the peer closes it or 120 s pass,
    then closes it.
``/health``
    200 ``ok``.
``/status/NNN``
    Answers status NNN with the body ``status NNN`` and a newline; NNN from 200
    to 599 except 204 and 304 (which carry no body), anything else 400.

Request log: for every request line received, one stdout line
``REQ <peer_port> <conn_requests> <METHOD> <target>``; a request line that does
not parse is logged as ``BAD <peer_port> <repr of the line>``; an upload read
whole as ``UPLOADED <target> <bytes>``. Tests read this
file to check what reached the backend.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import select
import signal
import socket
import sys
import threading
import time
import urllib.parse

BLOCK_SIZE = 64 * 1024
MAX_SLEEP_S = 120.0
MAX_CHUNK_LINE = 4096


def _make_block() -> bytes:
    """The 64 KiB block /download repeats: SHA-256 of a fixed seed and a counter."""
    parts = [hashlib.sha256(b"rampart-backend-%d" % i).digest() for i in range(BLOCK_SIZE // 32)]
    return b"".join(parts)


BLOCK = _make_block()


def content(n: int):
    """Yields the n bytes /download?bytes=n sends, in pieces of at most 64 KiB."""
    while n > 0:
        piece = BLOCK if n >= BLOCK_SIZE else BLOCK[:n]
        n -= len(piece)
        yield piece


def content_sha256(n: int) -> str:
    """Hex SHA-256 of the body of /download?bytes=n."""
    h = hashlib.sha256()
    for piece in content(n):
        h.update(piece)
    return h.hexdigest()


class _Log:
    """Line-buffered, thread-safe stdout writer (stdout is usually a file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()


LOG = _Log()


class BodyError(Exception):
    """The request body could not be read (bad chunked framing, early EOF)."""


class Handler(http.server.BaseHTTPRequestHandler):
    """One instance per TCP connection; handle_one_request runs per request."""

    protocol_version = "HTTP/1.1"
    server_version = "rampart-test-backend/1"
    # Headers and body go out in separate writes: without TCP_NODELAY the second
    # write would wait for the delayed ACK of the first (40 ms per request).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.conn_requests = 0

    # -- request line ---------------------------------------------------------

    def parse_request(self) -> bool:
        ok = super().parse_request()
        peer = self.client_address[1]
        if ok:
            self.conn_requests += 1
            LOG.line(f"REQ {peer} {self.conn_requests} {self.command} {self.path}")
        else:
            LOG.line(f"BAD {peer} {self.raw_requestline!r}")
        return ok

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (base class name)
        sys.stderr.write("%s: %s\n" % (self.server.name, format % args))

    def log_request(self, code="-", size="-") -> None:
        pass  # the REQ line on stdout is the request log

    # -- dispatch ---------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        route = url.path
        try:
            if route == "/upload" and self.command in ("POST", "PUT"):
                self._upload()
            elif route == "/download":
                self._drain_body()
                self._download(_int_arg(query, "bytes", 0), _int_arg(query, "chunked", 0) == 1)
            elif route == "/text" or route.endswith("/text"):  # any prefix: routes with their own paths
                self._drain_body()
                self._text(query)
            elif route == "/health":
                self._drain_body()
                self._send(200, b"ok\n", "text/plain")
            elif route.startswith("/status/"):
                self._drain_body()
                code = _int_text(route[len("/status/"):], 400)
                code = code if 200 <= code <= 599 and code not in (204, 304) else 400
                self._send(code, f"status {code}\n".encode(), "text/plain")
            elif route == "/stall":
                self._drain_body()
                self._stall()
            else:
                if route == "/slow":
                    ms = _int_arg(query, "ms", 1000)
                    time.sleep(min(max(ms, 0) / 1000.0, MAX_SLEEP_S))
                self._echo(self._drain_body())
        except BodyError as e:
            self.close_connection = True
            self._send(400, f"bad request body: {e}\n".encode(), "text/plain")

    # -- endpoints --------------------------------------------------------------

    def _echo(self, body_bytes: int) -> None:
        doc = {
            "server": self.server.name,
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "peer_port": self.client_address[1],
            "conn_requests": self.conn_requests,
            "body_bytes": body_bytes,
        }
        self._send(200, (json.dumps(doc) + "\n").encode(), "application/json")

    def _upload(self) -> None:
        digest = hashlib.sha256()
        n = 0
        for piece in self._body_pieces():
            digest.update(piece)
            n += len(piece)
        LOG.line(f"UPLOADED {self.path} {n}")
        doc = {"server": self.server.name, "bytes": n, "sha256": digest.hexdigest()}
        self._send(200, (json.dumps(doc) + "\n").encode(), "application/json")

    def _download(self, n: int, chunked: bool) -> None:
        n = max(n, 0)
        self.send_response(200)
        self.send_header("X-Backend", self.server.name)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        for piece in content(n):
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _text(self, query: dict) -> None:
        """/text?bytes=N: N bytes of text that compresses like a web page (lines of words and
        numbers); type=, chunked=1, cookie=1 (a Set-Cookie), cache=VALUE (Cache-Control),
        encoding=VALUE (a Content-Encoding the body does not have), etag=1 (a strong ETag),
        gap_ms=N (a pause before each 16 KiB piece after the first, at most 5 s)."""
        n = max(_int_arg(query, "bytes", 0), 0)
        line = b"<li class=\"item\">Rampart serves www.foobar.com item %08d of the catalogue</li>\n"
        body = b"".join(line % i for i in range(n // 60 + 1))[:n]
        chunked = _int_arg(query, "chunked", 0) == 1
        self.send_response(200)
        self.send_header("X-Backend", self.server.name)
        self.send_header("Content-Type", query.get("type", ["text/html; charset=utf-8"])[0])
        if _int_arg(query, "cookie", 0) == 1:
            self.send_header("Set-Cookie", "session=abc; Path=/")
        if "cache" in query:
            self.send_header("Cache-Control", query["cache"][0])
        if "encoding" in query:
            self.send_header("Content-Encoding", query["encoding"][0])
        if _int_arg(query, "etag", 0) == 1:
            self.send_header("ETag", '"v1"')
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        gap = min(max(_int_arg(query, "gap_ms", 0), 0), 5000) / 1000.0
        for at in range(0, len(body), 16384):
            if at and gap:
                self.wfile.flush()
                time.sleep(gap)  # a page generated slowly: pieces with pauses between them
            piece = body[at:at + 16384]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _stall(self) -> None:
        """Holds the request unanswered until the peer closes or 120 s pass."""
        deadline = time.monotonic() + MAX_SLEEP_S
        sock = self.connection
        while time.monotonic() < deadline and not self.server.stopping.is_set():
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                try:
                    if not sock.recv(1, socket.MSG_PEEK):
                        break  # the peer closed its side
                except OSError:
                    break
                time.sleep(0.2)  # pipelined bytes: keep stalling, do not spin
        self.close_connection = True

    # -- helpers ----------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("X-Backend", self.server.name)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drain_body(self) -> int:
        """Reads and discards any request body; returns its length."""
        return sum(len(p) for p in self._body_pieces())

    def _body_pieces(self):
        """Yields the request body in pieces of at most 64 KiB, decoding chunked."""
        te = self.headers.get("Transfer-Encoding", "")
        if te and te.split(",")[-1].strip().lower() == "chunked":
            yield from self._chunked_pieces()
            return
        length = self.headers.get("Content-Length")
        if length is None:
            return
        try:
            remaining = int(length)
        except ValueError:
            raise BodyError(f"Content-Length {length!r}") from None
        while remaining > 0:
            piece = self.rfile.read(min(remaining, BLOCK_SIZE))
            if not piece:
                raise BodyError("connection closed inside the body")
            remaining -= len(piece)
            yield piece

    def _chunked_pieces(self):
        while True:
            line = self.rfile.readline(MAX_CHUNK_LINE)
            if not line.endswith(b"\n"):
                raise BodyError("bad chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError(f"bad chunk size {line!r}") from None
            if size == 0:
                break
            remaining = size
            while remaining > 0:
                piece = self.rfile.read(min(remaining, BLOCK_SIZE))
                if not piece:
                    raise BodyError("connection closed inside a chunk")
                remaining -= len(piece)
                yield piece
            if self.rfile.readline(MAX_CHUNK_LINE) not in (b"\r\n", b"\n"):
                raise BodyError("chunk not followed by CRLF")
        for _ in range(1000):  # trailer section, bounded
            line = self.rfile.readline(MAX_CHUNK_LINE)
            if line in (b"\r\n", b"\n", b""):
                return
        raise BodyError("too many trailer lines")


def _int_text(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _int_arg(query: dict, name: str, default: int) -> int:
    try:
        return int(query.get(name, [default])[0])
    except ValueError:
        return default


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        self.stopping = threading.Event()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            sys.stderr.write(f"{self.name}: {client_address}: {exc!r}\n")
        else:
            super().handle_error(request, client_address)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Named HTTP/1.1 test backend for Rampart.")
    parser.add_argument("--name", required=True, help="name reported in X-Backend and JSON")
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--idle-timeout", type=float, default=None,
                        help="close a keep-alive connection idle this many seconds (like a real app server)")
    args = parser.parse_args(argv)
    if args.idle_timeout is not None:
        Handler.timeout = args.idle_timeout

    server = Server(args.name, args.host, args.port)

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    host, port = server.server_address[:2]
    LOG.line(f"listening {args.name} {host} {port}")
    LOG.line("ready")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
