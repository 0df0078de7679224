"""One HA node on its own (no keepalived, loopback only): what the master tells keepalived and
`rampart ha status` when its state directory or the master itself fails.

- a state directory that cannot be written (a path below a regular file): the node is reported
  not able to serve (rampart_ha_healthy 0) while it is so, the error is logged once and not at
  every health interval, and once the directory can be written the track file says 0 again;
- after a SIGKILL of the master, `rampart ha status` marks its last state stale within a few
  seconds instead of showing it as current; `rampart ha down` writes 1 into the track file.

The node is gw1 at 127.0.0.1, so it is found by its local address.
"""

import signal
import subprocess
import time

import harness as h


def _gateway(certs, app1, state_dir) -> h.Gateway:
    gw = h.Gateway(certs, {"app1": app1}, http=False, workers=1)
    gw.config["servers"]["gw1"] = {"address": h.LOOPBACK, "role": "gateway"}
    gw.config["servers"]["gw2"] = {"address": "127.0.0.2", "role": "gateway"}
    gw.config["ha"] = {"vip": "127.0.0.10/8", "interface": "lo", "virtual_router_id": 51,
                       "nodes": {"gw1": {"priority": 150}, "gw2": {"priority": 100}},
                       "state_dir": str(state_dir),
                       "health": {"interval": "100ms", "track_process": False}}
    return gw


def _healthy(gw) -> float:
    m = h.metrics(gw)
    h.check("rampart_ha_healthy" in m, "/metrics has no rampart_ha_healthy")
    return m["rampart_ha_healthy"]


def _status(gw) -> str:
    r = subprocess.run([str(h.rampart_bin()), "ha", "status", "-c", str(gw.config_path)], capture_output=True,
                       text=True, timeout=30)
    h.check(r.returncode == 0, f"ha status: exit {r.returncode}: {r.stderr}")
    return r.stdout


def test_unwritable_state_dir_reports_unhealthy_and_logs_once(certs, app1):
    blocker = h.temp_dir() / "not-a-dir"
    blocker.write_text("a file where the state directory's parent should be\n")
    state = blocker / "ha"
    gw = _gateway(certs, app1, state).start()
    h.check(h.curl(gw, "/served").status == 200, "the gateway does not serve")
    time.sleep(1.5)  # fifteen health intervals
    h.check(_healthy(gw) == 0, "rampart_ha_healthy is 1 although the track file cannot be written")
    err = gw.process.read_stderr()
    h.check(err.count(f"cannot write {state}/gw1.health") == 1,
            f"the track file error is logged {err.count(f'cannot write {state}/gw1.health')} times in 1.5 s, "
            f"expected once" + gw.process.stderr_excerpt())
    blocker.unlink()
    state.mkdir(parents=True)
    h.wait_until(lambda: _healthy(gw) == 1, 10, what="rampart_ha_healthy 1 once the directory can be written")
    h.check((state / "gw1.health").read_text() == "0\n", "the track file does not say 0")
    h.check("written again" in gw.process.read_stderr(), "the recovery is not logged")
    h.check(gw.stop() == 0, "exit code after SIGTERM")


def test_status_of_a_killed_master_is_stale_and_ha_down_marks_the_node(certs, app1):
    state = h.temp_dir() / "ha-state"
    gw = _gateway(certs, app1, state).start()
    h.wait_until(lambda: (state / "gw1.health").is_file() and (state / "gw1.health").read_text() == "0\n", 10,
                 what="the track file saying 0")
    live = _status(gw)
    h.check("stale" not in live, f"a running master's state shown as stale:\n{live}")
    gw.process.send_signal(signal.SIGKILL)
    gw.process.stopping = gw.process.killed = True
    h.check(gw.process.wait(5) == -signal.SIGKILL, "the master did not die of SIGKILL")
    # The sentinel says 1 at once; the state stays what the master last knew, and turns stale.
    h.wait_until(lambda: (state / "gw1.health").read_text() == "1\n", 5, what="the sentinel's 1")
    t0 = time.monotonic()
    text = h.wait_until(lambda: (lambda s: s if "stale" in s else None)(_status(gw)), 10,
                        what="ha status marking the state stale")
    print(f"    stale after {time.monotonic() - t0 + 0.0:.1f}s more: {text.splitlines()[1]}", flush=True)
    gw.stop()
    (state / "gw1.health").write_text("0\n")
    r = subprocess.run([str(h.rampart_bin()), "ha", "down", "-c", str(gw.config_path)], capture_output=True,
                       text=True, timeout=30)
    h.check(r.returncode == 0, f"ha down: exit {r.returncode}: {r.stderr}")
    h.check((state / "gw1.health").read_text() == "1\n", "ha down did not write 1")
