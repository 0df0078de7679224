"""The live status page (GET /status on the admin listener) in real headless
Chromium, driven over the DevTools protocol (tests/support/browser.py):

- /status is one self-contained page under a hash-based CSP; /api/status is
  the JSON it polls;
- the page shows both servers UP, the pool, the counters and the certificates,
  and refreshes itself;
- "Drain" on app1 (a click in the page) shows DRAINED and sends every later
  request to app2; "Enable" brings back the rotation;
- when /api/status answers 401 the token field is put forward, and the token
  entered there is sent as a bearer token on every API call;
- the page contacts nothing but the admin listener, and raises no script or
  CSP error;
- with the gateway gone, the page keeps its last data, greyed, under an
  error banner;
- a screenshot of the page is written to the temp dir (its path is printed;
  RAMPART_KEEP_TMP=1 keeps it);
- with JavaScript off, /status links to /status/tables, the same tables as
  plain HTML with no script;
- under load, while an app server dies and the node goes BACKUP then MASTER
  (keepalived's notify lines written to the master's FIFO), /api/history
  holds every series, the six charts draw their points and both VRRP marks,
  and a second screenshot is saved (status-page-failover.png).
"""

import json
import os
import urllib.request

import browser as cdp
import harness as h
import pytest

pytestmark = pytest.mark.skipif(cdp.chromium_path() is None,
                                reason="chromium not installed (Debian package `chromium`; scripts/setup.sh installs it)")


HEALTH = {"path": "/health", "interval": "300ms", "timeout": "250ms", "rise": 2, "fall": 2}


@pytest.fixture(scope="module")
def gw(certs) -> h.Gateway:
    """Two workers in front of app1 and app2, health checks every 300 ms."""
    backends = {"app1": h.Backend("app1").start(), "app2": h.Backend("app2").start()}
    gw = h.Gateway(certs, backends, workers=2)
    gw.config["gateway"]["pools"]["app"]["health"] = HEALTH
    return gw.start()


@pytest.fixture(scope="module")
def base(gw) -> str:
    """The admin listener's URL (it serves the status page)."""
    return f"http://127.0.0.1:{gw.admin_port}"


@pytest.fixture(scope="module")
def browser(gw) -> cdp.Browser:
    """Headless Chromium (tests/support/browser.py), closed at the end of the file."""
    chromium = cdp.Browser(window=(1280, 860)).start()
    print(f"  {chromium.version}", flush=True)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def page(browser) -> cdp.Page:
    """The tab the tests share."""
    return browser.new_page()

def _get(base, path):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return r.status, dict(r.getheaders()), r.read().decode()


def _backends(gw, n):
    """Sends n HTTPS requests through the gateway; the X-Backend of each answer."""
    out = []
    for i in range(n):
        r = h.curl(gw, f"/status-page-test?i={i}")
        h.check(r.status == 200, f"request {i}: {r}")
        out.append(r.header("X-Backend"))
    return out


def _row_state(page, name):
    return page.evaluate(f"""(() => {{
        const tr = document.querySelector('#pools tr[data-server="{name}"]');
        return tr ? tr.querySelector('.badge').textContent : null;
    }})()""")


def _updates(page):
    return int(page.evaluate("Number(document.body.dataset.updates || 0)"))


def _wait_updates(page, more, timeout=30):
    """Waits for `more` further successful refreshes of the page (one every 2 s; the bound is
    a guard against a hang, sized for a busy machine running Chromium)."""
    start = _updates(page)
    page.wait_for(f"Number(document.body.dataset.updates || 0) >= {start + more}", timeout,
                       what=f"{more} more page refreshes")


def _click(page, name, action):
    page.evaluate(f"""(() => {{
        const b = document.querySelector('button[data-server="{name}"][data-action="{action}"]');
        if (!b) throw new Error('no {action} button for {name}');
        if (b.disabled) throw new Error('{action} button for {name} is disabled');
        b.click();
        return true;
    }})()""")


