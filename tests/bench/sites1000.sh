#!/usr/bin/env bash
# Many sites on one server: `fednas run` with SITES (default 1000) simulated sites in WORKERS
# (default 4) worker processes, each site with its own key pair and its own CURVE connection, a
# softmax model on Fashion-MNIST and ROUNDS (default 3) rounds of FedAvg with every site
# selected. Prints the rounds completed and their times, the server's peak RSS, and the peak of
# established connections to the server's port (sampled every 0.5 s). Fails when the run does
# not finish all its rounds with every site, never on time.
#
#   tests/bench/sites1000.sh [FEDNAS_BINARY]        (SITES=300 WORKERS=2 ROUNDS=2 for a quick one)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
FEDNAS=$(realpath "${1:-$HERE/../../build/fednas}")
SITES=${SITES:-1000}
WORKERS=${WORKERS:-4}
ROUNDS=${ROUNDS:-3}
DATA=${FEDNAS_DATA:-/usr/share/datasets/fashion-mnist}
[ -x "$FEDNAS" ] || { echo "sites bench: no fednas binary at $FEDNAS"; exit 1; }
command -v ss > /dev/null || { echo "sites bench: ss (iproute2) is not installed"; exit 1; }
WORK=$(mktemp -d /tmp/fednas-bench-sites-XXXXXX)
RUNPID=
cleanup() { [ -n "$RUNPID" ] && kill "$RUNPID" 2> /dev/null; wait 2> /dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK" || exit 1
cat > exp.json << JSON
{ "name": "sites-$SITES", "seed": 7, "rounds": $ROUNDS,
  "data": { "path": "$DATA", "partition": { "scheme": "iid" } },
  "model": { "type": "softmax" },
  "clients": { "count": $SITES, "simulate": { "workers": $WORKERS } },
  "train": { "epochs": 1, "batch_size": 20, "lr": 0.05 },
  "server": { "round_timeout": 600, "register_timeout": 600, "heartbeat": 5 } }
JSON
echo "sites bench: $SITES sites in $WORKERS workers, $ROUNDS rounds; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), open files $(ulimit -n)"
T0=$(date +%s.%N)
"$FEDNAS" run exp.json --db runs.db --http off > run.out 2> run.err &
RUNPID=$!
PORT= PEAK_RSS=0 PEAK_CONN=0 T_ALL=
while kill -0 $RUNPID 2> /dev/null; do
  [ -z "$PORT" ] && PORT=$(grep -m1 -oE 'tcp://127\.0\.0\.1:[0-9]+' run.out 2> /dev/null | sed 's/.*://')
  [ -z "$T_ALL" ] && grep -q 'round   1/' run.out 2> /dev/null && T_ALL=$(date +%s.%N)
  r=$(awk '/^VmRSS/ {print $2}' /proc/$RUNPID/status 2> /dev/null)
  [ "${r:-0}" -gt "$PEAK_RSS" ] && PEAK_RSS=$r
  if [ -n "$PORT" ]; then
    c=$(ss -Htn state established "( sport = :$PORT )" 2> /dev/null | wc -l)
    [ "$c" -gt "$PEAK_CONN" ] && PEAK_CONN=$c
  fi
  sleep 0.5
done
wait $RUNPID
rc=$?
T1=$(date +%s.%N)
[ $rc = 0 ] || { tail -n 30 run.out run.err; echo "sites bench: fednas run exited $rc"; exit 1; }
done_rounds=$(sqlite3 -batch -noheader runs.db "select count(*) from rounds where participants = $SITES")
echo
grep -E '^round ' run.out
printf '\n+------------------------------+------------------+\n'
printf '| sites / workers              | %16s |\n' "$SITES / $WORKERS"
printf '| rounds with every site       | %16s |\n' "$done_rounds / $ROUNDS"
printf '| peak established connections | %16s |\n' "$PEAK_CONN"
printf '| server peak RSS (MiB)        | %16.1f |\n' "$(awk -v r="$PEAK_RSS" 'BEGIN { print r / 1024 }')"
printf '| start to end (s)             | %16.1f |\n' "$(awk -v a="$T0" -v b="$T1" 'BEGIN { print b - a }')"
printf '+------------------------------+------------------+\n'
sqlite3 -batch -noheader -separator ' ' runs.db \
  "select round, printf('%.2f', ended_at - started_at), participants, printf('%.4f', test_accuracy) from rounds order by round" |
  while read -r rnd secs parts acc; do
    echo "round $rnd: $secs s, $parts sites, test accuracy $acc"
  done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$done_rounds" = "$ROUNDS" ] || { tail -n 20 run.err; echo "sites bench: $done_rounds of $ROUNDS rounds had all $SITES sites"; exit 1; }
exit 0
