"""Affinity: balance: hash (source, header, uri, cookie) and sticky sessions.

One gateway behind a trusted proxy (so that X-Forwarded-For names each request's client) in
front of three app servers, with a pool per kind of affinity behind its own route:

- hash on the source: 300 clients spread over the three servers; when app2 is drained only
  app2's clients move (to the other two), none of the others does, and when it is enabled
  again each client is back on its first server;
- hash on a header, the path (the query does not count) and a cookie: the same key always
  reaches the same server, different keys reach several; a request without the header or
  cookie is balanced by the pool's schedule;
- a sticky cookie: the first answer sets it (Secure, HttpOnly, SameSite=Lax, Max-Age), the
  requests that bring it back reach the same server of a round-robin pool, the app server never
  sees that cookie (the others it does), and when the server is drained the client moves and
  gets a new cookie.
"""

import re

import harness as h
import pytest

SERVERS = ("app1", "app2", "app3")


@pytest.fixture(scope="module")
def app3():
    return h.Backend("app3").start()


@pytest.fixture(scope="module")
def gw(certs, app1, app2, app3):
    g = h.Gateway(certs, {"app1": app1, "app2": app2, "app3": app3}, http=False, workers=2)
    gw_cfg = g.config["gateway"]
    gw_cfg["trusted_proxies"] = ["127.0.0.1/32"]
    all3 = list(SERVERS)
    gw_cfg["pools"] = {
        "app": {"servers": all3},
        "by_source": {"servers": all3, "balance": "hash", "hash": "source"},
        "by_header": {"servers": all3, "hash": {"header": "X-User"}},
        "by_uri": {"servers": all3, "hash": "uri"},
        "by_cookie": {"servers": all3, "hash": {"cookie": "session"}},
        "sticky": {"servers": all3, "sticky": {"cookie": "rampart_srv", "ttl": "10m"}},
    }
    gw_cfg["default_pool"] = "app"
    gw_cfg["routes"] = [{"path": f"/{name}/", "pool": name}
                        for name in ("by_source", "by_header", "by_uri", "by_cookie", "sticky")]
    gw_cfg["routes"].append({"path": "/", "pool": "app"})
    return g.start()


class Client:
    """One keep-alive connection; each request says whom it forwards for."""

    def __init__(self, gw):
        self.gw = gw
        self.conn = h.https_connection(gw)

    def get(self, path: str, headers: dict | None = None) -> h.Response:
        for attempt in range(2):  # a keep-alive connection the gateway closed is opened again once
            try:
                return h.request(self.conn, "GET", path, headers=headers)
            except (ConnectionError, OSError):
                if attempt:
                    raise
                self.conn.close()
                self.conn = h.https_connection(self.gw)

    def server(self, path: str, headers: dict | None = None) -> str:
        r = self.get(path, headers)
        h.check(r.status == 200, f"{path}: {r.status}")
        return r.header("X-Backend")

    def close(self):
        self.conn.close()


def admin_post(gw, path: str) -> None:
    status, body = h.admin(gw, path, "POST")
    h.check(status == 200, f"{path}: {status} {body}")


def clients(n: int) -> list[str]:
    return [f"198.51.{100 + i // 250}.{1 + i % 250}" for i in range(n)]


def test_hash_on_source_moves_only_the_drained_servers_clients(gw):
    c = Client(gw)
    try:
        keys = clients(300)
        before = {k: c.server("/by_source/x", {"X-Forwarded-For": k}) for k in keys}
        counts = {s: sum(v == s for v in before.values()) for s in SERVERS}
        h.check(all(45 <= n <= 165 for n in counts.values()), f"spread over the servers: {counts}")
        # The same client again: the same server.
        h.check(all(c.server("/by_source/y", {"X-Forwarded-For": k}) == before[k] for k in keys[:50]),
                "a client changed server with nothing changed")
        admin_post(gw, "/api/servers/app2/drain")
        after = {k: c.server("/by_source/x", {"X-Forwarded-For": k}) for k in keys}
        moved = [k for k in keys if after[k] != before[k]]
        h.check(all(before[k] == "app2" for k in moved), "a client of app1 or app3 moved")
        h.check(len(moved) == counts["app2"], f"{len(moved)} moved, app2 had {counts['app2']}")
        h.check({after[k] for k in moved} == {"app1", "app3"}, "app2's clients did not spread over the other two")
        admin_post(gw, "/api/servers/app2/enable")
        back = {k: c.server("/by_source/x", {"X-Forwarded-For": k}) for k in keys}
        h.check(back == before, "clients did not return to their servers")
    finally:
        c.close()


