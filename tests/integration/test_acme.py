"""Certificates by ACME, against a real ACME server (pebble, tests/support/pebble.py) on loopback.

- http-01: a gateway with `gateway.tls.acme` and no certificate starts on self-signed placeholders,
  orders an ECDSA and an RSA certificate (pebble rejecting 20 % of nonces, no authorization reuse),
  answers pebble's validation on port 80 and serves both: openssl verifies each served chain
  against pebble's root, and curl gets the app through it; the state files are 0600 in a 0700
  directory, with no temporary file left;
- tls-alpn-01: the same through ALPN acme-tls/1 on the https listener (no port 80); a client
  offering acme-tls/1 for a name with no validation pending is refused;
- renewal: with 40-second certificates and renew_before 25s the gateway renews before expiry and
  serves the new serial, with no failed request under light load;
- pebble down: a renewal fails, the current certificate keeps serving, the failure shows in the
  metrics, /readyz and the log, and the retry succeeds once pebble is back;
- `rampart check` refuses what cannot work, at file:line:column.
"""

import os
import re
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
        m = h.metrics(gw)
        assert m['rampart_acme_failures_total{key_type="ecdsa"}'] == 0
        assert m['rampart_acme_certificate_expiry_timestamp_seconds{key_type="rsa"}'] > time.time() + 86400
        gw.stop()


def test_tls_alpn01_issues_and_refuses_strangers(certs, app1):
    ports = h.free_ports(2)
    with pebble_module.Pebble(h.temp_dir(), http_port=ports[1], tls_port=ports[0]) as p:
        gw = acme_gateway(certs, app1, p, challenge="tls-alpn-01", key_types=("ecdsa",), http=False,
                          ports=ports).start()
        wait_issued(gw, "ecdsa")
        served(gw, p)
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
