"""Network namespaces for integration tests and benchmarks (Python 3.11 standard library only).

A ``Lab`` is a set of network namespaces made for one run: one namespace per host, each with a
veth whose other end is a port of one bridge that lives in a namespace of its own, so nothing
is created in the root namespace. What it gives:

* ``Lab(tag)``: a unique per-run prefix (``rfw1234``) for every namespace and link;
  ``add_host(name, address)`` then ``up()``; ``close()`` (also at exit and on SIGHUP/SIGINT/
  SIGTERM through ``install_signal_handlers``) stops whatever still runs inside the lab's
  namespaces (they are the lab's own: every such process was started by the run) and deletes
  the namespaces, which destroys their links;
* ``exec(host, argv)``: a command inside a host's namespace (``ip netns exec``), bounded in time;
  ``preexec(host)``: a ``preexec_fn`` that moves a child into the namespace without
  ``ip netns exec`` (for timing: no extra process, no mount namespace);
* ``socket(host, ...)``: a socket *created inside* a host's namespace from this process
  (``setns`` on the calling thread, then back): a socket keeps the namespace it was made in,
  so clients, listeners and raw packets need no helper process;
* ``TcpListeners``: listening sockets in namespaces served by one bounded thread (accept, echo);
* ``probe_tcp()``: many connects at once, each classified ``open`` / ``refused`` / ``timeout``
  (a dropped SYN) / ``unreachable``; ``ping()``; ``EchoProbe`` (when packets start being
  dropped, to within one interval); raw VRRP packets (``send_vrrp``,
  ``RawReceiver``);
* nftables helpers: ``nft()``, ``nft_genid()`` (NFT_MSG_GETGEN over netlink: the generation id
  changes with every committed transaction and only then), ``normalize_ruleset()``.

Rules: addresses are the caller's, and must be TEST-NET (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24) or 198.18.0.0/15; traffic only between the lab's namespaces; every wait has a
deadline; every process is signalled by PID only.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import ipaddress
import os
import re
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
IFNAMSIZ_MAX = 15  # interface names: at most 15 bytes
ALLOWED_NETS = [ipaddress.ip_network(n) for n in
                ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15")]

_libc = ctypes.CDLL(None, use_errno=True)
_setns_lock = threading.Lock()


class NetnsError(RuntimeError):
    pass


# ---------------------------------------------------------------------------
# Capabilities
# ---------------------------------------------------------------------------


def ensure_packages(tools: dict[str, str], timeout: float = 240) -> None:
    """Installs the Debian package of each missing tool (name -> package) with apt-get,
    when running as root and apt-get exists. Best effort: the caller re-checks."""
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})
    if not missing or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    argv = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    deadline = time.monotonic() + timeout
    for attempt in range(2):  # the second time after apt-get update
        try:
            if attempt == 1:
                subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True,
                               timeout=max(deadline - time.monotonic(), 1))
            r = subprocess.run(argv, env=env, capture_output=True, timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            return
        if r.returncode == 0:
            return


def skip_reason(tools: tuple[str, ...] = ("ip", "nft")) -> str | None:
    """Why this machine cannot run namespace tests, or None. Probes with a throw-away namespace."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} not found in PATH"
    probe = f"rfwprobe{os.getpid()}"
    try:
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            return f"ip netns unavailable: {r.stderr.strip()}"
        if "nft" in tools:
            r = subprocess.run(["ip", "netns", "exec", probe, "nft", "list", "ruleset"], capture_output=True,
                               text=True, timeout=10)
            if r.returncode != 0:
                return f"nft unusable in a network namespace: {r.stderr.strip()}"
    except subprocess.TimeoutExpired:
        return "ip netns / nft did not answer within 10 s"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def netns_names() -> set[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in r.stdout.splitlines() if line.strip()}


# ---------------------------------------------------------------------------
# setns
# ---------------------------------------------------------------------------


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def _ns_path(ns: str) -> str:
    return f"/run/netns/{ns}"


