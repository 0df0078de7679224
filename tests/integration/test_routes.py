"""Routes (gateway.routes): the real gateway, two real backends (app1 in pool app, api1 in pool
api), curl as the client.

Checks: requests reach the pool their route names (host, path prefix segment by segment,
methods); a redirect route answers 301/308 with the request's path and query appended, and the
backend never sees the request; no matching route is 404; the path reaches the backend in normal
form (dot segments removed, unreserved escapes decoded); traversal attempts (encoded '/', '\\',
dot-dot above the root, NUL) get 400 and reach no backend; /readyz follows every pool a route
uses; a route's header rules set and remove fields both ways; `rampart check` lists the routes and warns, at file:line:column, about one that can never
match.
"""

import os
import subprocess

import harness as h
import pytest

ROUTES = [
    {"host": "foobar.com", "redirect": {"to": "https://www.foobar.com"}},
    {"host": "old.foobar.com", "redirect": {"to": "https://www.foobar.com/new", "status": 308}},
    {"host": h.SITE, "path": "/api/", "methods": ["GET", "HEAD", "POST"], "pool": "api",
     "headers": {"request": {"set": {"X-Api": "1", "X-Tenant": "foobar"}, "remove": ["Cookie"]},
                 "response": {"set": {"X-Route": "api"}, "remove": ["Server"]}}},
    {"host": h.SITE, "pool": "app"},
]


@pytest.fixture(scope="module")
def backends() -> dict[str, h.Backend]:
    """app1 (the app pool) and api1 (the api pool); a test that restarts one puts it back here."""
    return {"app1": h.Backend("app1").start(), "api1": h.Backend("api1").start()}


