#!/usr/bin/env bash
# Where an idle connection's memory goes: live heap per connection by part
# (OpenSSL, nghttp2, Rampart) and by allocation stack.
#
#   ./bench/heap/run.sh [--figure idle|h2-idle] [--rampart BIN]
#
# Runs bench/run.sh --quick for that one figure on Rampart alone, with the
# gateway under memattr.so (LD_PRELOAD: every live block and the stack that
# allocated it), then bench/heap/attribute.py over the worker's dumps. A
# development tool: the shim slows every allocation down, so this says
# nothing about speed. Default binary: build/cmd/rampart (a build with
# debug info names Rampart's own frames best).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
figure=h2-idle rampart="$root/build/cmd/rampart"
while [ $# -gt 0 ]; do
    case "$1" in
        --figure) figure="$2"; shift 2 ;;
        --rampart) rampart="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "heap/run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$figure" in idle|h2-idle) ;; *) echo "heap/run.sh: --figure is idle or h2-idle" >&2; exit 2 ;; esac
[ -x "$rampart" ] || { echo "heap/run.sh: $rampart is not executable (build it, or give --rampart)" >&2; exit 1; }
rampart="$(cd "$(dirname "$rampart")" && pwd)/$(basename "$rampart")"

work="$(mktemp -d /tmp/rampart-heap.XXXXXX)"
trap 'rm -rf "$work"' EXIT
gcc -O2 -Wall -shared -fPIC -o "$work/memattr.so" "$here/memattr.c" -ldl
# The wrapper bench/run.sh starts as "rampart": every rampart process of the
# run writes its dumps to one file (each line names its PID).
cat >"$work/rampart" <<EOF
#!/bin/sh
LD_PRELOAD="$work/memattr.so" MEMATTR_OUT=1 exec "$rampart" "\$@" 2>>"$work/dumps.txt"
EOF
chmod +x "$work/rampart"
rc=0
"$root/bench/run.sh" --quick --gateways rampart --figures "$figure" --rampart "$work/rampart" \
    --out "$work/bench.md" >"$work/bench.log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
    tail -20 "$work/bench.log" >&2
    exit "$rc"  # 77: skipped (not root), as bench/run.sh says
fi
row="idle TLS"; [ "$figure" = h2-idle ] && row="idle h2"
grep -E "^\| \*\*RSS bytes per $row" "$work/bench.md" | head -1 || true
python3 "$here/attribute.py" "$work/dumps.txt"
