#!/usr/bin/env python3
"""Side-by-side benchmark of Rampart, HAProxy and nginx (python3 stdlib only).

Started by bench/run.sh, which installs the tools, builds Rampart (Release),
makes the certificates, starts the two backends and the OpenSSL floor
program. This driver starts each gateway with --workers workers (Rampart
`workers`, HAProxy `nbthread`, nginx `worker_processes`; default one) pinned
to --gateway-cpus (default CPU 1), runs the measurements from the load CPUs
(where run.sh pinned it, and so the load generators it starts, one thread per
load CPU), interleaves the gateways round by round (A B C A B C ...) and
prints a markdown table of the medians.

Every gateway is offered the same TLS 1.3 suites and prefers
TLS_AES_128_GCM_SHA256 (Rampart's default; HAProxy and nginx are configured
to it), so that the suite on the wire is the same for all three; the report
lists what each negotiated.

The primary figure is the gateway's own CPU time per unit of work: utime +
stime of its whole process tree (master and workers) from /proc, divided by
the requests, connections or MiB completed.

Every loop here is bounded in count and time; only processes this driver
started are stopped, by PID.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

GATEWAYS = ("rampart", "haproxy", "nginx")
# --rampart-before BIN: the same measurements on an earlier Rampart, interleaved with the rest.
BEFORE = "rampart-before"
TITLES = {"rampart": "Rampart", "haproxy": "HAProxy", "nginx": "nginx", BEFORE: "Rampart before"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
SITE = "www.foobar.com"
# OpenSSL's default TLS 1.3 suites in its default order, which wrk and Python
# offer; h2load is told to offer the same, so that every gateway negotiates
# the same suite with every load generator (the table lists what was).
TLS13_SUITES = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
# The server-side preference every gateway is given (Rampart's default order).
SERVER_TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
# What each measurement is called on the command line (--figures).
FIGURES = ("idle", "keep-alive", "fixed", "resumed", "full", "mib", "static", "gzip", "h2", "h2-idle")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


# ---------------------------------------------------------------- /proc


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (via /proc/<pid>/task/<tid>/children)."""
    out, todo, seen = [], [root], set()
    while todo and len(seen) < 10000:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    return out


def proc_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def tree_cpu_seconds(root: int) -> float:
    return sum(proc_cpu_seconds(p) for p in tree_pids(root))


def tree_rss_bytes(root: int) -> int:
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_ctx() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def read_response(s: ssl.SSLSocket, deadline: float) -> int:
    """Reads one HTTP/1.1 response with Content-Length; returns the status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline or len(buf) > 65536:
            raise TimeoutError("response header")
        chunk = s.recv(16384)
        if not chunk:
            raise ConnectionError("closed before the response header")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        if time.monotonic() > deadline:
            raise TimeoutError("response body")
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the response body")
        body += chunk
    return status


def https_get(port: int, ctx: ssl.SSLContext, timeout: float = 5.0) -> tuple[ssl.SSLSocket, int]:
    deadline = time.monotonic() + timeout
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s = ctx.wrap_socket(raw, server_hostname=SITE)
        s.sendall(f"GET / HTTP/1.1\r\nHost: {SITE}\r\n\r\n".encode())
        return s, read_response(s, deadline)
    except BaseException:
        raw.close()
        raise


def http_get_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # loopback admin listener
        return r.read().decode()


def run(cmd: list[str], timeout: float) -> str:
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {p.stdout[-2000:]}")
    return p.stdout


UNITS_TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
UNITS_SIZE = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def wrk_latency_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"latency {text!r}")
    return float(m.group(1)) * UNITS_TIME[m.group(2)]


def parse_wrk(out: str) -> dict:
    r: dict = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)(B|KB|MB|GB|TB) read", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    r["requests"] = int(m.group(1))
    r["seconds"] = float(m.group(2)) * UNITS_TIME[m.group(3)] / 1e3
    r["bytes"] = float(m.group(4)) * UNITS_SIZE[m.group(5)]
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = wrk_latency_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def parse_h2load(out: str) -> dict:
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not m:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    r = {"succeeded": int(m.group(4)), "failed": int(m.group(5)) + int(m.group(6)) + int(m.group(7))}
    m = re.search(r"finished in ([\d.]+)(us|ms|s)", out)
    r["seconds"] = float(m.group(1)) * UNITS_TIME[m.group(2)] / 1e3 if m else 0.0
    m = re.search(r"status codes: (\d+) 2xx", out)
    r["ok"] = int(m.group(1)) if m else 0
    for key, pat in (("protocol", r"TLS Protocol: (\S+)"), ("cipher", r"Cipher: (\S+)"),
                     ("group", r"Server Temp Key: (.+)")):
        m = re.search(pat, out)
        r[key] = m.group(1).strip() if m else "?"
    return r


def percentile(values: list[float], pct: float) -> float:
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(pct / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def med(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def cpu_list(text: str) -> list[int]:
    """taskset's list form ("1", "2-5", "1,3") as CPU numbers."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    if not out or len(out) > 1024:
        raise ValueError(f"CPU list {text!r}")
    return out


def nginx_mask(cpus: str) -> str:
    """worker_cpu_affinity's bit mask of the gateway CPUs (rightmost bit = CPU 0)."""
    mask = 0
    for c in cpu_list(cpus):
        mask |= 1 << c
    return format(mask, "b")


# ---------------------------------------------------------------- gateways


