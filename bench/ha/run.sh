#!/usr/bin/env bash
# Failover of the gateway pair: time and failed requests per fault kind, median of several runs,
# for Rampart's default advert_int (100ms) and for keepalived's usual 1s, side by side.
#
#   ./bench/ha/run.sh [--runs N] [--quick] [--faults LIST] [--out FILE] [--rampart BIN]
#
# Run as root on Debian 12. Installs keepalived and iproute2 with apt-get when missing, builds
# Rampart in Release mode into build-bench/ unless --rampart BIN is given, then runs
# bench/ha/failover_bench.py, which builds the lab in network namespaces (TEST-NET addresses
# only, removed on exit, also on failure or Ctrl-C), prints a markdown table and writes it to
# --out (default bench/results/ha-<date>.md).
#
#   --runs N       runs per setting and fault kind (default 3; medians are reported)
#   --quick        smoke test: 1 run
#   --faults LIST  a subset of rampart,keepalived,link,backends,release (default: all)
#   --out FILE     where to write the table
#   --rampart BIN  use this rampart binary instead of building build-bench/
#   --budget S     seconds the whole run may take (default 3600)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

runs=3 quick=0 faults="" out="" rampart="" budget=3600
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="${2:?--runs needs a number}"; shift 2 ;;
        --quick) quick=1; shift ;;
        --faults) faults="${2:?--faults needs a list}"; shift 2 ;;
        --out) out="${2:?--out needs a file}"; shift 2 ;;
        --rampart) rampart="${2:?--rampart needs a path}"; shift 2 ;;
        --budget) budget="${2:?--budget needs seconds}"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "[ha-bench] $*" >&2; }

# Exit 77 = skipped (ctest's SKIP_RETURN_CODE).
if [ "$(id -u)" != 0 ]; then
    echo "SKIP: bench/ha/run.sh needs root (network namespaces, keepalived)" >&2
    exit 77
fi
missing=""
command -v ip >/dev/null || missing="$missing iproute2"
command -v keepalived >/dev/null || missing="$missing keepalived"
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
    say "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086  # one word per package
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; } || true
fi
for t in ip keepalived; do
    if ! command -v "$t" >/dev/null; then
        echo "SKIP: $t not found (apt-get install iproute2 keepalived)" >&2
        exit 77
    fi
done

if [ -z "$rampart" ]; then
    say "building Rampart (Release) in build-bench/"
    log="$(mktemp /tmp/rampart-ha-bench-build.XXXXXX)"
    trap 'rm -f "$log"' EXIT
    cmake -S "$root" -B "$root/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRAMPART_TESTS=OFF \
        >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
    cmake --build "$root/build-bench" --target rampart >"$log" 2>&1 || { tail -50 "$log" >&2; exit 1; }
    rm -f "$log"
    rampart="$root/build-bench/cmd/rampart"
fi
[ -x "$rampart" ] || { echo "run.sh: $rampart is not executable" >&2; exit 1; }
rampart="$(cd "$(dirname "$rampart")" && pwd)/$(basename "$rampart")"

[ -n "$out" ] || out="$root/bench/results/ha-$(date +%F).md"
args=(--rampart "$rampart" --runs "$runs" --out "$out" --budget "$budget")
[ "$quick" = 1 ] && args+=(--quick)
[ -n "$faults" ] && args+=(--faults "$faults")
# exec: Ctrl-C and SIGTERM reach the Python driver, which removes the lab before it exits.
exec python3 "$here/failover_bench.py" "${args[@]}"
