#!/usr/bin/env bash
# Inference serving benchmark: wrk over HTTPS keep-alive POSTing one 28x28 image per request to
# `fednas serve` twice in the same run: batch-1 serving (--max-batch 1: every request its own
# forward pass) as the reference, then dynamic batching (--max-batch 32, --max-wait-ms 5).
# Prints requests/s and latency percentiles of both, the server's CPU time per request, the mean
# coalesced batch and the size of the latest pass, and the ratios (target: dynamic >= 3x the
# requests/s at <= 2x the median latency) for each model: "wide", an MLP 784-2048-2048-10 whose
# 23 MB of weights make batch-1 inference memory-bound (batching reads them once per pass),
# and "cnn", the FedAvg CNN, compute-bound in its convolutions (batching saves fc1's 6.4 MB of
# weights per image, about 0.2 ms of 0.35). wrk runs on the same cores as the server: on a
# 2-core machine requests/s follow whatever else runs there, the CPU time per request does not.
# Never fails on time; fails only when something does not work (no wrk, no server, HTTP errors).
#
#   build/bench/serve [FEDNAS_BINARY]      (make bench runs it from build/bench/)
#   SERVE_BENCH_MODELS ("wide cnn": names, files), SERVE_BENCH_SECONDS (5),
#   SERVE_BENCH_CONNECTIONS (32), SERVE_BENCH_ROUNDS (1: batch-1 then dynamic, alternated this many
#   times per model)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
FEDNAS=$(realpath "${1:-$HERE/../fednas}")
LUA=${SERVE_BENCH_LUA:-$HERE/serve.lua}
MODELS=${SERVE_BENCH_MODELS:-wide cnn}
DURATION=${SERVE_BENCH_SECONDS:-5}
CONNS=${SERVE_BENCH_CONNECTIONS:-32}
ROUNDS=${SERVE_BENCH_ROUNDS:-1}
command -v wrk > /dev/null || { echo "serve bench: wrk is not installed (scripts/setup.sh installs it)"; exit 1; }
[ -x "$FEDNAS" ] || { echo "serve bench: no fednas binary at $FEDNAS"; exit 1; }
[ -r "$LUA" ] || { echo "serve bench: no wrk script at $LUA"; exit 1; }
WORK=$(mktemp -d /tmp/fednas-bench-serve-XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2> /dev/null; wait 2> /dev/null; [ -n "${SERVE_BENCH_KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
export SERVE_TOKEN=bench_token_0123456789abcdef SERVE_BODY=$WORK/body.json
# One image as base64 float32: the cheap encoding to parse, so the bench weighs inference more
# than JSON number parsing.
python3 -c 'import base64, json, random, struct; random.seed(7)
print(json.dumps({"images": [base64.b64encode(struct.pack("<784f", *[random.random() for _ in range(784)])).decode()]}))' \
  > "$SERVE_BODY" || { echo "serve bench: python3 is needed to write the request body"; exit 1; }

# CPU seconds (user + system) the process PID has used so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{ print ($14 + $15) / t }' "/proc/$1/stat"; }

# run NAME ARGS...: serves MODEL with ARGS, drives it with wrk, leaves "rps p50 p90 p99 cpu_ms_per_request" in
# $WORK/NAME
run() {
  local name=$1
  shift
  rm -f "$WORK/$name.out" # the previous model's server wrote here: never read its port
  FEDNAS_SERVE_TOKEN=$SERVE_TOKEN "$FEDNAS" serve "$MODEL" --http 0 --state-dir "$WORK" --workers $((CONNS + 8)) "$@" \
    > "$WORK/$name.out" 2>&1 &
  PID=$!
  local port= i
  for ((i = 0; i < 100; i++)); do
    port=$(sed 2> /dev/null -nE 's#.*https://127\.0\.0\.1:([0-9]+)/v1/predict.*#\1#p' "$WORK/$name.out")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$WORK/$name.out"; echo "serve bench: the server did not start"; exit 1; }
  # A short warm-up (TLS sessions, the arena), then the measurement.
  wrk -t2 -c"$CONNS" -d1s -s "$LUA" "https://127.0.0.1:$port/v1/predict" > /dev/null 2>&1
  local c0 c1
  c0=$(cpu_s "$PID")
  wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 10s -s "$LUA" "https://127.0.0.1:$port/v1/predict" > "$WORK/$name.wrk" 2>&1
  c1=$(cpu_s "$PID")
  local line
  line=$(grep '^RESULT' "$WORK/$name.wrk") || { cat "$WORK/$name.wrk"; echo "serve bench: wrk failed"; exit 1; }
  case "$line" in *" errors=0"*) ;; *) echo "$line"; echo "serve bench: HTTP errors"; exit 1 ;; esac
  # The server's CPU time per answered request: what each serving mode costs, which a loaded
  # machine does not change as much as it changes the requests per second.
  echo "$line" | sed -E 's/.*rps=([0-9.]+) p50_ms=([0-9.]+) p90_ms=([0-9.]+) p99_ms=([0-9.]+) requests=([0-9]+).*/\1 \2 \3 \4 \5/' |
    awk -v a="$c0" -v b="$c1" '{ printf "%s %s %s %s %.3f\n", $1, $2, $3, $4, ($5 > 0 ? (b - a) * 1000 / $5 : 0) }' > "$WORK/$name"
  curl -sk -H "Authorization: Bearer $SERVE_TOKEN" "https://127.0.0.1:$port/metrics" |
    awk '/^fednas_serve_(batch_size_sum|batch_size_count|pass_images) /{ v[$1] = $2 } END {
      if (v["fednas_serve_batch_size_count"] > 0)
        printf "%.1f/%d\n", v["fednas_serve_batch_size_sum"] / v["fednas_serve_batch_size_count"], v["fednas_serve_pass_images"]
      else print "?" }' \
    > "$WORK/$name.batch"
  kill "$PID"
  wait "$PID" 2> /dev/null
  PID=
}

