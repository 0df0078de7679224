"""monitoring/: the Prometheus alert rules and the Grafana dashboard against a
real gateway.

- every metric the rules and the dashboard name is one the gateway exposes:
  read from a running gateway's /metrics; the HA and ACME metrics (a gateway
  without an `ha` or `acme` section does not expose them) from the metric
  declarations of the master's HA and ACME blocks;
- a real Prometheus scrapes a running gateway with the shipped rules and
  fires RampartPoolDown once the app servers really stop (and nothing
  fires before).
"""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import harness as h
import pytest

pytestmark = pytest.mark.tools("curl", "openssl", "prometheus", "promtool")

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "rampart.rules.yml"
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
HEALTH = {"path": "/health", "interval": "300ms", "timeout": "250ms", "rise": 2, "fall": 2}


@pytest.fixture(scope="module")
def gw(certs, backends) -> h.Gateway:
    """One worker; health checks every 300 ms."""
    gw = h.Gateway(certs, dict(backends), workers=1)
    gw.config["gateway"]["pools"]["app"]["health"] = HEALTH
    gw.start()
    yield gw
    gw.stop()

def _metrics_text(gw) -> str:
    with urllib.request.urlopen(f"http://{h.LOOPBACK}:{gw.admin_port}/metrics", timeout=30) as r:
        return r.read().decode()


def _names_used() -> dict[str, set[str]]:
    """Metric names in the rules' and the dashboard's queries, by file."""
    # Every line of the rules but comments and annotations (alert names are
    # CamelCase: only metric names match).
    lines = [line for line in RULES.read_text().splitlines()
             if not line.lstrip().startswith(("#", "summary:", "description:"))]
    rules = set(re.findall(r"\b(rampart_[a-z0-9_]+)", "\n".join(lines)))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]
    return {"rules": rules, "dashboard": set(re.findall(r"\b(rampart_[a-z0-9_]+)", "\n".join(exprs)))}


def test_every_metric_named_is_one_the_gateway_exposes(gw):
    text = _metrics_text(gw)
    exposed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exposed.add(name)
            if kind == "histogram":
                exposed.update({name + "_bucket", name + "_sum", name + "_count"})
    # The HA and ACME blocks' metrics, as the master declares them (admin.cpp).
    source = (ROOT / "gateway" / "control" / "admin.cpp").read_text()
    ha_declared = set(re.findall(r'metric\(out, "((?:rampart_vrrp|rampart_ha)_[a-z0-9_]+)"', source))
    h.check(len(ha_declared) >= 8, f"HA metric declarations not found in admin.cpp: {ha_declared}")
    acme_declared = set(re.findall(r'metric\(\s*out,\s*"(rampart_acme_[a-z0-9_]+)"', source))
    h.check({"rampart_acme_consecutive_failures", "rampart_acme_peer_transfers_total"} <= acme_declared,
            f"ACME metric declarations not found in admin.cpp: {acme_declared}")
    ha_declared |= acme_declared
    used = _names_used()
    h.check(len(used["rules"]) >= 10 and len(used["dashboard"]) >= 10, f"too few names found: {used}")
    for where, names in used.items():
        unknown = sorted(n for n in names if n not in exposed and n not in ha_declared)
        h.check(not unknown, f"{where} name metrics the gateway does not expose: {unknown}")
    # The ones that are not HA or ACME must be live on this gateway, not only
    # declared (test_acme.py and test_acme_pair.py read the ACME ones live).
    for where, names in used.items():
        for n in names:
            if not n.startswith(("rampart_vrrp_", "rampart_ha_")) and n not in acme_declared:
                h.check(n in exposed, f"{where}: {n} not on /metrics")
    print(f"    rules: {len(used['rules'])} metrics, dashboard: {len(used['dashboard'])}, all exposed", flush=True)
    # A gateway without ha.ticket_secret_file makes its own ticket keys: what the
    # RampartTicketSecretMissing alert looks for on a node of a pair (test_ha checks the 1).
    h.check("\nrampart_tls_ticket_keys_shared 0\n" in text, "rampart_tls_ticket_keys_shared is not 0 here")


def _prometheus_get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://{h.LOOPBACK}:{port}{path}", timeout=10) as r:
        return json.loads(r.read().decode())


def _alerts(port: int) -> list[dict]:
    return _prometheus_get(port, "/api/v1/alerts")["data"]["alerts"]


def test_prometheus_fires_pool_down_when_the_app_servers_stop(gw, backends):
    work = h.temp_dir() / "prometheus"
    work.mkdir(parents=True, exist_ok=True)
    port = h.free_port()
    config = work / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: rampart
    static_configs: [{{ targets: ["{h.LOOPBACK}:{gw.admin_port}"] }}]
""")
    log = open(work / "prometheus.log", "w")
    proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address={h.LOOPBACK}:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def target_up():
            targets = _prometheus_get(port, "/api/v1/targets")["data"]["activeTargets"]
            return targets and targets[0]["health"] == "up"
        h.wait_until(lambda: _try(target_up), 60, 0.2, "Prometheus scraping the gateway")
        h.wait_until(lambda: _try(lambda: _prometheus_get(port, "/api/v1/rules")["data"]["groups"]), 30, 0.2,
                     "the rules loaded")
        time.sleep(3)  # a few evaluations with every server up
        # Firing only: a health check slow on a busy machine may make an
        # alert pending for a moment, which is what "for" is there to absorb.
        firing = [a for a in _alerts(port) if a["state"] == "firing"]
        h.check(not firing, f"alerts firing with every server up: {firing}")

        start = time.monotonic()
        backends.pop("app1").stop()
        backends.pop("app2").stop()

        def pool_down():
            for a in _alerts(port):
                if a["labels"].get("alertname") == "RampartPoolDown" and a["state"] == "firing":
                    return a
            return None
        alert = h.wait_until(lambda: _try(pool_down), 120, 0.5, "RampartPoolDown firing")
        took = time.monotonic() - start
        h.check(alert["labels"].get("pool") == "app" and alert["labels"].get("severity") == "page",
                f"alert labels {alert['labels']}")
        h.check(alert["annotations"]["summary"].startswith("Every server of pool app is down"),
                f"summary {alert['annotations']}")
        # for: 10s, after the health checks (fall 2 x 300 ms): never sooner.
        h.check(took >= 10, f"fired {took:.1f}s after the stop, before its 10 s 'for'")
        print(f"    RampartPoolDown firing {took:.1f}s after both app servers stopped", flush=True)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def _try(fn):
    try:
        return fn()
    except (OSError, ValueError, KeyError, IndexError):
        return None