def test_status_and_api_status_over_http(base):
    status, headers, body = _get(base, "/status")
    h.check(status == 200, f"/status: {status}")
    h.check(headers.get("Content-Type") == "text/html; charset=utf-8", f"content type {headers}")
    csp = headers.get("Content-Security-Policy", "")
    for part in ("default-src 'none'", "script-src 'sha256-", "style-src 'sha256-", "connect-src 'self'",
                 "frame-ancestors 'none'"):
        h.check(part in csp, f"CSP lacks {part!r}: {csp}")
    h.check("unsafe" not in csp, f"CSP allows unsafe sources: {csp}")
    h.check("<script>" in body and "/api/status" in body, "the page is not the status page")
    etag = headers.get("ETag", "")
    h.check(len(etag) == 26 and etag.startswith('"') and headers.get("Cache-Control") == "no-cache",
            f"ETag {etag!r}, Cache-Control {headers.get('Cache-Control')!r}")
    # Revalidation: the same page answers 304 without a body (read off the
    # wire: an HTTP library would drop one); another tag gets the page.
    port = int(base.rsplit(":", 1)[1])
    raw = h.plain_exchange(port, (f'GET /status HTTP/1.1\r\nHost: {h.LOOPBACK}\r\nIf-None-Match: W/"x", {etag}\r\n'
                                  "Connection: close\r\n\r\n").encode(), 30)
    r = h.parse_head(raw)
    h.check(r is not None and r.status == 304, f"revalidation: {raw[:120]!r}")
    h.check(r.header("ETag") == etag, f"304 without the tag: {r.headers}")
    h.check(r.header("Content-Length") is None and r.header("Content-Type") is None and r.body == b"",
            f"304 with a body or its metadata: {r.headers} {r.body[:80]!r}")
    req = urllib.request.Request(base + "/status", headers={"If-None-Match": '"other"'})
    with urllib.request.urlopen(req, timeout=30) as r:
        h.check(r.status == 200 and b"/api/status" in r.read(), "a stale tag got the page")

    status, headers, body = _get(base, "/api/status")
    h.check(status == 200 and headers.get("Content-Type") == "application/json", f"/api/status: {status} {headers}")
    s = json.loads(body)
    h.check(s["site"] == h.SITE and s["workers"] == 2 and s["generation"] == 1, f"header fields: {s}")
    h.check([p["name"] for p in s["pools"]] == ["app"], f"pools: {s['pools']}")
    servers = {sv["name"]: sv for sv in s["pools"][0]["servers"]}
    h.check(set(servers) == {"app1", "app2"}, f"servers: {servers}")
    h.wait_until(lambda: all(sv["last_check"] == 200 for sv in
                             json.loads(_get(base, "/api/status")[2])["pools"][0]["servers"]), 15,
                 what="a passed health check on both servers")
    h.check(all(sv["state"] == "up" for sv in servers.values()), f"states: {servers}")
    certs = s["certificates"]
    h.check([c["key_type"] for c in certs] == ["ECDSA", "RSA"], f"certificates: {certs}")
    h.check(all(800 <= c["days_left"] <= 826 and h.SITE in c["names"] for c in certs),
            f"dev certificates live 825 days: {certs}")


def test_page_shows_both_servers_up(gw, base, page):
    page.navigate(base + "/status")
    _backends(gw, 4)  # some traffic for the counters
    page.wait_for("Number(document.body.dataset.updates || 0) >= 2", 30, what="two refreshes of the page")
    for name in ("app1", "app2"):
        h.wait_until(lambda: _row_state(page, name) == "UP", 15, what=f"{name} UP on the page")
    text = page.evaluate("document.body.innerText")  # what is rendered (CSS may upper-case labels)
    for needle in (h.SITE, "Pool app", "round robin", "app1", "app2", "ecdsa.pem", "rsa.pem", "ECDSA", "RSA",
                   "Connections open", "Requests per second", "TLS handshakes", "HTTP 200", "Last update",
                   "version 0.1.0", "VRRP"):
        h.check(needle.lower() in text.lower(), f"{needle!r} not on the page:\n{text}")
    banner = page.evaluate("document.getElementById('banner').textContent")
    h.check(page.evaluate("document.getElementById('banner').hidden") is True, f"a banner is shown: {banner!r}")
    h.check(page.evaluate("document.title").startswith("Rampart"), "title")