echo '{"type":"mlp","hidden":[2048,2048]}' > "$WORK/wide.json"
echo "serve bench: $CONNS connections, ${DURATION} s each, $(nproc) cores, one base64 image per request; $(uptime | sed 's/.*load/load/')"
echo "(cpu ms/req: the server's CPU time per answered request; batch/pass: mean coalesced batch / pass size)"
printf '%-6s %-22s %10s %9s %9s %9s %11s %10s\n' "model" "serving" "req/s" "p50 ms" "p90 ms" "p99 ms" "cpu ms/req" "batch/pass"
for MODEL in $MODELS; do
  label=$MODEL
  [ "$MODEL" = wide ] && MODEL=$WORK/wide.json
  for ((round = 1; round <= ROUNDS; round++)); do # alternating: both modes see the same load
    run single --max-batch 1
    run dynamic --max-batch 32 --max-wait-ms 5
    read -r s_rps s_p50 s_p90 s_p99 s_cpu < "$WORK/single"
    read -r d_rps d_p50 d_p90 d_p99 d_cpu < "$WORK/dynamic"
    printf '%-6s %-22s %10.1f %9.2f %9.2f %9.2f %11.3f %10s\n' "$label" "batch-1 (reference)" "$s_rps" "$s_p50" \
      "$s_p90" "$s_p99" "$s_cpu" "$(cat "$WORK/single.batch")"
    printf '%-6s %-22s %10.1f %9.2f %9.2f %9.2f %11.3f %10s\n' "$label" "dynamic (max 32, 5 ms)" "$d_rps" "$d_p50" \
      "$d_p90" "$d_p99" "$d_cpu" "$(cat "$WORK/dynamic.batch")"
    awk -v m="$label" -v a="$d_rps" -v b="$s_rps" -v c="$d_p50" -v d="$s_p50" -v e="$s_cpu" -v f="$d_cpu" 'BEGIN {
      r = a / b; l = c / d
      printf "%-6s ratio: %.2fx the requests/s (target >= 3), %.2fx the median latency (target <= 2): %s; " \
        "%.2fx less CPU per request\n", m, r, l, (r >= 3 && l <= 2) ? "met" : "NOT met", (f > 0 ? e / f : 0) }'
  done
done
echo "serve bench: done; $(uptime | sed 's/.*load/load/')"