class Gateway:
    """One gateway instance: master (+ workers), its workers pinned to the gateway CPUs."""

    def __init__(self, kind: str, args, work: str, verify_log: str | None = None):
        self.kind = kind
        self.args = args
        self.dir = tempfile.mkdtemp(prefix=f"{kind}-", dir=work)
        self.port = free_port()
        self.rampart_like = kind in ("rampart", BEFORE)
        self.admin_port = free_port() if self.rampart_like else None
        self.stats_sock = os.path.join(self.dir, "stats.sock") if kind == "haproxy" else None
        self.verify_log = verify_log
        self.proc: subprocess.Popen | None = None
        self.known_pids: set[int] = set()

    # -- configuration files, as an expert operator would write them --------

    def _rampart_config(self) -> list[str]:
        a = self.args
        path = os.path.join(self.dir, "rampart.yaml")
        with open(path, "w") as f:
            f.write(f"""site: {SITE}
servers:
  app1: {{ address: 127.0.0.1, role: app, port: {a.backend_ports[0]} }}
  app2: {{ address: 127.0.0.1, role: app, port: {a.backend_ports[1]} }}
gateway:
  listen: {{ https: "127.0.0.1:{self.port}", admin: "127.0.0.1:{self.admin_port}" }}
  workers: {a.workers}
  user: ""
  tls: {{ certificates: [ {{ cert: {a.certs}/ecdsa.pem, key: {a.certs}/ecdsa.key }} ], session_tickets: true }}
  pools: {{ app: {{ balance: round_robin, servers: [app1, app2] }} }}
  timeouts: {{ idle: 120s, drain: 2s }}
  limits: {{ body_bytes: 16MiB, upstream_idle_per_server: 1024, max_connections_per_client: 0 }}
""")
            if self.kind == "rampart":
                # gzip at nginx's level for the compression figure: only the
                # /text1m page qualifies (the others are text/plain under
                # 1 KiB or octet-stream), and only wrk's gzip requests ask.
                f.write("""  compression: { codings: [gzip], gzip_level: 6, types: [text/html] }
""")
                # Static files (an earlier binary may not know the key: it proxies only).
                f.write(f"""  routes:
    - {{ path: /static/, static: {{ root: {a.static_dir}, precompressed: false }} }}
    - {{ path: /, pool: app }}
""")
        return [a.rampart_before if self.kind == BEFORE else a.rampart, "serve", "-c", path]

    def _haproxy_config(self) -> list[str]:
        a = self.args
        pem = os.path.join(self.dir, "ecdsa.pem")  # HAProxy wants cert + key in one file
        with open(f"{a.certs}/ecdsa.pem") as c, open(f"{a.certs}/ecdsa.key") as k:
            data = c.read() + k.read()
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data)
        path = os.path.join(self.dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(f"""global
    nbthread {a.workers}
    maxconn {max(1000, min(20000, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200) // 2))}
    stats socket {self.stats_sock} mode 600 level admin
    ssl-default-bind-options ssl-min-ver TLSv1.2
    ssl-default-bind-ciphersuites {SERVER_TLS13_SUITES}
    ssl-default-bind-ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305
    tune.ssl.cachesize 100000

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 3s
    timeout client 120s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 120s

frontend https
    bind 127.0.0.1:{self.port} ssl crt {pem} alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https
    http-response set-header Strict-Transport-Security "max-age=31536000; includeSubDomains"
    default_backend app

backend app
    balance roundrobin
    server app1 127.0.0.1:{a.backend_ports[0]}
    server app2 127.0.0.1:{a.backend_ports[1]}
""")  # session tickets stay on (the default)
        return ["haproxy", "-db", "-f", path]

    def _nginx_config(self) -> list[str]:
        a = self.args
        d = self.dir
        if self.verify_log:
            access = (f"log_format reuse '$ssl_session_reused $ssl_protocol';\n"
                      f"    access_log {self.verify_log} reuse buffer=64k;")
        else:
            access = "access_log off;"
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(f"""user root root;
worker_processes {a.workers};
worker_cpu_affinity auto {nginx_mask(a.gateway_cpus)};
worker_rlimit_nofile 30000;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 20000; }}
http {{
    {access}
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    upstream app {{
        server 127.0.0.1:{a.backend_ports[0]};
        server 127.0.0.1:{a.backend_ports[1]};
        keepalive 2048;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{self.port} ssl http2;
        server_name {SITE};
        ssl_certificate {a.certs}/ecdsa.pem;
        ssl_certificate_key {a.certs}/ecdsa.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites {SERVER_TLS13_SUITES};
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305;
        ssl_session_tickets on;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1h;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size 0;
            add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;
            gzip on;
            gzip_comp_level 6;
            gzip_types text/html;
            gzip_proxied any;
            gzip_min_length 1024;
            gzip_vary on;
        }}
        location /static/ {{
            alias {a.static_dir}/;
            add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;
        }}
    }}
}}
""")
        return ["nginx", "-p", d, "-c", path]

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        cmd = {"rampart": self._rampart_config, BEFORE: self._rampart_config, "haproxy": self._haproxy_config,
               "nginx": self._nginx_config}[self.kind]()
        self.logf = open(os.path.join(self.dir, "stderr.log"), "w")
        self.proc = subprocess.Popen(["taskset", "-c", self.args.gateway_cpus] + cmd, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.known_pids.add(self.proc.pid)
        ctx = client_ctx()
        deadline = time.monotonic() + 15
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited {self.proc.returncode} at start: {self.log_tail()}")
            try:
                s, status = https_get(self.port, ctx, timeout=2)
                s.close()
                if status == 200:
                    break
                last = f"status {status}"
            except (OSError, ValueError) as e:
                last = repr(e)
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{self.kind} not serving after 15 s ({last}): {self.log_tail()}")
        self.known_pids.update(tree_pids(self.proc.pid))
        if self.rampart_like:
            http_get_text(f"http://127.0.0.1:{self.admin_port}/healthz")

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.dir, "stderr.log")) as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid

    def stop(self) -> None:
        if not self.proc:
            return
        if self.proc.poll() is None:
            self.known_pids.update(tree_pids(self.proc.pid))
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        # Workers that outlived their master: only PIDs we saw in our tree,
        # and only if they still carry the gateway's name.
        for pid in sorted(self.known_pids - {self.proc.pid}):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
                if comm.startswith(self.kind[:6]):
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        self.proc = None
        self.logf.close()

    # -- handshake counters, to verify resumption ------------------------------

    def handshake_counts(self) -> tuple[int, int] | None:
        """(full, resumed) TLS handshakes so far, where the gateway says so."""
        if self.rampart_like:
            text = http_get_text(f"http://127.0.0.1:{self.admin_port}/metrics")
            full = re.search(r'^rampart_tls_handshakes_total\{kind="full"\} (\d+)', text, re.M)
            res = re.search(r'^rampart_tls_handshakes_total\{kind="resumed"\} (\d+)', text, re.M)
            if full and res:
                return int(full.group(1)), int(res.group(1))
            return None
        if self.kind == "haproxy":
            text = self.haproxy_cmd("show stat typed")
            sess = reused = None
            for line in text.splitlines():
                # F.<iid>.0.<field#>.ssl_sess.1:MCP:u64:N  (frontend line only)
                m = re.match(r"F\.\d+\.0\.\d+\.(ssl_sess|ssl_reused_sess)\.\d+:\w+:\w+:(\d+)", line)
                if m:
                    if m.group(1) == "ssl_sess":
                        sess = (sess or 0) + int(m.group(2))
                    else:
                        reused = (reused or 0) + int(m.group(2))
            if sess is None or reused is None:
                return None
            return sess, reused  # ssl_sess counts new (full) sessions only
        return None

    def haproxy_cmd(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.stats_sock)
            s.sendall((command + "\n").encode())
            data = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.decode(errors="replace")