def test_drain_from_the_page_stops_its_traffic(gw, base, page):
    _click(page, "app1", "drain")
    h.wait_until(lambda: _row_state(page, "app1") == "DRAINED", 15, interval=0.1, what="app1 DRAINED on the page")
    h.check(_row_state(page, "app2") == "UP", "app2 is no longer UP")
    banner = page.evaluate("document.getElementById('banner').textContent")
    h.check("app1 drained" in banner, f"no confirmation shown: {banner!r}")
    h.check(page.evaluate("""document.querySelector('button[data-server="app1"][data-action="drain"]').disabled
                             && !document.querySelector('button[data-server="app1"][data-action="enable"]').disabled"""),
            "after a drain only Enable is offered")
    seen = _backends(gw, 8)
    h.check(seen == ["app2"] * 8, f"requests after the drain went to {seen}")
    servers = {sv["name"]: sv for sv in json.loads(_get(base, "/api/status")[2])["pools"][0]["servers"]}
    h.check(servers["app1"]["drained"] is True and servers["app1"]["state"] == "drained", f"API: {servers}")
    # The page's per-server rate shows app2's traffic on a later refresh.
    _wait_updates(page, 2)


def _save_screenshot(page, name: str, min_bytes: int) -> None:
    """A screenshot into the temp dir (and RAMPART_SCREENSHOT_DIR when set); its path printed."""
    path = page.screenshot(h.temp_dir() / name)
    h.check(path.stat().st_size > min_bytes, f"{name}: screenshot too small: {path.stat().st_size} bytes")
    keep = os.environ.get("RAMPART_SCREENSHOT_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        target = os.path.join(keep, name)
        with open(target, "wb") as f:
            f.write(path.read_bytes())
        path = target
    print(f"  screenshot: {path}", flush=True)


def test_screenshot(gw, page):
    _backends(gw, 6)
    _wait_updates(page, 1)
    _save_screenshot(page, "status-page.png", 10_000)


def test_enable_from_the_page_restores_rotation(gw, page):
    _click(page, "app1", "enable")
    h.wait_until(lambda: _row_state(page, "app1") == "UP", 15, interval=0.1, what="app1 UP again on the page")
    seen = _backends(gw, 8)
    h.check(sorted(set(seen)) == ["app1", "app2"], f"requests after enable went to {seen}")
    h.check(all(a != b for a, b in zip(seen, seen[1:])), f"round robin does not alternate: {seen}")


def test_token_prompt_on_401_and_bearer_token_sent(browser, page):
    """The admin API's bearer token: a 401 from /api/status (answered by the
    browser's Fetch interception) puts the token field forward; the token
    entered there is sent on the following calls."""
    page.send("Fetch.enable", {"patterns": [{"urlPattern": "*/api/*", "requestStage": "Request"}]})
    try:
        start = browser.event_count()
        event, start = browser.wait_event("Fetch.requestPaused", page.session, 30, start)
        page.send("Fetch.fulfillRequest", {"requestId": event["params"]["requestId"], "responseCode": 401,
                                           "responseHeaders": [{"name": "Content-Type",
                                                                "value": "application/json"}],
                                           "body": "eyJlcnJvciI6InRva2VuIn0="})
        page.wait_for("document.getElementById('token-box').classList.contains('need')", 15,
                      what="the token field put forward")
        banner = page.evaluate("document.getElementById('banner').textContent")
        h.check("token" in banner, f"banner does not ask for the token: {banner!r}")
        page.evaluate("""(() => { const t = document.getElementById('token');
                                 t.value = 'status-test-token'; document.getElementById('token-save').click();
                                 return true; })()""")
        # Every request after that carries the bearer token; let them through.
        deadline = 30  # per request: the page asks every 2 s; a guard against a hang
        authorized = 0
        for _ in range(4):
            event, start = browser.wait_event("Fetch.requestPaused", page.session, deadline, start)
            req = event["params"]["request"]
            auth = {k.lower(): v for k, v in req["headers"].items()}.get("authorization")
            h.check(auth == "Bearer status-test-token", f"{req['url']} sent Authorization {auth!r}")
            authorized += 1
            page.send("Fetch.continueRequest", {"requestId": event["params"]["requestId"]})
        h.check(authorized == 4, "fewer authorised requests than expected")
        page.wait_for("!document.getElementById('token-box').classList.contains('need')", 15,
                      what="the token prompt to go once the API answers")
    finally:
        page.send("Fetch.disable")
    # Forget the token again (the gateway here has none configured).
    page.evaluate("document.getElementById('token-clear').click(), true")


def test_page_contacts_only_the_admin_listener_and_raises_no_error(base, browser, page):
    urls = [e["params"]["request"]["url"] for e in browser.events("Network.requestWillBeSent", page.session)]
    h.check(len(urls) > 5, f"too few requests recorded: {urls}")
    origin = base + "/"
    others = sorted({u for u in urls if not (u.startswith(origin) or u.startswith("data:"))})
    h.check(not others, f"the page contacted more than the admin listener: {others}")
    paths = {u[len(origin) - 1:] for u in urls if u.startswith(origin)}
    for p in ("/status", "/api/status", "/api/servers/app1/drain", "/api/servers/app1/enable"):
        h.check(p in paths, f"no request to {p}: {sorted(paths)}")
    exceptions = browser.events("Runtime.exceptionThrown", page.session)
    h.check(not exceptions, f"script exceptions: {exceptions}")
    errors = [e["params"]["entry"] for e in browser.events("Log.entryAdded", page.session)
              if e["params"]["entry"].get("level") == "error"
              and "401" not in e["params"]["entry"].get("text", "")]  # the 401 of the token test
    h.check(not errors, f"console errors (CSP?): {errors}")


def test_site_over_h2_in_chromium_and_the_protocol_table(gw, base, browser, page):
    """Chromium loads https://www.foobar.com through the gateway over HTTP/2 (ALPN h2),
    and the status page's protocol table counts it."""
    site = browser.new_page()
    # The dev CA is not in Chromium's store; the certificate itself is checked by test_tls.
    site.send("Security.setIgnoreCertificateErrors", {"ignore": True})
    for i in range(3):
        site.navigate(gw.url(f"/h2-in-chromium/{i}"))
    proto = site.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
    h.check(proto == "h2", f"Chromium used {proto!r}, not h2")
    body = site.evaluate("document.body.innerText")
    h.check('"path": "/h2-in-chromium/2"' in body, f"the page is not the app server's answer: {body[:200]}")
    page.navigate(base + "/status")
    cells = page.wait_for("""(() => {
        const tr = document.querySelector('#protocols tr[data-protocol="h2"]');
        if (!tr) return null;
        const td = tr.querySelectorAll('td');
        return Number(td[3].textContent.replace(/[^0-9]/g, '')) >= 3 ? Array.from(td, x => x.textContent) : null;
    })()""", 30, what="the h2 row of the protocol table to count Chromium's requests")
    h.check(cells[0] == "h2", f"protocol column: {cells}")
    h.check(int(cells[2].replace(",", "").replace("\u202f", "")) >= 1, f"h2 connections total: {cells}")
    s = json.loads(_get(base, "/api/status")[2])
    protocols = {p["protocol"]: p for p in s["protocols"]}
    h.check(protocols["h2"]["requests"] >= 3 and protocols["h2"]["total"] >= 1 and "http/1.1" in protocols,
            f"protocols: {protocols}")


def test_tables_without_javascript(base, browser):
    """With JavaScript off, /status says so and links to /status/tables: the same tables as
    plain HTML (no script), served under its own CSP and read again every 10 s."""
    page = browser.new_page()
    page.send("Emulation.setScriptExecutionDisabled", {"value": True})
    page.navigate(base + "/status")
    link = page.evaluate("(() => { const a = document.querySelector('a[href=\"/status/tables\"]'); "
                         "return a ? a.getBoundingClientRect().height : -1; })()")
    h.check(isinstance(link, (int, float)) and link > 0, f"no visible link to /status/tables with JavaScript off: {link!r}")
    page.navigate(base + "/status/tables")
    rows = page.evaluate("""[...document.querySelectorAll('table[data-pool="app"] tr[data-server]')]
                            .map(tr => [...tr.cells].map(td => td.textContent))""")
    h.check([r[0] for r in rows] == ["app1", "app2"] and all(r[2] == "UP" for r in rows), f"server rows: {rows}")
    text = page.evaluate("document.body.innerText")
    for needle in (h.SITE, "config generation", "ecdsa.pem", "rsa.pem", "http/1.1", "HTTP 200"):
        h.check(needle in text, f"{needle!r} not in the tables:\n{text}")
    status, headers, body = _get(base, "/status/tables")
    h.check(status == 200 and headers.get("Content-Type") == "text/html; charset=utf-8", f"{status} {headers}")
    csp = headers.get("Content-Security-Policy", "")
    h.check("default-src 'none'" in csp and "script-src" not in csp and "<script" not in body, f"CSP {csp}")
    h.check('http-equiv="refresh" content="10"' in body and headers.get("Cache-Control") == "no-store",
            f"refresh/caching: {headers}")


def _history(base):
    with urllib.request.urlopen(base + "/api/history", timeout=30) as r:
        h.check(r.status == 200 and r.headers.get("Content-Type") == "application/json", f"/api/history: {r.status}")
        return json.loads(r.read())


def _notify(fifo, state, priority):
    """One state change as keepalived's vrrp_notify_fifo writes it (the master reads nothing else)."""
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, f'INSTANCE "rampart_vrid51" {state} {priority}\n'.encode())
    finally:
        os.close(fd)


