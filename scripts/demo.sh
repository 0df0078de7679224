#!/usr/bin/env bash
# The demo: www.foobar.com served over HTTPS by Rampart.
#
# As root: the whole deployment (scripts/deployment_demo.py): network namespaces for a
# client, gw1 and gw2 (Rampart + keepalived on a VRRP VIP), app1 and app2 (the sample app),
# db1 and db2 (MariaDB, primary and replica; www.foobar.com's app on app1 and app2 writes each
# visit to db1 and reads the count from db2), every server's firewall applied from the one deployment
# file; the client fetches https://www.foobar.com through the VIP while the MASTER goes down
# and the backup takes over. Without root (or where namespaces are unavailable): Rampart
# on loopback, round robin across two sample app servers.
#
#   ./scripts/demo.sh                # keeps fetching (one request a second) until Ctrl-C
#   ./scripts/demo.sh --requests 6   # sends 6 requests, checks them (and, as root, the failover), exits
#   ./scripts/demo.sh --loopback     # the loopback demo, also as root
#
# RAMPART_BIN=/path/to/rampart uses that binary instead of building build/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

requests=0
loopback=0
while (($#)); do
  case "$1" in
    --requests) requests=${2:?--requests needs a number}; shift 2 ;;
    --loopback) loopback=1; shift ;;
    *) echo "usage: $0 [--requests N] [--loopback]" >&2; exit 2 ;;
  esac
done

./scripts/setup.sh
if [ -n "${RAMPART_BIN:-}" ]; then
  bin=$RAMPART_BIN
else
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j"$(nproc)" --target rampart
  bin=$root/build/cmd/rampart
fi

if ((!loopback)) && [ "$(id -u)" -eq 0 ]; then
  args=(--rampart "$bin")
  ((requests)) && args+=(--requests "$requests")
  rc=0
  # Debian's interpreter: the one setup.sh installed python3-pymysql for.
  python=python3
  [ -x /usr/bin/python3 ] && python=/usr/bin/python3
  "$python" "$root/scripts/deployment_demo.py" "${args[@]}" || rc=$?
  if ((rc != 77)); then exit "$rc"; fi
  echo "demo: the deployment demo cannot run here (see SKIP above); running the loopback demo" >&2
fi

work=$(mktemp -d /tmp/rampart-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" certs dev --out "$work/certs" >/dev/null
https_port=8443 http_port=8080 admin_port=9100 app_ports=(8081 8082)
for port in $https_port $http_port $admin_port "${app_ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port on 127.0.0.1 is already in use; stop what listens there first" >&2
    exit 1
  fi
done
cat >"$work/rampart.yaml" <<YAML
site: www.foobar.com
servers:
  app1: { address: 127.0.0.1, role: app, port: ${app_ports[0]} }
  app2: { address: 127.0.0.1, role: app, port: ${app_ports[1]} }
gateway:
  listen: { https: "127.0.0.1:$https_port", http: "127.0.0.1:$http_port", admin: "127.0.0.1:$admin_port" }
  workers: auto
  tls:
    certificates:
      - { cert: certs/ecdsa.pem, key: certs/ecdsa.key }
      - { cert: certs/rsa.pem, key: certs/rsa.key }
  pools:
    app: { balance: round_robin, servers: [app1, app2] }
YAML
"$bin" check -c "$work/rampart.yaml"

for n in 1 2; do
  python3 "$root/tests/support/backend.py" --name "app$n" --port "${app_ports[n-1]}" >"$work/app$n.log" 2>&1 &
  pids+=($!)
done
"$bin" serve -c "$work/rampart.yaml" 2>"$work/rampart.log" &
pids+=($!)

# Ready when both app servers say so and the HTTPS port answers 200 (at most 10 s).
ready=0
for _ in $(seq 100); do
  if grep -qs ready "$work/app1.log" && grep -qs ready "$work/app2.log" &&
     curl -sf -o /dev/null --resolve "www.foobar.com:$https_port:127.0.0.1" --cacert "$work/certs/ca.pem" \
       "https://www.foobar.com:$https_port/health"; then ready=1; break; fi
  sleep 0.1
done
if ((!ready)); then
  echo "demo: Rampart or the app servers did not come up; logs:" >&2
  tail -n 20 "$work"/*.log >&2
  exit 1
fi

client=(curl -sS --max-time 5 --resolve "www.foobar.com:$https_port:127.0.0.1" --cacert "$work/certs/ca.pem")
echo
echo "Rampart serves https://www.foobar.com:$https_port/ (admin: http://127.0.0.1:$admin_port/metrics)"
echo "try: ${client[*]} -i https://www.foobar.com:$https_port/"
echo
"${client[@]}" -o /dev/null -D - "http://www.foobar.com:$http_port/hello" --resolve "www.foobar.com:$http_port:127.0.0.1" |
  grep -iE '^(HTTP|location)' | sed 's/^/http  -> /'

i=0
seen=""
while ((requests == 0 || i < requests)); do
  i=$((i + 1))
  headers=$("${client[@]}" -o /dev/null -D - "https://www.foobar.com:$https_port/demo/$i")
  status=$(head -1 <<<"$headers" | tr -d '\r')
  backend=$(grep -i '^x-backend:' <<<"$headers" | awk '{print $2}' | tr -d '\r')
  hsts=$(grep -ci '^strict-transport-security:' <<<"$headers" || true)
  printf 'request %-3d %s  served by %s  hsts=%s\n' "$i" "$status" "$backend" "$([ "$hsts" = 1 ] && echo yes || echo no)"
  seen+="$backend "
  if ((requests == 0)); then sleep 1; fi
done

# With --requests the demo is a check: two backends, strictly alternating.
read -ra order <<<"$seen"
for ((k = 1; k < ${#order[@]}; k++)); do
  if [ "${order[k]}" = "${order[k-1]}" ]; then
    echo "demo: round robin broken at request $((k + 1))" >&2
    exit 1
  fi
done
echo "demo: ${#order[@]} requests, round robin across app1 and app2"