# ---------------------------------------------------------------- measurements


def measure_cpu(gw: Gateway, fn):
    c0 = tree_cpu_seconds(gw.pid)
    r = fn()
    c1 = tree_cpu_seconds(gw.pid)
    r["cpu_s"] = c1 - c0
    return r


def wrk(gw: Gateway, path: str, conns: int, dur: float, close: bool = False) -> dict:
    cmd = ["wrk", f"-t{gw.args.load_threads}", f"-c{conns}", f"-d{dur:g}s", "--latency", "--timeout", "5s",
           "-H", f"Host: {SITE}"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"https://127.0.0.1:{gw.port}{path}")
    return parse_wrk(run(cmd, timeout=dur + 60))


def m_keepalive(gw, a) -> dict:
    r = measure_cpu(gw, lambda: wrk(gw, "/", a.conns, a.duration))
    return {"ka_rps": r["requests"] / r["seconds"], "ka_p50": r["p50_ms"], "ka_p99": r["p99_ms"],
            "ka_cpu_us": r["cpu_s"] * 1e6 / max(1, r["requests"]),
            "ka_busy": r["cpu_s"] / r["seconds"], "ka_bad": r["non2xx"] + r["errors"]}


def fixed_rate(gw, a, extra: list[str], per_client: int) -> tuple[dict, list[float]]:
    """h2load at `per_client` requests per second per client: its summary and
    the latency in ms of each 200 (from its per-request log)."""
    logf = os.path.join(gw.dir, "h2load-rate.log")
    cmd = ["h2load", *extra, f"-t{a.load_threads}", f"-c{a.conns}", f"--rps={per_client}", f"-D{int(a.duration)}",
           f"--tls13-ciphers={TLS13_SUITES}", f"--connect-to=127.0.0.1:{gw.port}", f"--log-file={logf}",
           f"https://{SITE}:{gw.port}/"]
    r = parse_h2load(run(cmd, timeout=a.duration + 60))
    lat = []
    with open(logf) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].strip() == "200":
                lat.append(int(parts[2]) / 1e3)
    os.unlink(logf)
    return r, lat


