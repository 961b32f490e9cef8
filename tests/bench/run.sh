#!/usr/bin/env bash
# `make bench`: runs every benchmark program built into BUILD/bench, one after another.
# Benchmarks print tables of ratios against references measured in the same run; they never
# fail on time, only on errors.
set -u
BUILD=${1:-build}
status=0
shopt -s nullglob
progs=("$BUILD"/bench/*)
[ ${#progs[@]} -gt 0 ] || { echo "no benchmarks built in $BUILD/bench"; exit 0; }
for b in "${progs[@]}"; do
  [ -x "$b" ] || continue
  echo "== $(basename "$b")"
  # nas takes its sizes from NAS_BENCH_ARGS (e.g. "--train 0 --val 0 --epochs 2 --supernet-epochs 5"
  # for the full data); without it, the small run that fits a few minutes.
  args=()
  [ "$(basename "$b")" = nas ] && read -ra args <<< "${NAS_BENCH_ARGS:-}"
  "$b" "${args[@]}" || { echo "benchmark $(basename "$b") failed"; status=1; }
  echo
done
exit $status
