#!/usr/bin/env bash
# Dashboard benchmark: wrk over HTTPS keep-alive against a `fednas dashboard` serving a store
# with a finished 200-round run, while a second run is active (a writer commits a round and
# its metrics every 200 ms, so the WebSocket poller and SQLite's WAL are busy as in a real
# run). Prints requests/s and latency percentiles of /api/runs/ID/rounds (target: >= 5000
# requests/s and p99 <= 20 ms on 2 cores), of the reference /healthz (no store, measured in
# the same run) and their ratio, and the Run page's weight. Never fails on time; fails only
# when something does not work (no wrk, no dashboard, HTTP errors).
#
#   build/bench/web [FEDNAS_BINARY]      (make bench runs it from build/bench/)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
FEDNAS=$(realpath "${1:-$HERE/../fednas}")
DURATION=${WEB_BENCH_SECONDS:-5}
CONNS=${WEB_BENCH_CONNECTIONS:-16}
command -v wrk > /dev/null || { echo "web bench: wrk is not installed (scripts/setup.sh installs it)"; exit 1; }
command -v sqlite3 > /dev/null || { echo "web bench: sqlite3 is not installed"; exit 1; }
[ -x "$FEDNAS" ] || { echo "web bench: no fednas binary at $FEDNAS"; exit 1; }
WORK=$(mktemp -d /tmp/fednas-bench-web-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
DB=$WORK/runs.db

# The store: a one-round simulated run creates and migrates it; the benchmark's runs (ids 101
# and 102) are written with SQL for speed.
printf '{"name":"bench-init","rounds":1,"data":{"partition":{"scheme":"iid"}},"model":{"type":"softmax"},"clients":{"count":2,"simulate":{"workers":1}},"train":{"epochs":1,"batch_size":50,"lr":0.1}}' > "$WORK/init.json"
(cd "$WORK" && "$FEDNAS" run init.json --db runs.db --http off > init.out 2>&1) ||
  { cat "$WORK/init.out"; echo "web bench: fednas could not create the store"; exit 1; }
{
  echo "BEGIN;"
  echo "INSERT INTO experiments(id, name, config, created_at) VALUES (101, 'bench', '{\"name\":\"bench\",\"rounds\":200,\"dp\":{\"target_epsilon\":8,\"delta\":1e-5}}', 1700000000);"
  echo "INSERT INTO runs(id, experiment_id, status, rounds_planned, clients_planned, seed, started_at, ended_at) VALUES (101, 101, 'done', 200, 8, 1, 1700000000, 1700002000);"
  echo "INSERT INTO runs(id, experiment_id, status, rounds_planned, clients_planned, seed, started_at) VALUES (102, 101, 'running', 100000, 8, 2, 1700000000);"
  for r in $(seq 1 200); do
    t=$((1700000000 + r * 10))
    echo "INSERT INTO rounds VALUES (101, $r, $t, $t.5, 8, 8, 0, 0.$((5000 + r * 20)), 1.$((r % 90)), 1.$((r % 80)), 0.$((5000 + r * 21)), 60000, 409600, 409600);"
    echo "INSERT INTO round_metrics VALUES (101, $r, 'epsilon', $r.0 / 25.0);"
  done
  for c in $(seq 0 7); do
    echo "INSERT INTO clients VALUES (101, $c, 'site-$c', NULL, 7500, 'finished', 1700000000, 1700002000, 200, 81920000, 81920000, 0.15);"
  done
  echo "COMMIT;"
} | sqlite3 "$DB" || { echo "web bench: cannot seed the store"; exit 1; }

"$FEDNAS" dashboard --db "$DB" --http 0 > "$WORK/dash.out" 2> "$WORK/dash.err" &
PIDS+=($!)
URL=""
for _ in $(seq 100); do
  URL=$(grep -oE 'https://127\.0\.0\.1:[0-9]+/\?token=[0-9a-f]+' "$WORK/dash.out" 2> /dev/null | head -1)
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$URL" ] || { cat "$WORK/dash.err"; echo "web bench: the dashboard did not start"; exit 1; }
BASE=${URL%%/\?token=*}
TOKEN=${URL##*token=}
AUTH="Authorization: Bearer $TOKEN"

# The active run: a round (and its epsilon) every 200 ms.
(
  r=0
  while :; do
    r=$((r + 1)); t=$(date +%s.%N)
    sqlite3 "$DB" "BEGIN; INSERT INTO rounds VALUES (102, $r, $t, $t, 8, 7, 1, 0.8, 0.5, 0.5, 0.8, 60000, 1, 1); INSERT INTO round_metrics VALUES (102, $r, 'epsilon', $r / 100.0); COMMIT;" 2> /dev/null
    sleep 0.2
  done
) &
PIDS+=($!)

code=$(curl -sk -o /dev/null -w '%{http_code}' -H "$AUTH" "$BASE/api/runs/101/rounds")
[ "$code" = 200 ] || { echo "web bench: /api/runs/101/rounds answered $code"; exit 1; }

# wrk --latency prints "Requests/sec: N" and a latency distribution with a 99% line.
measure() { # path -> "rps p50 p99 errors"
  local out
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -H "$AUTH" "$BASE$1" 2>&1)
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
  p50=$(awk '$1 == "50%" {print $2}' <<< "$out")
  p99=$(awk '$1 == "99%" {print $2}' <<< "$out")
  errs=$(awk '/Non-2xx or 3xx responses/ {print $5} /Socket errors/ {print "socket"}' <<< "$out" | head -1)
  echo "${rps:-0} ${p50:-?} ${p99:-?} ${errs:-0}"
}
ms() { # wrk's "1.23ms" / "456.00us" / "1.2s" -> milliseconds
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.2f", v / 1000; else if (v ~ /ms$/) printf "%.2f", v + 0;
                          else if (v ~ /s$/) printf "%.2f", v * 1000; else print "?" }'
}
read -r h_rps h_p50 h_p99 h_err <<< "$(measure /healthz)"
read -r r_rps r_p50 r_p99 r_err <<< "$(measure /api/runs/101/rounds)"
read -r s_rps s_p50 s_p99 s_err <<< "$(measure '/api/runs/101/rounds?since=190')"

