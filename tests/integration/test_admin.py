#!/usr/bin/env python3
"""The admin listener: /readyz flips with the backends' health, the bearer
token guards /metrics and /api/* (never /healthz, /readyz or the page), and a
token file readable by others is refused with its position."""

import os
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import harness as h  # noqa: E402

S = {}
TOKEN = "s3cret-admin-token-0123456789"


def setup_module():
    S["certs"] = h.make_certs()


def _get(gw, path, token=None, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{gw.admin_port}{path}", method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_readyz_follows_the_health_of_the_backends():
    app1 = h.Backend("app1").start()
    gw = h.Gateway(S["certs"], {"app1": app1}, workers=1)
    gw.config["gateway"]["pools"]["app"]["health"] = {"interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 1}
    gw.start()
    h.check(_get(gw, "/readyz") == (200, "ready\n"), "not ready with a healthy backend")
    h.check(_get(gw, "/healthz") == (200, "ok\n"), "healthz")
    port = app1.port
    app1.stop()
    h.wait_until(lambda: _get(gw, "/readyz")[0] == 503, 5, what="/readyz 503 once the only backend is down")
    h.check(_get(gw, "/healthz")[0] == 200, "healthz must stay 200: the process is alive")
    revived = h.Backend("app1", port=port).start()
    h.wait_until(lambda: _get(gw, "/readyz")[0] == 200, 5, what="/readyz 200 again")
    gw.stop()
    revived.stop()


def test_bearer_token_guards_metrics_and_api():
    app1 = h.Backend("app1").start()
    token_file = h.temp_dir() / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    gw = h.Gateway(S["certs"], {"app1": app1}, workers=1)
    gw.config["gateway"]["admin_token_file"] = str(token_file)
    gw.start()
    for path in ("/metrics", "/api/servers", "/api/status"):
        h.check(_get(gw, path)[0] == 401, f"{path} without the token")
        h.check(_get(gw, path, "wrong-token-wrong-token-wrong")[0] == 401, f"{path} with a wrong token")
        h.check(_get(gw, path, TOKEN)[0] == 200, f"{path} with the token")
    h.check(_get(gw, "/api/servers/app1/drain", method="POST")[0] == 401, "drain without the token")
    for path in ("/healthz", "/readyz", "/status"):
        h.check(_get(gw, path)[0] == 200, f"{path} must not need the token")
    # The reload command reads the token from the same file.
    r = subprocess.run([str(h.rampart_bin()), "reload", "-c", str(gw.config_path)], capture_output=True, text=True,
                       timeout=30)
    h.check(r.returncode == 0, f"rampart reload with the token: {r.returncode} {r.stdout} {r.stderr}")
    h.check(TOKEN not in gw.process.read_stderr() and TOKEN not in gw.process.read_stdout(),
            "the token appears in the gateway's output")
    gw.stop()
    app1.stop()


def test_token_file_readable_by_others_is_refused():
    token_file = h.temp_dir() / "open.token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    gw = h.Gateway(S["certs"], {"app1": 18099}, workers=1)
    gw.config["gateway"]["admin_token_file"] = str(token_file)
    h.write_config(gw.config_path, gw.config)
    r = subprocess.run([str(h.rampart_bin()), "check", "-c", str(gw.config_path)], capture_output=True, text=True,
                       timeout=30)
    h.check(r.returncode == 1 and "chmod 600" in r.stderr and "admin_token_file" in r.stderr,
            f"check: {r.returncode} {r.stderr}")
    h.check(TOKEN not in r.stderr + r.stdout, "the token was printed")


if __name__ == "__main__":
    h.main(globals())
