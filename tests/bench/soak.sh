#!/usr/bin/env bash
# Soak: two federated runs kept going for SOAK_SECONDS (default 3600), each with sites that drop
# (SIGKILL) and rejoin, and the dashboard polled; the RSS of each server (and of one client, a
# simulation worker that never drops) is printed every SOAK_SAMPLE seconds (default 60).
#   plain   FedAvg, 6 sites: sites 1-3 in one simulation worker that stays up, sites 4-6 lone
#           agents, one of which is killed and restarted every SOAK_FLAP seconds (default 20),
#           so every round sees dropouts and rejoins
#   secagg  secure aggregation (t = 3 of 5), sites 1-3 in a steady worker, sites 4-5 flapping
#           (killed at random moments: every phase of the protocol loses a site now and then)
# The data are Gaussian blobs in CSV (cheap to train: the soak measures the platform, not the
# engine; two hidden layers of 256 and 2,000 rows a site for two epochs make a round last long enough for the run store to grow as in
# a real run rather than by a hundred rounds a second). Both servers' dashboards are polled every
# 2 s as a watcher's browser does: runs list, run, new rounds (?since=), clients, privacy,
# /metrics, and every SOAK_SAMPLE s the full rounds list (the run page opened again). After the warm-up (SOAK_WARMUP, default SOAK_SECONDS / 6 = 10 minutes of an hour)
# the RSS growth of each process, last sample over the first sample after warm-up, must stay
# under 10%; the soak also fails when a server dies, a run stops completing rounds, or the
# dashboard answers with errors. Timings depend on the machine's load: `uptime` is printed.
#
#   tests/bench/soak.sh [FEDNAS_BINARY]     (nice -n 5 recommended; SOAK_SECONDS=300 for a quick one)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
FEDNAS=$(realpath "${1:-$HERE/../../build/fednas}")
SECONDS_TOTAL=${SOAK_SECONDS:-3600}
SAMPLE=${SOAK_SAMPLE:-60}
FLAP=${SOAK_FLAP:-20}
WARMUP=${SOAK_WARMUP:-$((SECONDS_TOTAL / 6))}
[ -x "$FEDNAS" ] || { echo "soak: no fednas binary at $FEDNAS"; exit 1; }
command -v curl > /dev/null || { echo "soak: curl is not installed"; exit 1; }
command -v sqlite3 > /dev/null || { echo "soak: sqlite3 is not installed"; exit 1; }
WORK=$(mktemp -d /tmp/fednas-soak-XXXXXX)
PIDS=()
KEEP=0
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done
  wait 2> /dev/null
  [ "$KEEP" = 1 ] && echo "soak: left $WORK for inspection" || rm -rf "$WORK"
}
trap cleanup EXIT
die() { echo "soak: FAIL: $*"; KEEP=1; exit 1; }
export OPENBLAS_NUM_THREADS=1 FEDNAS_THREADS=1 FEDNAS_LOG=${FEDNAS_LOG:-warn}
cd "$WORK" || exit 1

python3 - << 'PY'
import random
def gen(path, rows, seed):
    r = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            y = r.randrange(3)
            x = [r.gauss(2.0 * y if i % 3 == y % 3 else -1.0, 1.5) for i in range(8)]
            f.write(",".join(f"{v:.5f}" for v in x) + f",{y}\n")
gen("table.csv", 12000, 1)
gen("test.csv", 2000, 9)
PY

# exp NAME SITES EXTRA: an experiment that outlasts the soak (the server is stopped at the end)
exp() {
  cat > "$1.json" << JSON
{ "name": "soak-$1", "seed": 5, "rounds": 1000000,
  "data": { "dataset": "csv", "path": "$WORK/table.csv", "features": 8, "classes": 3, "test": "$WORK/test.csv" },
  "model": { "type": "mlp", "hidden": [256, 256] },
  "clients": { "count": $2, "min_fit": 3 },
  $3
  "train": { "epochs": 2, "batch_size": 32, "lr": 0.05 },
  "server": { "round_timeout": 10, "register_timeout": 600, "heartbeat": 1, "phase_timeout": 5 } }
JSON
}
exp plain 6 ''
exp secagg 5 '"secure_aggregation": { "mode": "secagg", "threshold": 3, "clip": 10.0, "bits": 32 },'

