"""Access log and request ids: one JSON line per request, with the right fields.

A real gateway (two workers, two named backends) writes its access log to a
file in the test's temp dir. The tests send known traffic (keep-alive GETs, a
POST with a body, a HEAD, a 404 from the backend, a slow response, a malformed
request, client request ids valid and not, TLS 1.2 and a resumed session,
secrets in Cookie and Authorization, a 301 on the plain-HTTP listener, a burst
of 2,000 requests), stop the gateway with SIGTERM right after the last ones,
and then check the file: every line parses as JSON, there is exactly one line
per request, and each line says what the clients and backends saw (status,
method, path, bytes, the backend that answered, the TLS version and cipher the
client negotiated, the request id the backend received and the client got
back). Secrets appear neither in the log nor on the gateway's stderr (which
runs at log level debug). Separate gateways cover retries and 429s, stdout as
the destination, the log level setting and a log file that cannot be opened.
"""

import dataclasses
import json
import os
import re
import signal
import socket
import ssl
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import harness as h
import pytest

FIELDS = ["time", "client", "method", "host", "path", "status", "bytes_sent", "bytes_received", "request_time_ms",
          "upstream", "upstream_time_ms", "protocol", "tls_version", "cipher", "resumed", "request_id", "retries"]
HEX32 = re.compile(r"^[0-9a-f]{32}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
BURST = 2000


@pytest.fixture(scope="module")
def access_log() -> Path:
    return h.temp_dir() / "access.log"


@pytest.fixture(scope="module")
def gw(certs, backends, access_log) -> h.Gateway:
    """Two workers writing one access log (64 KiB buffer); debug log level."""
    gw = h.Gateway(certs, dict(backends), workers=2)
    gw.config["gateway"]["access_log"] = {"path": str(access_log), "buffer": "64KiB"}
    gw.config["gateway"]["log_level"] = "debug"
    return gw.start()


@dataclasses.dataclass
class Ledger:
    """What the tests sent to gw, to check its access log against."""
    started: datetime
    expected: dict = dataclasses.field(default_factory=dict)  # path -> fields every line of that path must have
    sent: int = 0  # requests sent to gw
    secrets: list = dataclasses.field(default_factory=list)


@pytest.fixture(scope="module")
def ledger(gw) -> Ledger:
    return Ledger(started=datetime.now(timezone.utc) - timedelta(seconds=2))

# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


def _context(certs, max_version=None):
    ctx = h.client_context(certs.ca)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def _expect(ledger, path, **fields):
    h.check(path not in ledger.expected, f"path {path} used twice")
    ledger.expected[path] = fields
    ledger.sent += 1


def _https_request(conn, method, path, body=None, headers=None):
    """One request on an http.client connection; returns (response, tls version, cipher)."""
    r = h.request(conn, method, path, body=body, headers=headers)
    return r, conn.sock.version(), conn.sock.cipher()[0]


def _raw_exchange(gw, ctx, data, session=None, timeout=10.0):
    """Sends raw bytes over a new TLS connection (the request says Connection: close)
    and reads until the gateway closes. Returns (response, tls socket facts)."""
    raw = socket.create_connection((h.LOOPBACK, gw.https_port), timeout=timeout)
    tls = ctx.wrap_socket(raw, server_hostname=h.SITE, session=session)
    try:
        tls.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = tls.recv(65536)
            except (ssl.SSLError, OSError):
                break
            if not chunk:
                break
            received += chunk
        facts = {"version": tls.version(), "cipher": tls.cipher()[0], "session": tls.session,
                 "reused": tls.session_reused}
    finally:
        tls.close()
    return h.parse_head(received), facts


def _check_echo(r, sent_id=None):
    """A 200 echo: the id the backend received is the one the client got back."""
    h.check(r.status == 200, f"echo: {r}")
    doc = r.json()
    got = [v for k, v in doc["headers"] if k.lower() == "x-request-id"]
    h.check(len(got) == 1, f"the backend received X-Request-Id {got}")
    h.check(r.header("X-Request-Id") == got[0],
            f"the client got X-Request-Id {r.header('X-Request-Id')!r}, the backend {got[0]!r}")
    if sent_id is not None:
        h.check(got[0] == sent_id, f"the client's id {sent_id!r} became {got[0]!r}")
    return got[0], doc["server"]


# ---------------------------------------------------------------------------
# Traffic
# ---------------------------------------------------------------------------


def test_requests_of_every_kind(gw, backends, certs, ledger):
    host = f"{h.SITE}:{gw.https_port}"

    # Five GETs on one keep-alive connection, TLS 1.3 by default.
    conn = h.https_connection(gw)
    for i in range(5):
        path = f"/keepalive/{i}?q=a%20b&n={i}"
        r, version, cipher = _https_request(conn, "GET", path)
        rid, server = _check_echo(r)
        h.check(r.header("X-Backend") == server, f"X-Backend {r.header('X-Backend')} vs {server}")
        h.check(HEX32.match(rid), f"generated request id {rid!r}")
        h.check(version == "TLSv1.3", f"negotiated {version}")
        _expect(ledger, path, method="GET", host=host, status=200, bytes_sent=len(r.body), bytes_received=0,
                upstream=server, tls_version=version, cipher=cipher, resumed=False, request_id=rid, retries=0)

    # A POST with a body.
    body = os.urandom(3000)
    r, version, cipher = _https_request(conn, "POST", "/upload", body=body)
    h.check(r.status == 200 and r.json()["bytes"] == len(body), f"upload: {r}")
    _expect(ledger, "/upload", method="POST", status=200, bytes_sent=len(r.body), bytes_received=len(body),
            upstream=r.header("X-Backend"), tls_version=version, cipher=cipher,
            request_id=r.header("X-Request-Id"))

    # A HEAD: no body bytes either way.
    r, version, cipher = _https_request(conn, "HEAD", "/head-request")
    h.check(r.status == 200 and r.body == b"", f"HEAD: {r}")
    _expect(ledger, "/head-request", method="HEAD", status=200, bytes_sent=0, bytes_received=0,
            upstream=r.header("X-Backend"), request_id=r.header("X-Request-Id"))

    # A 404 from the backend.
    r, version, cipher = _https_request(conn, "GET", "/status/404")
    h.check(r.status == 404 and r.header("X-Backend") in ("app1", "app2"), f"404: {r}")
    _expect(ledger, "/status/404", status=404, bytes_sent=len(r.body), upstream=r.header("X-Backend"),
            request_id=r.header("X-Request-Id"))

    # A valid client id is kept; an invalid one (a space) and a repeated one are replaced.
    client_id = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
    r, _, _ = _https_request(conn, "GET", "/id/valid", headers={"X-Request-Id": client_id})
    _check_echo(r, sent_id=client_id)
    _expect(ledger, "/id/valid", status=200, request_id=client_id, upstream=r.header("X-Backend"))
    r, _, _ = _https_request(conn, "GET", "/id/invalid", headers={"X-Request-Id": "not valid"})
    rid, _ = _check_echo(r)
    h.check(HEX32.match(rid), f"an invalid client id was not replaced: {rid!r}")
    _expect(ledger, "/id/invalid", status=200, request_id=rid)

    # A slow answer: request and upstream times cover it.
    r, _, _ = _https_request(conn, "GET", "/slow?ms=200")
    _check_echo(r)
    _expect(ledger, "/slow?ms=200", status=200, min_request_ms=200, min_upstream_ms=200,
            request_id=r.header("X-Request-Id"))

    # Secrets in Cookie, Authorization and Proxy-Authorization.
    secrets = [h.unique("COOKIESECRET"), h.unique("AUTHSECRET"), h.unique("PROXYSECRET")]
    ledger.secrets += secrets
    r, _, _ = _https_request(conn, "GET", "/secret", headers={
        "Cookie": f"session={secrets[0]}; theme=dark",
        "Authorization": f"Bearer {secrets[1]}",
        "Proxy-Authorization": f"Basic {secrets[2]}",
    })
    rid, _ = _check_echo(r)
    received = dict((k.lower(), v) for k, v in r.json()["headers"])
    h.check(secrets[0] in received.get("cookie", "") and secrets[1] in received.get("authorization", ""),
            f"the backend did not get the cookie and the credentials: {received}")
    _expect(ledger, "/secret", status=200, request_id=rid)
    conn.close()

    # TLS 1.2, then a resumed session.
    ctx12 = _context(certs, ssl.TLSVersion.TLSv1_2)
    conn12 = h.LoopbackHTTPSConnection(gw.https_port, h.SITE, ctx12, 10.0)
    r, version, cipher = _https_request(conn12, "GET", "/tls12")
    h.check(version == "TLSv1.2", f"negotiated {version}")
    rid, _ = _check_echo(r)
    _expect(ledger, "/tls12", status=200, tls_version="TLSv1.2", cipher=cipher, resumed=False, request_id=rid)
    conn12.close()

    ctx = _context(certs)
    request = f"GET /resume/first HTTP/1.1\r\nHost: {h.SITE}\r\nConnection: close\r\n\r\n".encode()
    r, first = _raw_exchange(gw, ctx, request)
    h.check(r is not None and r.status == 200, f"first: {r}")
    _expect(ledger, "/resume/first", status=200, resumed=False, tls_version=first["version"], cipher=first["cipher"],
            request_id=r.header("X-Request-Id"))
    request = f"GET /resume/second HTTP/1.1\r\nHost: {h.SITE}\r\nConnection: close\r\n\r\n".encode()
    r, second = _raw_exchange(gw, ctx, request, session=first["session"])
    h.check(r is not None and r.status == 200, f"second: {r}")
    h.check(second["reused"], "the TLS session was not resumed")
    _expect(ledger, "/resume/second", status=200, resumed=True, tls_version=second["version"],
            request_id=r.header("X-Request-Id"))

    # A malformed request (two Content-Length fields), with a secret cookie:
    # 400 from the gateway, nothing upstream, a line all the same.
    secret = h.unique("REJECTEDCOOKIE")
    ledger.secrets.append(secret)
    bad = (f"GET /malformed HTTP/1.1\r\nHost: {h.SITE}\r\nCookie: s={secret}\r\n"
           f"Content-Length: 1\r\nContent-Length: 2\r\n\r\nx").encode()
    r, facts = _raw_exchange(gw, ctx, bad)
    h.check(r is not None and r.status == 400, f"malformed: {r}")
    rid = r.header("X-Request-Id")
    h.check(rid is not None and HEX32.match(rid), f"400 without a request id: {r}")
    _expect(ledger, "/malformed", method="GET", status=400, bytes_sent=len(r.body), bytes_received=0, upstream="",
            upstream_time_ms=None, tls_version=facts["version"], request_id=rid, retries=0)
    h.check(not backends["app1"].saw("/malformed") and not backends["app2"].saw("/malformed"),
            "the malformed request reached a backend")

    # HTTP/2 (curl prefers h2 in ALPN) and HTTP/1.0.
    r = h.curl(gw, "/over-h2?x=1", "--http2")
    h.check(r.status == 200, f"h2: {r}")
    _expect(ledger, "/over-h2?x=1", method="GET", status=200, protocol="h2", bytes_sent=len(r.body),
            upstream=r.header("X-Backend"), request_id=r.header("X-Request-Id"))
    r = h.curl(gw, "/over-http10", "--http1.0")
    h.check(r.status == 200, f"HTTP/1.0: {r}")
    _expect(ledger, "/over-http10", method="GET", status=200, protocol="http/1.0", bytes_sent=len(r.body),
            upstream=r.header("X-Backend"), request_id=r.header("X-Request-Id"))
    ledger.expected["/upload"]["protocol"] = "http/1.1"

    # The plain-HTTP listener's 301.
    r = h.curl(gw, "/redirect/me?x=1", scheme="http")
    h.check(r.status == 301, f"http: {r}")
    rid = r.header("X-Request-Id")
    h.check(rid is not None and HEX32.match(rid), f"301 without a request id: {r}")
    _expect(ledger, "/redirect/me?x=1", method="GET", status=301, bytes_sent=len(r.body), upstream="",
            upstream_time_ms=None, tls_version=None, cipher=None, resumed=None, request_id=rid, retries=0)


def _metric(gw, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/metrics", timeout=30) as r:
        text = r.read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    h.check(len(values) == 1, f"metric {name} missing")
    return values[0]


def test_burst_drops_nothing(gw, ledger):
    errors = []
    per_thread = BURST // 8

    def client(t):
        try:
            conn = h.https_connection(gw)
            for i in range(per_thread):
                r = h.request(conn, "GET", f"/burst/{t}/{i}")
                if r.status != 200:
                    errors.append(f"/burst/{t}/{i}: {r.status}")
            conn.close()
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(f"thread {t}: {e!r}")

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(t0 + 120 - time.monotonic(), 0))  # a guard against a hang
    h.check(not any(t.is_alive() for t in threads), "burst clients still running after 120 s")
    h.check(not errors, f"burst errors: {errors[:5]}")
    ledger.sent += BURST
    print(f"    {BURST} requests in {time.monotonic() - t0:.1f}s", flush=True)
    h.check(_metric(gw, "rampart_access_log_dropped_total") == 0, "access log lines were dropped")


def test_last_lines_survive_sigterm(gw, ledger):
    conn = h.https_connection(gw)
    for i in range(20):
        r = h.request(conn, "GET", f"/last/{i}")
        h.check(r.status == 200, f"/last/{i}: {r}")
        _expect(ledger, f"/last/{i}", status=200, request_id=r.header("X-Request-Id"))
    conn.close()
    # At once: the writer threads flush every 50 ms, so these lines are
    # still queued when the workers get SIGTERM.
    h.check(gw.stop() == 0, "the gateway did not exit 0")


def test_every_line_parses_with_correct_fields(backends, ledger, access_log):
    text = access_log.read_bytes().decode("utf-8")
    h.check(text.endswith("\n"), "the log does not end with a newline")
    lines = text.splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"line {n} is not JSON ({e}): {line[:300]}") from None
        h.check(list(rec) == FIELDS, f"line {n} fields: {list(rec)}")
        records.append(rec)
    h.check(len(records) == ledger.sent, f"{len(records)} lines for {ledger.sent} requests")

    now = datetime.now(timezone.utc) + timedelta(seconds=2)
    by_path = {}
    for rec in records:
        h.check(TIME.match(rec["time"]), f"time {rec['time']!r}")
        t = datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        h.check(ledger.started <= t <= now, f"time {rec['time']} outside the test run")
        h.check(rec["client"] == "127.0.0.1", f"client {rec['client']!r}")
        h.check(0 <= rec["request_time_ms"] < 10_000, f"request_time_ms {rec['request_time_ms']}")
        if rec["upstream_time_ms"] is not None:
            h.check(0 <= rec["upstream_time_ms"] <= rec["request_time_ms"],
                    f"upstream_time_ms {rec['upstream_time_ms']} > request_time_ms {rec['request_time_ms']}")
        if rec["path"].startswith("/burst/"):
            h.check(rec["status"] == 200 and rec["upstream"] in ("app1", "app2"), f"burst line {rec}")
            h.check(HEX32.match(rec["request_id"]), f"burst request id {rec['request_id']!r}")
            by_path.setdefault("burst", []).append(rec)
            continue
        h.check(rec["path"] not in by_path, f"two lines for {rec['path']}")
        by_path[rec["path"]] = rec
    h.check(len(by_path.get("burst", [])) == BURST, f"{len(by_path.get('burst', []))} burst lines")
    burst_paths = {r["path"] for r in by_path["burst"]}
    h.check(len(burst_paths) == BURST, "duplicate burst lines")

    for path, want in ledger.expected.items():
        rec = by_path.get(path)
        h.check(rec is not None, f"no line for {path}")
        for key, value in want.items():
            if key == "min_request_ms":
                h.check(rec["request_time_ms"] >= value, f"{path}: request_time_ms {rec['request_time_ms']}")
            elif key == "min_upstream_ms":
                h.check(rec["upstream_time_ms"] is not None and rec["upstream_time_ms"] >= value,
                        f"{path}: upstream_time_ms {rec['upstream_time_ms']}")
            else:
                h.check(rec[key] == value, f"{path}: {key} is {rec[key]!r}, expected {value!r}\n    {rec}")
        if rec["upstream"]:
            h.check(rec["upstream_time_ms"] is not None, f"{path}: an upstream without upstream_time_ms")
        if rec["tls_version"] is not None:
            h.check(rec["cipher"] and isinstance(rec["resumed"], bool), f"{path}: TLS fields {rec}")
    # Each backend received exactly the requests the access log says it answered.
    for name in ("app1", "app2"):
        answered = sum(1 for r in records if r["upstream"] == name)
        h.check(answered == len(backends[name].requests()),
                f"{name}: {answered} lines vs {len(backends[name].requests())} requests in its log")