def test_charts_during_a_failover(certs, browser):
    """Under load, app3 dies (passive checks only: the requests that reach it fail and are
    retried on app4) and the node goes BACKUP then MASTER: /api/history has every series, the
    page draws every chart with data points and both VRRP marks, and the screenshot is saved."""
    state = h.temp_dir() / "ha-state"
    app3, app4 = h.Backend("app3").start(), h.Backend("app4").start()
    gw = h.Gateway(certs, {"app3": app3, "app4": app4}, http=False, workers=1)
    gw.config["servers"]["gw1"] = {"address": h.LOOPBACK, "role": "gateway"}
    gw.config["servers"]["gw2"] = {"address": "127.0.0.2", "role": "gateway"}
    gw.config["ha"] = {"vip": "127.0.0.10/8", "interface": "lo", "virtual_router_id": 51,
                       "nodes": {"gw1": {"priority": 150}, "gw2": {"priority": 100}},
                       "state_dir": str(state), "health": {"interval": "100ms", "track_process": False}}
    gw.start()
    base = f"http://127.0.0.1:{gw.admin_port}"
    fifo = state / "gw1.fifo"
    h.wait_until(fifo.exists, 15, what="the notify FIFO")
    page = browser.new_page()
    page.navigate(base + "/status")
    _notify(fifo, "BACKUP", 150)
    load = h.Load(gw, keepalive=2, fresh=1, seconds=90).start()
    try:
        # Bounds below guard against a hang; the history gains a point every 2 s.
        h.wait_until(lambda: sum(_history(base)["responses"]["2xx"]) > 0 and len(_history(base)["t"]) >= 3, 30,
                     interval=0.5, what="three points of history with requests")
        _notify(fifo, "MASTER", 150)
        h.wait_until(lambda: [m["state"] for m in _history(base)["ha"]][-2:] == ["BACKUP", "MASTER"], 30,
                     interval=0.5, what="the BACKUP and MASTER marks in /api/history")
        app3.stop()
        stopped = len(_history(base)["t"])

        def failed_over():
            hist = _history(base)
            servers = {sv["name"]: sv for sv in hist["servers"]}
            return (sum(servers["app3"]["failures"]) > 0 and len(hist["t"]) >= stopped + 3
                    and servers["app3"]["requests"][-1] == 0 and servers["app4"]["requests"][-1] > 0)
        h.wait_until(failed_over, 60, interval=0.5, what="app3's failures, then only app4 serving, in the history")
        page.wait_for("document.querySelectorAll('figure.chart').length === 6 && "
                      "[...document.querySelectorAll('figure.chart')].every(f => Number(f.dataset.points) > 0) && "
                      "Number(document.body.dataset.historyPoints || 0) >= " + str(stopped + 3),
                      30, what="six charts with data points, drawn after the failover")
    finally:
        load.stop().join()
    hist = _history(base)
    h.check(hist["step_ms"] == 2000 and hist["capacity"] == 450 and len(hist["t"]) <= 450, f"ring: {hist['capacity']}")
    h.check(all(b - a >= 1000 for a, b in zip(hist["t"], hist["t"][1:])), f"points closer than a step: {hist['t']}")
    h.check(sum(hist["handshakes"]["full"]) > 0, f"no full handshake counted: {hist['handshakes']}")
    h.check(any(v is not None and v > 0 for v in hist["latency_us"]["p99"]), f"no p99: {hist['latency_us']}")
    h.check(max(hist["connections"]) >= 1, f"no open connection seen: {hist['connections']}")
    h.check(sum(sum(sv["requests"]) for sv in hist["servers"]) >= sum(hist["responses"]["2xx"]) * 0.9,
            "the servers' requests do not add up to the responses")
    charts = page.evaluate("""[...document.querySelectorAll('figure.chart')].map(f => ({
        id: f.dataset.chart, points: Number(f.dataset.points), series: f.dataset.series,
        marks: f.querySelectorAll('line.mark').length, paths: f.querySelectorAll('path.line').length,
        caption: f.querySelector('figcaption').textContent}))""")
    ids = [c["id"] for c in charts]
    h.check(ids == ["requests", "latency", "connections", "handshakes", "servers", "failures"], f"charts: {ids}")
    for c in charts:
        h.check(c["paths"] >= 1 and c["marks"] >= 2, f"chart {c['id']}: {c}")
    by_id = {c["id"]: c for c in charts}
    h.check(by_id["servers"]["series"] == "app3,app4" and "2xx" in by_id["requests"]["series"],
            f"series: {by_id['servers']} {by_id['requests']}")
    text = page.evaluate("document.getElementById('charts').textContent")
    h.check("VRRP MASTER" in text and "VRRP BACKUP" in text, f"no VRRP marks drawn: {text[:300]!r}")
    h.check(page.evaluate("document.getElementById('banner').hidden") is True, "a banner is shown")
    _save_screenshot(page, "status-page-failover.png", 20_000)
    gw.stop()


def test_error_banner_when_the_admin_listener_is_gone(gw, page):
    gw.stop()
    # The next refresh (2 s) fails at once (refused) or after its 5 s abort: a guard against a hang.
    page.wait_for("document.body.classList.contains('stale')", 30, what="the page to mark its data stale")
    banner = page.evaluate("document.getElementById('banner').textContent")
    h.check(banner.startswith("Cannot fetch /api/status") and "Showing the data of" in banner,
            f"error banner: {banner!r}")
    h.check(_row_state(page, "app2") == "UP", "the last data is no longer shown")
