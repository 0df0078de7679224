#!/usr/bin/env python3
"""Firewall benchmark: `rampart firewall apply` (libnftnl, one netlink batch) against `nft -f`
of the same ruleset, whole process, in a network namespace of its own.

    python3 bench/firewall_bench.py --rampart BIN [--runs N] [--quick] [--elements N] [--out FILE]

Normally started by bench/firewall_bench.sh (root, installs nftables). For each real role policy
(the deployment of tests/integration/test_firewall.py: gateway, app, db-primary, db-replica) and
for the blocklist filled with N addresses (default 100,000, from 198.18.0.0/15, the benchmarking
range), it times N runs of each side, interleaved (rampart, nft, rampart, nft, ...), after one
warm-up run each, and prints the medians as a markdown table:

* wall: from fork to exit of the one process (rampart, or nft), measured here;
* CPU: user + system time of that process from wait4() (the kernel's work on the netlink batch
  runs in the sender's system time, so it is included);
* peak RSS of that process (VmHWM, sampled from /proc in one extra, untimed run per side);
* in force (role policies): from fork to the kernel's announcement of the new generation, the
  moment the new policy applies to packets. A second series of runs, with a netlink socket in the
  namespace subscribed to nftables events (NFNLGRP_NFTABLES), times the NFT_MSG_NEWGEN of each
  commit. The whole-process wall time above also holds the close of the process's netfilter
  socket, which waits for the kernel to free the replaced table one RCU grace period after the
  commit (both sides pay it; it is 5-20 ms here and moves in scheduler ticks), so "in force" is
  the figure that shows the tool's own speed. Listening makes the kernel build event messages in
  the committing process, for both sides alike, so CPU is taken from the first series only.

Role policies: both sides replace `table inet rampart` in one transaction every run: rampart
by design; the nft file is `table inet rampart` + `delete table inet rampart` + the `rampart
firewall plan` text, nft's own idiom for an atomic replace. Both must leave the same number of
rules (checked). Blocklist: `rampart firewall block ADDR... --timeout 1h` (the CLI's bulk path,
one batch) against `nft -f` of `add element inet rampart blocklist4 { ADDR timeout 1h, ... }`,
each into the emptied set of the applied gateway table; both must leave all N elements (checked).
Each child joins the namespace with setns() before exec, so no `ip netns exec` process or mount
namespace is timed.

Stdlib only. A benchmark is not a test: nothing asserts a timing. Exit 77 (SKIP) when not root,
without ip/nft, or when the binary has no firewall subcommand.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))
import netns  # noqa: E402

ROLES = {"gw1": "gateway", "gw2": "gateway", "app1": "app", "app2": "app", "db1": "db-primary",
         "db2": "db-replica"}
ADDRESSES = {"gw1": "192.0.2.11", "gw2": "192.0.2.12", "app1": "192.0.2.21", "app2": "192.0.2.22",
             "db1": "192.0.2.31", "db2": "192.0.2.32"}
BENCH_HOSTS = ["gw1", "app1", "db1", "db2"]  # one host per role
ELEMENT_NET = ipaddress.ip_network("198.18.0.0/15")
BLOCKLIST_TIMEOUT = "1h"


def die(msg: str, code: int = 1) -> None:
    print(msg, file=sys.stderr, flush=True)
    sys.exit(code)


def deployment_yaml(certs: Path) -> str:
    lines = ["site: www.foobar.com", "servers:"]
    for name, role in ROLES.items():
        port = ", port: 8080" if role == "app" else ""
        lines.append(f"  {name}: {{ address: {ADDRESSES[name]}, role: {role}{port} }}")
    lines += [
        "gateway:",
        '  listen: { https: "[::]:443", http: "[::]:80", admin: "192.0.2.11:9100" }',
        "  workers: 1",
        '  user: ""',
        "  tls:",
        f"    certificates: [ {{ cert: {certs}/ecdsa.pem, key: {certs}/ecdsa.key }} ]",
        "  pools:",
        "    app: { servers: [app1, app2] }",
        "firewall:",
        "  admin_networks: [198.51.100.0/24, 192.0.2.248/29]",
        "  ssh_port: 22",
        "  db_port: 3306",
    ]
    return "\n".join(lines) + "\n"


def element_addresses(n: int) -> list[str]:
    if n > ELEMENT_NET.num_addresses - 2:
        die(f"at most {ELEMENT_NET.num_addresses - 2} elements fit in {ELEMENT_NET}")
    base = int(ELEMENT_NET.network_address) + 1
    return [str(ipaddress.IPv4Address(base + i)) for i in range(n)]


def child_setup(ns: str):
    """preexec_fn: join ns; a 256 MiB stack limit, so that execve's argument space (a quarter of
    it) holds 100,000 addresses on the command line of `rampart firewall block`."""
    enter = netns.preexec_enter(ns)

    def setup() -> None:
        enter()
        soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
        want = 256 * 2**20
        if hard == resource.RLIM_INFINITY or hard >= want:
            resource.setrlimit(resource.RLIMIT_STACK, (want, hard))

    return setup


class Timed:
    """One finished run: exit code, wall seconds, CPU seconds, output; with a CommitClock, the
    seconds from fork until the kernel announced the run's commit (None when it did not)."""

    def __init__(self, rc: int, wall: float, cpu: float, err: str, in_force: float | None = None) -> None:
        self.rc, self.wall, self.cpu, self.err, self.in_force = rc, wall, cpu, err, in_force


