#!/usr/bin/env bash
# Builds the libFuzzer targets with clang 14, ASan and UBSan (build-fuzz/) and
# runs each over its seed corpus for a bounded time.
#
#   scripts/fuzz.sh [--seconds N] [request|config|proxy_protocol|connection]...
#
# N defaults to 30 seconds per target; no target named means request,
# config and proxy_protocol (connection builds the whole data plane with clang: run it by name). The seed
# corpus in tests/fuzz/corpus/<target>/ is only read: inputs the run finds go
# to a temporary directory, removed at the end. A crash, leak, timeout (5 s)
# or memory blow-up (2 GiB) leaves its reproducer in build-fuzz/artifacts/,
# prints how to replay it and makes the script exit 1. The full libFuzzer
# output of the last run of each target is in build-fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "scripts/fuzz.sh [--seconds N] [request|config|proxy_protocol|connection]..."; }

seconds=30
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
    --seconds=*) seconds=${1#--seconds=}; shift ;;
    request | config | proxy_protocol | connection) targets+=("$1"); shift ;;
    -h | --help) echo "usage: $(usage)"; exit 0 ;;
    *) echo "fuzz: unknown argument '$1'; usage: $(usage)" >&2; exit 2 ;;
  esac
done
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz: --seconds wants a positive whole number, got '$seconds'" >&2
  exit 2
fi
((${#targets[@]})) || targets=(request config proxy_protocol)

./scripts/setup.sh

# libFuzzer needs clang; the compiler is fixed when build-fuzz/ is first configured.
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DRAMPART_FUZZ=ON -DRAMPART_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}"

artifacts=build-fuzz/artifacts
logs=build-fuzz/logs
mkdir -p "$artifacts" "$logs"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/rampart-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# Symbolized stack traces; leaks are findings too (libFuzzer's -detect_leaks).
symbolizer=/usr/lib/llvm-14/bin/llvm-symbolizer
if [ -x "$symbolizer" ]; then
  export ASAN_SYMBOLIZER_PATH=$symbolizer
fi
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

failed=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  log=$logs/$t.log
  echo "fuzz: $t for ${seconds}s over tests/fuzz/corpus/$t"
  # The first directory receives new inputs; the seed corpus is only read.
  if ./build-fuzz/tests/fuzz/fuzz_"$t" "$scratch/$t" "tests/fuzz/corpus/$t" \
    -dict="tests/fuzz/$t.dict" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/$t-" -print_final_stats=1 >"$log" 2>&1; then
    # "#1234 DONE cov: 2113 ft: 9876 corp: 412/20Kb ..." and the final stats.
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([^ ]+).*/cov \1, ft \2, corpus \3/p' <<<"$done_line")
    echo "fuzz: $t ok: $runs runs, $rate exec/s, ${cov:-no coverage line}, $(ls "$scratch/$t" | wc -l) new inputs"
  else
    failed=1
    reproducer=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    echo "fuzz: $t FAILED:" >&2
    grep -E 'invariant violated|ERROR: |runtime error|SUMMARY: ' "$log" | head -n 5 >&2 || true
    echo "fuzz: the end of $log:" >&2
    grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' "$log" | tail -n 30 >&2
    if [ -n "$reproducer" ]; then
      echo "fuzz: reproducer: $reproducer" >&2
      echo "fuzz: replay with: build-fuzz/tests/fuzz/fuzz_$t $reproducer" >&2
    fi
  fi
done
exit "$failed"
