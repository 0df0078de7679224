"""Certificates by ACME, against a real ACME server (pebble, tests/support/pebble.py) on loopback.

- http-01: a gateway with `gateway.tls.acme` and no certificate starts on self-signed placeholders,
  orders an ECDSA and an RSA certificate (pebble rejecting 20 % of nonces, no authorization reuse),
  answers pebble's validation on port 80 and serves both: openssl verifies each served chain
  against pebble's root, and curl gets the app through it; the state files are 0600 in a 0700
  directory, with no temporary file left;
- tls-alpn-01: both again through ALPN acme-tls/1 on the https listener (no port 80); a client
  offering acme-tls/1 for a name with no validation pending is refused;
- renewal: with 40-second certificates and renew_before 25s the gateway renews before expiry and
  serves the new serial, with no failed request under light load;
- pebble down: a renewal fails, the current certificate keeps serving, the failure shows in the
  metrics, /readyz and the log, and the retry succeeds once pebble is back;
- `rampart check` refuses what cannot work, at file:line:column.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import time

import harness as h
import pebble as pebble_module
import pytest

pytestmark = pytest.mark.skipif(pebble_module.skip_reason() is not None,
                                reason=str(pebble_module.skip_reason()))


def acme_gateway(certs, app1, pebble_server, *, challenge="http-01", key_types=("ecdsa", "rsa"),
                 renew_before="30d", http=True, ports=None, **acme_extra):
    """A gateway whose only certificates are ACME's, on the ports pebble validates."""
    g = h.Gateway(certs, {"app1": app1}, http=http, workers=2)
    if ports is not None:
        g.https_port, g.http_port = ports
        g.config["gateway"]["listen"]["https"] = f"{h.LOOPBACK}:{ports[0]}"
        if http:
            g.config["gateway"]["listen"]["http"] = f"{h.LOOPBACK}:{ports[1]}"
        g.config_path = h.temp_dir() / f"rampart-{ports[0]}.yaml"
    state = h.temp_dir() / f"acme-state-{g.https_port}"
    g.acme_state = state
    g.config["gateway"]["tls"] = {"acme": {
        "directory": pebble_server.directory_url,
        "email": "ops@foobar.com",
        "names": [h.SITE],
        "key_types": list(key_types),
        "challenge": challenge,
        "renew_before": renew_before,
        "ca_file": str(pebble_server.ca_file),
        "state_dir": str(state),
        "retry_min": "1s",
        "retry_max": "3s",
        **acme_extra,
    }}
    return g


def issued(gw, key_type: str) -> float:
    return h.metrics(gw).get(f'rampart_acme_certificates_issued_total{{key_type="{key_type}"}}', 0)


def wait_issued(gw, key_type: str, count: int = 1, timeout: float = 60.0) -> None:
    """Until the count-th certificate is issued, then until the reload it caused has drained the
    previous workers (the test's crash check then watches the new ones)."""
    h.wait_until(lambda: issued(gw, key_type) >= count, timeout,
                 what=f"{key_type} certificate number {count} issued" + gw.process.stderr_excerpt())
    want = gw.config["gateway"]["workers"]
    h.wait_until(lambda: len(h.children_of(gw.pid)) == want, 30, what="the previous workers drained")
    gw.workers = {p: h.identity(p) for p in h.children_of(gw.pid)}


def served(gw, pebble_server, *args: str) -> dict:
    """The served chain, verified against pebble's current root: subject, issuer, serial."""
    root = h.temp_dir() / f"pebble-root-{time.monotonic_ns()}.pem"
    root.write_text(pebble_server.roots_pem())
    r = h.s_client(gw.https_port, "-showcerts", "-verify_return_error", "-verify_hostname", h.SITE, *args,
                   ca=root)
    assert r.returncode == 0 and "Verify return code: 0 (ok)" in r.out, r.out[-2000:] + r.err[-1000:]
    leaf = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.out, re.S).group(0)
    text = subprocess.run(["openssl", "x509", "-noout", "-serial", "-issuer", "-ext", "subjectAltName",
                           "-pubkey"], input=leaf, capture_output=True, text=True, check=True).stdout
    return {"serial": re.search(r"serial=(\w+)", text).group(1), "text": text}


