#!/usr/bin/env bash
# Side-by-side benchmark: Rampart vs HAProxy 2.6 vs nginx 1.22 on this machine.
#
#   ./bench/run.sh [--rounds N] [--duration S] [--quick] [--out FILE] [--rampart BIN]
#                  [--workers N] [--gateway-cpus LIST] [--load-cpus LIST] [--figures LIST]
#
# Run as root on Debian 12 (2 cores). Installs what it needs with apt-get,
# builds Rampart in Release mode (build-bench/), makes a development ECDSA
# P-256 certificate, compiles the OpenSSL floor program, starts the two
# backends (one nginx process, ports 18081/18082, pinned to the load CPUs) and
# runs bench/driver.py (pinned to the load CPUs; it pins each gateway to the
# gateway CPUs). Loopback only. Prints the markdown table and writes it to --out
# (default /tmp/rampart-bench.md).
#
#   --rounds N     interleaved rounds (default 3; medians are reported)
#   --duration S   seconds per measurement (default 10)
#   --quick        smoke test: 1 round, 2 s per measurement, fewer connections
#   --out FILE     where to write the table
#   --rampart BIN  use this rampart binary instead of building build-bench/
#                  (the smoke test uses the suite's own build)
#   --gateways L   a subset, e.g. rampart,nginx (development)
#   --rampart-before BIN  an earlier rampart binary, measured in the same rounds:
#                  the report gets a before/after table (a change must not cost speed)
#   --workers N    workers per gateway (Rampart workers, HAProxy nbthread,
#                  nginx worker_processes; default 1); clients scale with N
#   --gateway-cpus LIST  taskset CPU list for the gateways (default 1)
#   --load-cpus LIST     taskset CPU list for load generators and backends
#                  (default 0; wrk and h2load run one thread per CPU here)
#   --figures LIST a subset of idle,keep-alive,fixed,resumed,full,mib,static,
#                  gzip,h2,h2-idle (development; the targets table needs them all)
#
# On a larger machine, e.g. 16 cores:
#   ./bench/run.sh --workers 4 --gateway-cpus 8-11 --load-cpus 0-7
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

rounds=3 duration=10 quick=0 out=/tmp/rampart-bench.md rampart="" gateways="" before=""
workers=1 gateway_cpus=1 load_cpus=0 figures=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        --out) out="$2"; shift 2 ;;
        --rampart) rampart="$2"; shift 2 ;;
        --gateways) gateways="$2"; shift 2 ;;
        --rampart-before) before="$2"; shift 2 ;;
        --workers) workers="$2"; shift 2 ;;
        --gateway-cpus) gateway_cpus="$2"; shift 2 ;;
        --load-cpus) load_cpus="$2"; shift 2 ;;
        --figures) figures="$2"; shift 2 ;;
        -h|--help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "[bench] $*" >&2; }

# Exit 77 = skipped (ctest's SKIP_RETURN_CODE for the smoke test).
if [ "$(id -u)" != 0 ]; then
    echo "SKIP: run.sh needs root (apt-get, CPU pinning, 20,000 open files)" >&2
    exit 77
fi
if [ "$(nproc)" -lt 2 ]; then
    echo "SKIP: run.sh needs at least 2 CPUs (gateway on CPU 1, load on CPU 0)" >&2
    exit 77
fi

# --- tools -----------------------------------------------------------------
pkgs="haproxy nginx wrk nghttp2-client openssl curl python3 cmake ninja-build g++ libssl-dev
      libboost1.81-dev libyaml-cpp-dev libtcmalloc-minimal4 util-linux"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d (exit 101 = "not allowed") keeps the packaged nginx and
    # haproxy services from starting and taking port 80 on this machine.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    # shellcheck disable=SC2086  # one word per package
    apt-get install -y -qq --no-install-recommends $missing >/dev/null || install_rc=$?
    [ "$own_policy" = 1 ] && rm -f "$policy"
    [ "${install_rc:-0}" = 0 ] || { echo "run.sh: apt-get install failed" >&2; exit 1; }
fi
for t in haproxy nginx wrk h2load openssl taskset g++ python3; do
    command -v "$t" >/dev/null || { echo "run.sh: $t not found after install" >&2; exit 1; }
done

# --- temp dir and clean-up (only what we started, by PID) --------------------
tmp="$(mktemp -d /tmp/rampart-bench.XXXXXX)"
backend_pid=""
driver_pid=""
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$driver_pid" ] && kill -0 "$driver_pid" 2>/dev/null; then
        kill -TERM "$driver_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$driver_pid" 2>/dev/null || true
    fi
    if [ -n "$backend_pid" ] && kill -0 "$backend_pid" 2>/dev/null; then
        kill -TERM "$backend_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$backend_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$backend_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- Rampart (Release) -------------------------------------------------------
if [ -z "$rampart" ]; then
    say "building Rampart (Release) in build-bench/"
    cmake -S "$root" -B "$root/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DRAMPART_TESTS=OFF >"$tmp/cmake.log" 2>&1 \
        || { cat "$tmp/cmake.log" >&2; exit 1; }
    cmake --build "$root/build-bench" --target rampart >"$tmp/build.log" 2>&1 \
        || { tail -50 "$tmp/build.log" >&2; exit 1; }
    rampart="$root/build-bench/cmd/rampart"