NFNLGRP_NFTABLES = 7
NFT_MSG_NEWGEN_TYPE = (10 << 8) | 15  # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN
SO_RCVBUFFORCE = 33


class CommitClock:
    """Times nftables commits in a namespace: a netlink socket there joins NFNLGRP_NFTABLES and a
    thread stamps every NFT_MSG_NEWGEN (one per committed batch) with time.perf_counter()."""

    def __init__(self, ns: str) -> None:
        self.sock = netns.socket_in_ns(ns, socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 * 2**20)
        self.sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
        self.sock.settimeout(0.2)
        self.stamps: list[float] = []
        self.overruns = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:  # ENOBUFS: events were lost; the affected run is left out
                with self.lock:
                    self.overruns += 1
                continue
            now = time.perf_counter()
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == NFT_MSG_NEWGEN_TYPE:
                    with self.lock:
                        self.stamps.append(now)
                if length < 16:
                    break
                off += (length + 3) & ~3

    def commit_after(self, t0: float, t1: float) -> float | None:
        """Seconds from t0 to the one commit announced between t0 and t1 (None: none, several,
        or events lost)."""
        deadline = time.monotonic() + 1.0  # the reader may still hold the last datagram
        while time.monotonic() < deadline:
            with self.lock:
                seen = [t for t in self.stamps if t0 <= t <= t1 + 0.05]
                lost = self.overruns
            if seen:
                break
            time.sleep(0.001)
        with self.lock:
            self.stamps = [t for t in self.stamps if t > t1 + 0.05]
            self.overruns = 0
        return seen[0] - t0 if len(seen) == 1 and not lost else None

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


def run_timed(argv: list[str], ns: str, timeout: float = 120.0, clock: CommitClock | None = None) -> Timed:
    """argv as a child that joins ns before exec; wall time fork..exit, CPU from wait4; with a
    clock, also the time until its commit was announced."""
    err_file = tempfile.TemporaryFile()
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file,
                             preexec_fn=child_setup(ns))
        # A blocking wait4 (no polling loop competing for a CPU); a timer kills a hung child by PID.
        guard = threading.Timer(timeout, lambda: os.kill(p.pid, signal.SIGKILL))
        guard.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t0
        finally:
            guard.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        err_file.seek(0)
        err = err_file.read().decode(errors="replace")
        in_force = clock.commit_after(t0, t0 + wall) if clock else None
        return Timed(p.returncode, wall, ru.ru_utime + ru.ru_stime, err, in_force)
    finally:
        err_file.close()


def sampled_peak_rss(argv: list[str], ns: str, timeout: float = 120.0) -> int:
    """Peak RSS (VmHWM) of one run of argv, sampled from /proc every ~0.2 ms until it exits.
    wait4's ru_maxrss cannot be used: a child forked from Python keeps the high-water mark of
    the Python image it was forked from across exec."""
    peak = 0
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, preexec_fn=child_setup(ns))
        deadline = time.monotonic() + timeout
        exe = os.path.basename(argv[0])
        while p.poll() is None and time.monotonic() < deadline:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    status = f.read()
            except OSError:
                break
            m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
            if m and f"Name:\t{exe[:15]}" in status:  # after exec only
                peak = max(peak, int(m.group(1)) * 1024)
            time.sleep(0.0002)
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return peak


def run(argv: list[str], ns: str | None = None, timeout: float = 120.0, input: str | None = None):
    full = ["ip", "netns", "exec", ns, *argv] if ns else argv
    return subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)


def count_rules(ns: str) -> int:
    r = run(["nft", "-a", "list", "table", "inet", "rampart"], ns)
    # rules are the lines that end in "# handle N" and are not a table, chain or set header
    return sum(1 for line in r.stdout.splitlines()
               if re.search(r"# handle \d+$", line) and not re.match(r"\s*(table|chain|set|map|flowtable) ", line))


