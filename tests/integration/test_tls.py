"""TLS front end: protocol versions, SNI, ECDSA/RSA selection, ALPN, cipher policy.

One gateway serves two certificate sets: the default one for www.foobar.com and
a second one made with ``rampart certs dev --name api.example.test`` (each set
is an ECDSA + RSA pair). Every check uses the real ``openssl s_client``.
"""

import harness as h
import pytest

API = "api.example.test"


@pytest.fixture(scope="module")
def www() -> h.CertSet:
    return h.make_certs(h.temp_dir() / "certs-www")


@pytest.fixture(scope="module")
def api() -> h.CertSet:
    return h.make_certs(h.temp_dir() / "certs-api", [API])


@pytest.fixture(scope="module")
def port(www, api) -> int:
    """The HTTPS port of a gateway with the www and the api certificates."""
    app = h.Backend("app1").start()
    return h.Gateway(www, {"app1": app}, http=False, extra_certificates=api.certificates).start().https_port


def _verified(port, www, *args, sni=h.SITE, ca=None):
    """s_client that must complete a handshake verified against ca for sni."""
    r = h.s_client(port, "-verify_return_error", "-verify_hostname", sni, *args, sni=sni,
                   ca=ca or www.ca)
    h.check(r.handshake_ok, f"handshake {' '.join(args)} with SNI {sni} failed: {r.summary()}")
    h.check(r.verify_ok, f"certificate for {sni} did not verify: {r.summary()}")
    return r


def test_tls10_and_tls11_refused(port):
    for flag in ("-tls1", "-tls1_1"):
        # SECLEVEL=0 so that it is the server, not the local client policy, that refuses.
        r = h.s_client(port, flag, "-cipher", "DEFAULT:@SECLEVEL=0")
        if "no protocols available" in r.err:
            pytest.skip(f"local openssl cannot offer {flag}")
        h.check(not r.handshake_ok, f"{flag} handshake succeeded: {r.summary()}")
        h.check(r.returncode != 0, f"openssl s_client {flag} exited 0: {r.summary()}")


def test_tls12_and_tls13_accepted(port, www):
    for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        r = _verified(port, www, flag)
        h.check(r.protocol == version, f"{flag}: negotiated {r.protocol}, expected {version}")


def test_sni_selects_certificate(port, www, api):
    r = _verified(port, www, sni=h.SITE)
    info = h.cert_info(r.cert_pem or "")
    h.check(h.SITE in info.names and API not in info.names, f"SNI {h.SITE} got a cert for {info.names}")

    r = _verified(port, www, sni=API, ca=api.ca)
    info = h.cert_info(r.cert_pem or "")
    h.check(API in info.names and h.SITE not in info.names, f"SNI {API} got a cert for {info.names}")


def test_ecdsa_only_client_gets_ecdsa_certificate(port, www):
    for args in (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), ("-tls1_3", "-sigalgs", "ECDSA+SHA256")):
        r = _verified(port, www, *args)
        info = h.cert_info(r.cert_pem or "")
        h.check(info.key_type == "EC", f"{' '.join(args)}: got a {info.key_type} certificate")
        h.check(r.peer_signature_type == "ECDSA", f"{' '.join(args)}: peer signature {r.peer_signature_type}")


def test_rsa_only_client_gets_rsa_certificate(port, www):
    for args in (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"),
                 ("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256")):
        r = _verified(port, www, *args)
        info = h.cert_info(r.cert_pem or "")
        h.check(info.key_type == "RSA", f"{' '.join(args)}: got a {info.key_type} certificate")
        h.check(r.peer_signature_type in ("RSA", "RSA-PSS"),
                f"{' '.join(args)}: peer signature {r.peer_signature_type}")


def test_alpn_http11_negotiated(port, www):
    r = _verified(port, www, "-alpn", "http/1.1")
    h.check(r.alpn == "http/1.1", f"ALPN: {r.alpn!r}, expected 'http/1.1' ({r.summary()})")


def test_tls12_without_ecdhe_refused(port):
    r = h.s_client(port, "-tls1_2", "-cipher", "AES128-GCM-SHA256")
    h.check(not r.handshake_ok, f"TLS 1.2 with AES128-GCM-SHA256 (RSA key exchange) accepted: {r.summary()}")
