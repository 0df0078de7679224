#!/usr/bin/env bash
# Builds the Debian package: rampart_<version>-<revision>_<arch>.deb in the
# build directory (default build/), then runs lintian on it when lintian is
# installed. Only the two programs are compiled (not the tests); a build tree
# that is already built is packaged in seconds.
#
#   ./scripts/package.sh [BUILD_DIR]
#   apt install ./build/rampart_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}

./scripts/setup.sh

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" --target rampart rampart-gateway
(cd "$build" && cpack -G DEB)

deb=$(ls -t "$build"/rampart_*.deb | head -n 1)
echo "package: $deb"
if command -v lintian >/dev/null; then
  # Exit status 0 unless lintian reports an error.
  lintian --info --fail-on error "$deb"
fi
