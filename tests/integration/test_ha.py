#!/usr/bin/env python3
"""HA: two gateways, each running the real keepalived and the real ``rampart serve``, share a VRRP VIP.

Topology (tests/support/netns.py, one bridge, TEST-NET 192.0.2.0/24 only):

    client   192.0.2.100   HTTPS to the VIP every ~20 ms during a fault
    gw1      192.0.2.11    rampart + keepalived (priority 150), keepalived.conf from ``rampart ha render``
    gw2      192.0.2.12    rampart + keepalived (priority 100)
    app1     192.0.2.21    tests/support/backend.py on :8080
    app2     192.0.2.22    tests/support/backend.py on :8080
    VIP      192.0.2.10/24

The deployment is the issue's defaults (VRRPv3, advert_int 100ms, unicast, no preemption), with
fast pool health checks (200ms, fall 2) so that losing the backends is seen quickly, one ticket
secret file for both gateways, and ``health.track_process: false`` (keepalived's process events
exist only in the initial network namespace; the master's sentinel reports its death instead).

Tests:

* converged: exactly one gateway holds the VIP (gw1, the higher priority), HTTPS through it works,
  ``rampart ha status`` and /metrics agree;
* failover when, on the current MASTER, (a) rampart is killed with SIGKILL, (b) keepalived is killed
  with SIGKILL, (c) the link goes down, (d) every backend becomes unreachable while the peer still
  reaches them, (e) it is released through the admin API (POST /api/ha/release). Each: a bounded
  client loop measures fault -> first success and the failed requests; the bound asserted is
  generous (FAILOVER_BOUND_S), the figures are printed;
* after each fault is repaired, the old MASTER comes back as BACKUP and does not take the VIP back
  (no preemption), and at every sample exactly one node holds the VIP (no split brain);
* a TLS session established through gw1 is resumed through gw2 after the failover (shared ticket keys).

The lab, its processes, the client loop and the faults are tests/support/ha_lab.py's ``HaLab``
(also behind bench/ha and the deployment demo); this script holds the assertions.

Needs root, ``ip netns`` and keepalived (installed with apt-get when missing): otherwise SKIP (77).
Every loop is bounded in count and time; only processes this script started are stopped, by PID;
the namespaces (and so every link) are removed at exit, also on failure.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import harness as h  # noqa: E402
import netns  # noqa: E402
import ha_lab  # noqa: E402

FAILOVER_BOUND_S = 3.0   # asserted; the target (< 1 s) is what is printed and benchmarked
TAKEOVER_LIMIT_S = 8.0   # the backup polled for the VIP this long at most (every ~20 ms)
REJOIN_TIMEOUT_S = 15.0  # the repaired old MASTER back as a healthy BACKUP within this
SAMPLE_S = 1.5           # after the repair, exactly one VIP holder at every sample for this long

S: dict = {}


def lab() -> ha_lab.HaLab:
    return S["lab"]


# ---------------------------------------------------------------------------
# The common shape of a fault test
# ---------------------------------------------------------------------------


def failover(letter: str, kind: str, after_fault=None) -> ha_lab.Failover:
    """The current MASTER gets fault `kind` (ha_lab.FAULTS) while the client loop runs, the peer
    must take over; `after_fault(res)` checks what it must before the repair; the repaired old
    MASTER must come back as BACKUP and stay so."""
    label = f"{letter}: {ha_lab.FAULTS[kind]}"
    res = lab().failover(kind, repair=False, takeover_limit_s=TAKEOVER_LIMIT_S)
    # Service restored: the first success after the fault (the old MASTER may still serve some,
    # as when only its keepalived died); the backup serving: the first success once it holds the VIP.
    S["figures"].append((label, res))
    print(f"    {label}: {res.master} -> {res.backup}: service back after {res.first_ok_s * 1000:.0f} ms, VIP on "
          f"{res.backup} after {res.vip_s * 1000:.0f} ms, served by it after {res.via_backup_s * 1000:.0f} ms; "
          f"{res.failed} failed requests of {res.total}", flush=True)
    try:
        if after_fault is not None:
            after_fault(res)
        h.check(res.first_ok_s < FAILOVER_BOUND_S,
                f"{label}: service came back after {res.first_ok_s:.2f}s (bound {FAILOVER_BOUND_S}s)")
        h.check(res.via_backup_s < FAILOVER_BOUND_S,
                f"{label}: {res.backup} served after {res.via_backup_s:.2f}s (bound {FAILOVER_BOUND_S}s)")
    finally:
        # Also after a failed bound, so that the next fault starts from a whole pair: the old
        # MASTER is back and healthy, yet stays BACKUP (no preemption), one holder throughout,
        # and the backup still says MASTER.
        lab().rejoin(res, timeout=REJOIN_TIMEOUT_S, sample_s=SAMPLE_S)
    return res


# ---------------------------------------------------------------------------
# Set-up and tear-down
# ---------------------------------------------------------------------------


def setup_module():
    S["figures"] = []
    reason = ha_lab.skip_reason(rampart_bin=h.rampart_bin())
    if reason:
        raise h.Skip(reason)
    netns.install_signal_handlers()
    S["lab"] = ha_lab.HaLab("rha", h.rampart_bin())
    lab().up()
    lab().configure()     # rampart check, rampart ha render and keepalived --config-test per gateway
    lab().start_apps()
    lab().start_pair()    # rampart on both, both ready, then keepalived on both


def teardown_module():
    if S.get("figures"):
        print("    failover figures (ms after the fault: service back / VIP on the backup / served by it):",
              flush=True)
        for label, r in S["figures"]:
            print(f"      {label:<24} {r.master} -> {r.backup}  {r.first_ok_s * 1000:6.0f} {r.vip_s * 1000:6.0f} "
                  f"{r.via_backup_s * 1000:6.0f}  {r.failed:3d} failed / {r.total}", flush=True)
    if S.get("lab"):
        problems = S["lab"].close()
        h.check(not problems, "; ".join(problems))


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_converged_one_holder_https_through_the_vip():
    # Guards against a hang: the pair converges within a second (advert_int 100 ms).
    lab().wait_master(timeout=30, expected="gw1")
    h.wait_until(lambda: lab().ha_status("gw2")["state"] == "BACKUP", 15, what="gw2 BACKUP")
    n = lab().sample_single_holder("gw1", duration=1.0)
    h.check(n >= 5, f"only {n} samples")
    h.check(lab().fetch_ok(), "HTTPS GET / through the VIP failed")
    status = lab().ha_status("gw1")
    h.check(status["vip"].endswith("held here") and status["peer"].startswith("gw2"), f"ha status: {status}")
    metrics = lab().admin_get("gw1", "/metrics")
    h.check('rampart_vrrp_state{node="gw1",state="MASTER"} 1' in metrics, "rampart_vrrp_state: " +
            "\n".join(line for line in metrics.splitlines() if "vrrp" in line))
    h.check("rampart_ha_healthy 1" in metrics, "rampart_ha_healthy is not 1")
    h.check('"vrrp_state":"BACKUP"' in lab().admin_get("gw2", "/api/status").replace(" ", ""),
            "gw2's /api/status does not say BACKUP")


def test_a_rampart_sigkill_and_tls_resumption_across_the_pair():
    # A session through the VIP on gw1, with its ticket (TLS 1.3 sends it after the handshake).
    _, session, _ = lab().tls_get()
    h.check(session is not None and session.has_ticket, "no session ticket from gw1")

    failover("a", "rampart")

    _, _, reused = lab().tls_get(session=session)
    h.check(lab().holders() == ["gw2"], "gw2 does not hold the VIP")
    h.check(reused, "the TLS session from gw1 was not resumed on gw2")
    metrics = lab().admin_get("gw2", "/metrics")
    resumed = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith('rampart_tls_handshakes_total{kind="resumed"} ')]
    h.check(len(resumed) == 1 and resumed[0] > 0, f"gw2 counted no resumed handshake: {resumed}")


SPLIT_BRAIN_WITHIN_S = 1.0


def test_b_keepalived_sigkill():
    # keepalived and its VRRP child are stopped, then killed (no clean shutdown): the killed one
    # leaves the VIP on the interface and the backup takes it too. The old MASTER's Rampart, which
    # follows keepalived's VRRP process through its pid file, removes it: from 1 s after the kill
    # on, both nodes are sampled (each ~10-20 ms) and never both hold it. The repair starts
    # keepalived again, which rejoins as BACKUP.
    failover("b", "keepalived", after_fault=_one_holder_after_keepalived_died)


def _one_holder_after_keepalived_died(res: ha_lab.Failover) -> None:
    both = []
    last_both = None
    samples = 0
    for _ in range(1000):  # at most 1,000 samples, or until 3 s after the kill
        now = time.monotonic()
        if now - res.t_fault > 3.0:
            break
        holders = lab().holders()
        samples += 1
        if len(holders) == 2:
            last_both = now - res.t_fault
            if last_both > SPLIT_BRAIN_WITHIN_S:
                both.append(round(last_both, 3))
    print(f"    keepalived SIGKILL on {res.master}: {samples} samples of both nodes up to 3 s after; two holders "
          f"last seen {'never' if last_both is None else f'{last_both * 1000:.0f} ms'} after the kill", flush=True)
    h.check(not both, f"both nodes held the VIP {SPLIT_BRAIN_WITHIN_S}s and more after {res.master}'s keepalived "
            f"was killed, at {both[:10]} s")
    metrics = lab().admin_get(res.master, "/metrics")
    h.check(f'rampart_vrrp_vip_held{{node="{res.master}"}} 0' in metrics and
            "rampart_vrrp_vip_removals_total 1" in metrics,
            f"{res.master}'s metrics: " + "\n".join(x for x in metrics.splitlines() if "vip" in x))


def test_c_master_link_down():
    failover("c", "link")


def test_d_master_loses_every_backend():
    # Blackhole routes to app1 and app2 on the MASTER only: the peer still reaches them.
    failover("d", "backends")


def test_e_admin_release_hands_the_vip_over_first():
    # Maintenance: the master is asked to give up the VIP (POST /api/ha/release) before anything
    # is drained; its track file reports unhealthy and the peer takes over. Repair: /api/ha/resume.
    failover("e", "release")


def test_first_election_goes_to_the_higher_priority_in_either_start_order():
    """Both nodes start as BACKUP with nopreempt, so whichever keepalived runs its VRRP first
    would win the first election and keep the VIP. gw2 (priority 100) starting 0.2 s before gw1
    (150) won it every time before the lower priority got its vrrp_startup_delay; now gw1 wins
    in both orders, and gw2 is BACKUP."""
    for first, second in (("gw2", "gw1"), ("gw1", "gw2")):
        for gw in ha_lab.GATEWAYS:
            lab().keepalived[gw].stop()  # SIGTERM: keepalived removes the VIP it holds
        h.wait_until(lambda: not lab().holders(), 15, what="the VIP released by both keepalived")
        lab().start_keepalived(first)
        time.sleep(0.2)
        lab().start_keepalived(second)
        master = lab().wait_master(timeout=30)
        h.check(master == "gw1", f"{first} started first and {master} won the first election")
        h.wait_until(lambda: lab().ha_status("gw2")["state"] == "BACKUP", 15, what="gw2 BACKUP")
        n = lab().sample_single_holder("gw1", duration=1.0)
        h.check(n >= 5, f"only {n} samples")
    h.check(lab().fetch_ok(), "HTTPS GET / through the VIP failed after the elections")


def test_processes_still_healthy():
    for p in [*lab().keepalived.values(), *lab().rampart.values()]:
        p.check_alive()
    for backend in lab().backends.values():
        backend.process.check_alive()


if __name__ == "__main__":
    h.main(globals(), tools=("ip",), budget_s=170)
