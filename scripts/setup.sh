#!/usr/bin/env bash
# Installs the Debian packages fednas needs, only those missing (so it is quick when all are
# there), and the browser tests' npm packages when they are not installed yet. Run as root on
# Debian 12; `make demo` and `make test` call it first.
set -euo pipefail
PKGS=(build-essential cmake pkg-config libssl-dev libsodium-dev libcivetweb-dev libjansson-dev
      libsqlite3-dev sqlite3 libzmq3-dev libcmocka-dev libopenblas-dev zlib1g-dev dataset-fashion-mnist
      nodejs npm chromium wrk curl clang libclang-rt-14-dev libopenmpi-dev openmpi-bin)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from elsewhere (nodesource, nvm): only install Debian's when absent.
if command -v node > /dev/null && command -v npm > /dev/null; then
  kept=()
  for p in "${missing[@]}"; do [ "$p" = nodejs ] || [ "$p" = npm ] || kept+=("$p"); done
  missing=("${kept[@]+"${kept[@]}"}")
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
else
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "setup: these packages are missing and installing them needs root: sudo make ${MAKECMDGOALS:-demo}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Browser tests: playwright-core at the version pinned in tests/browser/package-lock.json (1.61.1,
# the last whose engines field accepts Debian 12's Node 18; later ones need Node 20). A checkout
# that holds another version (installed before the pin moved) is reinstalled.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BROWSER="$ROOT/tests/browser"
want=$(sed -n '/"node_modules\/playwright-core"/,/}/s/.*"version": "\([^"]*\)".*/\1/p' "$BROWSER/package-lock.json")
have=$(sed -n 's/^  "version": "\([^"]*\)".*/\1/p' "$BROWSER/node_modules/playwright-core/package.json" 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "setup: npm ci in tests/browser (playwright-core ${have:-missing}, want $want)"
  if ! npm ci --prefix "$BROWSER" --no-audit --no-fund --loglevel=error > /tmp/fednas-npm-ci.log 2>&1; then
    cat /tmp/fednas-npm-ci.log >&2
    echo "setup: npm ci in tests/browser failed (see above); the browser test needs playwright-core" >&2
    exit 1
  fi
fi
