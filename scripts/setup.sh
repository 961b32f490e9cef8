#!/usr/bin/env bash
# Installs the Debian packages fednas needs, only those missing (so it is quick when all are
# there). Run as root on Debian 12; `make demo` and `make test` call it first.
set -euo pipefail
PKGS=(build-essential cmake pkg-config libssl-dev libsodium-dev libcivetweb-dev libjansson-dev
      libsqlite3-dev sqlite3 libzmq3-dev libcmocka-dev libopenblas-dev zlib1g-dev dataset-fashion-mnist)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
if [ "$(id -u)" != 0 ]; then
  echo "setup: these packages are missing and installing them needs root: sudo make ${MAKECMDGOALS:-demo}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
