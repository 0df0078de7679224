"""The real client address behind a layer-4 balancer or a CDN (gateway.trusted_proxies).

A PROXY-protocol gateway (listen.proxy_protocol, trusted proxy 127.0.0.1):

- a v1 (text) and a v2 (binary) header from the trusted peer name the client: the app server
  gets it in X-Forwarded-For and the access log records it, over HTTPS (the ClientHello right
  behind the header) and on the port-80 redirect; a v2 LOCAL header keeps the peer's address;
- a connection from an untrusted peer (127.0.0.2) is refused before a byte is read; a broken
  header (wrong signature, a v1 line without its ports, an oversized v2 length) is refused at
  once, a truncated one when the handshake timeout (3 s) passes; each is counted in
  rampart_proxy_protocol_total and reaches no app server;
- a client behind the proxy that keeps sending malformed requests is blocked at layer 7: its
  requests get 403 while another client behind the same proxy is served, and nothing goes to the
  firewall (rampart_l7_blocks_total 1, rampart_firewall_blocks_total 0).

A gateway with trusted proxies and no PROXY protocol (a CDN speaking HTTP):

- from the trusted peer, the client is the rightmost untrusted address of X-Forwarded-For; the
  app server gets the chain with the peer appended, the access log the client;
- from an untrusted peer (127.0.0.2), X-Forwarded-For is replaced by the peer, as always.
"""

import json
import socket
import ssl
import struct
import time

import harness as h
import pytest

PEER_UNTRUSTED = "127.0.0.2"


@pytest.fixture(scope="module")
def proxied(certs, app1):
    """A PROXY-protocol gateway behind the trusted 127.0.0.1; (gateway, access log path)."""
    log = h.temp_dir() / "proxied-access.log"
    gw = h.Gateway(certs, {"app1": app1}, http=True, workers=1)
    gw.config["gateway"]["listen"]["proxy_protocol"] = True
    gw.config["gateway"]["trusted_proxies"] = ["127.0.0.1/32"]
    gw.config["gateway"]["access_log"] = {"path": str(log), "buffer": "4KiB"}
    gw.config["gateway"]["timeouts"]["handshake"] = "3s"
    gw.config["gateway"]["abuse"] = {"threshold": 3, "window": "30s", "block_for": "60s", "block": True}
    return gw.start(), log


@pytest.fixture(scope="module")
def cdn(certs, app1):
    """Trusted proxies without the PROXY protocol (X-Forwarded-For); (gateway, access log path)."""
    log = h.temp_dir() / "cdn-access.log"
    gw = h.Gateway(certs, {"app1": app1}, http=False, workers=1)
    gw.config["gateway"]["trusted_proxies"] = ["127.0.0.1/32", "203.0.113.0/24"]
    gw.config["gateway"]["access_log"] = {"path": str(log), "buffer": "4KiB"}
    gw.config["gateway"]["limits"]["max_connections_per_client"] = 2
    return gw.start(), log


def v1(client: str, port: int = 50000) -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    server = "::1" if ":" in client else "127.0.0.1"
    return f"PROXY {family} {client} {server} {port} 443\r\n".encode()


V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(client: str, port: int = 50001, command: int = 1) -> bytes:
    if command == 0:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    block = socket.inet_aton(client) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 443)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


def connect(port: int, source: str = h.LOOPBACK, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect((h.LOOPBACK, port))
    return s


def https_exchange(gw, header: bytes, request: bytes, source: str = h.LOOPBACK) -> bytes:
    """Sends `header` (a PROXY header, or nothing), then `request` over TLS; what came back."""
    raw = connect(gw.https_port, source)
    try:
        raw.sendall(header)
        tls = h.client_context(gw.certs.ca, alpn=False).wrap_socket(raw, server_hostname=h.SITE)
        tls.sendall(request)
        return h.recv_until_close(tls)
    finally:
        raw.close()


def https_get(gw, header: bytes, path: str = "/echo", source: str = h.LOOPBACK,
              extra: str = "") -> tuple[int, dict | str]:
    """GET `path` over TLS after `header`: (status, JSON echo or text)."""
    data = https_exchange(gw, header, f"GET {path} HTTP/1.1\r\nHost: {h.SITE}\r\n{extra}Connection: close\r\n\r\n"
                          .encode(), source)
    r = h.parse_head(data)
    h.check(r is not None, f"no response: {data[:200]!r}")
    try:
        return r.status, json.loads(r.body)
    except ValueError:
        return r.status, r.body.decode(errors="replace")


def closed_without_answer(port: int, data: bytes, source: str = h.LOOPBACK, timeout: float = 10.0) -> float:
    """Sends `data`, returns how long until the gateway closed the connection; fails if it answered."""
    s = connect(port, source, timeout)
    t0 = time.monotonic()
    try:
        try:
            s.sendall(data)
        except OSError:
            return time.monotonic() - t0
        try:
            got = s.recv(1024)
        except ConnectionResetError:
            got = b""
        h.check(got == b"", f"the gateway answered: {got[:100]!r}")
        return time.monotonic() - t0
    finally:
        s.close()


def forwarded_for(echo: dict) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == "x-forwarded-for"]


