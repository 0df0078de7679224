"""A Debian 12 root with systemd, cached outside the clone, booted with systemd-nspawn in a network
namespace of the run; and the Debian package made from the build tree under test. Used by
tests/integration/test_systemd.py (one gateway under systemd) and bench/ha/systemd_pair.py (the HA
pair, each gateway in a container of its own).

The root is debootstrapped once into /var/cache/rampart-tests/ and never written afterwards: a
container boots it with ``--volatile=overlay`` (a tmpfs over the read-only tree), so any number of
containers can boot it at once and every boot starts clean.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import processes as h

SUITE = "bookworm"
CACHE_DIR = Path("/var/cache/rampart-tests")
ROOT_NAME = f"debian-{SUITE}-systemd"
# Besides the package's Depends (read from the .deb).
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "keepalived", "nftables", "curl", "logrotate", "iproute2"]
DEBOOTSTRAP_TIMEOUT_S = 1200
CACHE_LOCK_WAIT_S = 1300
SHARE = "/srv/rampart-test"          # the run's files, read-only inside the container
BOOT_TIMEOUT_S = 90
CONTAINER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def out(r: subprocess.CompletedProcess) -> str:
    return f"exit {r.returncode}; stdout: {r.stdout.strip()[-1500:]!r}; stderr: {r.stderr.strip()[-1500:]!r}"


# ---------------------------------------------------------------------------
# The package
# ---------------------------------------------------------------------------


def build_dir() -> Path:
    """The build tree of the binary under test (RAMPART_BIN is <build>/cmd/rampart)."""
    return h.rampart_bin().resolve().parent.parent


def make_deb(dest: Path) -> Path:
    """cpack in the build tree: the .deb from what is built there, into dest."""
    build = build_dir()
    if not (build / "CPackConfig.cmake").is_file():
        raise h.Skip(f"no CPackConfig.cmake in {build}: not a CMake build tree of this project")
    dest.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    r = subprocess.run(["cpack", "-G", "DEB", "--config", str(build / "CPackConfig.cmake"), "-B", str(dest)],
                       cwd=build, capture_output=True, text=True, timeout=300)
    h.check(r.returncode == 0, f"cpack: {out(r)}")
    debs = sorted(dest.glob("rampart_*.deb"))
    h.check(len(debs) == 1, f"cpack made {[d.name for d in debs]}, expected one rampart_*.deb")
    print(f"    package: {debs[0].name} ({debs[0].stat().st_size // 1024} KiB) in {time.monotonic() - t0:.1f}s",
          flush=True)
    return debs[0]


def deb_field(deb: Path, field: str) -> str:
    r = subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True, timeout=30)
    h.check(r.returncode == 0, f"dpkg-deb -f {field}: {out(r)}")
    return r.stdout.strip()


def depends_packages(deb: Path) -> list[str]:
    """Package names of the .deb's Depends (first of each alternative, versions dropped)."""
    names = []
    for item in deb_field(deb, "Depends").split(","):
        name = item.split("|")[0].strip().split(" ")[0].split(":")[0]
        if name:
            names.append(name)
    return names


# ---------------------------------------------------------------------------
# The cached Debian root
# ---------------------------------------------------------------------------


def apt_mirror() -> str:
    """The Debian mirror the host's apt uses for the suite (one-line and deb822 sources)."""
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1].rstrip("/")
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            for line in stanza.splitlines():
                if line and not line.startswith(("#", " ", "\t")) and ":" in line:
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if ("deb" in fields.get("types", "").split() and SUITE in fields.get("suites", "").split()
                    and fields.get("enabled", "yes").lower() != "no" and fields.get("uris")):
                return fields["uris"].split()[0].rstrip("/")
    return "http://deb.debian.org/debian"


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path (from /proc/self/mountinfo), deepest first."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Removes a (failed or stale) debootstrap target: its mounts (proc, sys, dev binds) first, so
    that the removal never reaches into the host's /proc or /dev."""
    if not path.exists():
        return
    for _ in range(3):
        points = mounts_under(path)
        if not points:
            break
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
    if mounts_under(path):
        raise AssertionError(f"cannot unmount everything under {path}: {mounts_under(path)}")
    shutil.rmtree(path, ignore_errors=True)