def test_secrets_never_logged(gw, ledger, access_log):
    log = access_log.read_text(errors="replace")
    stderr = gw.process.read_stderr()
    h.check(" debug: " in stderr, "the gateway did not log at debug level")
    for secret in ledger.secrets:
        h.check(secret not in log, f"{secret} is in the access log")
        h.check(secret not in stderr, f"{secret} is in the gateway's stderr")


# ---------------------------------------------------------------------------
# Other gateways
# ---------------------------------------------------------------------------


def test_retries_and_rate_limit_are_logged(backends, certs):
    app1 = backends["app1"]
    dead = h.free_port()  # nothing listens there: connection refused, retried on app1
    log = h.temp_dir() / "access-retries.log"
    gw = h.Gateway(certs, {"dead": dead, "app1": app1}, workers=1, http=False)
    gw.config["gateway"]["pools"]["app"].update({"retries": 1,
                                                "rate_limit": {"rate": "1/minute", "burst": 4}})
    gw.config["gateway"]["access_log"] = str(log)
    gw.start()
    statuses = []
    for i in range(6):
        conn = h.https_connection(gw)
        r = h.request(conn, "GET", f"/retry/{i}")
        conn.close()
        statuses.append(r.status)
    h.check(statuses == [200] * 4 + [429] * 2, f"statuses {statuses}")
    h.check(gw.stop() == 0, "the gateway did not exit 0")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    h.check([r["status"] for r in records] == statuses, f"logged statuses {[r['status'] for r in records]}")
    served = records[:4]
    h.check(all(r["upstream"] == "app1" for r in served), f"upstreams {[r['upstream'] for r in served]}")
    # Every request that met the dead server first was retried once, and
    # said so; round robin sends at least every other one there.
    failed = gw.process.read_stderr().count("upstream dead failed")
    h.check(all(r["retries"] in (0, 1) for r in served) and sum(r["retries"] for r in served) == failed >= 2,
            f"retries {[r['retries'] for r in served]}, {failed} failures logged")
    for r in records[4:]:
        h.check(r["upstream"] == "" and r["upstream_time_ms"] is None and r["retries"] == 0, f"429 line {r}")
        h.check(r["bytes_received"] == 0 and r["bytes_sent"] > 0, f"429 line {r}")