def log_clients(log, path: str) -> list[str]:
    out = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("path", "").startswith(path):
            out.append(entry["client"])
    return out


def metric(gw, name: str) -> float:
    return h.metrics(gw).get(name, 0.0)


def test_v1_and_v2_headers_name_the_client(proxied):
    gw, log = proxied
    status, echo = https_get(gw, v1("198.51.100.7"), "/echo/v1")
    h.check(status == 200 and forwarded_for(echo) == ["198.51.100.7"], f"v1: {status} {echo}")
    status, echo = https_get(gw, v2("198.51.100.8"), "/echo/v2")
    h.check(status == 200 and forwarded_for(echo) == ["198.51.100.8"], f"v2: {status} {echo}")
    status, echo = https_get(gw, v1("2001:db8::9"), "/echo/v6")
    h.check(status == 200 and forwarded_for(echo) == ["2001:db8::9"], f"v1 TCP6: {status} {echo}")
    # LOCAL: the balancer's own connection (its health check): the peer's address.
    status, echo = https_get(gw, v2("", command=0), "/echo/local")
    h.check(status == 200 and forwarded_for(echo) == ["127.0.0.1"], f"v2 LOCAL: {status} {echo}")
    h.wait_until(lambda: len(log_clients(log, "/echo/")) >= 4, 10, what="four access log lines")
    h.check(log_clients(log, "/echo/") == ["198.51.100.7", "198.51.100.8", "2001:db8::9", "127.0.0.1"],
            f"access log clients: {log_clients(log, '/echo/')}")
    # The port-80 listener takes the header too, then redirects.
    raw = h.plain_exchange(gw.http_port, v1("198.51.100.7") + f"GET /x HTTP/1.1\r\nHost: {h.SITE}\r\n"
                                                              "Connection: close\r\n\r\n".encode(), 15)
    r = h.parse_head(raw)
    h.check(r is not None and r.status == 301, f"redirect listener: {raw[:120]!r}")
    h.check(metric(gw, 'rampart_proxy_protocol_total{result="client"}') >= 4, "PROXY headers not counted")


def test_untrusted_peers_and_broken_headers_are_refused(proxied, app1):
    gw, _ = proxied
    seen = len(app1.requests())
    before_untrusted = metric(gw, 'rampart_proxy_protocol_total{result="untrusted_peer"}')
    before_bad = metric(gw, 'rampart_proxy_protocol_total{result="bad_header"}')
    # From an untrusted peer, even a well-formed header is not read.
    closed_without_answer(gw.https_port, v1("198.51.100.7"), source=PEER_UNTRUSTED)
    for bad in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                        # no header at all
                V2_SIGNATURE[:7] + b"X" + V2_SIGNATURE[8:] + bytes(20),      # wrong signature
                b"PROXY TCP4 198.51.100.7 127.0.0.1\r\n",                     # v1 without its ports
                V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 2000)):  # v2 longer than 536
        took = closed_without_answer(gw.https_port, bad)
        # At once, not at the handshake timeout (3 s): the margin is for a busy machine.
        h.check(took < 2.5, f"{bad[:20]!r}: closed after {took:.2f}s, not at once")
    # Truncated: closed when the handshake timeout (3 s) passes; a guard against a hang above it.
    took = closed_without_answer(gw.https_port, v2("198.51.100.7")[:20], timeout=30)
    h.check(2.9 <= took < 25, f"a truncated header was closed after {took:.2f}s")
    h.wait_until(lambda: metric(gw, 'rampart_proxy_protocol_total{result="bad_header"}') - before_bad >= 5, 10,
                 what="five bad headers counted")
    h.check(metric(gw, 'rampart_proxy_protocol_total{result="untrusted_peer"}') - before_untrusted == 1,
            "the untrusted peer was not counted")
    h.check(len(app1.requests()) == seen, "a refused connection reached the app server")


