"""Access control per route: allow/deny lists and HTTP Basic authentication (RFC 7617).

One gateway behind a trusted proxy (127.0.0.1 in gateway.trusted_proxies), so that each request
can come from another client through X-Forwarded-For, with three routes:

- /net/ allows 198.51.100.0/24 but denies 198.51.100.66: a client of the network is served, the
  denied one and one outside get 403, and neither request reaches the app server; nor does one
  whose X-Forwarded-For names no client the gateway can believe;
- /admin asks for a users file written by `rampart passwd` (alice with yescrypt, bob with
  bcrypt): no credentials get 401 with the RFC 7617 challenge, right ones pass over HTTP/1.1 and
  h2 with the Authorization header taken out before the app server and the user in the access
  log; a wrong password, an unknown user and a broken header get 401 and never reach the app;
- three failed authentications block the client at layer 7 (403 to every request, the proxy
  itself is never blocked) while another client behind the same proxy still logs in.

`rampart passwd` hashes verify with Python's crypt (libcrypt) independently of the gateway, and
a users file with an MD5 hash or open permissions is refused by `rampart check` with its
file:line:column.
"""

import base64
import json
import os
import subprocess
import warnings

import harness as h
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # Debian 12's Python 3.11 still has it; libcrypt underneath

REALM = "Site admin"
PASSWORDS = {"alice": "correct horse battery staple", "bob": "Tr0ub4dor&3"}


def passwd(user: str, password: str, *extra: str) -> str:
    out = subprocess.run([str(h.rampart_bin()), "passwd", *extra, user], input=password, capture_output=True,
                         text=True, timeout=60)
    h.check(out.returncode == 0, f"rampart passwd: {out.returncode} {out.stderr}")
    return out.stdout.strip()


