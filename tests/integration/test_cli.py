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
from pathlib import Path

import harness as h
import pytest


def _needed(binary: Path) -> list[str]:
    r = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, timeout=30)
    h.check(r.returncode == 0, f"readelf -d {binary}: {r.stderr}")
    return [line.split("[", 1)[1].rstrip("]") for line in r.stdout.splitlines() if "(NEEDED)" in line]


def _run(argv, timeout=30, **kwargs):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs)


def _cache() -> dict:
    """The CMake cache of the build tree the binary comes from (empty when it has none)."""
    path = h.rampart_bin().parent.parent / "CMakeCache.txt"
    values = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.startswith(("#", "//")):
                values[name.split(":", 1)[0]] = value
    return values


def _gateway_binary(rampart: Path) -> Path | None:
    for place in (rampart.parent / "rampart-gateway", rampart.parent.parent / "libexec" / "rampart" / "rampart-gateway"):
        if place.is_file():
            return place
    return None


def test_rampart_links_only_what_the_firewall_needs():
    rampart = h.rampart_bin()
    gateway = _gateway_binary(rampart)
    h.check(gateway is not None, f"no rampart-gateway next to {rampart} or in ../libexec/rampart/")
    needed = _needed(rampart)
    heavy = [lib for lib in needed if lib.startswith(("libssl", "libcrypto", "libboost"))]
    h.check(not heavy, f"rampart loads {heavy} at every start: {needed}")
    # Linked in when the build says so (RAMPART_STATIC_DEPS and the archive found).
    cache = _cache()
    static = cache.get("RAMPART_STATIC_DEPS", "ON").upper() in ("ON", "1", "TRUE", "YES")
    for prefix, archive in (("libyaml-cpp", "RAMPART_YAML_CPP_ARCHIVE"), ("libnftnl", "RAMPART_NFTNL_ARCHIVE")):
        if static and not cache.get(archive, "").endswith("NOTFOUND"):
            h.check(not any(lib.startswith(prefix) for lib in needed), f"rampart should link {prefix} in: {needed}")
    if not cache.get("RAMPART_SANITIZE"):  # sanitizer builds keep the shared C++ runtime
        h.check(not any(lib.startswith("libstdc++") for lib in needed), f"rampart should link libstdc++ in: {needed}")
    gateway_needed = _needed(gateway)
    h.check(any(lib.startswith("libssl") for lib in gateway_needed),
            f"rampart-gateway should link OpenSSL: {gateway_needed}")


def test_serve_becomes_rampart_gateway_in_the_same_process(certs, app1):
    gw = h.Gateway(certs, {"app1": app1}, http=False, workers=1).start()
    exe = os.readlink(f"/proc/{gw.pid}/exe")
    h.check(Path(exe).name == "rampart-gateway", f"the process started as `rampart serve` runs {exe}")
    r = h.curl(gw, "/via-exec")
    h.check(r.status == 200, f"request through the gateway started by `rampart serve`: {r}")
    h.check(gw.stop() == 0, "exit code after SIGTERM")


def test_without_rampart_gateway_only_serve_and_certs_fail(certs, app1):
    alone = h.temp_dir() / "alone"
    alone.mkdir()
    shutil.copy2(h.rampart_bin(), alone / "rampart")
    config = h.gateway_config(https_port=h.free_port(), certificates=certs.certificates,
                              servers={"app1": app1.port})
    path = h.write_config(alone / "rampart.yaml", config)
    for argv in (["certs", "dev", "--out", alone / "certs"], ["serve", "-c", path]):
        r = _run([alone / "rampart", *argv])
        h.check(r.returncode == 1, f"{argv[0]} without rampart-gateway: exit {r.returncode}, {r.stderr}")
        for place in (alone / "rampart-gateway", alone.parent / "libexec" / "rampart" / "rampart-gateway"):
            h.check(str(place) in r.stderr, f"the error of {argv[0]} should name {place}: {r.stderr!r}")
    h.check(not (alone / "certs").exists(), "certs dev wrote something although it could not run")
    r = _run([alone / "rampart", "version"])
    h.check(r.returncode == 0 and r.stdout.startswith("rampart "), f"version without rampart-gateway: {r}")
    r = _run([alone / "rampart", "check", "-c", path])
    h.check(r.returncode == 0, f"check without rampart-gateway: exit {r.returncode}, {r.stderr}")


def test_installed_layout_finds_rampart_gateway():
    build = h.rampart_bin().parent.parent
    if not (build / "cmake_install.cmake").is_file() or shutil.which("cmake") is None:
        pytest.skip(f"no CMake build tree at {build} to install from")
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
