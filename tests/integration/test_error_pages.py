"""Error pages and maintenance.

A gateway with error pages for 404, 502 and 503 (HTML, JSON and text files) and three named
routes (api to a live server, down to a dead one, and a catch-all):

- the errors the gateway produces get the page for their status with its Content-Type and
  Cache-Control: no-store (HEAD: the page's length, no body); a status without a page keeps the
  plain-text body; an app server's own error passes unchanged;
- POST /api/maintenance/on?route=api answers that route with 503, the 503 page and Retry-After
  while the others serve; the status (JSON, tables) and the metrics show it; it survives a
  reload; /off ends it; the whole site goes into maintenance and back the same way, over HTTP/1.1
  and h2;
- `rampart check` refuses a page of an unknown type, a status out of range and a duplicate
  route name, at their file:line:column.
"""

import json
import os
import signal
import subprocess

import harness as h
import pytest

PAGE_503 = "<!doctype html><title>Back soon</title><h1>We are doing maintenance</h1>\n"
PAGE_502 = '{"error": "bad gateway", "help": "https://status.foobar.com"}\n'
PAGE_404 = "nothing here, from the gateway\n"


@pytest.fixture(scope="module")
def pages():
    d = h.temp_dir() / "pages"
    d.mkdir(exist_ok=True)
    (d / "503.html").write_text(PAGE_503)
    (d / "502.json").write_text(PAGE_502)
    (d / "404.txt").write_text(PAGE_404)
    return d


@pytest.fixture(scope="module")
def gw(certs, app1, pages):
    dead_port = h.free_ports(1)[0]
    g = h.Gateway(certs, {"app1": app1, "dead": dead_port}, http=False, workers=2, members=["app1"])
    g.config["gateway"]["pools"]["down"] = {"servers": ["dead"]}
    g.config["gateway"]["default_pool"] = "app"
    g.config["gateway"]["routes"] = [
        {"name": "api", "path": "/api/", "pool": "app"},
        {"name": "down", "path": "/down/", "pool": "down"},
        {"path": "/nowhere/", "redirect": {"to": "https://www.foobar.com/elsewhere"}},
        {"name": "main", "path": "/app/", "pool": "app"},
        {"path": "/status/", "pool": "app"},
    ]
    g.config["gateway"]["error_pages"] = {503: str(pages / "503.html"), 502: str(pages / "502.json"),
                                          404: str(pages / "404.txt")}
    return g.start()


def get(gw, path: str, method: str = "GET") -> h.Response:
    conn = h.https_connection(gw)
    try:
        return h.request(conn, method, path)
    finally:
        conn.close()


def maintenance(gw, action: str, query: str = "") -> dict:
    status, body = h.admin(gw, f"/api/maintenance/{action}{query}", "POST")
    h.check(status == 200, f"maintenance {action}{query}: {status} {body}")
    return json.loads(body)


def test_gateway_errors_get_their_pages(gw):
    r = get(gw, "/down/x")  # the only server refuses connections: 502 from the gateway
    h.check(r.status == 502 and r.body.decode() == PAGE_502, f"502: {r.status} {r.body!r}")
    h.check(r.header("Content-Type") == "application/json" and r.header("Cache-Control") == "no-store", str(r))
    r = get(gw, "/no-route")
    h.check(r.status == 404 and r.body.decode() == PAGE_404, f"404: {r.status} {r.body!r}")
    h.check(r.header("Content-Type") == "text/plain; charset=utf-8", str(r))
    r = get(gw, "/no-route", "HEAD")
    h.check(r.status == 404 and r.body == b"" and r.header("Content-Length") == str(len(PAGE_404)), f"HEAD: {r}")
    # The app server's own 503 is its own.
    r = get(gw, "/status/503")
    h.check(r.status == 503 and r.body == b"status 503\n", f"the app's 503: {r.status} {r.body!r}")
    # A status without a page: the plain text.
    r = get(gw, "/nowhere/")
    h.check(r.status == 301, f"redirect: {r.status}")