def m_fixed_load(gw, a) -> dict:
    """p50/p99 at the same offered load for every gateway (h2load, fixed rate)."""
    per_client = max(1, a.fixed_rps // a.conns)
    r, lat = fixed_rate(gw, a, ["--h1"], per_client)
    if not lat:
        return {}
    return {"fx_rps": len(lat) / max(1e-9, r["seconds"]) if r["seconds"] else None,
            "fx_p50": percentile(lat, 50), "fx_p99": percentile(lat, 99),
            "fx_offered": per_client * a.conns}


def m_resumed(gw, a) -> dict:
    before = gw.handshake_counts()
    r = measure_cpu(gw, lambda: wrk(gw, "/", a.conns, a.duration, close=True))
    after = gw.handshake_counts()
    out = {"rs_cps": r["requests"] / r["seconds"], "rs_cpu_us": r["cpu_s"] * 1e6 / max(1, r["requests"]),
           "rs_bad": r["non2xx"] + r["errors"]}
    if before and after:
        full, res = after[0] - before[0], after[1] - before[1]
        if full + res:
            out["rs_ratio"] = res / (full + res)
    return out


def m_full(gw, a) -> dict:
    before = gw.handshake_counts()
    totals = {"succeeded": 0, "failed": 0, "seconds": 0.0}
    info = {}
    batch = a.h2load_batch

    def go():
        t_end = time.monotonic() + a.duration
        for _ in range(10000):  # bounded; ends on time
            if time.monotonic() >= t_end:
                break
            # -n == -c: every client makes exactly one connection with one request.
            r = parse_h2load(run(["h2load", "--h1", f"-t{a.load_threads}", f"-n{batch}", f"-c{batch}",
                                  f"--tls13-ciphers={TLS13_SUITES}",
                                  f"--connect-to=127.0.0.1:{gw.port}", f"https://{SITE}:{gw.port}/"],
                                 timeout=60))
            for k in totals:
                totals[k] += r[k]
            info.update({k: r[k] for k in ("protocol", "cipher", "group")})
        return {}

    r = measure_cpu(gw, go)
    after = gw.handshake_counts()
    out = {"fh_hps": totals["succeeded"] / max(1e-9, totals["seconds"]),
           "fh_cpu_us": r["cpu_s"] * 1e6 / max(1, totals["succeeded"]),
           "fh_bad": totals["failed"], "fh_tls": f"{info.get('protocol')} {info.get('cipher')} {info.get('group')}"}
    if before and after:
        full, res = after[0] - before[0], after[1] - before[1]
        if full + res:
            out["fh_resumed"] = res / (full + res)
    return out


def m_mib(gw, a) -> dict:
    r = measure_cpu(gw, lambda: wrk(gw, "/1m", a.mib_conns, a.duration))
    mib = r["requests"]  # each response carries a 1 MiB body
    return {"mb_mibps": mib / r["seconds"], "mb_cpu_us": r["cpu_s"] * 1e6 / max(1, mib),
            "mb_busy": r["cpu_s"] / r["seconds"],
            "mb_bad": r["non2xx"] + r["errors"]}


def m_static(gw, a) -> dict:
    """A 1 MiB file from the gateway's own disk (page cache): Rampart's static
    route against nginx's `alias`; HAProxy serves no files."""
    if gw.kind not in ("rampart", "nginx"):
        return {}
    r = measure_cpu(gw, lambda: wrk(gw, "/static/1m.bin", a.mib_conns, a.duration))
    mib = r["requests"]
    return {"st_mibps": mib / r["seconds"], "st_cpu_us": r["cpu_s"] * 1e6 / max(1, mib),
            "st_bad": r["non2xx"] + r["errors"]}


def m_gzip(gw, a) -> dict:
    """gzip level 6 of a 1 MiB HTML page the app server sends uncompressed:
    Rampart's compression against nginx's gzip module (HAProxy 2.6's is
    libslz, which has no levels: not the same work). CPU per MiB of the page."""
    if gw.kind not in ("rampart", "nginx"):
        return {}
    cmd = ["wrk", f"-t{a.load_threads}", f"-c{a.mib_conns}", f"-d{a.duration:g}s", "--latency", "--timeout", "5s",
           "-H", f"Host: {SITE}", "-H", "Accept-Encoding: gzip", f"https://127.0.0.1:{gw.port}/text1m"]
    r = measure_cpu(gw, lambda: parse_wrk(run(cmd, timeout=a.duration + 60)))
    mib = r["requests"]
    # Each response is the page gzip-compressed: check that it was (the bytes per response are far below 1 MiB).
    per = r.get("bytes", 0) / max(1, mib)
    if mib and per > 512 * 1024:
        raise RuntimeError(f"{gw.kind}: /text1m came back uncompressed ({per:.0f} bytes per response)")
    return {"gz_cpu_us": r["cpu_s"] * 1e6 / max(1, mib), "gz_ratio": per / (1024 * 1024) if mib else None,
            "gz_bad": r["non2xx"] + r["errors"]}


def m_h2(gw, a) -> dict:
    """HTTP/2: h2load -c64 -m10 closed loop (CPU per request), then the same
    clients at a fixed offered rate (latency percentiles from its log)."""
    if gw.kind == BEFORE:
        return {}  # an earlier binary may not speak h2; before/after compares HTTP/1.1
    def load():
        return parse_h2load(run(["h2load", f"-t{a.load_threads}", f"-c{a.conns}", f"-m{a.h2_streams}", f"-D{int(a.duration)}",
                                 f"--tls13-ciphers={TLS13_SUITES}", f"--connect-to=127.0.0.1:{gw.port}",
                                 f"https://{SITE}:{gw.port}/"], timeout=a.duration + 60))
    r = measure_cpu(gw, load)
    if r.get("protocol") == "?" or not r["ok"]:
        raise RuntimeError(f"h2load over h2 failed: {r}")
    out = {"h2_rps": r["ok"] / max(1e-9, r["seconds"]), "h2_cpu_us": r["cpu_s"] * 1e6 / max(1, r["ok"]),
           "h2_bad": r["failed"]}
    fr, lat = fixed_rate(gw, a, [f"-m{a.h2_streams}"], max(1, a.fixed_rps // a.conns))
    if lat:
        out.update({"h2_p50": percentile(lat, 50), "h2_p99": percentile(lat, 99)})
    out["h2_bad"] += fr["failed"]
    return out


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_get(port: int, ctx: ssl.SSLContext, timeout: float = 10.0) -> ssl.SSLSocket:
    """An HTTP/2 connection that made one GET / and stays open (stdlib only:
    the request block uses HPACK's static table and one literal)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s = ctx.wrap_socket(raw, server_hostname=SITE)
    if s.selected_alpn_protocol() != "h2":
        s.close()
        raise RuntimeError(f"ALPN chose {s.selected_alpn_protocol()!r}, not h2")
    authority = SITE.encode()
    block = b"\x82\x87\x84\x41" + bytes([len(authority)]) + authority  # GET https / :authority
    s.sendall(H2_PREFACE + h2_frame(4, 0, 0) + h2_frame(1, 0x5, 1, block))
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("h2: closed before the response")
        buf += chunk
        done = False
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            buf = buf[9 + length:]
            if kind == 4 and not flags & 1:
                s.sendall(h2_frame(4, 1, 0))  # SETTINGS ACK
            if sid == 1 and kind in (0, 1) and flags & 1:
                done = True
        if done:
            return s
    raise RuntimeError("h2: no response in time")


def m_h2_idle(gw, a) -> dict:
    """Gateway RSS per idle HTTP/2 connection (after one request each), on a
    fresh gateway of the same kind like m_idle: after the other loads every
    gateway's heap has grown, and new connections would reuse that memory."""
    if gw.kind == BEFORE:
        return {}
    fresh = Gateway(gw.kind, a, os.path.dirname(gw.dir))
    try:
        fresh.start()
        return h2_idle_on(fresh, a)
    finally:
        fresh.stop()
        shutil.rmtree(fresh.dir, ignore_errors=True)


def h2_idle_on(gw, a) -> dict:
    ctx = client_ctx()
    ctx.set_alpn_protocols(["h2"])
    h2_get(gw.port, ctx).close()
    return {"h2_idle_bytes": idle_rss(gw, a.idle_conns, lambda: h2_get(gw.port, ctx))}


def idle_rss(gw, n: int, open_one) -> float:
    """RSS of the gateway's tree per connection, with `n` connections made by
    `open_one` (each after one request) held open; bounded to 120 s."""
    time.sleep(0.5)
    before = tree_rss_bytes(gw.pid)
    socks = []
    t_end = time.monotonic() + 120
    try:
        for _ in range(n):
            if time.monotonic() > t_end:
                raise RuntimeError("idle connections: too slow")
            socks.append(open_one())
        time.sleep(1.0)
        after = tree_rss_bytes(gw.pid)
    finally:
        for s in socks:
            s.close()
    return (after - before) / n


def m_idle(gw, a) -> dict:
    """Gateway RSS per idle keep-alive TLS connection, on a fresh gateway."""
    ctx = client_ctx()
    s, _ = https_get(gw.port, ctx)  # one warm-up request
    suite = f"{s.version()} {s.cipher()[0]}"
    s.close()

    def open_one():
        s, status = https_get(gw.port, ctx, timeout=10)
        if status != 200:
            s.close()
            raise RuntimeError(f"idle connections: status {status}")
        return s
    return {"idle_bytes": idle_rss(gw, a.idle_conns, open_one), "suite": suite}


def nginx_verify_resumption(a, work) -> float | None:
    """nginx counts nothing about resumption: a short separate run with an
    access log of $ssl_session_reused, the same wrk Connection: close load."""
    logf = os.path.join(work, "nginx-reuse.log")
    gw = Gateway("nginx", a, work, verify_log=logf)
    try:
        gw.start()
        wrk(gw, "/", a.conns, min(2.0, a.duration), close=True)
    finally:
        gw.stop()
    reused = total = 0
    try:
        with open(logf) as f:
            for line in f:
                total += 1
                reused += line.startswith("r")
    except OSError:
        return None
    return reused / total if total else None


# ---------------------------------------------------------------- floor


def openssl_floor(a) -> list[dict]:
    out = []
    if not a.floor:
        return out
    for _ in range(a.rounds):
        text = run(["taskset", "-c", a.gateway_cpus.split(",")[0].split("-")[0], a.floor, f"{a.certs}/ecdsa.pem", f"{a.certs}/ecdsa.key",
                    str(a.floor_handshakes), "200"], timeout=300)
        kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        out.append(kv)
    return out


# ---------------------------------------------------------------- report

ROWS = [
    # key, label, format, lower_is_better (None: not a performance figure)
    ("ka_rps", "keep-alive small requests: req/s", "{:,.0f}", False),
    ("ka_p50", "keep-alive: p50 latency, ms (wrk, closed loop)", "{:.2f}", True),
    ("ka_p99", "keep-alive: p99 latency, ms (wrk, closed loop)", "{:.2f}", True),
    ("ka_cpu_us", "**keep-alive: CPU µs per request**", "{:.1f}", True),
    ("ka_busy", "keep-alive: gateway's share of its core", "{:.0%}", None),
    ("fx_p50", "fixed offered load: p50 latency, ms", "{:.2f}", True),
    ("fx_p99", "fixed offered load: p99 latency, ms", "{:.2f}", True),
    ("rs_cps", "resumed TLS connections: conn/s", "{:,.0f}", False),
    ("rs_cpu_us", "**resumed: CPU µs per connection**", "{:.0f}", True),
    ("rs_ratio", "resumed: share of handshakes resumed (verified)", "{:.1%}", None),
    ("fh_hps", "full TLS 1.3 handshakes: handshakes/s", "{:,.0f}", False),
    ("fh_cpu_us", "**full handshake: CPU µs per handshake**", "{:.0f}", True),
    ("fh_resumed", "full: share resumed (verified, should be 0)", "{:.1%}", None),
    ("mb_mibps", "1 MiB responses: MiB/s", "{:,.0f}", False),
    ("mb_cpu_us", "**1 MiB responses: CPU µs per MiB**", "{:.0f}", True),
    ("mb_busy", "1 MiB: gateway's share of its core", "{:.0%}", None),
    ("st_mibps", "static 1 MiB file: MiB/s", "{:,.0f}", False),
    ("st_cpu_us", "**static 1 MiB file: CPU µs per MiB**", "{:.0f}", True),
    ("gz_cpu_us", "**gzip -6 of a 1 MiB HTML page: CPU µs per MiB**", "{:.0f}", True),
    ("gz_ratio", "gzip: compressed size / original", "{:.3f}", None),
    ("idle_bytes", "**RSS bytes per idle TLS connection**", "{:,.0f}", True),
    ("h2_rps", "h2 (h2load -c64 -m10): req/s", "{:,.0f}", False),
    ("h2_cpu_us", "**h2: CPU µs per request**", "{:.1f}", True),
    ("h2_p50", "h2 fixed offered load: p50 latency, ms", "{:.2f}", True),
    ("h2_p99", "h2 fixed offered load: p99 latency, ms", "{:.2f}", True),
    ("h2_idle_bytes", "**RSS bytes per idle h2 connection**", "{:,.0f}", True),
]

TARGETS = [
    ("ka_cpu_us", "CPU per keep-alive request", 0.7),
    ("fh_cpu_us", "CPU per full handshake", 0.85),
    ("rs_cpu_us", "CPU per resumed connection", 0.8),
    ("mb_cpu_us", "CPU per MiB of response", 0.8),
    ("idle_bytes", "bytes per idle TLS connection", 1.0),
    ("st_cpu_us", "CPU per MiB of a static file (nginx only)", 1.0),
    ("gz_cpu_us", "CPU per MiB compressed, gzip -6 (nginx only)", 1.0),
    ("fx_p99", "p99 latency at the same offered load", 1.0),
    ("h2_cpu_us", "CPU per h2 request", 0.8),
    ("h2_p99", "h2 p99 latency at the same offered load", 1.0),
    ("h2_idle_bytes", "bytes per idle h2 connection", 1.0),
]


def fmt(v, f):
    return "—" if v is None else f.format(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def report(a, results, floor, notes, started) -> str:
    medians = {g: {k: med([r.get(k) for r in results[g]]) for k, *_ in ROWS} for g in results}
    L = []
    L.append("# Rampart side-by-side benchmark")
    L.append("")
    L.append(f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} · {platform.node()} · "
             f"{os.cpu_count()} CPUs ({cpu_model()}) · {a.rounds} interleaved round(s), {a.duration:g} s per "
             f"measurement{' (--quick)' if a.quick else ''} · medians of the rounds · "
             f"gateways: {a.workers} worker(s) pinned to CPU {a.gateway_cpus}; load generators "
             f"({a.load_threads} thread(s)) and backends on CPU {a.load_cpus} · "
             f"run took {time.monotonic() - started:.0f} s")
    L.append("")
    L.append(f"Versions: {'; '.join(versions(a))}")
    L.append("")
    L.append("| figure | Rampart | HAProxy | nginx | Rampart/HAProxy | Rampart/nginx |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    floor_us = med([float(x["server_cpu_us_per_handshake"]) for x in floor]) if floor else None
    for key, label, f, lower in ROWS:
        if key in ("fh_cpu_us", "rs_cpu_us") and floor_us:
            label = label.rstrip("*") + f" (OpenSSL floor, full handshake in memory: {floor_us:.0f})**"
        if key.startswith(("fx_", "h2_p")):
            off = med([r.get("fx_offered") for g in GATEWAYS for r in results[g]])
            label = label.replace("fixed offered load", f"fixed offered load {off:,.0f} req/s" if off else "fixed offered load")
        vals = [medians[g][key] for g in GATEWAYS]
        if lower is None:
            rh = rn = None
        else:
            rh, rn = ratio(vals[0], vals[1]), ratio(vals[0], vals[2])
        L.append(f"| {label} | " + " | ".join(fmt(v, f) for v in vals) +
                 f" | {fmt(rh, '{:.2f}×')} | {fmt(rn, '{:.2f}×')} |")
    L.append("")

    if results.get(BEFORE):
        L.append(f"**Before and after** (`--rampart-before {a.rampart_before}`, measured in the same rounds):")
        L.append("")
        L.append("| figure | Rampart | Rampart before | Rampart/before |")
        L.append("| --- | ---: | ---: | ---: |")
        for key, label, f, lower in ROWS:
            now, then = medians["rampart"][key], medians[BEFORE][key]
            r = None if lower is None else ratio(now, then)
            L.append(f"| {label} | {fmt(now, f)} | {fmt(then, f)} | {fmt(r, '{:.3f}×')} |")
        L.append("")

    # The OpenSSL floor.
    fl_t = med([float(x["server_cpu_us_per_handshake"]) for x in floor]) if floor else None
    fl_n = med([float(x["server_cpu_us_per_handshake_no_tickets"]) for x in floor]) if floor else None
    fl_m = med([float(x["idle_ssl_bytes"]) for x in floor]) if floor else None
    r_fh, r_idle = medians["rampart"]["fh_cpu_us"], medians["rampart"]["idle_bytes"]
    L.append("**OpenSSL floor** (`bench/openssl_floor.cpp`, in-process TLS 1.3 handshakes over memory BIOs, "
             f"same ECDSA P-256 certificate, no resumption{', ' + floor[0].get('openssl_version', '') if floor else ''}):")
    L.append("")
    L.append("| floor figure | OpenSSL | Rampart | Rampart/floor | HAProxy/floor | nginx/floor |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    L.append(f"| server CPU µs per full handshake (default 2 session tickets issued) | {fmt(fl_t, '{:.0f}')} | "
             f"{fmt(r_fh, '{:.0f}')} | {fmt(ratio(r_fh, fl_t), '{:.2f}×')} | "
             f"{fmt(ratio(medians['haproxy']['fh_cpu_us'], fl_t), '{:.2f}×')} | "
             f"{fmt(ratio(medians['nginx']['fh_cpu_us'], fl_t), '{:.2f}×')} |")
    L.append(f"| server CPU µs per full handshake, no tickets | {fmt(fl_n, '{:.0f}')} | | | | |")
    L.append(f"| bytes held by an idle server-side SSL object (SSL_MODE_RELEASE_BUFFERS) | {fmt(fl_m, '{:,.0f}')} | "
             f"{fmt(r_idle, '{:,.0f}')} | {fmt(ratio(r_idle, fl_m), '{:.2f}×')} | "
             f"{fmt(ratio(medians['haproxy']['idle_bytes'], fl_m), '{:.2f}×')} | "
             f"{fmt(ratio(medians['nginx']['idle_bytes'], fl_m), '{:.2f}×')} |")
    L.append("")

    # The performance targets, against the better of HAProxy and nginx.
    L.append("**Targets** (Rampart against the better of HAProxy and nginx in this run; a report, not a test):")
    L.append("")
    L.append("| figure | Rampart / better | target | |")
    L.append("| --- | ---: | ---: | --- |")
    for key, label, target in TARGETS:
        others = [medians[g][key] for g in ("haproxy", "nginx") if medians[g][key] is not None]
        r = ratio(medians["rampart"][key], min(others)) if others else None
        mark = "—" if r is None else ("met" if r <= target else "not met")
        L.append(f"| {label} | {fmt(r, '{:.2f}×')} | ≤ {target:g}× | {mark} |")
    if fl_t:
        r = ratio(r_fh, fl_t)
        L.append(f"| CPU per full handshake vs OpenSSL floor | {fmt(r, '{:.2f}×')} | ≤ 1.2× | "
                 f"{'—' if r is None else ('met' if r <= 1.2 else 'not met')} |")
    if fl_m:
        r = ratio(r_idle, fl_m)
        L.append(f"| bytes per idle connection vs OpenSSL's idle SSL object | {fmt(r, '{:.2f}×')} | ≤ 1.15× | "
                 f"{'—' if r is None else ('met' if r <= 1.15 else 'not met')} |")
    L.append("")

    # On a shared machine other tenants only ever add CPU time to a round:
    # the least of the rounds is the steadier estimate of what the work costs.
    L.append("**Least CPU of the rounds** (a second view for a machine whose CPU is shared: interference "
             "only adds time):")
    L.append("")
    L.append("| figure | Rampart | HAProxy | nginx | Rampart / better | target |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    targets = {key: target for key, _, target in TARGETS}
    for key, label, f, lower in ROWS:
        if not key.endswith("_cpu_us"):
            continue
        least = {g: min([r[key] for r in results[g] if r.get(key) is not None], default=None) for g in GATEWAYS}
        others = [least[g] for g in ("haproxy", "nginx") if least[g] is not None]
        r = ratio(least["rampart"], min(others)) if others else None
        L.append(f"| {label.strip('*')} | " + " | ".join(fmt(least[g], f) for g in GATEWAYS) +
                 f" | {fmt(r, '{:.2f}×')} | ≤ {targets.get(key, 1.0):g}× |")
    L.append("")

    # Every round, so the spread is visible.
    L.append("<details><summary>Per-round values (round 1 · round 2 · …)</summary>")
    L.append("")
    shown = [g for g in (GATEWAYS[0], BEFORE, *GATEWAYS[1:]) if g in GATEWAYS or results.get(g)]
    L.append("| figure | " + " | ".join(TITLES[g] for g in shown) + " |")
    L.append("| --- |" + " ---: |" * len(shown))
    for key, label, f, _ in ROWS:
        cells = []
        for g in shown:
            vals = [r.get(key) for r in results[g]] + [None] * (a.rounds - len(results[g]))
            cells.append(" · ".join(fmt(v, f) for v in vals))
        L.append(f"| {label.strip('*')} | " + " | ".join(cells) + " |")
    if floor:
        L.append("| OpenSSL floor: CPU µs per handshake / idle SSL bytes | " +
                 " · ".join(f"{float(x['server_cpu_us_per_handshake']):.0f}" for x in floor) + " / " +
                 " · ".join(f"{float(x['idle_ssl_bytes']):,.0f}" for x in floor) + " |" * len(shown))
    L.append("")
    L.append("</details>")
    L.append("")
    tls = {g: next((r.get("fh_tls") for r in results[g] if r.get("fh_tls")), None) for g in GATEWAYS}
    suites = {g: next((r.get("suite") for r in results[g] if r.get("suite")), None) for g in GATEWAYS}
    L.append("Parameters: " + "; ".join([
        f"keep-alive `wrk -t{a.load_threads} -c{a.conns} --latency` on `/` (~100 B body)",
        f"fixed load `h2load --h1 -c{a.conns} --rps` (per-request latencies from its log)",
        f"resumed `wrk -t{a.load_threads} -c{a.conns} -H 'Connection: close'`",
        f"full handshakes `h2load --h1 -n{a.h2load_batch} -c{a.h2load_batch}` in repeated batches "
        f"(one request per connection; negotiated: "
        + ", ".join(f"{TITLES[g]} {tls[g]}" for g in GATEWAYS if tls[g]) + ")",
        f"1 MiB `wrk -t{a.load_threads} -c{a.mib_conns}` on `/1m`",
        f"static file `wrk -t{a.load_threads} -c{a.mib_conns}` on `/static/1m.bin` (1 MiB, page cache; nginx `alias`, sendfile off "
        "as TLS needs)",
        "suite negotiated with OpenSSL's default offer (wrk, Python; every gateway prefers "
        "TLS_AES_128_GCM_SHA256 on the server side): "
        + ", ".join(f"{TITLES[g]} {suites[g]}" for g in GATEWAYS if suites[g]),
        f"idle: {a.idle_conns:,} TLS connections each after one request, RSS (VmRSS of the tree) after − before",
        f"h2: `h2load -t{a.load_threads} -c{a.conns} -m{a.h2_streams}` on `/` for CPU, the same with `--rps` for the fixed load, "
        f"and {a.idle_conns:,} h2 connections after one request each for idle memory (HAProxy `alpn h2,http/1.1`, "
        "nginx `listen ... ssl http2`)",
    ]) + ".")
    on_wire = {v for v in list(suites.values()) + list(tls.values()) if v}
    if len({v.split()[1] if len(v.split()) > 1 else v for v in on_wire}) > 1:
        notes = [*notes, "NOT COMPARABLE: the gateways negotiated different TLS suites (see Parameters)."]
    if notes:
        L.append("")
        L.append("Notes:")
        for n in notes:
            L.append(f"- {n}")
    return "\n".join(L) + "\n"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def versions(a) -> list[str]:
    out = []
    for cmd, pat in (([a.rampart, "version"], r"(.+)"), (["haproxy", "-v"], r"HAProxy version (\S+)"),
                     (["nginx", "-v"], r"nginx/(\S+)"), (["openssl", "version"], r"OpenSSL (\S+)"),
                     (["wrk", "-v"], r"wrk (\S+)"), (["h2load", "--version"], r"nghttp2/(\S+)")):
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=10)
            m = re.search(pat, p.stdout)
            out.append(f"{os.path.basename(cmd[0])} {m.group(1).strip() if m else '?'}")
        except (OSError, subprocess.TimeoutExpired):
            out.append(f"{cmd[0]} ?")
    return out


# ---------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rampart", required=True, help="the rampart binary")
    p.add_argument("--certs", required=True, help="directory with ecdsa.pem / ecdsa.key")
    p.add_argument("--floor", help="the openssl_floor binary")
    p.add_argument("--backend-ports", default="18081,18082")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--quick", action="store_true", help="1 round, 2 s, fewer connections (smoke test)")
    p.add_argument("--out", default="/tmp/rampart-bench.md")
    p.add_argument("--gateways", default=",".join(GATEWAYS), help="subset, for development")
    p.add_argument("--rampart-before", help="an earlier rampart binary, measured beside the others")
    p.add_argument("--workers", type=int, default=1, help="workers / threads / processes per gateway")
    p.add_argument("--gateway-cpus", default="1", help="taskset CPU list for the gateways")
    p.add_argument("--load-cpus", default="0", help="the CPUs run.sh pinned the load and backends to")
    p.add_argument("--figures", default=",".join(FIGURES),
                   help="a subset of the measurements, for development: " + ",".join(FIGURES))
    a = p.parse_args()
    a.backend_ports = [int(x) for x in a.backend_ports.split(",")]
    a.workers = max(1, min(a.workers, 256))
    a.load_threads = max(1, min(len(cpu_list(a.load_cpus)), 64))
    cpu_list(a.gateway_cpus)  # validates the list
    figures = set(a.figures.split(","))
    unknown = figures - set(FIGURES)
    if unknown:
        p.error(f"--figures: unknown {', '.join(sorted(unknown))} (known: {', '.join(FIGURES)})")
    a.conns, a.mib_conns, a.idle_conns, a.h2load_batch = 64, 8, 2000, 100
    a.h2_streams = 10
    a.fixed_rps, a.floor_handshakes = 3200, 2000
    if a.quick:
        a.rounds, a.duration = 1, 2.0
        a.conns, a.idle_conns, a.h2load_batch, a.fixed_rps, a.floor_handshakes = 16, 300, 50, 800, 300
    # More workers need more clients to keep them busy.
    a.conns *= a.workers
    a.mib_conns *= a.workers
    a.rounds = max(1, min(a.rounds, 20))
    a.duration = max(1.0, min(a.duration, 120.0))
    selected = [g for g in GATEWAYS if g in a.gateways.split(",")]
    if a.rampart_before:
        selected.insert(1 if "rampart" in selected else 0, BEFORE)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < a.idle_conns + 500:
        a.idle_conns = max(100, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 500)

    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="rampart-bench-driver-")
    a.static_dir = os.path.join(work, "static")
    os.mkdir(a.static_dir)
    with open(os.path.join(a.static_dir, "1m.bin"), "wb") as f:
        f.write(os.urandom(1024 * 1024))
    results = {g: [] for g in (*GATEWAYS, BEFORE)}
    notes: list[str] = []
    floor: list[dict] = []
    failed = set()
    active: list[Gateway] = []
    try:
        log("OpenSSL floor")
        try:
            floor = openssl_floor(a)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            notes.append(f"OpenSSL floor failed: {e}")
        for rnd in range(a.rounds):
            for g in selected:
                log(f"round {rnd + 1}/{a.rounds}: {TITLES[g]}")
                r: dict = {}
                gw = Gateway(g, a, work)
                active.append(gw)
                try:
                    gw.start()
                    for name, fn in (("idle", m_idle), ("keep-alive", m_keepalive), ("fixed", m_fixed_load),
                                     ("resumed", m_resumed), ("full", m_full), ("mib", m_mib),
                                     ("static", m_static), ("gzip", m_gzip), ("h2", m_h2), ("h2-idle", m_h2_idle)):
                        if name not in figures:
                            continue
                        if name == "keep-alive":  # warm up: upstream pools, caches
                            wrk(gw, "/", a.conns, 1.0)
                        log(f"  {name}")
                        r.update(fn(gw, a))
                        if gw.proc.poll() is not None:
                            raise RuntimeError(f"{g} exited during '{name}': {gw.log_tail()}")
                except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
                    notes.append(f"round {rnd + 1}, {TITLES[g]}: {e}".replace("\n", " ")[:600])
                    log(f"  FAILED: {e}")
                    failed.add(g)
                finally:
                    gw.stop()
                    active.remove(gw)
                    shutil.rmtree(gw.dir, ignore_errors=True)
                for k in ("ka_bad", "rs_bad", "fh_bad", "mb_bad", "st_bad", "gz_bad", "h2_bad"):
                    if r.get(k):
                        notes.append(f"round {rnd + 1}, {TITLES[g]}: {r[k]} failed requests in {k[:2]}")
                results[g].append(r)
        if "nginx" in selected:
            log("nginx: verifying wrk's session resumption with an access log")
            try:
                ratio_n = nginx_verify_resumption(a, work)
                if ratio_n is not None:
                    for r in results["nginx"]:
                        r["rs_ratio"] = ratio_n
                    notes.append(f"nginx resumption share measured in a separate short run with "
                                 f"`$ssl_session_reused` logged (the measured runs log nothing): {ratio_n:.1%}.")
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                notes.append(f"nginx resumption check failed: {e}")
        notes.append("Resumed shares for Rampart come from its /metrics "
                     "(`rampart_tls_handshakes_total`), for HAProxy from its stats socket "
                     "(`ssl_sess`, `ssl_reused_sess`), both as deltas over the measured run.")
        text = report(a, results, floor, notes, started)
        with open(a.out, "w") as f:
            f.write(text)
        print(text)
        log(f"written to {a.out}")
        return 1 if any(not any(r for r in results[g]) for g in selected) else 0
    except Interrupted as e:
        log(f"interrupted ({e}), stopping")
        return 130
    finally:
        for gw in active:
            gw.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