def test_a_client_behind_the_proxy_is_blocked_at_layer_7(proxied):
    gw, _ = proxied
    abuser, other = "198.51.100.66", "198.51.100.67"
    for i in range(3):
        # A malformed request (a bare LF): 400 and a violation of the client the header names.
        raw = https_exchange(gw, v1(abuser), b"GET /bad HTTP/1.1\nHost: x\r\n\r\n")
        h.check(b" 400 " in raw.split(b"\r\n", 1)[0], f"malformed request {i}: {raw[:80]!r}")
    h.wait_until(lambda: metric(gw, "rampart_l7_blocks_total") == 1, 10, interval=0.1,
                 what="the client blocked at layer 7")
    status, body = https_get(gw, v1(abuser), "/echo/after-block")
    h.check(status == 403, f"the blocked client got {status}: {body}")
    status, echo = https_get(gw, v1(other), "/echo/neighbour")
    h.check(status == 200 and forwarded_for(echo) == [other], f"another client behind the proxy: {status} {echo}")
    h.check(metric(gw, "rampart_requests_blocked_total") >= 1, "the 403 was not counted")
    h.check(metric(gw, "rampart_firewall_blocks_total") == 0 and metric(gw, "rampart_firewall_block_errors_total") == 0,
            "a client behind a proxy went to the firewall")


def test_x_forwarded_for_from_a_trusted_peer_names_the_client(cdn):
    gw, log = cdn
    # The client wrote 6.6.6.6 itself; the CDN's edge (203.0.113.9, trusted) added the real one.
    chain = "X-Forwarded-For: 6.6.6.6, 198.51.100.7, 203.0.113.9\r\n"
    status, echo = https_get(gw, b"", "/echo/cdn", extra=chain)
    h.check(status == 200, f"{status} {echo}")
    h.check(forwarded_for(echo) == ["6.6.6.6, 198.51.100.7, 203.0.113.9, 127.0.0.1"],
            f"the chain at the app server: {forwarded_for(echo)}")
    forwarded = [v for k, v in echo["headers"] if k.lower() == "forwarded"]
    h.check(forwarded and forwarded[0].startswith("for=198.51.100.7;"), f"Forwarded: {forwarded}")
    # From an untrusted peer the same field is replaced, as at any edge.
    status, echo = https_get(gw, b"", "/echo/direct", source=PEER_UNTRUSTED, extra=chain)
    h.check(status == 200 and forwarded_for(echo) == [PEER_UNTRUSTED], f"untrusted peer: {forwarded_for(echo)}")
    h.wait_until(lambda: len(log_clients(log, "/echo/")) >= 2, 10, what="two access log lines")
    h.check(log_clients(log, "/echo/") == ["198.51.100.7", PEER_UNTRUSTED], f"access log: {log_clients(log, '/echo/')}")


def test_the_per_client_cap_is_not_the_trusted_proxys_to_meet(cdn):
    gw, _ = cdn
    for source, served in ((h.LOOPBACK, 4), (PEER_UNTRUSTED, 2)):
        conns, ok = [], 0
        try:
            for _ in range(4):
                raw = connect(gw.https_port, source)
                conns.append(raw)
                try:
                    tls = h.client_context(gw.certs.ca, alpn=False).wrap_socket(raw, server_hostname=h.SITE)
                    tls.sendall(f"GET /echo/cap HTTP/1.1\r\nHost: {h.SITE}\r\n\r\n".encode())
                    ok += tls.recv(64).startswith(b"HTTP/1.1 200")
                    conns.append(tls)
                except (OSError, ssl.SSLError):
                    pass  # refused over the cap: closed before the handshake
        finally:
            for c in conns:
                c.close()
        h.check(ok == served, f"from {source}: {ok} of 4 connections served at once, expected {served}")