@pytest.fixture(scope="module")
def users_file():
    path = h.temp_dir() / "admin.htpasswd"
    lines = [passwd("alice", PASSWORDS["alice"]), passwd("bob", PASSWORDS["bob"], "--bcrypt")]
    path.write_text("# the site's admins\n" + "\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def guarded(certs, app1, users_file):
    """(gateway, access log path)"""
    log = h.temp_dir() / "access-control.log"
    gw = h.Gateway(certs, {"app1": app1}, http=False, workers=1)
    g = gw.config["gateway"]
    g["trusted_proxies"] = ["127.0.0.1/32"]
    g["access_log"] = {"path": str(log), "buffer": "4KiB"}
    g["abuse"] = {"threshold": 3, "window": "60s", "block_for": "60s", "block": True}
    g["routes"] = [
        {"path": "/net/", "pool": "app", "allow": ["198.51.100.0/24"], "deny": ["198.51.100.66/32"]},
        {"path": "/admin", "pool": "app", "basic_auth": {"realm": REALM, "users": str(users_file)}},
        {"path": "/", "pool": "app"},
    ]
    return gw.start(), log


def get(gw, path: str, client: str, authorization: str | None = None) -> h.Response:
    conn = h.https_connection(gw)
    try:
        headers = {"X-Forwarded-For": client}
        if authorization is not None:
            headers["Authorization"] = authorization
        return h.request(conn, "GET", path, headers=headers)
    finally:
        conn.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def reached(app, marker: str) -> bool:
    return any(marker in r.target for r in app.requests())


def test_passwd_hashes_verify_with_libcrypt(users_file):
    for line in users_file.read_text().splitlines()[1:]:
        user, _, hashed = line.partition(":")
        h.check(hashed.startswith("$y$" if user == "alice" else "$2b$12$"), f"{user}: {hashed}")
        h.check(crypt.crypt(PASSWORDS[user], hashed) == hashed, f"{user}'s hash does not verify")
        h.check(crypt.crypt("not it", hashed) != hashed, f"{user}'s hash takes any password")


def test_allow_and_deny_lists(guarded, app1):
    gw, _ = guarded
    before = h.metrics(gw).get("rampart_access_denied_total", 0)
    r = get(gw, "/net/in", "198.51.100.7")
    h.check(r.status == 200 and reached(app1, "/net/in"), f"a client of the allowed network: {r}")
    for client, marker in (("198.51.100.66", "/net/denied"), ("203.0.113.5", "/net/outside")):
        r = get(gw, marker, client)
        h.check(r.status == 403, f"{client}: {r.status}")
        h.check(not reached(app1, marker), f"{client}'s refused request reached the app server")
    # From the trusted proxy, an X-Forwarded-For that names no client to believe (an address with
    # a port): the proxy's own address is not judged instead: 403.
    r = get(gw, "/net/port", "198.51.100.7:5678")
    h.check(r.status == 403 and not reached(app1, "/net/port"), f"an unreadable X-Forwarded-For: {r.status}")
    h.check(h.metrics(gw).get("rampart_access_denied_total", 0) - before == 3, "403s not counted")


def test_basic_auth_challenge_and_users(guarded, app1):
    gw, log = guarded
    r = get(gw, "/admin/none", "198.51.100.10")
    h.check(r.status == 401, f"no credentials: {r.status}")
    h.check(r.header("WWW-Authenticate") == f'Basic realm="{REALM}", charset="UTF-8"',
            f"challenge: {r.header('WWW-Authenticate')!r}")
    h.check(not reached(app1, "/admin/none"), "an unauthenticated request reached the app server")
    for user in ("alice", "bob"):
        for attempt in range(2):  # the second is answered from the worker's memory of the first
            r = get(gw, f"/admin/{user}/{attempt}", "198.51.100.10", basic(user, PASSWORDS[user]))
            h.check(r.status == 200, f"{user}: {r.status}")
            # The app server gets the request, but not the credentials.
            names = [k.lower() for k, _ in r.json()["headers"]]
            h.check("authorization" not in names, f"{user}'s credentials reached the app server: {names}")
    # Over h2 too (curl -u).
    job = h.curl(gw, "/admin/h2", "--http2", "-u", f"bob:{PASSWORDS['bob']}", "-H",
                 "X-Forwarded-For: 198.51.100.10", "-w", "%{http_version}", background=True)
    out = job.wait()
    names = [k.lower() for k, _ in out.json()["headers"]]
    h.check(out.status == 200 and job.stdout.strip() == "2", f"h2: {out.status} {job.stdout!r}")
    h.check("authorization" not in names, f"bob's credentials reached the app server over h2: {names}")
    h.wait_until(lambda: sum('"user":"' in line for line in log.read_text().splitlines()) >= 5, 10,
                 what="access log lines with the user")
    users = {json.loads(line).get("path"): json.loads(line).get("user") for line in log.read_text().splitlines()}
    h.check(users.get("/admin/alice/0") == "alice" and users.get("/admin/h2") == "bob", f"access log: {users}")
    h.check(users.get("/admin/none") is None, f"a user on an unauthenticated request: {users}")


def test_wrong_credentials_are_refused_and_block_the_client(guarded, app1):
    gw, _ = guarded
    abuser, other = "198.51.100.77", "198.51.100.78"
    before = h.metrics(gw).get('rampart_basic_auth_total{result="failed"}', 0)
    attempts = [basic("alice", "guess"), basic("mallory", PASSWORDS["alice"]), "Basic not*base64"]
    for i, authorization in enumerate(attempts):
        r = get(gw, f"/admin/wrong{i}", abuser, authorization)
        h.check(r.status == 401, f"attempt {i}: {r.status}")
        h.check(not reached(app1, f"/admin/wrong{i}"), f"attempt {i} reached the app server")
    h.check(h.metrics(gw).get('rampart_basic_auth_total{result="failed"}', 0) - before == 3, "failures not counted")
    h.wait_until(lambda: h.metrics(gw).get("rampart_l7_blocks_total", 0) >= 1, 10, interval=0.1,
                 what="the guessing client blocked at layer 7")
    r = get(gw, "/admin/after", abuser, basic("alice", PASSWORDS["alice"]))
    h.check(r.status == 403 and not reached(app1, "/admin/after"), f"the blocked client got {r.status}")
    r = get(gw, "/admin/other", other, basic("alice", PASSWORDS["alice"]))
    h.check(r.status == 200 and reached(app1, "/admin/other"), f"another client: {r.status}")
    h.check(h.metrics(gw).get("rampart_firewall_blocks_total", 0) == 0, "the proxy went into the firewall")


def test_check_refuses_weak_hashes_and_open_files(certs, app1, tmp_path):
    weak = tmp_path / "weak.htpasswd"
    weak.write_text("carol:$apr1$abcdefgh$0123456789abcdefghijkl\n")
    os.chmod(weak, 0o600)
    gw = h.Gateway(certs, {"app1": app1}, http=False)
    gw.config["gateway"]["routes"] = [{"path": "/", "pool": "app", "basic_auth": {"realm": "x", "users": str(weak)}}]
    h.write_config(gw.config_path, gw.config)
    out = subprocess.run([str(h.rampart_bin()), "check", "-c", str(gw.config_path)], capture_output=True, text=True,
                         timeout=60)
    h.check(out.returncode == 1 and f"{weak}:1:7: user carol: MD5 hashes are not accepted" in out.stderr,
            f"weak hash: {out.returncode} {out.stderr}")
    os.chmod(weak, 0o644)
    out = subprocess.run([str(h.rampart_bin()), "check", "-c", str(gw.config_path)], capture_output=True, text=True,
                         timeout=60)
    h.check(out.returncode == 1 and "readable by others" in out.stderr, f"open file: {out.stderr}")
