#!/usr/bin/env python3
"""Backends failing and hostile clients: health checks, retries, outlier
ejection, queueing, drain, rate limits and connection caps, against the real
gateway and real backends on loopback.

- a backend killed under a bounded keep-alive load costs no request, and comes
  back after `rise` passed checks once restarted;
- a backend that hangs (SIGSTOP) is ejected; the load goes on with latency
  bounded by upstream_response, and it is re-admitted after SIGCONT;
- max_connections per server with a bounded queue: queued requests are served
  when a slot frees, wait at most queue.timeout then get 503, and a full queue
  answers 503 at once;
- drain and enable through the admin API: no new requests, in-flight ones finish;
- the per-client rate limit answers 429 with Retry-After, across workers;
- 5,000 idle connections from one address do not stop another client.
"""

import json
import os
import resource
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import harness as h  # noqa: E402

S = {}

HEALTH = {"path": "/health", "interval": "300ms", "timeout": "250ms", "rise": 2, "fall": 2}


def setup_module():
    S["certs"] = h.make_certs()


def _gateway(backends, pool_extra=None, limits=None, timeouts=None, workers=2):
    gw = h.Gateway(S["certs"], backends, workers=workers, limits=limits, timeouts=timeouts)
    gw.config["gateway"]["pools"]["app"].update(pool_extra or {})
    return gw.start()


def _servers(gw):
    status, body = h.admin(gw, "/api/servers")
    h.check(status == 200, f"/api/servers: {status} {body}")
    return {s["name"]: s for s in json.loads(body)["servers"]}


def _metric(gw, name):
    _, text = h.admin(gw, "/metrics")
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    h.check(found, f"metric {name} missing")
    return total


def _kill_backend(backend, sig=signal.SIGKILL):
    h._unmonitor(backend)
    if sig == signal.SIGKILL:
        backend.process.killed = True  # its death is the test, not a crash
    os.kill(backend.process.pid, sig)


def test_killed_backend_costs_no_request_and_comes_back_after_rise():
    app1 = h.Backend("app1").start()
    app2 = h.Backend("app2").start()
    gw = _gateway({"app1": app1, "app2": app2}, {"health": HEALTH})
    load = h.Load(gw, seconds=8).start()
    time.sleep(3)
    killed_at = time.monotonic()
    _kill_backend(app2)
    load.join()
    h.check(not load.failures, f"{len(load.failures)} failed requests: {load.failures[:5]}")
    h.check(load.ok > 600, f"only {load.ok} requests in 8 s")
    after = [t for t in load.servers.get("app2", []) if t > killed_at + 0.1]
    h.check(not after, f"app2 answered {len(after)} requests after it was killed?")
    h.check(len(load.servers.get("app1", [])) > 100, "app1 did not carry the load")
    # The health checks took it down; /metrics and the API say so.
    h.wait_until(lambda: not _servers(gw)["app2"]["healthy"], 5, what="app2 marked down by the health checks")
    h.check(_metric(gw, 'rampart_upstream_retries_total{server="app2"}') >= 1 or
            _metric(gw, 'rampart_upstream_failures_total{server="app2"}') >= 1, "no failure counted on app2")
    # Restarted on the same port: back after `rise` passed checks, and served.
    revived = h.Backend("app2", port=app2.port).start()
    up = h.wait_until(lambda: _servers(gw)["app2"]["healthy"], 5, what="app2 back up after rise checks")
    h.check(up, "app2 not back")
    h.check(_servers(gw)["app2"]["checks_passed"] >= 2, "came back before `rise` (2) passed checks")
    seen = {h.curl(gw, f"/back?i={i}").header("X-Backend") for i in range(6)}
    h.check(seen == {"app1", "app2"}, f"after recovery the servers seen are {seen}")
    h.check("upstream app2 is DOWN" in gw.process.read_stderr() and "upstream app2 is UP" in gw.process.read_stderr(),
            "the health transitions were not logged")
    gw.stop()
    revived.stop()
    app1.stop()