def test_stdout_destination_and_log_level(backends, certs):
    app1 = backends["app1"]
    gw = h.Gateway(certs, {"app1": app1}, workers=1, http=False)
    gw.config["gateway"]["access_log"] = "stdout"
    gw.config["gateway"]["log_level"] = "warn"
    gw.start()
    conn = h.https_connection(gw)
    r = h.request(conn, "GET", "/to-stdout")
    conn.close()
    h.check(r.status == 200, f"GET: {r}")
    h.check(gw.stop() == 0, "the gateway did not exit 0")
    lines = gw.process.read_stdout().splitlines()
    h.check(len(lines) == 1 and json.loads(lines[0])["path"] == "/to-stdout", f"stdout: {lines}")
    stderr = gw.process.read_stderr()
    h.check(" info: " not in stderr, f"info lines at log level warn:\n{stderr}")

    # RAMPART_LOG wins over the file.
    proc = h.Process([h.rampart_bin(), "serve", "-c", gw.config_path], "rampart-env",
                     env={**os.environ, "RAMPART_LOG": "info"}).start()
    proc.wait_port(gw.https_port)
    h.check(proc.stop() == 0, "the gateway did not exit 0")
    h.check(" info: serving " in proc.read_stderr(), f"RAMPART_LOG=info ignored:\n{proc.read_stderr()}")


