#!/usr/bin/env bash
# The test command: installs what it needs, builds, runs the whole suite.
#   0. every C and C++ file formatted as .clang-format says (scripts/format.sh);
#   1. unit tests built with ASan + UBSan (build-asan/), label "unit";
#   2. the libFuzzer targets (build-fuzz/, clang), 20 s each over their seed
#      corpus, which holds the reproducers of every bug they found;
#   3. everything (unit + integration against the real binary) in build/.
# Integration tests that need root or network namespaces skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/format.sh --check

jobs=$(nproc)

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DRAMPART_SANITIZE=address,undefined >/dev/null
cmake --build build-asan -j"$jobs" --target unit_config unit_certs unit_gateway unit_firewall unit_ha
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest -L unit --output-on-failure -j"$jobs")

./scripts/fuzz.sh --seconds 20

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
cd build && ctest --output-on-failure
