"""ACME in the VRRP pair: one issuer, no shared storage.

The lab of tests/support/ha_lab.py (gw1 priority 150, gw2 100, the VIP 192.0.2.10, app1 and app2),
with `gateway.tls.acme` in the deployment file and pebble (tests/support/pebble.py) in the client's
namespace at 192.0.2.100, its DNS answering every name with the VIP: validations go where the
site's clients go. Each gateway reads its own copy of the deployment file, whose relative
`state_dir` makes a state directory per node: nothing is shared on disk.

- gw1, holding the VIP, orders; gw2 gets the same certificate (same serial) from gw1 within seconds,
  sealed with a key derived from ha.ticket_secret_file, and never orders while gw1 holds the VIP;
- gw1's rampart is killed: gw2 takes the VIP and renews on its own (certificates live 90 s and are
  renewed a third of that, 30 s, before their end: renew_before 60s is longer);
- gw1 comes back with a ticket secret file that differs: what it asks gw2 for does not open, it is
  refused, counted and logged, and nothing is installed.

Needs root, ip netns, keepalived and pebble: otherwise skipped.
"""

import os
import re
import shutil
import time
from pathlib import Path

import harness as h
import ha_lab
import netns
import pebble as pebble_module
import pytest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.tools("ip")]
BUDGET_S = 240

VALIDITY_S = 90
RENEW_BEFORE = "60s"


class AcmeLab(ha_lab.HaLab):
    """The HA lab with ACME instead of the development certificates, and a copy of the deployment
    file per node (its relative state_dir, a directory per node)."""

    acme: dict = {}
    secret_override: dict[str, Path] = {}

    def deployment(self, advert_int=None) -> dict:
        config = super().deployment(advert_int)
        config["gateway"]["tls"] = {"acme": dict(self.acme)}
        return config

    def node_config(self, gw: str) -> Path:
        d = self.tmp / f"node-{gw}"
        d.mkdir(exist_ok=True)
        path = d / "deploy.yaml"
        text = Path(self.config).read_text()
        if gw in self.secret_override:
            text = text.replace(str(self.secret), str(self.secret_override[gw]))
        path.write_text(text)
        return path

    def start_rampart(self, gw: str) -> h.Process:
        shared, self.config = self.config, str(self.node_config(gw))
        try:
            return super().start_rampart(gw)
        finally:
            self.config = shared


def metric(lab, gw: str, name: str) -> float:
    return h.parse_metrics(lab.admin_get(gw, "/metrics")).get(name, 0)


def serial_served(lab, gw: str) -> str:
    """The serial of the certificate gw serves on its own address, seen from the client."""
    r = lab.lab.exec("client", ["openssl", "s_client", "-connect", f"{lab.hosts[gw]}:443", "-servername", h.SITE],
                     timeout=20)
    leaf = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout, re.S)
    if leaf is None:
        return ""
    out = lab.lab.exec("client", ["openssl", "x509", "-noout", "-serial"], input=leaf.group(0), timeout=20)
    return out.stdout.strip().removeprefix("serial=")


@pytest.fixture(scope="module")
def lab():
    reason = ha_lab.skip_reason(rampart_bin=h.rampart_bin()) or pebble_module.skip_reason()
    if reason:
        pytest.skip(reason)
    netns.install_signal_handlers()
    lab = AcmeLab("racme", h.rampart_bin(), http_port=80, peer_check="500ms")
    pebble = None
    try:
        lab.up()
        pebble = pebble_module.Pebble(lab.tmp, http_port=80, tls_port=443, validity_s=VALIDITY_S,
                                      host=lab.hosts["client"], answer=lab.vip, netns=(lab.lab, "client"))
        lab.acme = {"directory": pebble.directory_url, "names": [h.SITE], "key_types": ["ecdsa"],
                    "renew_before": RENEW_BEFORE, "ca_file": str(pebble.ca_file), "state_dir": "acme-state",
                    "retry_min": "1s", "retry_max": "5s"}
        lab.configure()
        pebble.start()
        lab.start_apps()
        lab.start_pair()
        lab.pebble = pebble
        yield lab
    finally:
        if pebble is not None:
            pebble.stop()  # before the lab: it runs in the client's namespace
        problems = lab.close()
        h.check(not problems, "; ".join(problems))


def test_holder_orders_and_the_peer_gets_the_same_certificate(lab):
    master = lab.wait_master(expected="gw1")
    h.wait_until(lambda: metric(lab, "gw1", 'rampart_acme_certificates_issued_total{key_type="ecdsa"}') >= 1, 60,
                 interval=0.5, what="gw1 issued a certificate")
    # gw2 gets it from gw1 within seconds: the same serial on both nodes.
    h.wait_until(lambda: (s := serial_served(lab, "gw1")) and s == serial_served(lab, "gw2"), 20, interval=0.5,
                 what="gw2 serving gw1's certificate")
    assert metric(lab, "gw2", 'rampart_acme_peer_transfers_total{result="installed"}') >= 1
    assert metric(lab, "gw2", 'rampart_acme_certificates_issued_total{key_type="ecdsa"}') == 0, \
        "gw2 ordered while gw1 held the VIP"
    assert metric(lab, "gw2", 'rampart_acme_peer_transfers_total{result="refused"}') == 0
    # Two state directories, one per node; the files are the node's own, 0600.
    for gw in ("gw1", "gw2"):
        f = lab.tmp / f"node-{gw}" / "acme-state" / f"{h.SITE}-ecdsa.pem"
        assert f.exists() and (os.stat(f).st_mode & 0o777) == 0o600, f
    assert master == "gw1"


def test_new_holder_renews_on_its_own(lab):
    before = metric(lab, "gw2", 'rampart_acme_certificates_issued_total{key_type="ecdsa"}')
    lab.inject("rampart", "gw1")
    h.wait_until(lambda: lab.holders() == ["gw2"], 20, interval=0.2, what="gw2 holding the VIP")
    old = serial_served(lab, "gw2")
    # Renewal is due 60 s after each issuance; gw2 renews by itself.
    h.wait_until(lambda: metric(lab, "gw2", 'rampart_acme_certificates_issued_total{key_type="ecdsa"}') > before,
                 VALIDITY_S, interval=1.0, what="gw2 renewing after the takeover")
    h.wait_until(lambda: serial_served(lab, "gw2") not in ("", old), 15, interval=0.5,
                 what="gw2 serving its renewed certificate")
    assert "acme: issued the ecdsa certificate" in lab.rampart["gw2"].read_stderr()


def test_a_different_secret_is_refused(lab):
    ha_lab.reap_tree(lab.rampart["gw1"])
    other = lab.tmp / "other.secret"
    other.write_text(os.urandom(32).hex() + "\n")
    os.chmod(other, 0o600)
    lab.secret_override["gw1"] = other
    state = lab.tmp / "node-gw1" / "acme-state" / f"{h.SITE}-ecdsa.pem"
    before = state.read_bytes()
    lab.start_rampart("gw1")
    h.wait_until(lambda: metric(lab, "gw1", 'rampart_acme_peer_transfers_total{result="refused"}') >= 1, 20,
                 interval=0.5, what="gw1 refusing what gw2 sealed with another secret")
    assert "does not open with this node's ha.ticket_secret_file" in lab.rampart["gw1"].read_stderr()
    assert metric(lab, "gw1", 'rampart_acme_peer_transfers_total{result="installed"}') == 0
    assert state.read_bytes() == before
    # gw1 is BACKUP now (no preemption): it does not order either.
    assert metric(lab, "gw1", 'rampart_acme_certificates_issued_total{key_type="ecdsa"}') == 0
    lab.secret_override.clear()
