#!/usr/bin/env python3
"""The two executables behind the command line (cmd/CMakeLists.txt):

* ``rampart``, the command operators type, links neither OpenSSL, Boost, a
  shared libstdc++, yaml-cpp nor libnftnl, so that ``rampart firewall apply``
  starts as fast as ``nft -f``; ``rampart-gateway`` links the gateway;
* ``rampart serve`` and ``rampart certs`` become rampart-gateway in the same
  process (same PID), found next to ``rampart`` or, installed, in
  ``../libexec/rampart/``; without it they fail with a message naming both
  places, while the commands ``rampart`` runs itself still work;
* ``cmake --install`` lays both out so that this works.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import harness as h  # noqa: E402

S = {}


def setup_module():
    S["certs"] = h.make_certs()
    S["app1"] = h.Backend("app1").start()


def _needed(binary: Path) -> list[str]:
    r = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, timeout=30)
    h.check(r.returncode == 0, f"readelf -d {binary}: {r.stderr}")
    return [line.split("[", 1)[1].rstrip("]") for line in r.stdout.splitlines() if "(NEEDED)" in line]


def _run(argv, timeout=30, **kwargs):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs)


def test_rampart_links_only_what_the_firewall_needs():
    rampart = h.rampart_bin()
    gateway = rampart.parent / "rampart-gateway"
    h.check(gateway.is_file(), f"rampart-gateway is not next to {rampart}")
    needed = _needed(rampart)
    heavy = [lib for lib in needed if lib.startswith(("libssl", "libcrypto", "libboost", "libyaml-cpp"))]
    h.check(not heavy, f"rampart loads {heavy} at every start: {needed}")
    sanitized = any("asan" in lib or "ubsan" in lib for lib in needed)
    if not sanitized:  # sanitizer builds keep the shared C++ runtime
        h.check(not any(lib.startswith(("libstdc++", "libnftnl")) for lib in needed),
                f"rampart should link libstdc++ and libnftnl in: {needed}")
    gateway_needed = _needed(gateway)
    h.check(any(lib.startswith("libssl") for lib in gateway_needed),
            f"rampart-gateway should link OpenSSL: {gateway_needed}")


def test_serve_becomes_rampart_gateway_in_the_same_process():
    gw = h.Gateway(S["certs"], {"app1": S["app1"]}, http=False, workers=1).start()
    exe = os.readlink(f"/proc/{gw.pid}/exe")
    h.check(Path(exe).name == "rampart-gateway", f"the process started as `rampart serve` runs {exe}")
    r = h.curl(gw, "/via-exec")
    h.check(r.status == 200, f"request through the gateway started by `rampart serve`: {r}")
    h.check(gw.stop() == 0, "exit code after SIGTERM")


def test_without_rampart_gateway_only_serve_and_certs_fail():
    alone = h.temp_dir() / "alone"
    alone.mkdir()
    shutil.copy2(h.rampart_bin(), alone / "rampart")
    r = _run([alone / "rampart", "certs", "dev", "--out", alone / "certs"])
    h.check(r.returncode == 1, f"certs without rampart-gateway: exit {r.returncode}, {r.stderr}")
    for place in (alone / "rampart-gateway", alone.parent / "libexec" / "rampart" / "rampart-gateway"):
        h.check(str(place) in r.stderr, f"the error should name {place}: {r.stderr!r}")
    h.check(not (alone / "certs").exists(), "certs dev wrote something although it could not run")
    r = _run([alone / "rampart", "version"])
    h.check(r.returncode == 0 and r.stdout.startswith("rampart "), f"version without rampart-gateway: {r}")
    config = h.gateway_config(https_port=h.free_port(), certificates=S["certs"].certificates,
                              servers={"app1": S["app1"].port})
    path = h.write_config(alone / "rampart.yaml", config)
    r = _run([alone / "rampart", "check", "-c", path])
    h.check(r.returncode == 0, f"check without rampart-gateway: exit {r.returncode}, {r.stderr}")


def test_installed_layout_finds_rampart_gateway():
    build = h.rampart_bin().parent.parent
    if not (build / "cmake_install.cmake").is_file() or shutil.which("cmake") is None:
        raise h.Skip(f"no CMake build tree at {build} to install from")
    prefix = h.temp_dir() / "prefix"
    r = _run(["cmake", "--install", build, "--prefix", prefix], timeout=120)
    h.check(r.returncode == 0, f"cmake --install: {r.stdout}{r.stderr}")
    installed = prefix / "bin" / "rampart"
    h.check((prefix / "libexec" / "rampart" / "rampart-gateway").is_file(),
            f"rampart-gateway not in libexec/rampart: {sorted(str(p) for p in prefix.rglob('*'))}")
    h.check(not (prefix / "bin" / "rampart-gateway").exists(), "rampart-gateway should not be on PATH")
    out = h.temp_dir() / "installed-certs"
    r = _run([installed, "certs", "dev", "--out", out])
    h.check(r.returncode == 0 and (out / "ecdsa.pem").is_file(), f"installed rampart certs dev: {r}")


if __name__ == "__main__":
    h.main(globals())
