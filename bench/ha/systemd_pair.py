#!/usr/bin/env python3
"""Failover of the gateway pair outside systemd and under it, side by side, in one run.

Outside systemd: the lab of tests/integration/test_ha.py (tests/support/ha_lab.py), rampart and
keepalived started directly in each gateway's network namespace. Under systemd: the same lab,
but each gateway is a booted Debian 12 container (tests/support/systemd_root.py: systemd-nspawn
``--boot --volatile=overlay`` of the cached root, joined to that gateway's namespace) with the
Debian package made from the build tree installed, the shipped rampart.service and Debian's
keepalived.service started by the container's systemd. Both setups use the same deployment
(advert_int 100ms, health every 100ms, the peer check every 200ms, track_process false) and the
same client: a new HTTPS connection to the VIP every ~20 ms from the client namespace.

For each fault on the current MASTER (rampart SIGKILL, keepalived SIGKILL, link down, all
backends lost, admin release) and each run, per failover: the VIP on the backup, the first
success through it, failed requests, and both nodes sampled every ~20 ms from the fault until
1 s after it at least (the samples in which both held the VIP). Under systemd the faults are
what an operator's machine would see: ``kill -9`` of the unit's main PID (systemd then runs
ExecStopPost and restarts the unit), keepalived's processes stopped and killed (systemd restarts
it or not, as Debian's unit says), and so on; repairs wait for systemd or start the unit.

    python3 bench/ha/systemd_pair.py --rampart BIN [--runs 1] [--out FILE]

BIN is <build>/cmd/rampart of a CMake build tree (the package is made there with cpack). Root,
ip netns, keepalived, systemd-nspawn and debootstrap are needed (SKIP and exit 77 otherwise).
Every loop is bounded; only processes this script started are stopped, by PID; the containers
are powered off and the namespaces removed at exit, also on failure. A benchmark, not a test:
nothing here asserts a timing; the exit code is 1 only when a failover did not happen.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
import harness as h  # noqa: E402
import ha_lab  # noqa: E402
import netns  # noqa: E402
import systemd_root as sr  # noqa: E402

KINDS = ["rampart", "keepalived", "link", "backends", "release"]
CONFIG = "/etc/rampart/rampart.yaml"
PEER_CHECK = "200ms"


class SystemdPair(ha_lab.HaLab):
    """HaLab whose gateways are containers booted under systemd, one per gateway namespace."""

    def __init__(self, tag: str, rampart_bin: str, **kw) -> None:
        super().__init__(tag, rampart_bin, peer_check=PEER_CHECK, **kw)
        self.containers: dict[str, sr.Container] = {}

    def up(self) -> "SystemdPair":
        super().up()
        # The share: the package, certificates, secrets and the deployment, read-only inside at
        # sr.SHARE. Keys and secrets keep their 0600 (root's on both sides).
        self.share = self.tmp
        deb = sr.make_deb(self.share)
        self.deb = deb.name
        root = sr.cached_root(sr.BASE_PACKAGES + sr.depends_packages(deb))
        for gw in ha_lab.GATEWAYS:
            c = sr.Container(root, self.lab.ns(gw), self.share).start()
            self.containers[gw] = c
            c.run(["dpkg", "-i", f"{sr.SHARE}/{self.deb}"], timeout=180)
        return self

    def inside(self, path: Path | str) -> str:
        """A host path under the share as the containers see it."""
        return f"{sr.SHARE}/{Path(path).relative_to(self.share)}"

    def deployment(self, advert_int: str | None = None) -> dict:
        config = super().deployment(advert_int)
        gw = config["gateway"]
        gw["tls"] = {"certificates": [{k: self.inside(v) for k, v in c.items()} for c in
                                      self.certs.certificates]}
        ha = config["ha"]
        ha["state_dir"] = "/run/rampart/ha"           # the unit's RuntimeDirectory
        ha["ticket_secret_file"] = self.inside(ha["ticket_secret_file"])
        ha["peer_check"]["secret_file"] = self.inside(ha["peer_check"]["secret_file"])
        for node in ha["nodes"].values():
            node.pop("keepalived_pid_file", None)      # Debian's keepalived: the defaults
        return config

    def configure(self, advert_int: str | None = None) -> str:
        self.advert_int = advert_int
        self.config = str(h.write_config(self.share / "deploy.yaml", self.deployment(advert_int)))
        for gw, c in self.containers.items():
            c.run(["install", "-m", "0640", self.inside(self.config), CONFIG])
            c.run(["rampart", "check", "-c", CONFIG])
            c.run(["rampart", "ha", "render", "-c", CONFIG, "--node", gw, "--out", "/etc/keepalived"])
            c.run(["keepalived", "--config-test", "-f", "/etc/keepalived/keepalived.conf"])
        return self.config

    def start_rampart(self, gw: str) -> None:
        # Type=notify: returns once the gateway listens.
        self.containers[gw].run(["systemctl", "start", "rampart.service"], timeout=60)

    def start_keepalived(self, gw: str) -> None:
        self.containers[gw].run(["systemctl", "restart", "keepalived.service"], timeout=60)

    def ha_status(self, gw: str) -> dict[str, str]:
        r = self.containers[gw].run(["rampart", "ha", "status", "-c", CONFIG], timeout=20, check=False)
        if r.returncode != 0:
            raise ha_lab.LabError(f"rampart ha status on {gw}: {sr.out(r)}")
        fields = {}
        for line in r.stdout.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
        return fields

    def host_pids(self, gw: str, *, ns_pid: int | None = None, comm: str | None = None) -> list[int]:
        """Host PIDs of the container's processes: the one whose PID inside is `ns_pid`, or those
        named `comm`."""
        found = []
        for pid in h.descendants(self.containers[gw].process.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            ids = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
            if (ns_pid is not None and len(ids) >= 2 and ids[-1] == str(ns_pid)) or (comm and name == comm):
                found.append(pid)
        return found

    def failover(self, kind: str, **kw) -> ha_lab.Failover:
        # The PIDs to kill are looked up before the fault's clock starts.
        holders = self.holders()
        master = holders[0] if len(holders) == 1 else None
        self.victims = []
        if master and kind == "rampart":
            self.victims = self.host_pids(master, ns_pid=self.containers[master].main_pid())
        elif master and kind == "keepalived":
            self.victims = self.host_pids(master, comm="keepalived")
        return super().failover(kind, **kw)

    def inject(self, kind: str, gw: str) -> None:
        if kind in ("rampart", "keepalived"):
            if not self.victims:
                raise ha_lab.LabError(f"{gw}: no {kind} process found to kill")
            # Every process stopped first, then killed: no clean shutdown (see ha_lab.kill_hard).
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in self.victims:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
        else:
            super().inject(kind, gw)

    def repair(self, kind: str, gw: str) -> None:
        c = self.containers[gw]
        if kind == "rampart":
            # Restart=on-failure (RestartSec=2s) brings it back; wait for that, bounded.
            deadline = time.monotonic() + 30
            while c.run(["systemctl", "is-active", "rampart.service"], check=False).stdout.strip() != "active":
                if time.monotonic() > deadline:
                    raise ha_lab.LabError(f"{gw}: rampart.service not active again 30 s after the SIGKILL")
                time.sleep(0.2)
            self.wait_ready(gw)
        elif kind == "keepalived":
            if c.run(["systemctl", "is-active", "keepalived.service"], check=False).stdout.strip() != "active":
                self.start_keepalived(gw)
            if gw == "gw2":  # the lower priority: its startup delay (from systemd's restart or ours)
                time.sleep(self.startup_delay_s())
        else:
            super().repair(kind, gw)

    def stop_pair(self) -> list[str]:
        problems = []
        for gw, c in self.containers.items():
            r = c.run(["systemctl", "stop", "keepalived.service", "rampart.service"], timeout=60, check=False)
            if r.returncode != 0:
                problems.append(f"{gw}: systemctl stop: {sr.out(r)}")
        return problems

    def close(self) -> list[str]:
        problems = []
        if not self.closed:
            problems += self.stop_pair()
            for gw, c in list(self.containers.items()):
                try:
                    c.stop()
                except h.ProcessError as e:
                    problems.append(str(e))
            self.containers.clear()
        return problems + super().close()


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def measure(lab: ha_lab.HaLab, kinds: list[str], runs: int, log) -> dict[str, list[ha_lab.Failover]]:
    results: dict[str, list[ha_lab.Failover]] = {k: [] for k in kinds}
    lab.configure()
    lab.start_apps()
    lab.start_pair()
    log(f"  {lab.wait_master(30)} is MASTER")
    for run in range(runs):
        for kind in kinds:
            res = lab.failover(kind)
            log(f"  run {run + 1} {ha_lab.FAULTS[kind]:<20} {res.master} -> {res.backup}: VIP after {ms(res.vip_s)} "
                f"ms, served by it after {ms(res.via_backup_s)} ms; {res.failed} failed of {res.total}; two "
                f"holders in {res.two_holders} of {res.samples} samples")
            results[kind].append(res)
    return results


def render(all_results: dict, kinds: list[str], runs: int) -> str:
    lines = [f"Failover, outside systemd and under it ({runs} run(s) each, medians; ms after the fault; the "
             "client opens a new HTTPS connection every ~20 ms; both nodes sampled every ~20 ms from the fault "
             "until 1 s after it at least)", "",
             "| fault on the MASTER | setup | VIP on the backup | first success via the backup | failed requests "
             "| samples with two holders |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for kind in kinds:
        for setup, results in all_results.items():
            rs = results.get(kind, [])
            if not rs:
                continue
            lines.append(f"| {ha_lab.FAULTS[kind]} | {setup} | {ms(median([r.vip_s for r in rs]))} | "
                         f"{ms(median([r.via_backup_s for r in rs]))} | "
                         f"{sum(r.failed for r in rs)} of {sum(r.total for r in rs)} | "
                         f"{sum(r.two_holders for r in rs)} of {sum(r.samples for r in rs)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rampart", required=True, help="<build>/cmd/rampart")
    ap.add_argument("--runs", type=int, default=1, help="runs per setup and fault kind (default 1)")
    ap.add_argument("--faults", default=",".join(KINDS), help=f"a subset of {','.join(KINDS)}")
    ap.add_argument("--out", help="write the markdown table here")
    ap.add_argument("--budget", type=int, default=1800, help="seconds the whole run may take (default 1800)")
    args = ap.parse_args()
    kinds = [k for k in args.faults.split(",") if k]
    runs = max(1, min(args.runs, 20))
    reason = ha_lab.skip_reason(rampart_bin=args.rampart)
    if reason is None:
        missing = [t for t in ("systemd-nspawn", "debootstrap", "nsenter", "cpack") if shutil.which(t) is None]
        reason = f"needs {', '.join(missing)}" if missing else None
    if reason:
        print(f"SKIP: {reason}", flush=True)
        return 77
    os.environ["RAMPART_BIN"] = str(Path(args.rampart).resolve())

    def log(msg: str) -> None:
        print(msg, flush=True)

    netns.install_signal_handlers()
    signal.alarm(args.budget)
    all_results: dict[str, dict] = {}
    failed = False
    for setup, cls, tag in (("outside systemd", ha_lab.HaLab, "rsp"), ("under systemd", SystemdPair, "rss")):
        log(f"[ha-systemd] {setup}")
        kw = {} if cls is SystemdPair else {"peer_check": PEER_CHECK}
        lab = cls(tag, args.rampart, log=log, **kw)
        try:
            lab.up()
            all_results[setup] = measure(lab, kinds, runs, log)
        except (ha_lab.LabError, AssertionError, h.Skip) as e:
            log(f"[ha-systemd] {setup}: FAILED: {e}")
            failed = True
        finally:
            for p in lab.close():
                log(f"[ha-systemd] cleanup: {p.splitlines()[0]}")
    signal.alarm(0)
    report = render(all_results, kinds, runs)
    print()
    print(report, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