def test_route_maintenance_on_reload_and_off(gw):
    doc = maintenance(gw, "on", "?route=api&retry_after=300")
    h.check(doc == {"site": False, "routes": ["api"], "retry_after": 300}, f"{doc}")
    r = get(gw, "/api/x")
    h.check(r.status == 503 and r.body.decode() == PAGE_503 and r.header("Retry-After") == "300", f"{r}")
    h.check(r.header("Content-Type") == "text/html; charset=utf-8", str(r))
    h.check(get(gw, "/app/x").status == 200, "another route stopped serving")
    status, text = h.admin(gw, "/api/status")
    h.check(status == 200 and json.loads(text)["maintenance"] == "routes api", f"status: {text[:300]}")
    status, tables = h.admin(gw, "/status/tables")
    h.check("routes api" in tables, "the tables do not show the maintenance")
    m = h.metrics(gw)
    h.check(m.get('rampart_maintenance{scope="routes"}') == 1 and m.get("rampart_maintenance_responses_total", 0) >= 1,
            "maintenance metrics")
    # A reload keeps it, by the route's name: the new file moves api from the first place to the
    # second, so the old index would now name the down route.
    routes = gw.config["gateway"]["routes"]
    routes[0], routes[1] = routes[1], routes[0]
    h.write_config(gw.config_path, gw.config)
    os.kill(gw.pid, signal.SIGHUP)
    h.wait_until(lambda: h.metrics(gw).get("rampart_config_generation") == 2, 30, what="the reload")
    h.wait_until(lambda: get(gw, "/api/y").status == 503, 30, what="maintenance after the reload")
    # The old generation drains; the new workers are the ones to watch from here on.
    h.wait_until(lambda: len(h.children_of(gw.pid)) == 2, 30, what="the old workers gone")
    gw.workers = {p: h.identity(p) for p in h.children_of(gw.pid)}
    h.check(get(gw, "/down/q").status == 502, "maintenance moved to the route that took api's place")
    doc = maintenance(gw, "off", "?route=api")
    h.check(doc["routes"] == [], f"{doc}")
    h.wait_until(lambda: get(gw, "/api/z").status == 200, 10, what="the route back")


def test_site_maintenance_covers_every_route_and_h2(gw):
    maintenance(gw, "on", "?retry_after=60")
    for path in ("/app/a", "/api/b", "/down/c"):
        r = get(gw, path)
        h.check(r.status == 503 and r.header("Retry-After") == "60" and r.body.decode() == PAGE_503, f"{path}: {r}")
    out = h.curl(gw, "/app/h2", "--http2", check_rc=False)
    h.check(out.status == 503 and out.body.decode() == PAGE_503, f"h2: {out.status}")
    doc = maintenance(gw, "off")
    h.check(doc["site"] is False, f"{doc}")
    h.check(get(gw, "/app/a").status == 200, "the site did not come back")


def test_maintenance_api_refuses_what_it_cannot_do(gw):
    for path, method, want in (("/api/maintenance/on?route=nope", "POST", 404),
                               ("/api/maintenance/on?retry_after=lots", "POST", 400),
                               ("/api/maintenance/pause", "POST", 404),
                               ("/api/maintenance/on", "GET", 405)):
        status, body = h.admin(gw, path, method)
        h.check(status == want, f"{method} {path}: {status} {body}")
    status, body = h.admin(gw, "/api/maintenance")
    h.check(status == 200 and json.loads(body)["site"] is False, f"{body}")


def test_check_refuses_bad_pages_and_names(certs, app1, pages, tmp_path):
    (tmp_path / "page.png").write_bytes(b"\x89PNG")
    g = h.Gateway(certs, {"app1": app1}, http=False)
    g.config["gateway"]["error_pages"] = {503: str(tmp_path / "page.png"), 302: str(pages / "503.html")}
    g.config["gateway"]["routes"] = [{"name": "a", "path": "/x/", "pool": "app"},
                                     {"name": "a", "path": "/", "pool": "app"}]
    h.write_config(g.config_path, g.config)
    out = subprocess.run([str(h.rampart_bin()), "check", "-c", str(g.config_path)], capture_output=True, text=True,
                         timeout=60)
    h.check(out.returncode == 1, f"rc {out.returncode}")
    for want in ("gateway.error_pages.503: expected a .html, .json or .txt file",
                 "gateway.error_pages.302: expected a status from 400 to 599",
                 "route name \"a\" is already taken"):
        h.check(want in out.stderr, f"missing {want!r} in:\n{out.stderr}")
    h.check(all(line.startswith(str(g.config_path) + ":") for line in out.stderr.strip().splitlines()),
            f"errors without their file:line:column:\n{out.stderr}")