declare -A EP URL TOKEN SPID WPID SITES
for name in plain secagg; do
  n=6; [ $name = secagg ] && n=5
  SITES[$name]=$n
  "$FEDNAS" keys init "keys-$name" > /dev/null || die "keys init"
  for ((k = 1; k <= n; k++)); do "$FEDNAS" keys site "keys-$name" "site-$k" > /dev/null || die "keys site"; done
  "$FEDNAS" server "$name.json" --keys "keys-$name" --bind 'tcp://127.0.0.1:*' --db "$name.db" --http 0 \
    > "$name.out" 2> "$name.err" &
  SPID[$name]=$!; PIDS+=($!)
  for _ in $(seq 300); do
    EP[$name]=$(grep -m1 -oE 'tcp://127\.0\.0\.1:[0-9]+' "$name.out" 2> /dev/null)
    URL[$name]=$(grep -m1 -oE 'https://127\.0\.0\.1:[0-9]+/\?token=[0-9a-f]+' "$name.out" 2> /dev/null)
    [ -n "${EP[$name]}" ] && [ -n "${URL[$name]}" ] && break
    sleep 0.1
  done
  [ -n "${EP[$name]}" ] && [ -n "${URL[$name]}" ] || { cat "$name.out" "$name.err"; die "$name: the server did not start"; }
  TOKEN[$name]=${URL[$name]##*token=}
  URL[$name]=${URL[$name]%%/\?token=*}
  # The steady worker: sites 1-3 (parts 0-2 of n).
  "$FEDNAS" client --connect "${EP[$name]}" --simulate "0-2/$n" --kits "keys-$name/sites" --data table.csv \
    --idle-timeout 600 > "$name-worker.out" 2>&1 &
  WPID[$name]=$!; PIDS+=($!)
done

declare -A AGENT # "name:k" -> pid of the lone agent for site k (k >= 4)
start_agent() {  # NAME K
  local n=${SITES[$1]}
  "$FEDNAS" client --connect "${EP[$1]}" --kit "keys-$1/sites/site-$2" --shard "$(($2 - 1))/$n" --data table.csv \
    --connect-timeout 600 >> "$1-site-$2.out" 2>&1 &
  AGENT[$1:$2]=$!; PIDS+=($!)
}
for name in plain secagg; do
  for ((k = 4; k <= ${SITES[$name]}; k++)); do start_agent $name $k; done
done

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2> /dev/null || echo 0; }
rounds() { sqlite3 -batch -noheader "$1.db" "select count(*) from rounds" 2> /dev/null || echo "?"; }
POLL_OK=0 POLL_ERR=0
poll() { # NAME [full]: what a watcher's browser loads: the run page's rounds in full when it opens
  local name=$1 p code last rounds_q # (here: once a sample), then only the rounds after the last one
  last=$(sqlite3 -batch -noheader "$name.db" "select coalesce(max(round), 0) from rounds" 2> /dev/null)
  rounds_q="/api/runs/1/rounds?since=${last:-0}"
  [ "${2:-}" = full ] && rounds_q=/api/runs/1/rounds
  for p in /api/runs /api/runs/1 "$rounds_q" /api/runs/1/clients /api/runs/1/privacy /metrics; do
    code=$(curl -sk -o /dev/null -m 10 -w '%{http_code}' -H "Authorization: Bearer ${TOKEN[$name]}" "${URL[$name]}$p")
    if [ "$code" = 200 ]; then POLL_OK=$((POLL_OK + 1)); else POLL_ERR=$((POLL_ERR + 1)); echo "soak: $name $p answered $code"; fi
  done
}

echo "soak: $SECONDS_TOTAL s, RSS every $SAMPLE s, warm-up $WARMUP s, a site dropped every $FLAP s; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "soak: plain ${EP[plain]} (dashboard ${URL[plain]}), secagg ${EP[secagg]} (dashboard ${URL[secagg]})"
printf '%6s | %12s %8s | %12s %8s | %12s | %12s | %s\n' "t (s)" "plain KiB" "rounds" "secagg KiB" "rounds" \
  "worker KiB" "sa wkr KiB" "load"