# Run page weight: every file the page loads, plus its first API answers.
weight=0
for a in / style.css vendor/uPlot.min.css vendor/uPlot.iife.min.js app.js util.js page-runs.js page-run.js \
         page-clients.js page-compare.js page-launch.js favicon.svg api/session api/runs/101 api/runs/101/rounds \
         api/runs/101/privacy; do
  n=$(curl -sk -o /dev/null -w '%{size_download}' -H "$AUTH" "$BASE/${a#/}")
  weight=$((weight + n))
done

rounds_now=$(sqlite3 "$DB" "select count(*) from rounds where run_id = 102")
printf '\nfednas dashboard over HTTPS (keep-alive, wrk -t2 -c%s, %s s each), %s cores; the active run committed %s rounds meanwhile\n' \
  "$CONNS" "$DURATION" "$(nproc)" "$rounds_now"
printf '+--------------------------------+-----------+----------+----------+----------+--------+\n'
printf '| request                        | req/s     | vs ref   | p50 ms   | p99 ms   | errors |\n'
printf '+--------------------------------+-----------+----------+----------+----------+--------+\n'
row() { printf '| %-30s | %9.0f | %8s | %8s | %8s | %6s |\n' "$1" "$2" "$3" "$(ms "$4")" "$(ms "$5")" "$6"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
row "/healthz (reference)" "$h_rps" "1.00" "$h_p50" "$h_p99" "$h_err"
row "/api/runs/101/rounds (200)" "$r_rps" "$(ratio "$r_rps" "$h_rps")" "$r_p50" "$r_p99" "$r_err"
row "/api/runs/101/rounds?since=190" "$s_rps" "$(ratio "$s_rps" "$h_rps")" "$s_p50" "$s_p99" "$s_err"
printf '+--------------------------------+-----------+----------+----------+----------+--------+\n'
awk -v r="$r_rps" -v p="$(ms "$r_p99")" 'BEGIN {
  printf "targets for /api/runs/101/rounds: >= 5000 req/s (%s), p99 <= 20 ms (%s)\n",
         (r >= 5000 ? "met" : "not met"), (p != "?" && p <= 20 ? "met" : "not met") }'
printf 'Run page weight: %d bytes (%.1f KB; budget 300 KB) for the page, its scripts, styles and first API answers\n' \
  "$weight" "$(awk -v w="$weight" 'BEGIN { print w / 1024 }')"
[ "$r_err" = 0 ] || { echo "web bench: errors while measuring"; exit 1; }
exit 0