def socket_in_ns(ns: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket created inside network namespace ns (the calling thread enters it and returns)."""
    with _setns_lock:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(_ns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
                try:
                    return socket.socket(family, type_, proto)
                finally:
                    try:
                        _setns(own)
                    except OSError as e:  # cannot happen short of a kernel bug; do not go on in the wrong ns
                        os.write(2, f"netns: cannot return to own namespace: {e}\n".encode())
                        os._exit(70)
            finally:
                os.close(target)
        finally:
            os.close(own)


def http_request(ns: str, address: str, port: int, method: str = "GET", path: str = "/",
                 timeout: float = 5.0) -> bytes:
    """One HTTP/1.1 request (Connection: close, no body) from inside namespace ns; the raw
    answer, read to the end (bounded: 10,000 reads)."""
    s = socket_in_ns(ns, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    data = b""
    try:
        s.connect((address, port))
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
                  f"Connection: close\r\n\r\n".encode())
        for _ in range(10000):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return data


def preexec_enter(ns: str):
    """A preexec_fn for subprocess.Popen: the child joins ns before exec."""
    path = _ns_path(ns)

    def enter() -> None:
        fd = os.open(path, os.O_RDONLY)
        _setns(fd)
        os.close(fd)

    return enter


# ---------------------------------------------------------------------------
# The lab
# ---------------------------------------------------------------------------


@dataclass
class Host:
    name: str
    ns: str
    ifname: str
    address: str | None
    prefixlen: int
    index: int


_LABS: list["Lab"] = []


def unique_prefix(tag: str) -> str:
    """tag + pid % 10000, plus a letter if a namespace with that prefix already exists."""
    base = f"{tag}{os.getpid() % 10000}"
    existing = netns_names()
    for suffix in ["", *"abcdefghijklmnopqrstuvwxyz"]:
        prefix = base + suffix
        if not any(n.startswith(prefix + "-") for n in existing):
            return prefix
    raise NetnsError(f"no free namespace prefix for {base}")


def check_address(addr: str) -> None:
    ip = ipaddress.ip_address(addr)
    if not any(ip in net for net in ALLOWED_NETS):
        raise NetnsError(f"{addr} is not in a TEST-NET or benchmarking range")


class Lab:
    """Namespaces on one bridge; see the module comment."""

    def __init__(self, tag: str = "rfw", command_timeout: float = 60.0) -> None:
        self.prefix = unique_prefix(tag)
        self.bridge_ns = f"{self.prefix}-br"
        self.bridge = f"{self.prefix}-br"
        self.hosts: dict[str, Host] = {}
        self.bare: dict[str, str] = {}  # namespaces without a link
        self.created: list[str] = []
        self.command_timeout = command_timeout
        self.closed = False
        self.leftovers: list[int] = []
        _LABS.append(self)

    # -- building ---------------------------------------------------------------

    def _ifname(self, name: str, suffix: str, index: int) -> str:
        cand = f"{self.prefix}-{name}{suffix}"
        if len(cand) <= IFNAMSIZ_MAX:
            return cand
        cand = f"{self.prefix}-h{index}{suffix}"
        if len(cand) > IFNAMSIZ_MAX:
            raise NetnsError(f"interface name {cand} longer than {IFNAMSIZ_MAX}")
        return cand

    def add_host(self, name: str, address: str | None, prefixlen: int = 24) -> Host:
        if address is not None:
            check_address(address)
        index = len(self.hosts)
        host = Host(name, f"{self.prefix}-{name}", self._ifname(name, "", index), address, prefixlen, index)
        self.hosts[name] = host
        return host

    def add_namespace(self, name: str) -> str:
        """A namespace with only its loopback (made by up())."""
        ns = f"{self.prefix}-{name}"
        self.bare[name] = ns
        return ns

    def ns(self, name: str) -> str:
        return self.hosts[name].ns if name in self.hosts else self.bare[name]

    def address(self, name: str) -> str:
        addr = self.hosts[name].address
        assert addr is not None
        return addr

    def _ip(self, *args: str) -> None:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip()}")

    def _add_ns(self, ns: str) -> None:
        self._ip("netns", "add", ns)
        self.created.append(ns)
        self._ip("-n", ns, "link", "set", "lo", "up")

    def up(self) -> "Lab":
        """Creates every namespace, the bridge and the links; addresses up."""
        if self.hosts:
            self._add_ns(self.bridge_ns)
            self._ip("-n", self.bridge_ns, "link", "add", self.bridge, "type", "bridge")
            self._ip("-n", self.bridge_ns, "link", "set", self.bridge, "up")
        for ns in self.bare.values():
            self._add_ns(ns)
        for host in self.hosts.values():
            self._add_ns(host.ns)
            port = self._ifname(host.name, "b", host.index)
            # Both ends are created directly in their namespaces: nothing appears in the root one.
            self._ip("-n", host.ns, "link", "add", host.ifname, "type", "veth", "peer", "name", port,
                     "netns", self.bridge_ns)
            self._ip("-n", self.bridge_ns, "link", "set", port, "master", self.bridge)
            self._ip("-n", self.bridge_ns, "link", "set", port, "up")
            if host.address:
                self._ip("-n", host.ns, "addr", "add", f"{host.address}/{host.prefixlen}", "dev", host.ifname)
            self._ip("-n", host.ns, "link", "set", host.ifname, "up")
        return self

    # -- running things inside ----------------------------------------------------

    def exec(self, host: str, argv: list, *, timeout: float | None = None, env: dict | None = None,
             input: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        """argv inside the host's namespace (ip netns exec), output captured as text."""
        full = ["ip", "netns", "exec", self.ns(host), *[str(a) for a in argv]]
        try:
            r = subprocess.run(full, capture_output=True, text=True, timeout=timeout or self.command_timeout,
                               env=env, input=input, stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{' '.join(full)}: no exit within {e.timeout:.0f}s") from None
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(full)}: exit {r.returncode}: {r.stderr.strip()}")
        return r

    def argv(self, host: str, argv: list) -> list[str]:
        """argv prefixed with ip netns exec (for a long-running harness Process)."""
        return ["ip", "netns", "exec", self.ns(host), *[str(a) for a in argv]]

    def preexec(self, host: str):
        return preexec_enter(self.ns(host))

    def socket(self, host: str, family: int = socket.AF_INET, type_: int = socket.SOCK_STREAM,
               proto: int = 0) -> socket.socket:
        return socket_in_ns(self.ns(host), family, type_, proto)

    def connects(self, host: str, address: str, port: int, timeout: float = 0.5) -> bool:
        """Whether a TCP connection from `host` to address:port is accepted within `timeout`."""
        s = self.socket(host)
        s.settimeout(timeout)
        try:
            s.connect((address, port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def pids(self) -> list[int]:
        """Processes that run inside the lab's namespaces."""
        out: set[int] = set()
        for ns in self.created:
            if os.path.exists(_ns_path(ns)):
                r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
                out.update(int(p) for p in r.stdout.split() if p.isdigit())
        return sorted(out)

    # -- teardown -------------------------------------------------------------------

    def close(self) -> list[int]:
        """Stops the processes still inside the lab (SIGTERM, then SIGKILL, by PID), deletes every
        namespace the lab made. Idempotent. Returns the PIDs it had to stop."""
        if self.closed:
            return self.leftovers
        self.closed = True
        try:
            self.leftovers = self.pids()
            for pid in self.leftovers:
                _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and any(_alive(p) for p in self.leftovers):
                time.sleep(0.05)
            for pid in self.leftovers:
                if _alive(pid):
                    _signal(pid, signal.SIGKILL)
        except Exception:  # noqa: BLE001 (deleting the namespaces matters more)
            pass
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.created.clear()
        return self.leftovers


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def close_all() -> None:
    for lab in list(_LABS):
        try:
            lab.close()
        except Exception:  # noqa: BLE001
            pass


atexit.register(close_all)


def install_signal_handlers() -> None:
    """SIGHUP, SIGINT and SIGTERM raise KeyboardInterrupt (so finally blocks run and the lab is
    removed) where their handler is still the default one."""
    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        if current in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, on_signal)


# ---------------------------------------------------------------------------
# TCP listeners and probes
# ---------------------------------------------------------------------------


class TcpListeners:
    """Listening sockets in any namespaces, served by one thread: accept, echo what arrives,
    close on EOF. Bounded: at most max_conns open connections (the oldest is closed)."""

    def __init__(self, max_conns: int = 2000) -> None:
        self.sel = selectors.DefaultSelector()
        self.max_conns = max_conns
        self.conns: list[socket.socket] = []
        self.listeners: list[tuple[str, int, socket.socket]] = []
        self.accepted: dict[tuple[str, int], list[str]] = {}  # (host, port) -> peer addresses
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def listen(self, lab: Lab, host: str, port: int, address: str = "0.0.0.0") -> None:
        s = lab.socket(host, socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(512)
        s.setblocking(False)
        with self.lock:
            self.listeners.append((host, port, s))
            self.accepted[(host, port)] = []
            self.sel.register(s, selectors.EVENT_READ, ("listen", host, port))

    def start(self) -> "TcpListeners":
        self.thread = threading.Thread(target=self._run, name="tcp-listeners", daemon=True)
        self.thread.start()
        return self

    def peers(self, host: str, port: int) -> list[str]:
        with self.lock:
            return list(self.accepted.get((host, port), []))

    def _close_conn(self, c: socket.socket) -> None:
        try:
            self.sel.unregister(c)
        except (KeyError, ValueError):
            pass
        c.close()
        if c in self.conns:
            self.conns.remove(c)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            with self.lock:
                events = self.sel.select(timeout=0.05)
                for key, _ in events:
                    kind = key.data[0]
                    if kind == "listen":
                        for _ in range(64):
                            try:
                                c, peer = key.fileobj.accept()
                            except (BlockingIOError, OSError):
                                break
                            c.setblocking(False)
                            self.accepted[(key.data[1], key.data[2])].append(peer[0])
                            if len(self.accepted[(key.data[1], key.data[2])]) > 10000:
                                del self.accepted[(key.data[1], key.data[2])][:5000]
                            self.conns.append(c)
                            self.sel.register(c, selectors.EVENT_READ, ("conn",))
                            while len(self.conns) > self.max_conns:
                                self._close_conn(self.conns[0])
                    else:
                        c = key.fileobj
                        try:
                            data = c.recv(65536)
                        except BlockingIOError:
                            continue
                        except OSError:
                            data = b""
                        if not data:
                            self._close_conn(c)
                            continue
                        try:
                            c.send(data)  # small test messages: one send is enough
                        except OSError:
                            self._close_conn(c)

    def close(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        with self.lock:
            for c in list(self.conns):
                self._close_conn(c)
            for _, _, s in self.listeners:
                try:
                    self.sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()
            self.listeners.clear()


@dataclass(frozen=True)
class Probe:
    src: str    # host name
    dst: str    # address
    port: int


def probe_tcp(lab: Lab, probes: list[Probe], timeout: float = 0.5) -> dict[Probe, str]:
    """Connects for every probe at once (non-blocking), each from its source host's namespace.
    Result per probe: "open", "refused", "timeout" (no answer: dropped), "unreachable" or
    "error:<name>". A connection that opened is closed at once."""
    results: dict[Probe, str] = {}
    pending: dict[int, tuple[Probe, socket.socket]] = {}
    poller = select.poll()
    try:
        for p in probes:
            s = lab.socket(p.src, socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((p.dst, p.port))
            if rc in (0, errno.EINPROGRESS):
                pending[s.fileno()] = (p, s)
                poller.register(s, select.POLLOUT | select.POLLERR | select.POLLHUP)
            else:
                results[p] = _classify(rc)
                s.close()
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for fd, _ in poller.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                if fd not in pending:
                    continue
                p, s = pending.pop(fd)
                poller.unregister(fd)
                results[p] = _classify(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
                s.close()
        for p, s in pending.values():
            results[p] = "timeout"
            s.close()
        pending.clear()
    finally:
        for _, s in pending.values():
            s.close()
    return results


def _classify(err: int) -> str:
    if err == 0:
        return "open"
    if err == errno.ECONNREFUSED:
        return "refused"
    if err in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if err == errno.ETIMEDOUT:
        return "timeout"
    return f"error:{errno.errorcode.get(err, err)}"


def tcp_connect(lab: Lab, src: str, dst: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A connected, blocking TCP socket from src's namespace (raises on failure). `timeout`
    (connect and every later send/recv) is a guard against a hang, not a speed bound."""
    s = lab.socket(src, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
    except OSError:
        s.close()
        raise
    return s


# ---------------------------------------------------------------------------
# Raw packets: ICMP echo, VRRP
# ---------------------------------------------------------------------------


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int) -> bytes:
    payload = b"rampart-netns-ping"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, inet_checksum(header + payload), ident, seq) + payload


def _echo_reply(data: bytes, peer: tuple, dst: str, ident: int) -> int | None:
    """The sequence number of an echo reply from dst for ident in a raw IPv4 datagram, or None."""
    ihl = (data[0] & 0x0F) * 4
    icmp = data[ihl:ihl + 8]
    if len(icmp) == 8 and peer[0] == dst:
        typ, _, _, rid, rseq = struct.unpack("!BBHHH", icmp)
        if typ == 0 and rid == ident:
            return rseq
    return None


def ping(lab: Lab, src: str, dst: str, timeout: float = 5.0, ident: int | None = None) -> bool:
    """One ICMP echo request from src to dst; True if the matching reply arrives in time (it
    returns with the reply: the default `timeout` is a guard for an echo that must come; a
    check that one does not come passes its own, short one)."""
    ident = (ident if ident is not None else os.getpid()) & 0xFFFF
    seq = int(time.monotonic() * 1000) & 0xFFFF
    s = lab.socket(src, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        s.sendto(_echo_request(ident, seq), (dst, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([s], [], [], max(deadline - time.monotonic(), 0))
            if not r:
                break
            data, peer = s.recvfrom(4096)
            if _echo_reply(data, peer, dst, ident) == seq:
                return True
        return False
    finally:
        s.close()


class EchoProbe:
    """ICMP echo requests from src to dst every `interval` seconds on a thread of its own, each
    with its send time and whether its reply came: when packets from src start being dropped
    (a blocklist), to within one interval, without opening connections. Bounded: stops by
    itself after max_s. Use as a context manager."""

    def __init__(self, lab: Lab, src: str, dst: str, interval: float = 0.125, max_s: float = 60.0) -> None:
        self.lab, self.src, self.dst = lab, src, dst
        self.interval, self.max_s = interval, max_s
        self.ident = (os.getpid() ^ 0x5A5A ^ id(self)) & 0xFFFF
        self.sent: list[float] = []           # send time of seq i (monotonic)
        self.answered: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "EchoProbe":
        self._sock = self.lab.socket(self.src, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self._thread = threading.Thread(target=self._run, name=f"echo-{self.src}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._sock.close()

    def _run(self) -> None:
        end = time.monotonic() + self.max_s
        next_send = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < end and len(self.sent) < 0x10000:
            now = time.monotonic()
            if now >= next_send:
                seq = len(self.sent)
                self.sent.append(now)
                self._sock.sendto(_echo_request(self.ident, seq), (self.dst, 0))
                next_send = now + self.interval
            r, _, _ = select.select([self._sock], [], [], max(next_send - time.monotonic(), 0))
            if r:
                data, peer = self._sock.recvfrom(4096)
                seq = _echo_reply(data, peer, self.dst, self.ident)
                if seq is not None:
                    self.answered.add(seq)

    def first_dropped(self, after: float, grace: float = 0.5, run: int = 3) -> float | None:
        """Send time of the first echo sent at or after `after` that went unanswered, with the
        `run - 1` next ones unanswered too and all of them older than `grace` (time for a
        reply to come); None if there is none."""
        horizon = time.monotonic() - grace
        seqs = [i for i, t in enumerate(self.sent) if t >= after and t <= horizon]
        for k, i in enumerate(seqs):
            window = seqs[k:k + run]
            if len(window) == run and not any(j in self.answered for j in window):
                return self.sent[i]
        return None


IPPROTO_VRRP = 112
VRRP_GROUP = "224.0.0.18"


def vrrp_packet(vrid: int, priority: int, address: str, marker: int) -> bytes:
    """A VRRPv2 advertisement (RFC 3768) with one virtual address; marker (32 bits) goes into the
    authentication data so a receiver can tell this packet apart."""
    body = struct.pack("!BBBBBBH", 0x21, vrid, priority, 1, 0, 1, 0) + socket.inet_aton(address) \
        + struct.pack("!II", marker, 0)
    csum = inet_checksum(body)
    return body[:6] + struct.pack("!H", csum) + body[8:]


def send_vrrp(lab: Lab, src: str, dst: str, marker: int, *, vrid: int = 51, priority: int = 100,
              vip: str = "192.0.2.10") -> None:
    """One VRRP advertisement from src's address to dst (unicast, or the VRRP group 224.0.0.18
    out of src's interface), TTL 255 as RFC 3768 requires."""
    s = lab.socket(src, socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
    try:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(lab.address(src)))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        s.sendto(vrrp_packet(vrid, priority, vip, marker), (dst, 0))
    finally:
        s.close()


class RawReceiver:
    """A raw socket for one IP protocol in a host's namespace (joined to the VRRP group for VRRP).
    Raw sockets get a packet after the input hook, so what arrives here passed the firewall."""

    def __init__(self, lab: Lab, host: str, proto: int = IPPROTO_VRRP, group: str | None = VRRP_GROUP) -> None:
        self.sock = lab.socket(host, socket.AF_INET, socket.SOCK_RAW, proto)
        if group:
            mreq = socket.inet_aton(group) + socket.inet_aton(lab.address(host))
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        self.sock.setblocking(False)
        self.seen: list[tuple[str, str, bytes]] = []  # (source, destination, payload)

    def _drain(self) -> None:
        for _ in range(10000):
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            ihl = (data[0] & 0x0F) * 4
            self.seen.append((socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20]), data[ihl:]))

    def got_vrrp(self, marker: int, timeout: float) -> bool:
        """True if a VRRP packet carrying marker arrives within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            for _, _, payload in self.seen:
                if len(payload) >= 20 and struct.unpack("!I", payload[12:16])[0] == marker:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([self.sock], [], [], min(left, 0.1))

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------
# nftables
# ---------------------------------------------------------------------------

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
NLMSG_ERROR = 2
NLM_F_REQUEST = 1


def nft(lab: Lab, host: str, *args: str, check: bool = True, input: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """nft ARGS inside the host's namespace."""
    return lab.exec(host, ["nft", *args], check=check, input=input, timeout=timeout)


def nft_genid(lab: Lab, host: str) -> int:
    """The nftables generation id of the host's namespace (NFT_MSG_GETGEN)."""
    s = lab.socket(host, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        s.bind((0, 0))
        s.settimeout(2.0)
        seq = int(time.monotonic() * 1000) & 0x7FFFFFFF
        msg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
        payload = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)  # nfgenmsg, NFNETLINK_V0
        s.send(struct.pack("=IHHII", 16 + len(payload), msg_type, NLM_F_REQUEST, seq, 0) + payload)
        for _ in range(16):
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, typ, _flags, rseq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    break
                if rseq == seq and typ == NLMSG_ERROR:
                    err = struct.unpack_from("=i", data, off + 16)[0]
                    raise NetnsError(f"NFT_MSG_GETGEN: {os.strerror(-err)}")
                if rseq == seq and typ == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
                    a = off + 16 + 4
                    while a + 4 <= off + length:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        if atype & 0x3FFF == NFTA_GEN_ID:
                            return struct.unpack_from("!I", data, a + 4)[0]
                        a += (alen + 3) & ~3
                off += (length + 3) & ~3
        raise NetnsError("NFT_MSG_GETGEN: no generation id in the answer")
    finally:
        s.close()


_EXPIRES = re.compile(r"\s+expires\s+[0-9dhms]+")


def normalize_ruleset(text: str) -> str:
    """nft listing text without what changes by itself: element expiry countdowns, trailing
    blanks, blank lines."""
    text = _EXPIRES.sub("", text)
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())
