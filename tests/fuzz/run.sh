#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz for SECONDS each, one after the other, starting from
# the committed seeds (tests/fuzz/corpus/<target>, copied: the working corpus grows in
# BUILD/corpus/<target>, never in the tree), with the target's dictionary and input size limit.
# Prints a table (target, execs, seconds, corpus units at the end, inputs this run added to the
# working corpus, result)
# and exits 1 when any target crashed, leaked, timed out or ran out of memory; its reproducer is
# saved as BUILD/artifacts/<target>-<kind>-<sha1> and the log as BUILD/logs/<target>.log.
# Usage: tests/fuzz/run.sh [BUILD_DIR] [SECONDS] [TARGET...]   (defaults: build-fuzz 600 all)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build-fuzz}" && pwd)
SECONDS_EACH=${2:-600}
shift 2 2>/dev/null || shift $#

# Input size limits, sized to what each decoder takes: a secagg message of a 6-client round is
# under 500 bytes, a compressed update of two quantization chunks about 4.5 KB.
declare -A MAX_LEN=([fuzz_wire]=4096 [fuzz_config]=4096 [fuzz_compress]=8192 [fuzz_safetensors]=4096
                    [fuzz_idx]=4096 [fuzz_secagg]=1024 [fuzz_http_params]=512
                    [fuzz_http_request]=4096)
declare -A DICT=([fuzz_wire]=wire [fuzz_config]=config [fuzz_safetensors]=safetensors
                 [fuzz_http_params]=http_params [fuzz_http_request]=http_request)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_wire fuzz_config fuzz_compress fuzz_safetensors fuzz_idx fuzz_secagg
                                     fuzz_http_params fuzz_http_request)

mkdir -p "$BUILD/artifacts" "$BUILD/logs"
rows=()
failed=0
for t in "${TARGETS[@]}"; do
  bin=$BUILD/fuzz/$t
  if [ ! -x "$bin" ]; then
    echo "run.sh: $bin is not built (make fuzz-build)" >&2
    exit 2
  fi
  work=$BUILD/corpus/$t
  mkdir -p "$work"
  before=$(find "$work" -type f | wc -l)
  args=(-max_total_time="$SECONDS_EACH" -max_len="${MAX_LEN[$t]:-4096}" -timeout=10 -rss_limit_mb=2048
        -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$t-")
  [ -n "${DICT[$t]:-}" ] && args+=(-dict="$ROOT/tests/fuzz/dict/${DICT[$t]}.dict")
  log=$BUILD/logs/$t.log
  start=$(date +%s.%N)
  "$bin" "${args[@]}" "$work" "$ROOT/tests/fuzz/corpus/$t" > "$log" 2>&1
  rc=$?
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  added=$(( $(find "$work" -type f | wc -l) - before ))
  units=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  result=ok
  if [ $rc -ne 0 ]; then
    failed=1
    if grep -q 'ERROR: LeakSanitizer' "$log"; then result=LEAK
    elif grep -q 'ERROR: libFuzzer: timeout' "$log"; then result=TIMEOUT
    elif grep -q 'ERROR: libFuzzer: out-of-memory' "$log"; then result=OOM
    else result=CRASH; fi
    result="$result $(sed -n 's/.*Test unit written to //p' "$log" | tail -1)"
  fi
  rows+=("$(printf '%-18s %12s %8s %8s %6s  %s' "$t" "${execs:-?}" "$secs" "${units:-?}" "+${added:-?}" "$result")")
  echo "run.sh: $t: $result (log $log)" >&2
done

printf '%-18s %12s %8s %8s %6s  %s\n' target execs seconds corpus new result
for r in "${rows[@]}"; do echo "$r"; done
exit $failed
