#!/usr/bin/env bash
# Installs what building and testing Rampart needs on Debian 12. Idempotent:
# apt-get runs only when a package is missing.
set -euo pipefail

packages=(
  build-essential g++ cmake ninja-build ccache pkg-config
  libssl-dev libboost1.81-dev libyaml-cpp-dev catch2 libnftnl-dev libmnl-dev libseccomp-dev libnghttp2-dev
  # basic_auth's bcrypt and yescrypt hashes (libxcrypt)
  libcrypt-dev
  # response compression: gzip and brotli (the brotli command decodes in test_compression.py)
  zlib1g-dev libbrotli-dev brotli
  # the gateway's malloc (cmd/CMakeLists.txt says why)
  libtcmalloc-minimal4
  openssl curl python3 procps iproute2 ca-certificates nftables keepalived
  # tests/integration: the integration tests run under pytest
  python3-pytest
  testssl.sh chromium
  # tests/integration/test_websocket.py: a real WebSocket client and server
  python3-websockets
  # tests/integration/test_h2.py: HTTP/2 clients (python3-h2 for raw frames,
  # nghttp and h2load from nghttp2-client; curl speaks h2 too)
  python3-h2 nghttp2-client
  # the Debian package (scripts/package.sh): CPack's dependency list needs
  # dpkg-shlibdeps and file; lintian checks the result
  dpkg-dev file lintian
  # tests/integration/test_systemd.py: a Debian 12 root booted with systemd
  debootstrap systemd-container
  # scripts/fuzz.sh: libFuzzer and the sanitizer runtimes (only recommended
  # by clang-14), llvm-symbolizer for readable stack traces
  clang-14 libclang-rt-14-dev llvm-14
  # scripts/format.sh: the layout of every C and C++ file, checked by test.sh
  clang-format-14
  # monitoring/: promtool tests the alert rules; test_monitoring.py runs a
  # real Prometheus (its own, on loopback) against a real gateway
  prometheus
  # the seed's database tier, real (tests/support/mariadb.py): MariaDB primary and replica in the
  # demo's and the tests' namespaces, each with its own data directory; PyMySQL for the site's app
  mariadb-server mariadb-client python3-pymysql
  # tests/support/pebble.py: the ACME test server and its DNS (pebble-challtestsrv), run on loopback;
  # certbot's webroot mode through the gateway's port 80 (test_acme.py)
  pebble certbot
)
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (or with sudo) to install packages" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Only prometheus's binaries are wanted (the tests start their own, on
  # loopback): the service its package starts under systemd is stopped and
  # disabled, when this run installed it.
  # The same for mariadb: the demo and the tests start their own servers.
  for service in prometheus:prometheus mariadb-server:mariadb; do
    if [[ " ${missing[*]} " == *" ${service%%:*} "* ]] && command -v systemctl >/dev/null &&
      systemctl is-enabled --quiet "${service#*:}" 2>/dev/null; then
      systemctl disable --now "${service#*:}" >/dev/null 2>&1 || true
    fi
  done
fi