def count_elements(ns: str, set_name: str) -> int:
    r = run(["nft", "list", "set", "inet", "rampart", set_name], ns, timeout=300)
    return len(re.findall(r"\b198\.1[89]\.\d+\.\d+\b", r.stdout))


def blocklist_set_name(plan: str) -> str | None:
    m = re.search(r"^\s*set (\S*block\S*) \{", plan, re.M)
    return m.group(1) if m else None


def element_text(addrs: list[str], timeout: str | None) -> str:
    suffix = f" timeout {timeout}" if timeout else ""
    return ", ".join(a + suffix for a in addrs)


def replace_file(plan: str) -> str:
    head = "" if "delete table inet rampart" in plan else "table inet rampart\ndelete table inet rampart\n"
    return head + plan


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000.0


def fmt_ms(v: float) -> str:
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def measure(label: str, rampart_argv: list[str], nft_argv: list[str], ns: str, runs: int,
            before_each=None, in_force: bool = False) -> dict:
    """runs timed runs per side, interleaved, after one warm-up each; then one untimed run per
    side for the peak RSS. before_each() runs (untimed) before every run of either side. With
    in_force, a second series of as many runs with a CommitClock gives "<side>_in_force"."""
    results: dict = {"rampart": [], "nft": [], "rampart_in_force": [], "nft_in_force": []}
    sides = (("rampart", rampart_argv), ("nft", nft_argv))
    for clocked in ((False, True) if in_force else (False,)):
        clock = CommitClock(ns) if clocked else None
        try:
            for i in range(runs + 1):  # run 0 is the warm-up
                for side, argv in sides:
                    if before_each:
                        before_each()
                    t = run_timed(argv, ns, clock=clock)
                    if t.rc != 0:
                        die(f"{label}: {side} failed (exit {t.rc}): {' '.join(argv[:8])} ...\n{t.err[-2000:]}")
                    if i == 0:
                        continue
                    if not clocked:
                        results[side].append(t)
                    elif t.in_force is not None:
                        results[side + "_in_force"].append(t.in_force)
        finally:
            if clock:
                clock.close()
    for side, argv in sides:
        if before_each:
            before_each()
        results[side + "_rss"] = sampled_peak_rss(argv, ns)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rampart", required=True)
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--elements", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="3 runs (smoke test)")
    ap.add_argument("--out", default="/tmp/rampart-firewall-bench.md")
    args = ap.parse_args()
    runs = 3 if args.quick else max(1, min(args.runs, 1000))
    rampart = str(Path(args.rampart).resolve())

    reason = netns.skip_reason(("ip", "nft"))
    if reason:
        print(f"SKIP: {reason}", flush=True)
        return 77
    usage = run([rampart])
    if "firewall" not in usage.stdout + usage.stderr:
        print(f"SKIP: {rampart} has no firewall subcommand", flush=True)
        return 77
    netns.install_signal_handlers()

    tmp = Path(tempfile.mkdtemp(prefix="rampart-fwbench-"))
    lab = netns.Lab("rfwb")
    try:
        ns = lab.add_namespace("bench")
        lab.up()
        r = run([rampart, "certs", "dev", "--out", str(tmp / "certs")])
        if r.returncode != 0:
            die(f"rampart certs dev: {r.stderr}")
        cfg = tmp / "deploy.yaml"
        cfg.write_text(deployment_yaml(tmp / "certs"))
        r = run([rampart, "check", "-c", str(cfg)])
        if r.returncode != 0:
            die(f"rampart check rejects the benchmark deployment:\n{r.stderr}")
        state = tmp / "state"
        state.mkdir()

        rows = []
        nft_version = run(["nft", "--version"]).stdout.strip()
        for host in BENCH_HOSTS:
            plan = run([rampart, "firewall", "plan", "-c", str(cfg), "--host", host])
            if plan.returncode != 0:
                die(f"plan --host {host}: {plan.stderr}")
            nft_file = tmp / f"{host}.nft"
            nft_file.write_text(replace_file(plan.stdout))
            argv = [rampart, "firewall", "apply", "-c", str(cfg), "--host", host, "--state-dir", str(state)]
            print(f"[fwbench] {ROLES[host]} ({host}): {runs} runs each", file=sys.stderr, flush=True)
            res = measure(ROLES[host], argv, ["nft", "-f", str(nft_file)], ns, runs, in_force=True)
            rules_nft = count_rules(ns)
            run_timed(argv, ns)
            rules_rampart = count_rules(ns)
            if rules_nft != rules_rampart:
                die(f"{host}: nft -f left {rules_nft} rules, rampart apply {rules_rampart}")
            rows.append((f"{ROLES[host]} policy ({host})", rules_rampart, 0, res))

        # The blocklist: N addresses into the gateway's blocklist set, which `rampart firewall block
        # ADDR...` fills in one batch (the CLI's bulk path); nft -f adds the same elements with the
        # same timeout. The set is flushed (untimed) before every run, so each run adds all N.
        host = "gw1"
        plan = run([rampart, "firewall", "plan", "-c", str(cfg), "--host", host]).stdout
        set_name = blocklist_set_name(plan)
        if set_name is None:
            die("no blocklist set in the gateway's plan")
        r = run([rampart, "firewall", "apply", "-c", str(cfg), "--host", host, "--state-dir", str(state)], ns)
        if r.returncode != 0:
            die(f"apply --host {host}: {r.stderr}")
        addrs = element_addresses(args.elements)
        elements_nft = tmp / "elements.nft"
        elements_nft.write_text(f"add element inet rampart {set_name} {{ {element_text(addrs, BLOCKLIST_TIMEOUT)} }}\n")
        block_argv = [rampart, "firewall", "block", *addrs, "--timeout", BLOCKLIST_TIMEOUT]
        nft_argv = ["nft", "-f", str(elements_nft)]

        def flush() -> None:
            f = run(["nft", "flush", "set", "inet", "rampart", set_name], ns)
            if f.returncode != 0:
                die(f"nft flush set {set_name}: {f.stderr}")

        print(f"[fwbench] blocklist of {len(addrs):,}: {runs} runs each", file=sys.stderr, flush=True)
        res = measure("blocklist", block_argv, nft_argv, ns, runs, before_each=flush)
        for side, argv in (("rampart", block_argv), ("nft", nft_argv)):
            flush()
            t = run_timed(argv, ns)
            time.sleep(2.5)  # a dump right after a big load may repeat elements (FIREWALL-NOTES.md)
            n = count_elements(ns, set_name)
            if t.rc != 0 or n != len(addrs):
                die(f"blocklist: after {side} (exit {t.rc}) the set holds {n} of {len(addrs)} elements")
        rows.append((f"blocklist: {len(addrs):,} addresses into {set_name} (`firewall block ADDR...`)",
                     None, len(addrs), res))

        table = render(rows, runs, nft_version)
        print(table, flush=True)
        Path(args.out).write_text(table + "\n")
        print(f"[fwbench] written to {args.out}", file=sys.stderr)
        return 0
    finally:
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