def _thread_names(pid):
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            names.append(f.read().strip())
    return sorted(names)


@pytest.mark.root("checks that workers running as 'nobody' write a file only root may open")
def test_unprivileged_workers_append_to_a_root_file(backends, certs):
    log = h.temp_dir() / "root-only.log"  # the temp dir is root's, mode 0700
    gw = h.Gateway(certs, {"app1": backends["app1"]}, workers=2, http=False)
    gw.config["gateway"]["user"] = "nobody"
    gw.config["gateway"]["access_log"] = {"path": str(log)}
    gw.start()
    for i in range(4):
        h.check(h.curl(gw, f"/unprivileged/{i}").status == 200, "request through unprivileged workers")
    # The writer is a thread of each worker, named for top -H; the master has none. A worker
    # starts it as the last step of its start-up, which the requests above need not have
    # waited for (they may all have gone to the other worker): bounded wait for it.
    for pid in gw.workers:
        h.wait_until(lambda: _thread_names(pid) == ["rampart-alog", "rampart-worker"], 15,
                     what=f"worker {pid}'s threads rampart-alog and rampart-worker (has {_thread_names(pid)})")
    h.check(len(_thread_names(gw.pid)) == 1, f"master threads {_thread_names(gw.pid)}")
    h.check(gw.stop() == 0, "the gateway did not exit 0")
    st = log.stat()
    h.check(st.st_uid == 0 and st.st_mode & 0o027 == 0, f"log file uid {st.st_uid} mode {st.st_mode & 0o777:o}")
    paths = sorted(json.loads(line)["path"] for line in log.read_text().splitlines())
    h.check(paths == [f"/unprivileged/{i}" for i in range(4)], f"logged {paths}")


