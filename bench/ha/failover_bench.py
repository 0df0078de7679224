#!/usr/bin/env python3
"""Failover of the gateway pair: time and failed requests per fault kind, advert_int 100ms vs 1s.

Builds the lab of tests/integration/test_ha.py (tests/support/ha_lab.py: client, gw1, gw2, app1,
app2 in network namespaces on one bridge, TEST-NET addresses; the real rampart and keepalived on
each gateway, keepalived.conf from ``rampart ha render``; the sample app on the app servers) and,
for each setting (Rampart's default ``advert_int`` of 100ms, then keepalived's usual 1s) and each
run, faults the current MASTER with each fault kind in turn while a client in its own namespace
opens a new HTTPS connection to the VIP every ~20 ms (0.25 s connect timeout, 0.5 s request
timeout). Per failover:

* VIP takeover: fault -> the backup holds the VIP (polled every ~20 ms);
* service back: fault -> the end of the first successful request that started after the last
  failed one (0 when no request failed: the client saw no outage);
* failed: requests that failed and ended after the fault.

Then the old MASTER is repaired and must come back as BACKUP (no preemption: the VIP stays).
The pair is restarted for every (run, setting); the settings alternate in order from run to run.
Prints a markdown table (medians over the runs, both settings side by side, and their ratio) and
writes it to --out.

    python3 bench/ha/failover_bench.py --rampart BIN [--runs 3] [--quick] [--out FILE]

Root, ``ip netns`` and keepalived are needed (installed with apt-get when missing): otherwise
``SKIP: ...`` and exit 77. Every loop is bounded in count and time, the whole run by --budget;
only processes this script started are stopped, by PID; the namespaces (and so every link) are
removed at exit, also on failure and Ctrl-C. A benchmark is not a test: nothing here asserts a
timing; the exit code is 1 only when a failover did not happen or the pair misbehaved.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
import ha_lab  # noqa: E402
import netns  # noqa: E402

KINDS = ["rampart", "keepalived", "link", "backends", "release"]
SETTINGS = [("default", None), ("1s", "1s")]   # (label, advert_int in the deployment file)
LABEL = {"default": "advert_int 100ms (default)", "1s": "advert_int 1s"}


class BudgetExceeded(BaseException):
    pass


def on_alarm(signum, frame):
    raise BudgetExceeded("the benchmark exceeded its --budget")


def ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1000:.0f}"


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_count(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    """a / b, or a word when it means nothing."""
    if a is None or b is None:
        return "—"
    if b <= 0:
        return "n/a (no outage)" if a <= 0 else "n/a (no outage at 100ms)"
    return f"{a / b:.1f}×"


def reset(lab: ha_lab.HaLab, log) -> None:
    """After a failed failover: stop the pair, undo every fault, start it again."""
    for p in lab.stop_pair():
        log(f"  (while stopping: {p.splitlines()[0]})")
    for gw in ha_lab.GATEWAYS:
        lab.lab.exec(gw, ["ip", "link", "set", lab.ifname(gw), "up"])
        for app in lab.apps:
            lab.lab.exec(gw, ["ip", "route", "del", "blackhole", f"{lab.hosts[app]}/32"])
    lab.start_pair()
    lab.wait_master(20)


def keepalived_version() -> str:
    r = subprocess.run(["keepalived", "--version"], capture_output=True, text=True, timeout=10)
    line = (r.stderr or r.stdout).strip().splitlines()
    return line[0] if line else "keepalived ?"


def render(results: dict, kinds: list[str], runs: int, bin_path: str, elapsed: float) -> str:
    """The markdown report: the side-by-side table of medians, then every run."""
    lines = [
        f"# Gateway pair failover: advert_int 100ms (default) vs 1s — {time.strftime('%Y-%m-%d')}",
        "",
        f"`bench/ha/run.sh`, {runs} run(s) per setting and fault, medians; {os.cpu_count()} CPUs, "
        f"kernel {platform.release()}, {keepalived_version()}, `{bin_path}`; {elapsed / 60:.1f} min.",
        "Lab: client, gw1 (priority 150), gw2 (priority 100), app1, app2 in network namespaces on one bridge; "
        "VRRPv3, unicast, no preemption; pool health checks every 200 ms (fall 2); the client opens a new "
        "HTTPS connection to the VIP every 20 ms (connect timeout 0.25 s, request timeout 0.5 s). "
        "Times in ms after the fault: **VIP** = the backup holds the VIP, **back** = end of the first "
        "success after the last failed request (0: the client saw no outage), **failed** = failed requests.",
        "",
        "| fault (on the MASTER) | master → backup | default: VIP | default: back | default: failed "
        "| 1s: VIP | 1s: back | 1s: failed | VIP 1s / default | back 1s / default |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in kinds:
        row = [ha_lab.FAULTS[kind]]
        pairs = {r.master + " → " + r.backup for label, _ in SETTINGS for r in results[label][kind] if not r.error}
        row.append(", ".join(sorted(pairs)) or "—")
        meds = {}
        for label, _ in SETTINGS:
            ok = [r for r in results[label][kind] if not r.error]
            vip = med([r.vip_s for r in ok])
            back = med([r.back_s for r in ok if r.back_s is not None])
            failed = med([r.failed for r in ok])
            meds[label] = (vip, back)
            note = "" if len(ok) == len(results[label][kind]) else f" ({len(ok)}/{len(results[label][kind])} ok)"
            row += [ms(vip) + note, ms(back), fmt_count(failed)]
        row.append(ratio(meds["1s"][0], meds["default"][0]))
        row.append(ratio(meds["1s"][1], meds["default"][1]))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Every run (VIP / back / backup serving / failed of requests, ms):", ""]
    for label, _ in SETTINGS:
        lines.append(f"- {LABEL[label]}:")
        for kind in kinds:
            cells = []
            for r in results[label][kind]:
                if r.error:
                    cells.append(f"error: {r.error}")
                else:
                    cells.append(f"{ms(r.vip_s)} / {ms(r.back_s)} / {ms(r.via_backup_s)} / {r.failed} of {r.total}")
            lines.append(f"  - {ha_lab.FAULTS[kind]}: " + "; ".join(cells))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rampart", required=True, help="the rampart binary")
    ap.add_argument("--runs", type=int, default=3, help="runs per setting and fault kind (default 3)")
    ap.add_argument("--quick", action="store_true", help="one run (smoke test)")
    ap.add_argument("--faults", default=",".join(KINDS),
                    help=f"comma-separated subset of {','.join(KINDS)} (default: all)")
    ap.add_argument("--out", help="write the markdown table here")
    ap.add_argument("--budget", type=int, default=3600, help="seconds the whole run may take (default 3600)")
    args = ap.parse_args()
    runs = 1 if args.quick else max(1, min(args.runs, 50))
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        print(f"failover_bench: unknown fault kind(s) {unknown}; known: {KINDS}", file=sys.stderr)
        return 2

    reason = ha_lab.skip_reason(rampart_bin=args.rampart)
    if reason:
        print(f"SKIP: {reason}", flush=True)
        return 77

    def log(msg: str) -> None:
        print(msg, flush=True)

    netns.install_signal_handlers()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.budget)
    t_start = time.monotonic()
    results = {label: {k: [] for k in kinds} for label, _ in SETTINGS}
    failures = 0
    lab = ha_lab.HaLab("rhab", args.rampart, log=log)
    try:
        lab.up()
        lab.start_apps()
        log(f"[ha-bench] lab {lab.lab.prefix}: {', '.join(f'{n} {a}' for n, a in lab.hosts.items())}, VIP {lab.vip}")
        for run in range(runs):
            order = SETTINGS if run % 2 == 0 else list(reversed(SETTINGS))
            for label, advert in order:
                lab.configure(advert)
                lab.start_pair()
                master = lab.wait_master(20)
                log(f"[ha-bench] run {run + 1}/{runs}, {LABEL[label]}: {master} is MASTER")
                for kind in kinds:
                    try:
                        res = lab.failover(kind)
                        log(f"  {ha_lab.FAULTS[kind]:<20} {res.master} -> {res.backup}: VIP after {ms(res.vip_s)} ms, "
                            f"service back after {ms(res.back_s)} ms, backup serving after {ms(res.via_backup_s)} "
                            f"ms; {res.failed} failed of {res.total}")
                    except ha_lab.LabError as e:
                        failures += 1
                        res = ha_lab.Failover(kind, "?", "?", error=str(e).splitlines()[0][:200])
                        log(f"  {ha_lab.FAULTS[kind]:<20} FAILED: {e}")
                        reset(lab, log)
                    results[label][kind].append(res)
                for p in lab.stop_pair():
                    log(f"  (while stopping: {p.splitlines()[0]})")
    except (KeyboardInterrupt, BudgetExceeded) as e:
        log(f"[ha-bench] interrupted: {e}")
        failures += 1
    finally:
        signal.alarm(0)
        for p in lab.close():
            log(f"[ha-bench] cleanup: {p.splitlines()[0]}")
    if not any(results[label][k] for label, _ in SETTINGS for k in kinds):
        return 1
    report = render(results, kinds, runs, args.rampart, time.monotonic() - t_start)
    print()
    print(report, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
        log(f"[ha-bench] written to {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