def render(rows, runs: int, nft_version: str) -> str:
    out = [
        f"### rampart firewall apply vs nft -f (medians of {runs} runs, whole process)",
        "",
        "| ruleset | rules | set elements | rampart in force ms | nft -f in force ms | in-force ratio nft/rampart "
        "| rampart wall ms | nft -f wall ms | wall ratio nft/rampart "
        "| rampart CPU ms | nft -f CPU ms | CPU ratio nft/rampart | rampart peak RSS MiB | nft -f peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, rules, elements, res in rows:
        rw = median_ms([t.wall for t in res["rampart"]])
        nw = median_ms([t.wall for t in res["nft"]])
        rc = median_ms([t.cpu for t in res["rampart"]])
        nc = median_ms([t.cpu for t in res["nft"]])
        rr = res["rampart_rss"] / 2**20
        nr = res["nft_rss"] / 2**20
        shown_rules = "–" if rules is None else str(rules)
        if res["rampart_in_force"] and res["nft_in_force"]:
            rf = median_ms(res["rampart_in_force"])
            nf = median_ms(res["nft_in_force"])
            forced = f"{fmt_ms(rf)} | {fmt_ms(nf)} | {nf / rf:.2f}×"
        else:
            forced = "– | – | –"
        out.append(f"| {label} | {shown_rules} | {elements:,} | {forced} | {fmt_ms(rw)} | {fmt_ms(nw)} | {nw / rw:.2f}× "
                   f"| {fmt_ms(rc)} | {fmt_ms(nc)} | {nc / rc if rc else float('inf'):.2f}× | {rr:.1f} | {nr:.1f} |")
    out += ["", f"Ratios above 1 mean rampart is faster / cheaper. In force: fork until the kernel announced "
                f"the commit (second series of runs, listening to nftables events). Wall: fork until exit, "
                f"including the kernel's RCU grace period at socket close. {nft_version}; kernel "
                f"{os.uname().release}; {os.cpu_count()} CPUs."]
    return "\n".join(out)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:  # SIGINT/SIGTERM/SIGHUP: the namespace is already removed
        print(f"[fwbench] interrupted ({e})", file=sys.stderr)
        sys.exit(130)
