"""Load balancing over two named backends: round robin, weighted round robin,
least connections, and upstream keep-alive reuse.

Each balancing mode gets its own gateway (2 workers); the two backends are shared.
"""

import subprocess

import harness as h
import pytest


class _GatewayPerMode:
    """One gateway per balance mode, one at a time: asking for another mode stops the previous one."""

    def __init__(self, certs: h.CertSet, backends: dict[str, h.Backend]) -> None:
        self.certs, self.backends = certs, backends
        self.gw: h.Gateway | None = None

    def __call__(self, balance: str, members=None) -> h.Gateway:
        current = self.gw
        if current is not None and current.config["gateway"]["pools"]["app"]["balance"] == balance:
            return current
        if current is not None:
            self.gw = None
            current.stop()
        self.gw = h.Gateway(self.certs, dict(self.backends), balance=balance, members=members, workers=2).start()
        return self.gw


@pytest.fixture(scope="module")
def gateway_for(certs, backends) -> _GatewayPerMode:
    """gateway_for(balance, members=None): the gateway for this balance mode (2 workers)."""
    return _GatewayPerMode(certs, backends)


def _keepalive_get(conn, path):
    """GET on an existing connection; fails if the gateway dropped the connection."""
    before = conn.sock.getsockname() if conn.sock else None
    r = h.request(conn, "GET", path, headers={"Host": h.SITE})
    h.check(r.status == 200, f"GET {path}: {r}")
    if before is not None:
        h.check(conn.sock is not None and conn.sock.getsockname() == before,
                f"GET {path}: the gateway closed the client connection")
    return r.json()


def test_round_robin_alternates(gateway_for):
    gw = gateway_for("round_robin")
    # Separate connections, so requests land on both workers: exact alternation
    # only holds if the round-robin position is shared between them.
    order = [h.curl(gw, f"/rr?i={i}").json()["server"] for i in range(10)]
    h.check(sorted(set(order)) == ["app1", "app2"], f"servers seen: {order}")
    h.check(all(a != b for a, b in zip(order, order[1:])), f"not alternating: {order}")
    h.check(order.count("app1") == 5, f"not 5/5: {order}")


def test_keepalive_reuses_upstream_connection(gateway_for):
    gw = gateway_for("round_robin")
    conn = h.https_connection(gw)
    try:
        seen = [_keepalive_get(conn, f"/ka?i={i}") for i in range(20)]
    finally:
        conn.close()
    by_server = {}
    for doc in seen:
        by_server.setdefault(doc["server"], []).append((doc["peer_port"], doc["conn_requests"]))
    h.check(sorted(by_server) == ["app1", "app2"], f"servers seen: {sorted(by_server)}")
    for name, hits in by_server.items():
        ports = {p for p, _ in hits}
        h.check(len(ports) == 1, f"{name}: {len(ports)} upstream connections used {sorted(ports)}, expected 1")
        counts = [c for _, c in hits]
        h.check(all(a < b for a, b in zip(counts, counts[1:])),
                f"{name}: per-connection request counts not increasing: {counts}")


def test_weighted_round_robin_3_to_1(gateway_for):
    gw = gateway_for("weighted_round_robin",
                  members=[{"server": "app1", "weight": 3}, {"server": "app2", "weight": 1}])
    counts = {"app1": 0, "app2": 0}
    conn = h.https_connection(gw)
    try:
        for i in range(1000):
            r = h.request(conn, "GET", f"/wrr?i={i}", headers={"Host": h.SITE})
            h.check(r.status == 200, f"request {i}: {r}")
            counts[r.json()["server"]] += 1
    finally:
        conn.close()
    h.check(counts == {"app1": 750, "app2": 250}, f"weights 3:1 over 1000 requests gave {counts}")


def test_least_connections_avoids_busy_server(gateway_for, backends):
    gw = gateway_for("least_connections")
    tag = h.unique("busy")
    # 6 s: longer than five quick requests take on a busy machine (well under a second on a
    # quiet one), or the check below calls the test void.
    slow = h.curl(gw, f"/slow?ms=6000&tag={tag}", background=True, max_time=30)
    try:
        busy = h.wait_until(lambda: next((n for n in ("app1", "app2") if backends[n].saw(tag)), None), 15,
                            what="the slow request to reach a backend")
        other = "app2" if busy == "app1" else "app1"
        quick = [h.curl(gw, f"/quick?i={i}").json()["server"] for i in range(5)]
        h.check(not slow.done, "the slow request finished before the quick ones: test is void")
        h.check(quick == [other] * 5, f"{busy} is busy, quick requests went to {quick}")
    finally:
        r = slow.wait()
    h.check(r.status == 200 and r.json()["server"] == busy, f"slow request: {r}")