NETWORK_FAILURE = re.compile(r"Couldn't download|Failed getting release file|Temporary failure resolving|"
                             r"Could not resolve|Network is unreachable|Connection refused|Connection timed out|"
                             r"Unable to connect|Release signed by unknown key|couldn't download", re.I)


def cached_root(packages: list[str]) -> Path:
    """/var/cache/rampart-tests/<name>/root, debootstrapped when missing or when the recorded
    package list (suite, mirror, variant, packages) differs. Never changed afterwards."""
    mirror = apt_mirror()
    record = "\n".join([f"suite {SUITE}", f"mirror {mirror}", "variant minbase",
                        "include " + ",".join(sorted(set(packages)))]) + "\n"
    base = CACHE_DIR / ROOT_NAME
    root, recorded = base / "root", base / "packages"
    CACHE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        deadline = time.monotonic() + CACHE_LOCK_WAIT_S
        while True:  # another run may be building the root right now
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                h.check(time.monotonic() < deadline, f"{CACHE_DIR}/.lock held for {CACHE_LOCK_WAIT_S}s")
                time.sleep(1)
        for stale in CACHE_DIR.glob(".build-*"):  # left by a run that was killed
            pid = stale.name.rpartition("-")[2]
            if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
                remove_tree(stale)
        if root.is_dir() and recorded.is_file() and recorded.read_text() == record:
            print(f"    root: cached {root}", flush=True)
            return root
        if shutil.which("debootstrap") is None:
            raise h.Skip("debootstrap not found (apt-get install debootstrap)")
        work = CACHE_DIR / f".build-{os.getpid()}"
        remove_tree(work)
        work.mkdir(mode=0o755)
        target = work / "root"
        argv = ["debootstrap", "--variant=minbase", "--include=" + ",".join(sorted(set(packages))), SUITE,
                str(target), mirror]
        print(f"    root: {' '.join(argv)}", flush=True)
        t0 = time.monotonic()
        p = h.Process(argv, "debootstrap", env=dict(os.environ, DEBIAN_FRONTEND="noninteractive")).start()
        rc = p.wait(DEBOOTSTRAP_TIMEOUT_S)
        log = p.read_stdout() + p.read_stderr()
        try:
            if rc is None:
                try:
                    p.stop(timeout=10)
                except h.ProcessError:
                    pass
                remove_tree(work)
                raise AssertionError(f"debootstrap did not finish within {DEBOOTSTRAP_TIMEOUT_S}s: {log[-1500:]}")
            if rc != 0:
                remove_tree(work)
                tail = "\n".join(log.strip().splitlines()[-8:])
                if NETWORK_FAILURE.search(log):
                    raise h.Skip(f"debootstrap cannot download from {mirror} (no network?): {tail}")
                raise AssertionError(f"debootstrap failed with {rc}:\n{tail}")
        finally:
            p.stopping = True  # ended by itself (or stopped above): nothing left for the cleanup
        h.check(not mounts_under(target), f"debootstrap left mounts: {mounts_under(target)}")
        old = base / f"root.old-{os.getpid()}"
        base.mkdir(mode=0o755, exist_ok=True)
        recorded.unlink(missing_ok=True)
        if root.exists():
            root.rename(old)
        target.rename(root)
        recorded.write_text(record)
        remove_tree(old)
        remove_tree(work)
        print(f"    root: debootstrapped in {time.monotonic() - t0:.0f}s into {root}", flush=True)
        return root


# ---------------------------------------------------------------------------
# The container
# ---------------------------------------------------------------------------