def test_hanging_backend_is_ejected_with_bounded_latency():
    app1 = h.Backend("app1").start()
    app2 = h.Backend("app2").start()
    gw = _gateway({"app1": app1, "app2": app2},
                  {"health": {**HEALTH, "interval": "1s", "timeout": "500ms"},
                   "outlier": {"consecutive_failures": 2, "base_ejection": "20s"}},
                  timeouts={"upstream_response": "1s"})
    h.curl(gw, "/warm")
    _kill_backend(app2, signal.SIGSTOP)  # accepts connections (the kernel does), never answers
    try:
        load = h.Load(gw, keepalive=4, seconds=6).start().join()
        h.check(not load.failures, f"{len(load.failures)} failed requests: {load.failures[:5]}")
        worst = max(load.latencies)
        h.check(worst < 1.0 + 1.5, f"a request took {worst:.2f} s (upstream_response is 1 s)")
        slow = sum(1 for t in load.latencies if t > 0.5)
        h.check(slow <= 12, f"{slow} requests were slow: the hanging server was not taken out")
        h.check(_metric(gw, 'rampart_upstream_ejections_total{server="app2"}') >= 1 or
                not _servers(gw)["app2"]["healthy"], "app2 neither ejected nor marked down")
    finally:
        os.kill(app2.process.pid, signal.SIGCONT)
    h.wait_until(lambda: _servers(gw)["app2"]["healthy"], 6, what="app2 healthy again after SIGCONT")
    gw.stop()
    app1.stop()
    app2.stop()


def test_queue_serves_when_a_slot_frees_and_503s_on_timeout_or_overflow():
    app1 = h.Backend("app1").start()
    gw = _gateway({"app1": app1}, {"max_connections": 1, "queue": {"size": 2, "timeout": "800ms"}})
    # One slot: a 600 ms request holds it; a second waits and is then served.
    slow = h.curl(gw, "/slow?ms=600", background=True)
    h.wait_until(lambda: app1.saw("/slow?ms=600"), 5, what="the slow request at the backend")
    t0 = time.monotonic()
    r = h.curl(gw, "/queued")
    waited = time.monotonic() - t0
    h.check(r.status == 200, f"queued request: {r}")
    h.check(waited > 0.3, f"the queued request did not wait ({waited:.2f} s): max_connections not enforced")
    h.check(slow.wait().status == 200, "slow request failed")
    # The slot held for 3 s: two wait 800 ms then get 503, a third finds the queue full.
    hold = h.curl(gw, "/slow?ms=3000", background=True)
    h.wait_until(lambda: app1.saw("/slow?ms=3000"), 5, what="the holding request at the backend")
    waiting = [h.curl(gw, f"/wait{i}", background=True) for i in range(2)]
    h.wait_until(lambda: _metric(gw, "rampart_pool_queue_length") >= 2, 3, what="two requests queued")
    t0 = time.monotonic()
    over = h.curl(gw, "/over")
    h.check(over.status == 503 and time.monotonic() - t0 < 0.5, f"overflowing the queue: {over}")
    for job in waiting:
        r = job.wait()
        h.check(r.status == 503, f"queued past the timeout: {r}")
        h.check(0.6 < job.finished - job.started < 2.0, f"queue timeout took {job.finished - job.started:.2f} s")
    h.check(not any(app1.saw(f"/wait{i}") for i in range(2)) and not app1.saw("/over"),
            "a request that got 503 reached the backend")
    h.check(_metric(gw, "rampart_pool_queue_timeouts_total") >= 2, "queue timeouts not counted")
    h.check(hold.wait().status == 200, "the holding request failed")
    gw.stop()
    app1.stop()


