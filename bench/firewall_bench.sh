#!/usr/bin/env bash
# Firewall benchmark: `rampart firewall apply` (libnftnl) vs `nft -f` of the same ruleset.
#
#   ./bench/firewall_bench.sh [--runs N] [--quick] [--elements N] [--out FILE] [--rampart BIN]
#
# Run as root (network namespaces, nftables). Installs nftables and iproute2 with
# apt-get when missing, builds Rampart in Release mode (build-bench/) unless
# --rampart is given, and runs bench/firewall_bench.py, which does everything in
# a network namespace of its own (the host's ruleset is never touched) and
# removes it on exit. Prints a markdown table and writes it to --out
# (default /tmp/rampart-firewall-bench.md).
#
#   --runs N       timed runs per side and ruleset (default 11; medians are reported)
#   --quick        smoke test: 3 runs
#   --elements N   blocklist elements (default 100000)
#   --out FILE     where to write the table
#   --rampart BIN  use this rampart binary instead of building build-bench/
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

runs=11 quick=0 elements=100000 out=/tmp/rampart-firewall-bench.md rampart=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        --elements) elements="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --rampart) rampart="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "firewall_bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "[fwbench] $*" >&2; }

# Exit 77 = skipped (ctest's SKIP_RETURN_CODE for the smoke test).
if [ "$(id -u)" != 0 ]; then
    echo "SKIP: firewall_bench.sh needs root (network namespaces, nftables)" >&2
    exit 77
fi

missing=""
for p in nftables iproute2 python3; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
for t in nft ip python3; do
    command -v "$t" >/dev/null || { echo "firewall_bench.sh: $t not found after install" >&2; exit 1; }
done

if [ -z "$rampart" ]; then
    say "building Rampart (Release) in build-bench/"
    log="$(mktemp /tmp/rampart-fwbench-build.XXXXXX)"
    cmake -S "$root" -B "$root/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DRAMPART_TESTS=OFF >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
    cmake --build "$root/build-bench" --target rampart >"$log" 2>&1 \
        || { tail -50 "$log" >&2; rm -f "$log"; exit 1; }
    rm -f "$log"
    rampart="$root/build-bench/cmd/rampart"
fi
[ -x "$rampart" ] || { echo "firewall_bench.sh: $rampart is not executable" >&2; exit 1; }

args=(--rampart "$rampart" --runs "$runs" --elements "$elements" --out "$out")
[ "$quick" = 1 ] && args+=(--quick)
# exec: the Python process gets our signals directly and removes its namespace itself.
exec python3 "$here/firewall_bench.py" "${args[@]}"