fi
[ -x "$rampart" ] || { echo "run.sh: $rampart is not executable" >&2; exit 1; }
rampart="$(cd "$(dirname "$rampart")" && pwd)/$(basename "$rampart")"

# --- certificates, OpenSSL floor ---------------------------------------------
"$rampart" certs dev --out "$tmp/certs" >/dev/null
chmod 600 "$tmp/certs/"*.key
say "compiling bench/openssl_floor.cpp"
g++ -O2 -std=c++17 -Wall -Wextra "$here/openssl_floor.cpp" -o "$tmp/openssl_floor" -lssl -lcrypto

# --- file descriptors: 2,000 idle connections and their upstreams -------------
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- backends: one nginx process, two ports, pinned to CPU 0 -----------------
for port in 18081 18082; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "run.sh: port $port is in use; the backends need 18081 and 18082" >&2
        exit 1
    fi
done
# One backend process per load CPU (a single one below two).
backend_workers="$(python3 -c 'import sys; print(sum(int(h or l) - int(l) + 1 for l, _, h in (p.partition("-") for p in sys.argv[1].split(","))))' "$load_cpus")"
if [ "$backend_workers" -gt 1 ]; then master=on; else master=off; fi
mkdir -p "$tmp/www" "$tmp/backend"
head -c 1048576 /dev/urandom >"$tmp/www/1m"
# A 1 MiB HTML page for the compression figure: lines like a catalogue page,
# so that gzip -6 makes about what it makes of real HTML.
python3 -c 'import sys
line = "<li class=\"item\"><a href=\"/item/{0}\">Item {0}</a> <span>{1:.2f} EUR</span> in stock: {2}</li>\n"
out = "".join(line.format(i, i * 0.37 % 500, i * 7 % 13) for i in range(20000)).encode()[:1048576]
sys.stdout.buffer.write(out)' >"$tmp/www/text1m"
cat >"$tmp/backend/nginx.conf" <<EOF
daemon off;
master_process $master;
worker_processes $backend_workers;
worker_rlimit_nofile 30000;
pid $tmp/backend/nginx.pid;
error_log $tmp/backend/error.log warn;
events { worker_connections 10000; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    client_body_temp_path $tmp/backend/body;
    proxy_temp_path $tmp/backend/proxy;
    fastcgi_temp_path $tmp/backend/fastcgi;
    uwsgi_temp_path $tmp/backend/uwsgi;
    scgi_temp_path $tmp/backend/scgi;
    open_file_cache max=16;
    server {
        listen 127.0.0.1:18081 backlog=4096;
        root $tmp/www;
        location = / { default_type text/plain; return 200 "hello from app1 - a small response of about one hundred bytes for the bench\n"; }
        location = /1m { default_type application/octet-stream; }
        location = /text1m { default_type text/html; }
    }
    server {
        listen 127.0.0.1:18082 backlog=4096;
        root $tmp/www;
        location = / { default_type text/plain; return 200 "hello from app2 - a small response of about one hundred bytes for the bench\n"; }
        location = /1m { default_type application/octet-stream; }
        location = /text1m { default_type text/html; }
    }
}
EOF
say "starting the backends (nginx on 127.0.0.1:18081 and :18082, CPU $load_cpus)"
taskset -c "$load_cpus" nginx -p "$tmp/backend" -c "$tmp/backend/nginx.conf" >"$tmp/backend/stderr.log" 2>&1 &
backend_pid=$!
ok=0
for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:18081/ &&
       curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:18082/1m; then ok=1; break; fi
    kill -0 "$backend_pid" 2>/dev/null || break
    sleep 0.1
done
if [ "$ok" != 1 ]; then
    echo "run.sh: backends did not start:" >&2
    cat "$tmp/backend/stderr.log" "$tmp/backend/error.log" 2>/dev/null >&2 || true
    exit 1
fi

# --- the measurements ------------------------------------------------------------
args=(--rampart "$rampart" --certs "$tmp/certs" --floor "$tmp/openssl_floor"
      --rounds "$rounds" --duration "$duration" --out "$out"
      --workers "$workers" --gateway-cpus "$gateway_cpus" --load-cpus "$load_cpus")
[ -n "$figures" ] && args+=(--figures "$figures")
[ "$quick" = 1 ] && args+=(--quick)
[ -n "$gateways" ] && args+=(--gateways "$gateways")
if [ -n "$before" ]; then
    [ -x "$before" ] || { echo "run.sh: $before is not executable" >&2; exit 1; }
    args+=(--rampart-before "$(cd "$(dirname "$before")" && pwd)/$(basename "$before")")
fi
say "running bench/driver.py ${args[*]}"
taskset -c "$load_cpus" python3 "$here/driver.py" "${args[@]}" &
driver_pid=$!
set +e
wait "$driver_pid"
rc=$?
set -e
driver_pid=""
exit "$rc"
