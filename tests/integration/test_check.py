"""``rampart check -c FILE``: a valid file exits 0 with a summary; each broken
file exits 1 and names the exact FILE:LINE:COL of its one mistake on stderr.

Every broken file is the valid file with one edit, so the expected position is
computed from the edited text (1-based line and column of the offending token).
"""

import os
import re
import subprocess

import harness as h
import pytest

pytestmark = pytest.mark.tools()  # rampart check only: no client

ERROR_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$")


@pytest.fixture(scope="module")
def good(certs) -> str:
    """A valid configuration file's text."""
    https, http, admin, p1, p2 = h.free_ports(5)
    config = h.gateway_config(https_port=https, http_port=http, admin_port=admin,
                              certificates=certs.certificates, servers={"app1": p1, "app2": p2})
    return h.to_yaml(config) + "\n"


def _check(name, text):
    path = h.temp_dir() / name
    h.write_config(path, text)
    r = subprocess.run([str(h.rampart_bin()), "check", "-c", str(path)], capture_output=True, text=True,
                       timeout=30)
    return path, r


def _edit(good, old, new):
    """The valid text with its only occurrence of the fragment old replaced by new."""
    h.check(good.count(old) == 1, f"test bug: {old!r} is not exactly once in the valid config")
    return good.replace(old, new, 1)


def _position(text, needle):
    """1-based (line, column) of the first occurrence of needle in text."""
    index = text.index(needle)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def _expect_error(name, text, needle, *message_words, offset=0):
    path, r = _check(name, text)
    line, col = _position(text, needle)
    col += offset
    errors = []
    for raw in r.stderr.splitlines():
        m = ERROR_LINE.match(raw)
        if m and m.group("file") == str(path):
            errors.append((int(m.group("line")), int(m.group("col")), m.group("msg")))
    h.check(r.returncode == 1, f"{name}: exit {r.returncode}, expected 1; stderr: {r.stderr.strip()!r}")
    h.check(errors, f"{name}: no '{path}:LINE:COL: message' line on stderr: {r.stderr.strip()!r}")
    where = [(l, c) for l, c, _ in errors]
    h.check(where == [(line, col)],
            f"{name}: errors at {where}, expected exactly [{line}:{col}] ({needle!r}); stderr: {r.stderr.strip()!r}")
    msg = errors[0][2].lower()
    for word in message_words:
        h.check(word.lower() in msg, f"{name}: message {errors[0][2]!r} does not mention {word!r}")


def test_valid_file_exits_0(good):
    path, r = _check("good.yaml", good)
    h.check(r.returncode == 0, f"valid file: exit {r.returncode}; stderr: {r.stderr.strip()!r}")
    h.check(r.stdout.strip() != "", "valid file: no summary on stdout")
    h.check(not any(ERROR_LINE.match(x) for x in r.stderr.splitlines()), f"valid file: errors {r.stderr!r}")


def test_unknown_key(good):
    text = _edit(good, "\n  workers: 2\n", "\n  workers: 2\n  bogus_key: 1\n")
    _expect_error("unknown-key.yaml", text, "bogus_key", "bogus_key")


def test_bad_duration(good):
    text = _edit(good, "\n    header: 10s\n", "\n    header: 10parsecs\n")
    _expect_error("bad-duration.yaml", text, "10parsecs", "10parsecs")


def test_unknown_server_in_pool(good):
    text = _edit(good, "\n        - app2\n", "\n        - app9\n")
    _expect_error("unknown-server.yaml", text, "app9", "app9")


def test_yaml_syntax_error(good):
    # A flow mapping closed twice: yaml-cpp reports "illegal flow end" at the second '}'.
    listen = re.search(r"\n  listen:\n(    .*\n)+", good).group(0)
    https = re.search(r'https: "([^"]+)"', listen).group(1)
    text = good.replace(listen, f'\n  listen: {{ https: "{https}" }}}}\n', 1)
    _expect_error("syntax.yaml", text, "}}", offset=1)


def test_missing_key_and_unreadable_certificate_files(good, certs):
    """The files the gateway reads at start are checked too: each path that cannot be read is
    reported at the position where the file names it."""
    key = certs.certificates[0]["key"]
    missing = key + ".missing"
    text = _edit(good, f" {key}\n", f" {missing}\n")
    _expect_error("missing-key.yaml", text, missing, "gateway.tls.certificates[0].key", "cannot read", missing)
    cert = certs.certificates[0]["cert"]
    directory = str(h.temp_dir())  # exists and can be opened, but holds no PEM
    text = _edit(good, f" {cert}\n", f" {directory}\n")
    _expect_error("dir-cert.yaml", text, directory, "gateway.tls.certificates[0].cert", "not a regular file")


HA_PAIR = """servers:
  gw1: { address: 192.0.2.11, role: gateway }
  gw2: { address: 192.0.2.12, role: gateway }
  app1: { address: 192.0.2.21, role: app, port: 8080 }
gateway:
  listen: { http: "127.0.0.1:8080" }
  pools: { app: { servers: [app1] } }
ha:
  vip: 192.0.2.10/24
  interface: eth0
  virtual_router_id: 51
  nodes: { gw1: { priority: 150 }, gw2: { priority: 100 } }
  health: { track_process: %s }
"""


@pytest.mark.root("runs rampart check inside a network namespace of its own")
@pytest.mark.netns
def test_track_process_where_keepalived_cannot_follow_processes_is_warned():
    """keepalived's track_process needs the kernel's process events, which exist only in the
    initial network namespace: elsewhere keepalived stays FAULT. check and ha render say so
    there (and only where it is on)."""
    on = h.write_config(h.temp_dir() / "ha-track-on.yaml", f"site: {h.SITE}\n" + HA_PAIR % "true")
    off = h.write_config(h.temp_dir() / "ha-track-off.yaml", f"site: {h.SITE}\n" + HA_PAIR % "false")
    ns = f"rck{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True, timeout=20)
    h.check(r.returncode == 0, f"ip netns add: {r.stderr}")
    try:
        def run(*argv):
            return subprocess.run(["ip", "netns", "exec", ns, str(h.rampart_bin()), *argv], capture_output=True,
                                  text=True, timeout=30)
        r = run("check", "-c", str(on))
        h.check(r.returncode == 0 and "track_process" in r.stderr and "warning" in r.stderr,
                f"check in a network namespace with track_process on: exit {r.returncode}, {r.stderr!r}")
        out = h.temp_dir() / "rendered"
        r = run("ha", "render", "-c", str(on), "--node", "gw1", "--out", str(out))
        h.check(r.returncode == 0 and "track_process" in r.stderr, f"render with track_process on: {r.stderr!r}")
        r = run("check", "-c", str(off))
        h.check(r.returncode == 0 and "warning" not in r.stderr, f"check with track_process off: {r.stderr!r}")
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=20)
    r = subprocess.run([str(h.rampart_bin()), "check", "-c", str(on)], capture_output=True, text=True, timeout=30)
    h.check(r.returncode == 0 and "warning" not in r.stderr,
            f"check in the initial network namespace warned about track_process: {r.stderr!r}")