T0=$(date +%s)
NEXT_SAMPLE=0 NEXT_FLAP=$FLAP NEXT_FULL=0 FLAPS=0
declare -A BASE LAST
: > rss.tsv
while :; do
  now=$(($(date +%s) - T0))
  for name in plain secagg; do
    kill -0 "${SPID[$name]}" 2> /dev/null || { tail -n 20 "$name.err"; die "$name: the server died at t = $now s"; }
    kill -0 "${WPID[$name]}" 2> /dev/null || { tail -n 20 "$name-worker.out"; die "$name: the steady worker died at t = $now s"; }
  done
  if [ "$now" -ge "$NEXT_SAMPLE" ]; then
    rp=$(rss "${SPID[plain]}") rs=$(rss "${SPID[secagg]}") rw=$(rss "${WPID[plain]}") rx=$(rss "${WPID[secagg]}")
    printf '%6d | %12d %8s | %12d %8s | %12d | %12d | %s\n' "$now" "$rp" "$(rounds plain)" "$rs" "$(rounds secagg)" \
      "$rw" "$rx" "$(cut -d' ' -f1 /proc/loadavg)"
    echo "$now $rp $rs $rw $rx $(rounds plain) $(rounds secagg)" >> rss.tsv
    NEXT_SAMPLE=$((NEXT_SAMPLE + SAMPLE))
    [ "$now" -ge "$SECONDS_TOTAL" ] && break
  fi
  if [ "$now" -ge "$NEXT_FLAP" ]; then # drop one lone agent (round-robin), start it again at once
    FLAPS=$((FLAPS + 1))
    name=plain k=$((4 + FLAPS % 3))
    if [ $((FLAPS % 2)) = 0 ]; then name=secagg k=$((4 + FLAPS / 2 % 2)); fi
    kill -9 "${AGENT[$name:$k]}" 2> /dev/null
    wait "${AGENT[$name:$k]}" 2> /dev/null
    start_agent $name $k
    NEXT_FLAP=$((NEXT_FLAP + FLAP))
  fi
  full=; [ "$now" -ge "$NEXT_FULL" ] && full=full NEXT_FULL=$((NEXT_FULL + SAMPLE))
  poll plain $full
  poll secagg $full
  sleep 2
done

# Growth after the warm-up: the first sample at or after WARMUP against the last one.
growth() { # COLUMN -> "base last percent"
  awk -v w="$WARMUP" -v c="$1" '$1 >= w && !b { b = $c } { l = $c } END { if (b > 0) printf "%d %d %.1f", b, l, 100 * (l - b) / b; else print "0 0 ?" }' rss.tsv
}
r0p=$(awk -v w="$WARMUP" '$1 >= w { print $6; exit }' rss.tsv) r0s=$(awk -v w="$WARMUP" '$1 >= w { print $7; exit }' rss.tsv)
r1p=$(rounds plain) r1s=$(rounds secagg)
echo
echo "soak: $FLAPS drops and rejoins, dashboard polled $POLL_OK times ($POLL_ERR errors); load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '+-----------------+------------+------------+----------+-----------------------+\n'
printf '| process         | KiB @%5ds | KiB @%5ds | growth   | rounds after warm-up  |\n' "$WARMUP" "$now"
printf '+-----------------+------------+------------+----------+-----------------------+\n'
status=0
for row in "plain server:2:$r0p:$r1p" "secagg server:3:$r0s:$r1s" "plain worker:4::" "secagg worker:5::"; do
  IFS=: read -r label col a b <<< "$row"
  read -r base last pct <<< "$(growth "$col")"
  done_r="-"; [ -n "$a" ] && done_r=$((b - a))
  printf '| %-15s | %10s | %10s | %7s%% | %21s |\n' "$label" "$base" "$last" "$pct" "$done_r"
  awk -v p="$pct" 'BEGIN { exit !(p == "?" || p >= 10) }' && { echo "soak: $label RSS grew $pct% after the warm-up"; status=1; }
done
printf '+-----------------+------------+------------+----------+-----------------------+\n'
[ "$((r1p - r0p))" -gt 0 ] || { echo "soak: the plain run completed no round after the warm-up"; status=1; }
[ "$((r1s - r0s))" -gt 0 ] || { echo "soak: the secagg run completed no round after the warm-up"; status=1; }
[ "$POLL_ERR" = 0 ] || { echo "soak: the dashboard answered $POLL_ERR requests with errors"; status=1; }
[ $status = 0 ] && echo "soak: flat (every process grew less than 10% after the warm-up)" || KEEP=1
exit $status
