"""Request and response headers: X-Forwarded-*, Forwarded, hop-by-hop removal,
HSTS, and the plain-HTTP listener's redirect to HTTPS.

The backend echoes the headers it received, in order, so every check looks at
exactly what crossed the gateway.
"""


import harness as h
import pytest

SPOOF = "6.6.6.6"


@pytest.fixture(scope="module")
def gw(certs, app1) -> h.Gateway:
    return h.Gateway(certs, {"app1": app1}, http=True).start()


def _echo(gw, *headers):
    """Sends GET with Host: www.foobar.com and the given extra headers over
    HTTP/1.1 (hop-by-hop fields exist there; HTTP/2's connection-specific
    fields are refused, see test_h2.py); returns (response, headers the
    backend received as a list of (name, value))."""
    args = ["--http1.1", "-H", f"Host: {h.SITE}"]
    for hdr in headers:
        args += ["-H", hdr]
    r = h.curl(gw, "/echo?q=1", *args)
    h.check(r.status == 200, f"echo: {r}")
    return r, [(k, v) for k, v in r.json()["headers"]]


def _values(received, name):
    return [v for k, v in received if k.lower() == name.lower()]


def _forwarded_params(value):
    """'for=1.2.3.4;proto=https;host=x' (RFC 7239, one element) -> dict, quotes removed."""
    params = {}
    for pair in value.split(";"):
        k, _, v = pair.strip().partition("=")
        params[k.strip().lower()] = v.strip().strip('"')
    return params


def test_x_forwarded_for_replaces_client_value(gw):
    _, received = _echo(gw, f"X-Forwarded-For: {SPOOF}")
    h.check(_values(received, "X-Forwarded-For") == ["127.0.0.1"],
            f"X-Forwarded-For at the backend: {_values(received, 'X-Forwarded-For')}")


def test_x_forwarded_proto_and_host(gw):
    _, received = _echo(gw, "X-Forwarded-Proto: http", "X-Forwarded-Host: evil.example")
    h.check(_values(received, "X-Forwarded-Proto") == ["https"],
            f"X-Forwarded-Proto at the backend: {_values(received, 'X-Forwarded-Proto')}")
    h.check(_values(received, "X-Forwarded-Host") == [h.SITE],
            f"X-Forwarded-Host at the backend: {_values(received, 'X-Forwarded-Host')}")


def test_forwarded_header_replaces_client_value(gw):
    _, received = _echo(gw, f"Forwarded: for={SPOOF};proto=http", f"X-Forwarded-For: {SPOOF}")
    values = _values(received, "Forwarded")
    h.check(len(values) == 1 and "," not in values[0], f"Forwarded at the backend: {values}")
    params = _forwarded_params(values[0])
    h.check(params.get("for") == "127.0.0.1", f"Forwarded for= is {params.get('for')!r}: {values[0]}")
    h.check(params.get("proto") == "https", f"Forwarded proto= is {params.get('proto')!r}: {values[0]}")
    h.check(params.get("host") == h.SITE, f"Forwarded host= is {params.get('host')!r}: {values[0]}")
    leaked = [(k, v) for k, v in received if SPOOF in v]
    h.check(not leaked, f"the spoofed address reached the backend: {leaked}")


def test_hop_by_hop_headers_removed(gw):
    sent = ["Connection: X-Secret", "X-Secret: 1", "Keep-Alive: timeout=5, max=100", "TE: trailers",
            "Upgrade: websocket", "Proxy-Connection: keep-alive", "Trailer: X-Checksum"]
    _, received = _echo(gw, *sent)
    names = {k.lower() for k, _ in received}
    for hop in ("x-secret", "keep-alive", "te", "upgrade", "proxy-connection", "trailer"):
        h.check(hop not in names, f"hop-by-hop header {hop} reached the backend: {received}")
    for value in _values(received, "Connection"):
        h.check("x-secret" not in value.lower(), f"Connection: {value} reached the backend")


def test_hsts_on_https(gw):
    r = h.curl(gw, "/")
    h.check(r.status == 200, f"GET /: {r}")
    h.check(r.header_all("Strict-Transport-Security") == ["max-age=31536000; includeSubDomains"],
            f"Strict-Transport-Security: {r.header_all('Strict-Transport-Security')}")


def test_http_redirects_to_https(gw, app1):
    path = f"/some/path?a=1&b={h.unique('redir')}"
    expected = f"https://{h.SITE}:{gw.https_port}{path}"
    # curl's own Host (with the http port) and a bare Host must both map to the https port.
    for extra in ([], ["-H", f"Host: {h.SITE}"]):
        r = h.curl(gw, path, *extra, scheme="http")
        h.check(r.status == 301, f"http {extra}: status {r.status}, expected 301")
        h.check(r.header("Location") == expected, f"http {extra}: Location {r.header('Location')!r}, "
                                                  f"expected {expected!r}")
        h.check(r.header("Strict-Transport-Security") is None, "HSTS sent over plain HTTP")
    h.check(not app1.saw("/some/path"), "the redirected request reached the backend")
