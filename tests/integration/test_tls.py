"""TLS front end: protocol versions, SNI, ECDSA/RSA selection, ALPN, cipher policy.

One gateway serves two certificate sets: the default one for www.foobar.com and
a second one made with ``rampart certs dev --name api.example.test`` (each set
is an ECDSA + RSA pair). Every check uses the real ``openssl s_client``.
"""

import os
import sys

import harness as h

API = "api.example.test"
S = {}


def setup_module():
    www = h.make_certs(h.temp_dir() / "certs-www")
    api = h.make_certs(h.temp_dir() / "certs-api", [API])
    app = h.Backend("app1").start()
    S["www"], S["api"] = www, api
    S["gw"] = h.Gateway(www, {"app1": app}, http=False, extra_certificates=api.certificates).start()


def _port():
    return S["gw"].https_port


def _verified(*args, sni=h.SITE, ca=None):
    """s_client that must complete a handshake verified against ca for sni."""
    r = h.s_client(_port(), "-verify_return_error", "-verify_hostname", sni, *args, sni=sni,
                   ca=ca or S["www"].ca)
    h.check(r.handshake_ok, f"handshake {' '.join(args)} with SNI {sni} failed: {r.summary()}")
    h.check(r.verify_ok, f"certificate for {sni} did not verify: {r.summary()}")
    return r


def test_tls10_and_tls11_refused():
    for flag in ("-tls1", "-tls1_1"):
        # SECLEVEL=0 so that it is the server, not the local client policy, that refuses.
        r = h.s_client(_port(), flag, "-cipher", "DEFAULT:@SECLEVEL=0")
        if "no protocols available" in r.err:
            raise h.Skip(f"local openssl cannot offer {flag}")
        h.check(not r.handshake_ok, f"{flag} handshake succeeded: {r.summary()}")
        h.check(r.returncode != 0, f"openssl s_client {flag} exited 0: {r.summary()}")


def test_tls12_and_tls13_accepted():
    for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        r = _verified(flag)
        h.check(r.protocol == version, f"{flag}: negotiated {r.protocol}, expected {version}")


def test_sni_selects_certificate():
    r = _verified(sni=h.SITE)
    info = h.cert_info(r.cert_pem or "")
    h.check(h.SITE in info.names and API not in info.names, f"SNI {h.SITE} got a cert for {info.names}")

    r = _verified(sni=API, ca=S["api"].ca)
    info = h.cert_info(r.cert_pem or "")
    h.check(API in info.names and h.SITE not in info.names, f"SNI {API} got a cert for {info.names}")


def test_ecdsa_only_client_gets_ecdsa_certificate():
    for args in (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), ("-tls1_3", "-sigalgs", "ECDSA+SHA256")):
        r = _verified(*args)
        info = h.cert_info(r.cert_pem or "")
        h.check(info.key_type == "EC", f"{' '.join(args)}: got a {info.key_type} certificate")
        h.check(r.peer_signature_type == "ECDSA", f"{' '.join(args)}: peer signature {r.peer_signature_type}")


def test_rsa_only_client_gets_rsa_certificate():
    for args in (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"),
                 ("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256")):
        r = _verified(*args)
        info = h.cert_info(r.cert_pem or "")
        h.check(info.key_type == "RSA", f"{' '.join(args)}: got a {info.key_type} certificate")
        h.check(r.peer_signature_type in ("RSA", "RSA-PSS"),
                f"{' '.join(args)}: peer signature {r.peer_signature_type}")


def test_alpn_http11_negotiated():
    r = _verified("-alpn", "http/1.1")
    h.check(r.alpn == "http/1.1", f"ALPN: {r.alpn!r}, expected 'http/1.1' ({r.summary()})")


def test_tls12_without_ecdhe_refused():
    r = h.s_client(_port(), "-tls1_2", "-cipher", "AES128-GCM-SHA256")
    h.check(not r.handshake_ok, f"TLS 1.2 with AES128-GCM-SHA256 (RSA key exchange) accepted: {r.summary()}")
# MAIN globals()