def test_upstream_connection_closed_by_backend_is_replaced(certs):
    """A backend that closes idle keep-alive connections (0.3 s here) must not cost
    a request: a GET is sent again on a new connection, a POST with a body gets a
    connection checked before use."""
    idle = h.Backend("idler", extra_args=("--idle-timeout", "0.3")).start()
    gw = h.Gateway(certs, {"idler": idle}, http=False, workers=1).start()

    def sockets(state: str, local_port: int | None = None) -> int:
        """Gateway-side sockets to the backend in `state` (from local_port, when given)."""
        query = f"( dport = :{idle.port} )" if local_port is None else \
            f"( dport = :{idle.port} and sport = :{local_port} )"
        out = subprocess.run(["ss", "-Htan", "state", state, query],
                             capture_output=True, text=True, timeout=10).stdout
        return len([line for line in out.splitlines() if line.strip()])

    try:
        for method, args in (("GET", ()), ("POST", ("--data-binary", "x" * 1000))):
            first, second = h.unique(f"stale-{method}-1"), h.unique(f"stale-{method}-2")
            r = h.curl(gw, f"/{first}", "-X", method, *args)
            h.check(r.status == 200, f"{method} before the backend closed its side: {r}")
            a = idle.wait_for_request(first)
            # The backend closes the idle upstream connection after 0.3 s: the second request
            # goes out once that connection is no longer established (bounded; not a sleep
            # that a busy machine could outrun).
            h.wait_until(lambda: sockets("established", a.peer_port) == 0, timeout=15,
                         what="the backend to close the idle upstream connection")
            r = h.curl(gw, f"/{second}", "-X", method, *args)
            h.check(r.status == 200, f"{method} after the backend closed the pooled connection: {r}")
            b = idle.wait_for_request(second)
            h.check(a.peer_port != b.peer_port, f"{method}: the second request reused a closed connection")
            h.check(idle.count(second) == 1, f"{method}: the backend saw the request {idle.count(second)} times")
        # Left alone, the pooled connection the backend closed must not linger
        # in CLOSE_WAIT: the worker sweeps its pool every 5 s.
        h.curl(gw, f"/{h.unique('linger')}")
        h.wait_until(lambda: sockets("close-wait") > 0, timeout=15, what="the backend to close the idle connection")
        # A feature bound: the 5 s sweep period and 3 s to spare.
        h.wait_until(lambda: sockets("close-wait") == 0, timeout=8, what="the gateway to close its CLOSE_WAIT socket")
    finally:
        gw.stop()
        idle.stop()


def _metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"metric {name} not found in:\n{text}")


def test_admin_health_and_metrics_count_what_was_served(gateway_for):
    gw = gateway_for("round_robin")
    status, body = h.admin(gw, "/healthz")
    h.check(status == 200 and body == "ok\n", f"/healthz: {status} {body!r}")
    _, before = h.admin(gw, "/metrics")
    for i in range(6):
        h.curl(gw, f"/counted?i={i}")
    # A worker counts a response by class once the response is written, which is also when curl
    # can have it all and exit: on a busy machine it may get there after a /metrics read at
    # once. The request histogram is observed last: wait (bounded) for it to count all six.
    count = "rampart_request_duration_seconds_count"
    h.wait_until(lambda: _metric(h.admin(gw, "/metrics")[1], count) - _metric(before, count) >= 6, 15,
                 what="the six requests counted")
    _, after = h.admin(gw, "/metrics")
    for name in ('rampart_requests_total', 'rampart_responses_total{class="2xx"}',
                 'rampart_upstream_requests_total{server="app1"}', 'rampart_upstream_requests_total{server="app2"}'):
        delta = _metric(after, name) - _metric(before, name)
        want = 6 if name.startswith(("rampart_requests", "rampart_responses")) else 3
        h.check(delta == want, f"{name} grew by {delta} over 6 requests, expected {want}")
    h.check(_metric(after, 'rampart_tls_handshakes_total{kind="full"}') >= 6, "handshakes not counted")
    status, _ = h.admin(gw, "/nope")
    h.check(status == 404, f"/nope on the admin listener: {status}")