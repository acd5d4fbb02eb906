#!/usr/bin/env bash
# System packages the test suite needs beyond npm: Debian's redis-server (the BullMQ
# scale-out queue is tested against a real Redis) and chromium (web studio tests drive a
# real browser). Installed with apt when missing and we are root; otherwise we say what
# to install and fail, rather than skipping tests.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need these Debian packages: ${need[*]}. Install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]} (apt)..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