def container_init(nspawn_pid: int) -> int | None:
    """The host PID of the container's PID 1 (a descendant of systemd-nspawn whose innermost
    namespace PID is 1)."""
    for pid in h.descendants(nspawn_pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        ids = line.split()[1:]
                        if len(ids) >= 2 and ids[-1] == "1":
                            return pid
                        break
        except OSError:
            continue
    return None


class Container:
    """A booted Debian root (systemd-nspawn --boot) in a network namespace of the run."""

    def __init__(self, root: Path, ns: str, share: Path) -> None:
        self.root, self.ns, self.share = root, ns, share
        self.process: h.Process | None = None
        self.leader: int | None = None

    def start(self) -> "Container":
        argv = ["systemd-nspawn", "-D", str(self.root), "--register=no", "--keep-unit",
                f"--network-namespace-path=/run/netns/{self.ns}", "--console=passive", "--boot",
                "--volatile=overlay", f"--bind-ro={self.share}:{SHARE}", f"--machine={self.ns}",
                # keepalived adds the VIP, the master keeps CAP_NET_ADMIN for the blocklist: both
                # need it, over the run's own network namespace only.
                "--capability=CAP_NET_ADMIN"]
        self.process = h.Process(argv, "systemd-nspawn").start()
        deadline = time.monotonic() + 30
        while self.leader is None:
            if not self.process.running:
                raise h.Skip(f"systemd-nspawn cannot boot the root (exit {self.process.poll()}): "
                             + self.process.read_stderr().strip()[-800:])
            if time.monotonic() > deadline:
                raise h.Skip("systemd-nspawn started no container init within 30 s"
                             + self.process.stderr_excerpt(5))
            self.leader = container_init(self.process.pid)
            time.sleep(0.05)
        t0 = time.monotonic()
        state = ""
        while state not in ("running", "degraded"):
            if not self.process.running:
                raise h.Skip(f"the container's systemd stopped during boot (exit {self.process.poll()})"
                             + self.process.stderr_excerpt(10))
            if time.monotonic() - t0 > BOOT_TIMEOUT_S:
                raise h.Skip(f"the container did not finish booting within {BOOT_TIMEOUT_S}s (state {state!r})"
                             + self.process.stderr_excerpt(10))
            r = self.run(["systemctl", "is-system-running"], timeout=10, check=False)
            state = r.stdout.strip()
            time.sleep(0.1)
        print(f"    boot: {state} after {time.monotonic() - t0:.1f}s (container init pid {self.leader})", flush=True)
        if state == "degraded":
            print("    failed units: " + self.run(["systemctl", "--failed", "--no-legend"], check=False)
                  .stdout.strip().replace("\n", "; "), flush=True)
        return self

    def run(self, argv: list, *, input: str | None = None, timeout: float = 60, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
        """argv inside the container (every namespace of its init), output captured."""
        full = ["nsenter", "-t", str(self.leader), "-a", "--", *[str(a) for a in argv]]
        environment = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", **(env or {})}
        try:
            r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input, env=environment,
                               stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"in the container: {' '.join(map(str, argv))}: no exit within {timeout:.0f}s") \
                from None
        if check and r.returncode != 0:
            raise AssertionError(f"in the container: {' '.join(map(str, argv))}: {out(r)}")
        return r

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.run(["sh", "-c", script], **kw)

    def path(self, path: str) -> Path:
        """A path of the container's file system as seen from the host (its init's root)."""
        return Path(f"/proc/{self.leader}/root{path}")

    def read(self, path: str) -> str | None:
        try:
            return self.path(path).read_text()
        except OSError:
            return None

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.sh(f"umask 077 && cat > {path} && chmod {mode} {path}", input=text)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        r = self.run(["systemctl", "show", unit, "-p", ",".join(props)])
        values = {}
        for line in r.stdout.splitlines():
            key, _, value = line.partition("=")
            values[key] = value
        return values

    def main_pid(self) -> int:
        return int(self.show("rampart.service", "MainPID")["MainPID"] or 0)

    def journal(self, unit: str, lines: int = 30) -> str:
        return self.run(["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "short-monotonic"],
                        check=False).stdout

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)  # SIGTERM: systemd-nspawn powers the container off