def test_hash_on_header_uri_and_cookie(gw):
    c = Client(gw)
    try:
        users = [f"user-{i}" for i in range(40)]
        first = {u: c.server("/by_header/a", {"X-User": u}) for u in users}
        h.check(all(c.server("/by_header/b", {"X-User": u}) == first[u] for u in users), "header key not stable")
        h.check(len(set(first.values())) == 3, f"header keys on {set(first.values())}")
        # No header: the pool's schedule (round robin over three).
        h.check(len({c.server("/by_header/none") for _ in range(6)}) == 3, "no header: not balanced")

        paths = [f"/by_uri/item/{i}" for i in range(40)]
        first = {p: c.server(p) for p in paths}
        h.check(all(c.server(p + "?page=2") == first[p] for p in paths), "uri key changed with the query")
        h.check(len(set(first.values())) == 3, f"uri keys on {set(first.values())}")

        sessions = [f"s{i:04d}" for i in range(40)]
        first = {s: c.server("/by_cookie/a", {"Cookie": f"theme=dark; session={s}"}) for s in sessions}
        h.check(all(c.server("/by_cookie/b", {"Cookie": f"session={s}"}) == first[s] for s in sessions),
                "cookie key not stable")
        h.check(len(set(first.values())) == 3, f"cookie keys on {set(first.values())}")
    finally:
        c.close()


COOKIE = re.compile(r"rampart_srv=([0-9a-f]{16}); Path=/; Max-Age=600; Secure; HttpOnly; SameSite=Lax")


def test_sticky_cookie(gw):
    c = Client(gw)
    try:
        r = c.get("/sticky/first")
        h.check(r.status == 200, f"{r.status}")
        set_cookie = r.header("Set-Cookie") or ""
        m = COOKIE.fullmatch(set_cookie)
        h.check(m is not None, f"Set-Cookie: {set_cookie!r}")
        server = r.header("X-Backend")
        h.check(server not in set_cookie, "the cookie shows the server's name")
        jar = f"theme=dark; rampart_srv={m.group(1)}"
        for i in range(6):  # a round-robin pool would go round the three servers
            r = c.get(f"/sticky/{i}", {"Cookie": jar})
            h.check(r.header("X-Backend") == server, f"request {i} went to {r.header('X-Backend')}, not {server}")
            h.check(r.header("Set-Cookie") is None, "the cookie is set again though it was right")
            seen = [v for k, v in r.json()["headers"] if k.lower() == "cookie"]
            h.check(seen == ["theme=dark"], f"the app server saw cookies {seen}")
        # The server goes away: the client moves and learns its new server.
        admin_post(gw, f"/api/servers/{server}/drain")
        try:
            r = c.get("/sticky/moved", {"Cookie": jar})
            h.check(r.status == 200 and r.header("X-Backend") != server, f"drained server still used: {r}")
            m2 = COOKIE.fullmatch(r.header("Set-Cookie") or "")
            h.check(m2 is not None and m2.group(1) != m.group(1), f"no new cookie: {r.header('Set-Cookie')!r}")
        finally:
            admin_post(gw, f"/api/servers/{server}/enable")
        # A value that names no server: balanced as if there were none, and a cookie set.
        r = c.get("/sticky/forged", {"Cookie": "rampart_srv=0123456789abcdef"})
        h.check(r.status == 200 and COOKIE.fullmatch(r.header("Set-Cookie") or ""), f"forged value: {r}")
    finally:
        c.close()