def _lines(path):
    """Whole lines in a file so far (0 if it does not exist)."""
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def test_sigusr1_reopens_the_file_after_rotation(backends, certs):
    """logrotate's way: move the file away, then SIGUSR1. New lines go to a new
    file at the path, the last lines of the old workers to the moved one, no
    request fails and no line is lost or split. The configuration file is not
    read again (it is broken on disk by then); a SIGUSR1 with nothing to
    reopen changes nothing."""
    log = h.temp_dir() / "rotate.log"
    rotated = h.temp_dir() / "rotate.log.1"
    gw = h.Gateway(certs, {"app1": backends["app1"], "app2": backends["app2"]}, workers=2, http=False)
    gw.config["gateway"]["access_log"] = {"path": str(log)}
    gw.start()
    # The load runs until each file has more than 50 lines (bounded polls; 60 s at most, a
    # guard against a hang), not for a fixed time that a busy machine could fill with fewer.
    load = h.Load(gw, keepalive=3, fresh=1, seconds=60, path="/rotate").start()
    try:
        h.wait_until(lambda: _lines(log) > 50, timeout=30, what="50 lines in the log")
        os.rename(log, rotated)
        text = gw.config_path.read_text()
        gw.config_path.write_text(text + "not_a_key: [\n")  # a reload would refuse this file
        gw.process.send_signal(signal.SIGUSR1)
        h.wait_until(lambda: _lines(log) > 50, timeout=30, what="50 lines in the reopened log")
    finally:
        load.stop().join()
    h.check(not load.failures, f"{len(load.failures)} failed requests: {load.failures[:5]}")
    stderr = gw.process.read_stderr()
    h.check("reload (SIGUSR1, reopening" in stderr, f"no reopen in the error log: {stderr[-800:]}")
    refused = [line for line in stderr.splitlines() if "not_a_key" in line or ("reload" in line and "failed" in line)]
    h.check(not refused, f"SIGUSR1 read the file again: {refused}")
    h.check(gw.stop() == 0, "the gateway did not exit 0")

    def paths(f):
        out = []
        for line in f.read_text().splitlines():
            doc = json.loads(line)  # every line whole
            out.append((doc["path"], doc["status"]))
        return out

    old, new = paths(rotated), paths(log)
    logged = [p for p, _ in old + new if p.startswith("/rotate?")]
    h.check(len(old) > 50 and len(new) > 50, f"lines before / after the rotation: {len(old)} / {len(new)}")
    h.check(len(logged) == len(set(logged)) == load.ok,
            f"{load.ok} requests, {len(logged)} lines ({len(set(logged))} distinct) in the two files")
    h.check(all(status == 200 for _, status in old + new), "a logged status is not 200")
    print(f"    {load.ok} requests: {len(old)} lines in the moved file, {len(new)} in the new one", flush=True)

    quiet = h.Gateway(certs, {"app1": backends["app1"]}, workers=1, http=False).start()  # access log off
    before = set(quiet.workers)
    quiet.process.send_signal(signal.SIGUSR1)
    h.wait_until(lambda: "no access log file to reopen" in quiet.process.read_stderr(), timeout=15,
                 what="the master's answer to SIGUSR1")
    h.check(set(h.children_of(quiet.pid)) >= before, "SIGUSR1 without an access log file replaced the workers")
    h.check(h.curl(quiet, "/after-usr1").status == 200, "serving after SIGUSR1")
    h.check(quiet.stop() == 0, "the gateway did not exit 0")