@pytest.fixture(scope="module")
def gw(certs, backends) -> h.Gateway:
    gw = h.Gateway(certs, dict(backends), http=False, members=["app1"])
    g = gw.config["gateway"]
    g["pools"]["api"] = {"balance": "round_robin", "servers": ["api1"],
                         "health": {"interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 1}}
    g["default_pool"] = "app"
    g["routes"] = ROUTES
    return gw.start()


def get(gw, path, host=h.SITE, *args):
    return h.curl(gw, path, "--path-as-is", "-H", f"Host: {host}", *args)


def test_requests_reach_the_pool_of_their_route(gw):
    for path, backend in (("/api/users?id=7", "api1"), ("/api/", "api1"), ("/", "app1"), ("/api", "app1"),
                          ("/apix/y", "app1"), ("/static/a.css", "app1")):
        r = get(gw, path)
        h.check(r.status == 200 and r.header("X-Backend") == backend,
                f"GET {path}: {r.status} from {r.header('X-Backend')}, expected {backend}")
        h.check(r.json()["path"] == path, f"GET {path}: the backend saw {r.json()['path']}")
    # Methods: DELETE is not one of the /api/ route's, so the catch-all (pool app) serves it.
    r = get(gw, "/api/users", h.SITE, "-X", "DELETE")
    h.check(r.status == 200 and r.header("X-Backend") == "app1", f"DELETE /api/users: {r.header('X-Backend')}")
    # The host matches without regard to case or port.
    r = get(gw, "/api/x", "WWW.FOOBAR.COM:443")
    h.check(r.header("X-Backend") == "api1", f"Host in upper case with a port: {r.header('X-Backend')}")


def settled_requests(gw, backends):
    """Every request line the backends logged, once a request sent now has been logged (the
    backends' logs are read as they flush: a later request seen means the earlier ones are)."""
    marker = f"/settled-{os.urandom(4).hex()}"
    h.check(get(gw, marker).status == 200, "the marker request")
    backends["app1"].wait_for_request(marker)
    return [x.line for b in ("app1", "api1") for x in backends[b].requests()]


def test_header_rules_of_a_route(gw):
    r = get(gw, "/api/h", h.SITE, "-H", "Cookie: session=secret", "-H", "X-Api: 0", "-H", "X-Keep: yes")
    h.check(r.status == 200 and r.header("X-Backend") == "api1", f"/api/h: {r.status}")
    seen = {k.lower(): v for k, v in r.json()["headers"]}
    h.check(seen.get("x-api") == "1" and seen.get("x-tenant") == "foobar", f"set fields: {seen}")
    h.check("cookie" not in seen, f"Cookie reached the api pool: {seen}")
    h.check(seen.get("x-keep") == "yes", "a field no rule names was lost")
    h.check(r.header("X-Route") == "api" and r.header("Server") is None,
            f"response rules: X-Route {r.header('X-Route')}, Server {r.header('Server')}")
    # The app route has no rules: the same request keeps its Cookie, the response its Server.
    r = get(gw, "/h", h.SITE, "-H", "Cookie: session=secret")
    seen = {k.lower(): v for k, v in r.json()["headers"]}
    h.check(seen.get("cookie") == "session=secret" and "x-api" not in seen, f"app route: {seen}")
    h.check(r.header("Server") is not None and r.header("X-Route") is None, "app route response changed")


def test_a_redirect_route_answers_without_a_backend(gw, backends):
    r = get(gw, "/redirected/page?q=1&r=2", "foobar.com")
    h.check(r.status == 301, f"foobar.com: {r.status}")
    h.check(r.header("Location") == "https://www.foobar.com/redirected/page?q=1&r=2",
            f"Location: {r.header('Location')}")
    r = get(gw, "/redirected/x", "old.foobar.com", "-X", "POST", "--data-binary", "body")
    h.check(r.status == 308 and r.header("Location") == "https://www.foobar.com/new/redirected/x",
            f"old.foobar.com: {r.status} {r.header('Location')}")
    leaked = [line for line in settled_requests(gw, backends) if "/redirected" in line]
    h.check(not leaked, f"a redirect reached a backend: {leaked}")


def test_no_route_is_404(gw, backends):
    r = get(gw, "/unrouted/x", "elsewhere.example")
    h.check(r.status == 404, f"a host no route names: {r.status}")
    leaked = [line for line in settled_requests(gw, backends) if "/unrouted" in line]
    h.check(not leaked, f"a 404 reached a backend: {leaked}")


def test_the_backend_sees_the_normal_form(gw):
    for sent, seen in (("/a/./b/../c", "/a/c"), ("/api/v1/../v2/x?q=%2F", "/api/v2/x?q=%2F"),
                       ("/%7Euser/%41b", "/~user/Ab"), ("/api/%2e/x", "/api/x"), ("/docs/a%20b", "/docs/a%20b")):
        r = get(gw, sent)
        h.check(r.status == 200, f"GET {sent}: {r.status}")
        h.check(r.json()["path"] == seen, f"GET {sent}: the backend saw {r.json()['path']}, expected {seen}")
    # The route is matched on the normal form: /x/../api/ is an /api/ request.
    r = get(gw, "/x/../api/y")
    h.check(r.header("X-Backend") == "api1", f"/x/../api/y went to {r.header('X-Backend')}")


TRAVERSALS = ["/../etc/passwd", "/a/../../etc/passwd", "/%2e%2e/etc/passwd", "/%2E%2E/%2E%2E/etc/passwd",
              "/.%2e/etc/passwd", "/api/..%2f..%2fetc/passwd", "/api/%2f%2fetc", "/a%5c..%5cwin.ini",
              "/a%00.txt", "/a%0d%0aX-Injected:%201", "/%2e%2e%5cboot.ini", "/a%"]


def test_traversal_attempts_get_400_and_reach_no_backend(gw, backends):
    for path in TRAVERSALS:
        r = get(gw, path)
        h.check(r.status == 400, f"GET {path}: {r.status}")
    leaked = [line for line in settled_requests(gw, backends)
              if any(word in line for word in ("passwd", "win.ini", "boot.ini", "%00", "Injected", "%2f"))]
    h.check(not leaked, f"refused paths reached a backend: {leaked}")


def test_readyz_follows_every_pool_a_route_uses(gw, backends):
    h.wait_until(lambda: h.admin(gw, "/readyz")[0] == 200, 10, what="/readyz ready")
    backends["api1"].stop()
    try:
        # Health checks every 200 ms, fall 1: the api pool goes down; app1 is still up.
        h.wait_until(lambda: h.admin(gw, "/readyz")[0] == 503, 10, what="/readyz not ready without api1")
        h.check(get(gw, "/").status == 200, "the app route stopped serving")
    finally:
        backends["api1"] = h.Backend("api1", port=backends["api1"].port).start()
    h.wait_until(lambda: h.admin(gw, "/readyz")[0] == 200, 10, what="/readyz ready again")


def test_check_lists_routes_and_warns_about_one_that_never_matches(gw):
    cfg = dict(gw.config)
    cfg["gateway"] = dict(cfg["gateway"])
    cfg["gateway"]["routes"] = ROUTES + [{"host": h.SITE, "path": "/admin/", "pool": "api"}]
    path = h.write_config(h.temp_dir() / "shadowed.yaml", cfg)
    r = subprocess.run([h.rampart_bin(), "check", "-c", str(path)], capture_output=True, text=True, timeout=30)
    h.check(r.returncode == 0, f"rampart check: {r.returncode} {r.stderr}")
    h.check("routes     1. foobar.com/ -> redirect 301 https://www.foobar.com" in r.stdout, r.stdout)
    h.check(f"4. {h.SITE}/ -> pool app" in r.stdout, r.stdout)
    lines = [x for x in r.stderr.splitlines() if "warning" in x]
    h.check(len(lines) == 1 and lines[0].startswith(f"{path}:") and
            "gateway.routes[4]: can never match: gateway.routes[3]" in lines[0], f"warnings: {r.stderr}")


def test_backends_still_healthy(backends):
    for b in ("app1", "api1"):
        backends[b].check_health()