def test_drain_and_enable_through_the_admin_api():
    app1 = h.Backend("app1").start()
    app2 = h.Backend("app2").start()
    gw = _gateway({"app1": app1, "app2": app2})
    # Two slow requests, one on each server (round robin), in flight during the drain.
    slow = [h.curl(gw, f"/slow?ms=1500&i={i}", background=True) for i in range(2)]
    h.wait_until(lambda: app1.saw("/slow?ms=1500") and app2.saw("/slow?ms=1500"), 5,
                 what="a slow request on each server")
    status, body = h.admin(gw, "/api/servers/app1/drain", "POST")
    h.check(status == 200 and json.loads(body)["drained"] is True, f"drain: {status} {body}")
    seen = [h.curl(gw, f"/during?i={i}").header("X-Backend") for i in range(6)]
    h.check(seen == ["app2"] * 6, f"requests during the drain went to {seen}")
    for job in slow:
        r = job.wait()
        h.check(r.status == 200, f"an in-flight request did not finish: {r}")
    h.check(_servers(gw)["app1"]["drained"] is True, "the API does not show app1 drained")
    h.check(_metric(gw, 'rampart_upstream_drained{server="app1"}') == 1, "drain not in /metrics")
    status, _ = h.admin(gw, "/api/servers/app1/enable", "POST")
    h.check(status == 200, "enable failed")
    seen = {h.curl(gw, f"/after?i={i}").header("X-Backend") for i in range(4)}
    h.check(seen == {"app1", "app2"}, f"after enable: {seen}")
    # Runtime weight (weighted round robin needs a pool that uses weights).
    h.check(h.admin(gw, "/api/servers/app1/weight?value=0", "POST")[0] == 400, "weight 0 accepted")
    h.check(h.admin(gw, "/api/servers/app1/weight?value=3", "POST")[0] == 200, "weight refused")
    h.check(_servers(gw)["app1"]["weight"] == 3, "weight not shown")
    h.check(h.admin(gw, "/api/servers/app1/weight?value=default", "POST")[0] == 200, "weight reset refused")
    h.check(_servers(gw)["app1"]["weight"] == 1, "weight not reset")
    h.check(h.admin(gw, "/api/servers/nope/drain", "POST")[0] == 404, "unknown server not 404")
    h.check(h.admin(gw, "/api/servers/app1/drain", "GET")[0] == 405, "GET on an action not 405")
    gw.stop()
    app1.stop()
    app2.stop()


def test_rate_limit_answers_429_across_workers():
    app1 = h.Backend("app1").start()
    # 30/minute: one token every 2 s, so a slow machine refills at most one
    # or two during the burst below.
    gw = _gateway({"app1": app1}, {"rate_limit": {"rate": "30/minute", "burst": 5}})
    # Separate connections, so both workers take requests from this address.
    responses = [h.curl(gw, f"/rl?i={i}") for i in range(10)]
    statuses = [r.status for r in responses]
    h.check(statuses[:5] == [200] * 5, f"the burst was not served: {statuses}")
    limited = [r for r in responses[5:] if r.status == 429]
    h.check(len(limited) >= 3, f"no rate limit across workers: {statuses}")
    h.check(all(r.header("Retry-After") == "2" for r in limited), f"429 without Retry-After: {limited[0]}")
    h.check(_metric(gw, "rampart_rate_limited_total") >= len(limited), "429s not counted")
    # A 429 to HEAD has no body: the next response on the connection parses.
    conn = h.https_connection(gw)
    first = h.request(conn, "HEAD", "/rl-head", headers={"Host": h.SITE})
    second = h.request(conn, "GET", "/rl-next", headers={"Host": h.SITE})
    h.check(first.status == 429 and first.body == b"" and second.status == 429,
            f"HEAD then GET on one connection: {first}, {second}")
    conn.close()
    time.sleep(2.2)
    h.check(h.curl(gw, "/rl-again").status == 200, "the bucket did not refill")
    # Refused requests never reached the backend.
    h.check(app1.count("/rl?") == 10 - len(limited), f"the backend saw {app1.count('/rl?')} of 10 requests")
    gw.stop()
    app1.stop()


def test_five_thousand_idle_connections_from_one_address_do_not_stop_others():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 6000:
        raise h.Skip(f"RLIMIT_NOFILE hard limit {hard} < 6000")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 12000)), hard))
    app1 = h.Backend("app1").start()
    gw = _gateway({"app1": app1}, limits={"max_connections_per_client": 100}, timeouts={"handshake": "20s"})
    attackers = []
    try:
        t0 = time.monotonic()
        for _ in range(5000):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", gw.https_port))
            attackers.append(s)
            if time.monotonic() - t0 > 30:
                break
        print(f"    {len(attackers)} idle connections opened from 127.0.0.1 in {time.monotonic() - t0:.1f} s",
              flush=True)
        h.wait_until(lambda: _metric(gw, 'rampart_connections_refused_total{limit="per_client"}') > 4000, 20,
                     what="connections over the per-client cap refused")
        open_now = _metric(gw, "rampart_connections_active")
        h.check(open_now <= 110, f"{open_now} connections held open for one address (cap 100)")
        # Another address is served at once, over and over.
        for i in range(5):
            t1 = time.monotonic()
            r = h.curl(gw, f"/other?i={i}", "--interface", "127.0.0.2", max_time=5)
            h.check(r.status == 200 and time.monotonic() - t1 < 2, f"another client was not served: {r}")
    finally:
        for s in attackers:
            s.close()
    gw.stop()
    app1.stop()


if __name__ == "__main__":
    h.main(globals())