def test_unopenable_log_file_stops_the_start(backends, certs):
    gw = h.Gateway(certs, {"app1": backends["app1"]}, workers=1, http=False, admin=False)
    missing = h.temp_dir() / "no-such-dir" / "access.log"
    gw.config["gateway"]["access_log"] = {"path": str(missing)}
    h.write_config(gw.config_path, gw.config)
    proc = h.Process([h.rampart_bin(), "serve", "-c", gw.config_path], "rampart-badlog", expect_exit=1).start()
    rc = proc.wait(30)  # it exits at once; a guard against a hang
    h.check(rc == 1, f"exit code {rc}")
    h.check(f"cannot open {missing}" in proc.read_stderr(), f"stderr: {proc.read_stderr()}")
    proc.stop()


RFC5424 = re.compile(r"<(\d+)>1 (\S+) (\S+) rampart (\d+) access - (.*)")
COMBINED = re.compile(r'(\S+) - (\S+) \[(\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d \+0000)\] "([^"]*)" (\d{3}) (\d+) '
                      r'"([^"]*)" "([^"]*)"')


def _syslog_socket(path: Path) -> socket.socket:
    if path.exists():
        path.unlink()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(10)
    return s


def test_combined_lines_to_syslog(backends, certs):
    """path: syslog, format: combined: each request is one RFC 5424 datagram (local0, info) whose
    message is the Apache/nginx combined line; after the syslog daemon's restart (a new socket
    under the same name) the lines reach the new one."""
    where = h.temp_dir() / "syslog.sock"
    daemon = _syslog_socket(where)
    gw = h.Gateway(certs, {"app1": backends["app1"]}, workers=2, http=False)
    gw.config["gateway"]["access_log"] = {"path": "syslog", "syslog_socket": str(where), "format": "combined",
                                          "facility": "local0"}
    gw.start()
    try:
        for i in range(6):
            out = h.curl(gw, f"/sys/{i}?q=\"x\"", "-A", f"agent {i}", "-e", "https://ref.example/")
            h.check(out.status == 200, f"request {i}: {out.status}")
        messages = [daemon.recv(8192).decode() for _ in range(6)]
        seen = set()
        for m in messages:
            head = RFC5424.fullmatch(m)
            h.check(head is not None, f"not an RFC 5424 access message: {m!r}")
            pri, stamp, host, pid, line = head.groups()
            h.check(pri == "134" and host == socket.gethostname() and int(pid) in gw.workers, f"header: {m!r}")
            datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")
            body = COMBINED.fullmatch(line)
            h.check(body is not None, f"not a combined line: {line!r}")
            client, user, _, request, status, size, referer, agent = body.groups()
            h.check(client == "127.0.0.1" and user == "-" and status == "200" and int(size) > 0, f"line: {line!r}")
            h.check(referer == "https://ref.example/", f"referer: {line!r}")
            seen.add((request, agent))
        want = {(f"GET /sys/{i}?q=\\x22x\\x22 HTTP/2.0", f"agent {i}") for i in range(6)}
        h.check(seen == want, f"requests and agents: {sorted(seen)}")
        # The daemon restarts: the workers' sockets connect to the new one.
        daemon.close()
        daemon = _syslog_socket(where)
        for i in range(4):
            h.check(h.curl(gw, f"/after/{i}").status == 200, "request after the restart")
        after = [daemon.recv(8192).decode() for _ in range(4)]
        h.check(sorted(re.search(r'"GET (/after/\d) ', m).group(1) for m in after) ==
                [f"/after/{i}" for i in range(4)], f"after the restart: {after}")
    finally:
        daemon.close()
        h.check(gw.stop() == 0, "the gateway did not exit 0")


def test_syslog_that_nobody_listens_on_stops_the_start(backends, certs):
    gw = h.Gateway(certs, {"app1": backends["app1"]}, workers=1, http=False, admin=False)
    where = h.temp_dir() / "nobody-listens.sock"
    gw.config["gateway"]["access_log"] = {"path": "syslog", "syslog_socket": str(where)}
    h.write_config(gw.config_path, gw.config)
    proc = h.Process([h.rampart_bin(), "serve", "-c", gw.config_path], "rampart-nosyslog", expect_exit=1).start()
    rc = proc.wait(30)  # it exits at once; a guard against a hang
    h.check(rc == 1 and f"cannot reach syslog at {where}" in proc.read_stderr(), f"rc {rc}: {proc.read_stderr()}")
    proc.stop()
