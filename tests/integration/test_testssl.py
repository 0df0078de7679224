"""TLS posture: the real testssl.sh (Debian package ``testssl.sh``) against the gateway.

One backend and one gateway (two workers, the harness's ECDSA + RSA dev
certificates for www.foobar.com, HSTS on) on 127.0.0.1; testssl.sh runs once,
in its default mode (protocols, cipher categories, each cipher, forward
secrecy, server preferences and defaults, HTTP headers, every vulnerability
check, client simulations), with the dev CA added as a trust anchor. The test
reads its pretty JSON and

* fails on every finding of severity MEDIUM, HIGH or CRITICAL, and on every
  scan problem (WARN, FATAL), except the ids in EXCLUDED;
* asserts positively what the gateway promises: no SSLv2/SSLv3/TLS 1.0/1.1,
  TLS 1.2 and 1.3 offered, only forward-secret AEAD ciphers, forward secrecy
  offered, HSTS, and an OK result for each named vulnerability check.

testssl.sh only ever talks to 127.0.0.1: ``--ip 127.0.0.1`` pins the address,
``--nodns none`` forbids every DNS query (A/AAAA, PTR, CAA), and without
``--phone-out`` it fetches no CRL and asks no OCSP responder.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import time

import harness as h
import pytest

# A full scan takes 45 s to 1.5 minutes on a quiet machine and over 4 minutes on
# one whose two cores are busy with other work (testssl.sh is a shell script that
# starts an openssl process per probe): these bounds only guard against a hang.
SCAN_TIMEOUT_S = 600
BUDGET_S = 690  # the file's time budget (conftest.py); ctest's TIMEOUT is 720

FAILING = ("MEDIUM", "HIGH", "CRITICAL")
SCAN_ERRORS = ("WARN", "FATAL")
SEVERITY_ORDER = ("DEBUG", "INFO", "OK", "LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN", "FATAL")

# Findings that exist only because the dev CA is private, by id (without the
# " <cert#N>" suffix testssl.sh adds when the server has several
# certificates). Nothing about protocols, ciphers, headers or vulnerabilities
# may be here: what the gateway can fix itself (e.g. security_headers) fails.
EXCLUDED = {
    # HIGH "Neither CRL nor OCSP URI provided": `rampart certs dev` makes a
    # throw-away CA that runs no CRL distribution point and no OCSP responder,
    # so its certificates name neither. A public CA's certificates carry them.
    "cert_revocation": "private dev CA: no CRL or OCSP service to point to",
}

# Each named vulnerability check: its JSON id must be present with severity OK.
VULNERABILITIES = (
    "heartbleed",            # Heartbleed, CVE-2014-0160
    "CCS",                   # CCS injection, CVE-2014-0224
    "ticketbleed",           # Ticketbleed, CVE-2016-9244
    "ROBOT",                 # Bleichenbacher oracle (no RSA key exchange at all)
    "secure_renego",         # RFC 5746 secure renegotiation
    "secure_client_renego",  # client-initiated renegotiation refused (DoS)
    "CRIME_TLS",             # TLS compression, CVE-2012-4929
    "BREACH",                # HTTP compression of responses, CVE-2013-3587 (see test_breach_not_applicable)
    "POODLE_SSL",            # SSLv3 CBC padding, CVE-2014-3566
    "fallback_SCSV",         # downgrade protection, RFC 7507
    "SWEET32",               # 64-bit block ciphers, CVE-2016-2183
    "FREAK",                 # export RSA, CVE-2015-0204
    "DROWN",                 # SSLv2 on this or another host with the key, CVE-2016-0800
    "LOGJAM",                # export DH / weak DH groups, CVE-2015-4000
    "BEAST",                 # CBC in TLS 1.0, CVE-2011-3389
    "LUCKY13",               # CBC MAC timing, CVE-2013-0169
    "RC4",                   # RC4 ciphers, CVE-2013-2566 / CVE-2015-2808
)

# Cipher categories of testssl.sh's "-s" run that must not be offered.
WEAK_CIPHER_LISTS = ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                     "cipherlist_3DES_IDEA", "cipherlist_AVERAGE")


def _testssl() -> str | None:
    """Debian installs the script as /usr/bin/testssl; upstream calls it testssl.sh."""
    return shutil.which("testssl") or shutil.which("testssl.sh")


pytestmark = pytest.mark.skipif(_testssl() is None,
                                reason="testssl.sh not installed (Debian package testssl.sh; scripts/setup.sh installs it)")


def base_id(finding_id: str) -> str:
    """"cert_revocation <cert#2>" -> "cert_revocation"."""
    return finding_id.split(" <", 1)[0]


def findings(doc) -> list[dict]:
    """Every finding in the JSON, wherever it sits (per-target sections, or
    scan problems at the top level): the dicts with an id and a severity."""
    out: list[dict] = []
    stack = [doc]
    for _ in range(1_000_000):  # bounded walk; the document is a finite tree
        if not stack:
            break
        node = stack.pop()
        if isinstance(node, dict):
            if "id" in node and "severity" in node:
                out.append(node)
            else:
                stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return out


def by_id(items: list[dict], finding_id: str) -> list[dict]:
    return [f for f in items if base_id(f["id"]) == finding_id]


def one(items: list[dict], finding_id: str) -> dict:
    found = by_id(items, finding_id)
    h.check(len(found) >= 1, f"testssl.sh reported no '{finding_id}' finding")
    return found[0]


def describe(f: dict) -> str:
    return f"{f['severity']:8} {f['id']}: {f.get('finding', '')}"


@pytest.fixture(scope="module")
def scan():
    """One testssl.sh scan of a gateway: its JSON (doc), its findings (items) and the gateway (gw)."""
    certs = h.make_certs(h.temp_dir() / "certs")
    app = h.Backend("app1").start()
    gw = h.Gateway(certs, {"app1": app}, http=False, admin=False).start()
    h.check(h.curl(gw, "/").status == 200, "the gateway does not proxy to the backend")

    out = h.temp_dir() / "testssl.json"
    log_path = h.temp_dir() / "logs" / "testssl.out"
    log_path.parent.mkdir(exist_ok=True)
    # --warnings off: where testssl.sh would stop to ask (e.g. "no protocol
    # detected"), it records a WARN and goes on, so the JSON stays complete and
    # the WARN fails the test with its text.
    argv = [_testssl(), "--quiet", "--color", "0", "--warnings", "off",
            "--nodns", "none", "--ip", h.LOOPBACK,
            "--connect-timeout", "10", "--openssl-timeout", "10",
            "--add-ca", str(certs.ca), "--jsonfile-pretty", str(out),
            f"https://{h.SITE}:{gw.https_port}/"]
    # NO_ENGINE: testssl.sh would otherwise probe the local openssl for the
    # GOST engine and, Debian's openssl having none, record a WARN
    # "engine_problem" about the scanner (not the server). The gateway cannot
    # offer GOST suites anyway: its cipher list is fixed in certs/certs.cpp.
    env = {**os.environ, "NO_ENGINE": "true"}
    t0 = time.monotonic()
    try:
        # stdout (the human report) goes to the log dir: the JSON is what is checked.
        with open(log_path, "wb") as log:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               timeout=SCAN_TIMEOUT_S, cwd=h.temp_dir(), env=env)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"testssl.sh did not finish within {SCAN_TIMEOUT_S}s") from None
    elapsed = time.monotonic() - t0
    # testssl.sh's exit code counts findings, so it is not a verdict; the JSON is.
    h.check(out.is_file() and out.stat().st_size > 0,
            f"testssl.sh wrote no JSON (exit {r.returncode}): {' '.join(argv)}")
    doc = json.loads(out.read_text())
    items = findings(doc)
    h.check(len(items) > 50, f"testssl.sh JSON has only {len(items)} findings (exit {r.returncode})")
    scan = {"doc": doc, "items": items, "gw": gw}

    counts = collections.Counter(f["severity"] for f in items)
    version = (doc.get("version") or "?").split()[0]
    print(f"testssl.sh {version} ({doc.get('openssl', '?')}) scanned "
          f"{h.SITE} at {h.LOOPBACK}:{gw.https_port} in {elapsed:.0f}s, exit {r.returncode}: "
          + ", ".join(f"{s} {counts[s]}" for s in SEVERITY_ORDER if counts[s]), flush=True)
    for f in sorted(items, key=lambda f: SEVERITY_ORDER.index(f["severity"]) if f["severity"] in SEVERITY_ORDER
                    else 0, reverse=True):
        if f["severity"] in ("LOW", *FAILING, *SCAN_ERRORS):
            note = " (excluded)" if base_id(f["id"]) in EXCLUDED else ""
            print(f"  {describe(f)}{note}", flush=True)
    return scan


def _s_client(gw, *args: str, session_file=None) -> subprocess.CompletedProcess:
    """openssl s_client whose stdin stays open until the session is saved: with TLS 1.3 the
    session ticket comes after the handshake, and a client that closes at once (stdin at EOF,
    as testssl.sh's probe does) may leave before it arrives, with no session to save. That
    race is testssl.sh's "connect problem". With `session_file` (-sess_out), stdin closes
    once s_client has written the session there (it does when the ticket arrives; bounded,
    20 s, a guard against a hang), otherwise after 0.5 s (-sess_in: resumption is decided in
    the handshake itself)."""
    argv = ["openssl", "s_client", "-connect", f"{h.LOOPBACK}:{gw.https_port}", "-servername", h.SITE, *args]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if session_file is None:
        time.sleep(0.5)
    else:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and p.poll() is None:
            if session_file.exists() and session_file.stat().st_size > 0:
                break
            time.sleep(0.02)
    out, err = p.communicate(input="", timeout=20)
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def _resumes(gw) -> bool:
    """Our own check of what sessionresumption_* tests: a second connection
    with the first one's session is resumed ("Reused")."""
    sess = h.temp_dir() / "resume.sess"
    sess.unlink(missing_ok=True)
    first = _s_client(gw, "-sess_out", str(sess), session_file=sess)
    second = _s_client(gw, "-sess_in", str(sess))
    return first.returncode == 0 and second.returncode == 0 and "\nReused," in second.stdout


def test_no_finding_medium_or_above(scan):
    bad = [f for f in scan["items"] if f["severity"] in FAILING + SCAN_ERRORS and base_id(f["id"]) not in EXCLUDED]
    # testssl.sh's session-resumption probe now and then reports "check failed
    # because of connect problem": its first s_client closes before the TLS
    # 1.3 ticket arrives (see _s_client), a race of the scanner, not a server
    # finding. That one WARN is re-checked here with the same two s_client
    # calls, three times; it is excused only if every one resumes. Every
    # other WARN still fails the test.
    flaky = [f for f in bad if f["severity"] == "WARN" and base_id(f["id"]).startswith("sessionresumption")
             and "connect problem" in f.get("finding", "")]
    if flaky and all(_resumes(scan["gw"]) for _ in range(3)):
        print("    re-checked " + ", ".join(f["id"] for f in flaky) + ": sessions resume", flush=True)
        bad = [f for f in bad if f not in flaky]
    h.check(not bad, "testssl.sh findings:\n  " + "\n  ".join(describe(f) for f in bad))


def test_exclusions_still_needed(scan):
    # An exclusion that no longer matches anything hides nothing and should go.
    for finding_id in EXCLUDED:
        h.check(any(f["severity"] in FAILING for f in by_id(scan["items"], finding_id)),
                f"EXCLUDED has '{finding_id}' but testssl.sh no longer flags it: remove the exclusion")


def test_only_tls12_and_tls13(scan):
    items = scan["items"]
    for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        f = one(items, proto)
        h.check(f["finding"].startswith("not offered"), f"{proto}: {describe(f)}")
    for proto in ("TLS1_2", "TLS1_3"):
        f = one(items, proto)
        h.check(f["finding"].startswith("offered") and f["severity"] == "OK", f"{proto}: {describe(f)}")


def test_only_strong_forward_secret_ciphers(scan):
    items = scan["items"]
    for list_id in WEAK_CIPHER_LISTS:
        f = one(items, list_id)
        h.check(f["finding"].startswith("not offered"), f"weak cipher category offered: {describe(f)}")
    pfs = one(items, "PFS")
    h.check(pfs["severity"] == "OK" and pfs["finding"].startswith("offered"), f"forward secrecy: {describe(pfs)}")
    # Each cipher the server accepted ("-e", ids cipher_x<hex>), e.g.
    # "xc02b ECDHE-ECDSA-AES128-GCM-SHA256 ECDH 253 AESGCM 128 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256":
    # an ephemeral (EC)DH key exchange and an AEAD, either a TLS 1.3 suite or ECDHE in TLS 1.2.
    ciphers = [f for f in items if f["id"].startswith("cipher_x")]
    h.check(bool(ciphers), "testssl.sh listed no accepted cipher")
    for f in ciphers:
        words = f["finding"].split()
        # The key-exchange size column is empty for static RSA: read the tail from the end.
        h.check(len(words) >= 6, f"unexpected cipher line: {describe(f)}")
        kx, enc, rfc_name = words[2], words[-3], words[-1]
        h.check(kx == "ECDH" and enc in ("AESGCM", "ChaCha20")
                and rfc_name.startswith(("TLS_AES_", "TLS_CHACHA20_", "TLS_ECDHE_")),
                f"cipher without ECDHE or without AEAD: {describe(f)}")


def test_named_vulnerabilities_not_vulnerable(scan):
    items = scan["items"]
    problems = []
    for vuln in VULNERABILITIES:
        found = by_id(items, vuln)
        if not found:
            problems.append(f"{vuln}: not in the JSON")
        problems += [describe(f) for f in found if f["severity"] != "OK"]
    h.check(not problems, "vulnerability checks not OK:\n  " + "\n  ".join(problems))


def test_breach_not_applicable(scan):
    # BREACH needs a compressed response body carrying a secret next to
    # attacker-controlled input. Rampart never compresses and passes bodies
    # through; the test backend does not compress either, so testssl.sh must
    # see no Content-Encoding. A deployment whose application compresses would
    # be flagged here (MEDIUM): that is the application's call, not the gateway's.
    f = one(scan["items"], "BREACH")
    h.check(f["severity"] == "OK" and f["finding"].startswith("not vulnerable, no HTTP compression"),
            f"BREACH: {describe(f)}")


def test_hsts_sent(scan):
    items = scan["items"]
    missing = [describe(f) for f in by_id(items, "HSTS") if "not offered" in f["finding"]]
    h.check(not missing, f"no Strict-Transport-Security header: {missing}")
    hsts = one(items, "HSTS_time")
    h.check(hsts["severity"] == "OK", f"HSTS max-age: {describe(hsts)}")
    sub = by_id(items, "HSTS_subdomains")
    h.check(bool(sub) and sub[0]["finding"].startswith("includes"), f"HSTS without includeSubDomains: {sub}")


def test_certificates_trusted_for_the_name(scan):
    # Both certificates (ECDSA and RSA) chain to the added dev CA and match the SNI name.
    items = scan["items"]
    trust = by_id(items, "cert_chain_of_trust")
    h.check(len(trust) == 2, f"expected 2 server certificates, got {[describe(f) for f in trust]}")
    for f in trust + by_id(items, "cert_trust"):
        h.check(f["severity"] == "OK", f"certificate: {describe(f)}")
    keys = sorted(f["finding"].split()[0] for f in by_id(items, "cert_keySize"))
    h.check(keys == ["EC", "RSA"], f"certificate key types {keys}, expected one EC and one RSA")