def test_http01_issues_ecdsa_and_rsa(certs, app1):
    ports = h.free_ports(2)
    with pebble_module.Pebble(h.temp_dir(), http_port=ports[1], tls_port=ports[0], nonce_reject=20) as p:
        gw = acme_gateway(certs, app1, p, ports=ports).start()
        # Until the first issuance the listener serves the placeholders.
        status, body = h.admin(gw, "/readyz")
        assert "placeholder" in body or issued(gw, "ecdsa") >= 1, body
        wait_issued(gw, "ecdsa")
        wait_issued(gw, "rsa")
        h.wait_until(lambda: h.metrics(gw).get("rampart_acme_challenges_answered_total", 0) >= 2, 10,
                     what="validations answered")
        ecdsa = served(gw, p, "-sigalgs", "ECDSA+SHA256")
        rsa = served(gw, p, "-sigalgs", "rsa_pss_rsae_sha256:RSA+SHA256")
        def key_text(cert):
            return subprocess.run(["openssl", "pkey", "-pubin", "-noout", "-text"],
                                  input=cert["text"][cert["text"].index("-----BEGIN"):], capture_output=True,
                                  text=True).stdout
        assert "NIST CURVE: P-256" in key_text(ecdsa)
        assert "Public-Key: (2048 bit)" in key_text(rsa) and "Modulus" in key_text(rsa)
        assert ecdsa["serial"] != rsa["serial"]
        assert f"DNS:{h.SITE}" in ecdsa["text"] and f"DNS:{h.SITE}" in rsa["text"]
        # Through it to the app, the chain verified by curl.
        root = h.temp_dir() / "pebble-root-curl.pem"
        root.write_text(p.roots_pem())
        r = subprocess.run(["curl", "-sS", "--cacert", str(root), "--resolve", f"{h.SITE}:{gw.https_port}:127.0.0.1",
                            "-o", "/dev/null", "-w", "%{http_code}", gw.url("/")], capture_output=True, text=True,
                           timeout=30)
        assert r.stdout == "200", r.stderr
        # State: 0700 directory, 0600 files, no temporary file left behind.
        state = gw.acme_state
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        names = sorted(os.listdir(state))
        assert names == ["account.key", f"{h.SITE}-ecdsa.pem", f"{h.SITE}-rsa.pem"], names
        for n in names:
            assert stat.S_IMODE(os.stat(state / n).st_mode) == 0o600, n
        status, body = h.admin(gw, "/readyz")
        assert status == 200 and "warning" not in body, body
        # What the operator sees: rampart certs status, /api/status and the status tables.
        r = subprocess.run([h.rampart_bin(), "certs", "status", "-c", str(gw.config_path)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("(acme)") == 2 and r.stdout.count("issuer:   Pebble Intermediate CA") == 2, r.stdout
        assert "key:      RSA" in r.stdout and "key:      ECDSA" in r.stdout and " d " in r.stdout, r.stdout
        status, body = h.admin(gw, "/api/status")
        certs_json = json.loads(body)["certificates"]
        assert [c["acme"]["state"] for c in certs_json] == ["issued", "issued"], certs_json
        assert all(c["issuer"].startswith("Pebble Intermediate CA") for c in certs_json), certs_json
        status, body = h.admin(gw, "/status/tables")
        assert "Pebble Intermediate CA" in body and "issued, next " in body
        m = h.metrics(gw)
        assert m['rampart_acme_failures_total{key_type="ecdsa"}'] == 0
        assert m['rampart_acme_certificate_expiry_timestamp_seconds{key_type="rsa"}'] > time.time() + 86400
        gw.stop()


def test_tls_alpn01_issues_and_refuses_strangers(certs, app1):
    ports = h.free_ports(2)
    with pebble_module.Pebble(h.temp_dir(), http_port=ports[1], tls_port=ports[0]) as p:
        gw = acme_gateway(certs, app1, p, challenge="tls-alpn-01", http=False, ports=ports).start()
        wait_issued(gw, "ecdsa")
        wait_issued(gw, "rsa")
        ecdsa = served(gw, p, "-sigalgs", "ECDSA+SHA256")
        rsa = served(gw, p, "-sigalgs", "rsa_pss_rsae_sha256:RSA+SHA256")
        assert ecdsa["serial"] != rsa["serial"]
        assert h.metrics(gw)["rampart_acme_challenges_answered_total"] >= 2
        # No validation pending now: acme-tls/1 gets no certificate.
        r = h.s_client(gw.https_port, "-alpn", "acme-tls/1")
        assert r.returncode != 0 and "no application protocol" in r.err, r.out[-1500:]
        # And ordinary clients still get h2 and http/1.1.
        r = h.s_client(gw.https_port, "-alpn", "h2")
        assert "ALPN protocol: h2" in r.out
        gw.stop()


def test_renews_before_expiry_without_failed_requests(certs, app1):
    ports = h.free_ports(2)
    with pebble_module.Pebble(h.temp_dir(), http_port=ports[1], tls_port=ports[0], validity_s=40) as p:
        gw = acme_gateway(certs, app1, p, key_types=("ecdsa",), renew_before="25s", ports=ports).start()
        wait_issued(gw, "ecdsa")
        first = served(gw, p)["serial"]
        root = h.temp_dir() / "pebble-root-load.pem"
        root.write_text(p.roots_pem())
        context = h.client_context(root)
        load = h.Load(gw, keepalive=2, fresh=2, seconds=60,
                      connect=lambda g: h.LoopbackHTTPSConnection(g.https_port, h.SITE, context, 10)).start()
        try:
            wait_issued(gw, "ecdsa", 2, timeout=45)
            h.wait_until(lambda: served(gw, p)["serial"] != first, 15, what="the renewed certificate served")
            time.sleep(1)
        finally:
            load.stop().join()
        assert not load.failures, load.failures[:10]
        assert load.ok > 50
        gw.stop()


def test_pebble_down_keeps_serving_then_recovers(certs, app1):
    ports = h.free_ports(2)
    with pebble_module.Pebble(h.temp_dir(), http_port=ports[1], tls_port=ports[0], validity_s=40) as p:
        gw = acme_gateway(certs, app1, p, key_types=("ecdsa",), renew_before="25s", ports=ports).start()
        wait_issued(gw, "ecdsa")
        first = served(gw, p)["serial"]
        p.stop()
        h.wait_until(lambda: h.metrics(gw).get('rampart_acme_consecutive_failures{key_type="ecdsa"}', 0) >= 2, 45,
                     what="renewals failing while pebble is down")
        # Still serving the current certificate (its chain still verifies: pebble's old root).
        r = h.s_client(gw.https_port)
        assert first.lower() in r.out.lower() or "BEGIN CERTIFICATE" in r.out
        status, body = h.admin(gw, "/readyz")
        assert status == 200 and "warning" in body and "connect" in body, body
        assert "still serving the current one" in gw.process.read_stderr()
        p.start()
        wait_issued(gw, "ecdsa", 2, timeout=30)
        after = served(gw, p)  # verified against the new root of the restarted pebble
        assert after["serial"] != first
        assert h.metrics(gw)['rampart_acme_consecutive_failures{key_type="ecdsa"}'] == 0
        gw.stop()


CHECK_CASES = [
    # (acme map, listen http?, expected message)
    ({"directory": "http://acme.example/dir", "names": ["www.foobar.com"]}, True, "expected an https:// URL"),
    ({"directory": "https://acme.example/dir", "names": ["*.foobar.com"]}, True, "wildcard names need the dns-01"),
    ({"directory": "https://acme.example/dir", "names": ["www.foobar.com"], "key_types": ["dsa"]}, True,
     'unknown key type "dsa"'),
    ({"directory": "https://acme.example/dir", "names": ["www.foobar.com"], "challenge": "dns-01"}, True,
     "dns-01 is not answered"),
    ({"directory": "https://acme.example/dir", "names": ["www.foobar.com"]}, False,
     "needs gateway.listen.http"),
]


@pytest.mark.parametrize("acme,with_http,message", CHECK_CASES)
def test_check_refuses_what_cannot_work(certs, acme, with_http, message):
    g = h.Gateway(certs, {"app1": 1}, http=with_http)
    g.config["gateway"]["tls"] = {"acme": acme}
    path = h.write_config(h.temp_dir() / f"acme-check-{abs(hash(message))}.yaml", g.config)
    r = subprocess.run([h.rampart_bin(), "check", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: ", r.stderr), r.stderr


# ---------------------------------------------------------------------------
# Bad input from the ACME server: a server of our own that misbehaves on purpose
# ---------------------------------------------------------------------------

class FakeAcme:
    """An HTTPS server on loopback that answers ACME requests the way `mode` says: `malformed` (a
    directory that is not JSON), `huge` (a 2 MiB directory), `redirect` (the directory moved),
    `bad_token` (a valid-looking exchange up to an authorization whose http-01 token is a path)."""

    def __init__(self, work) -> None:
        import http.server
        import json
        import ssl
        import threading
        self.mode = "malformed"
        self.requests: list[str] = []
        ca, leaf, key = pebble_module.make_listener_certificate(work / "fake-acme")
        self.ca_file = ca
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def send(self, status, body=b"", headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Replay-Nonce", "n" + os.urandom(8).hex())
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self):
                fake.requests.append(f"HEAD {self.path}")
                self.send(200)

            def do_GET(self):
                fake.requests.append(f"GET {self.path}")
                base = f"https://127.0.0.1:{fake.port}"
                if fake.mode == "malformed":
                    self.send(200, b'{"newNonce": "https://127.0.0.1/n", oops', {"Content-Type": "application/json"})
                elif fake.mode == "huge":
                    self.send(200, b"{" + b" " * (2 * 1024 * 1024) + b"}", {"Content-Type": "application/json"})
                elif fake.mode == "redirect":
                    self.send(302, b"", {"Location": "https://127.0.0.1:1/elsewhere"})
                else:
                    d = {"newNonce": base + "/nonce", "newAccount": base + "/account", "newOrder": base + "/order"}
                    self.send(200, json.dumps(d).encode(), {"Content-Type": "application/json"})

            def do_POST(self):
                fake.requests.append(f"POST {self.path}")
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                base = f"https://127.0.0.1:{fake.port}"
                if self.path == "/account":
                    self.send(201, b'{"status": "valid"}', {"Location": base + "/acct/1"})
                elif self.path == "/order":
                    body = {"status": "pending", "authorizations": [base + "/authz/1"], "finalize": base + "/fin/1"}
                    self.send(201, json.dumps(body).encode(), {"Location": base + "/order/1"})
                elif self.path == "/authz/1":
                    body = {"status": "pending", "identifier": {"type": "dns", "value": h.SITE},
                            "challenges": [{"type": "http-01", "url": base + "/chall/1",
                                            "token": "../../../../etc/passwd"}]}
                    self.send(200, json.dumps(body).encode())
                else:
                    self.send(404, b'{"type": "urn:ietf:params:acme:error:malformed"}')

        self.server = http.server.ThreadingHTTPServer((h.LOOPBACK, 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(leaf, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_bad_answers_are_refused_and_service_goes_on(certs, app1):
    fake = FakeAcme(h.temp_dir())
    try:
        g = h.Gateway(certs, {"app1": app1}, workers=2)
        state = h.temp_dir() / f"acme-state-fake-{g.https_port}"
        g.config["gateway"]["tls"] = {"acme": {
            "directory": f"https://127.0.0.1:{fake.port}/dir", "names": [h.SITE], "ca_file": str(fake.ca_file),
            "state_dir": str(state), "retry_min": "1s", "retry_max": "1s"}}
        gw = g.start()
        expected = {
            "malformed": "is not a JSON object",
            "huge": "larger than 1 MiB",
            "redirect": "unexpected redirect (HTTP 302)",
            "bad_token": "refused a challenge token that is not plain base64url",
        }
        for mode, message in expected.items():
            fake.mode = mode
            before = h.metrics(gw)['rampart_acme_failures_total{key_type="ecdsa"}']
            h.wait_until(lambda: message in gw.process.read_stderr(), 20, what=f"the log line for {mode}")
            h.wait_until(lambda: h.metrics(gw)['rampart_acme_failures_total{key_type="ecdsa"}'] > before, 10,
                         what=f"a failure counted for {mode}")
            # Still serving, on the placeholder, and the app behind it.
            r = h.s_client(gw.https_port, "-showcerts")
            assert "Rampart placeholder" in r.out, r.out[-1500:]
            r = subprocess.run(["curl", "-sSk", "--resolve", f"{h.SITE}:{gw.https_port}:127.0.0.1", "-o", "/dev/null",
                                "-w", "%{http_code}", gw.url("/")], capture_output=True, text=True, timeout=30)
            assert r.stdout == "200", r.stderr
        # The bad token was never published: port 80 redirects it like any path.
        r = h.plain_exchange(gw.http_port, f"GET /.well-known/acme-challenge/../../../../etc/passwd HTTP/1.1\r\n"
                                           f"Host: {h.SITE}\r\nConnection: close\r\n\r\n".encode())
        assert r.startswith(b"HTTP/1.1 301") or r.startswith(b"HTTP/1.1 400"), r[:200]
        assert sorted(os.listdir(state)) == ["account.key", f"{h.SITE}-ecdsa.pem"]
        status, body = h.admin(gw, "/readyz")
        assert status == 200 and "placeholder" in body and "refused a challenge token" in body, body
        gw.stop()
    finally:
        fake.close()


# ---------------------------------------------------------------------------
# certbot's webroot mode, for operators who keep certbot
# ---------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("certbot") is None, reason="certbot missing (Debian certbot; setup.sh installs it)")
def test_certbot_webroot_through_port_80(certs, app1):
    webroot = h.temp_dir() / "webroot"
    webroot.mkdir(exist_ok=True)
    g = h.Gateway(certs, {"app1": app1}, workers=2)
    g.config["gateway"]["tls"]["acme_webroot"] = str(webroot)
    with pebble_module.Pebble(h.temp_dir(), http_port=g.http_port, tls_port=g.https_port) as p:
        gw = g.start()
        # A file of the webroot is served; anything else under the prefix is redirected as before.
        challenges = webroot / ".well-known" / "acme-challenge"
        challenges.mkdir(parents=True, exist_ok=True)
        (challenges / "abcdefghijklmnopqrstuvwxyz0123456789_-ABCDE").write_text("answer-text\n")
        (webroot / "secret.txt").write_text("not for the world\n")
        def get80(path: str) -> bytes:
            return h.plain_exchange(gw.http_port, f"GET {path} HTTP/1.1\r\nHost: {h.SITE}\r\n"
                                                  f"Connection: close\r\n\r\n".encode())
        r = get80("/.well-known/acme-challenge/abcdefghijklmnopqrstuvwxyz0123456789_-ABCDE")
        assert r.startswith(b"HTTP/1.1 200") and r.endswith(b"answer-text\n"), r[:300]
        for path in ("/.well-known/acme-challenge/missing-token-0123456789",
                     "/.well-known/acme-challenge/..%2F..%2Fsecret.txt",
                     "/.well-known/acme-challenge/../../secret.txt", "/secret.txt"):
            r = get80(path)
            assert r.startswith(b"HTTP/1.1 301") or r.startswith(b"HTTP/1.1 400"), (path, r[:200])
            assert b"not for the world" not in r
        # The real certbot, webroot mode, against pebble: its validation comes through port 80.
        work = h.temp_dir() / "certbot"
        env = dict(os.environ, REQUESTS_CA_BUNDLE=str(p.ca_file))
        r = subprocess.run(["certbot", "certonly", "--non-interactive", "--agree-tos",
                            "--register-unsafely-without-email", "--server", p.directory_url,
                            "--config-dir", str(work / "config"), "--work-dir", str(work / "work"),
                            "--logs-dir", str(work / "logs"), "--webroot", "-w", str(webroot), "-d", h.SITE,
                            "--key-type", "ecdsa"],
                           capture_output=True, text=True, timeout=180, env=env)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        live = work / "config" / "live" / h.SITE / "fullchain.pem"
        assert "BEGIN CERTIFICATE" in live.read_text()
        # The file above, and pebble's validation (three attempts) of certbot's.
        assert h.metrics(gw).get("rampart_acme_challenges_answered_total", 0) >= 2
        gw.stop()
