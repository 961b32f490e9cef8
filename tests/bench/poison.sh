#!/usr/bin/env bash
# Model poisoning (issue 12): how far ONE malicious site moves the model under each strategy,
# secure aggregation off. Five sites train a softmax model on Fashion-MNIST (shards 0..4 of 20,
# 3000 samples each); the clean run has five honest sites, an attacked run the same four honest
# sites and, as the fifth, hostile_client's `poison` mode: well-formed, finite, right-sized
# updates claiming the 3000 samples it registered with, so every check the server makes passes.
#   flip:K   -K times the last global step it saw (a stand-in for the honest update, sign-flipped
#            and scaled; zeros in round 1)
#   noise:S  Gaussian noise of std S in every coordinate
# Prints, per strategy: the final test accuracy of the clean run, of each attacked run, and the
# distance of the attacked run's final model from the clean run's (L2, and relative to the clean
# model's norm). Never fails on a number, only when a run does not finish.
#
#   tests/bench/poison.sh [FEDNAS [HOSTILE_CLIENT]]     (make bench runs it from build/bench/)
#   POISON_ROUNDS (5), POISON_STRATEGIES ("fedavg median trimmed_mean krum"),
#   POISON_ATTACKS ("flip:10 flip:50 noise:1 noise:5"), POISON_CLEAN (1: also the clean runs) choose the runs.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
FEDNAS=$(realpath "${1:-$HERE/../fednas}")
HOSTILE=$(realpath "${2:-${HOSTILE_CLIENT:-$HERE/../tests/hostile_client}}")
ROUNDS=${POISON_ROUNDS:-5}
STRATEGIES=${POISON_STRATEGIES:-fedavg median trimmed_mean krum}
ATTACKS=${POISON_ATTACKS:-flip:10 flip:50 noise:1 noise:5}
CLEAN=${POISON_CLEAN:-1}
[ -x "$FEDNAS" ] || { echo "poison bench: no fednas binary at $FEDNAS"; exit 1; }
[ -x "$HOSTILE" ] || { echo "poison bench: no hostile_client at $HOSTILE (built in build/tests)"; exit 1; }
command -v sqlite3 > /dev/null || { echo "poison bench: sqlite3 is not installed"; exit 1; }
WORK=$(mktemp -d /tmp/fednas-bench-poison-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK" || exit 1
"$FEDNAS" keys init keys > /dev/null || { echo "poison bench: keys init failed"; exit 1; }
for i in 1 2 3 4 5; do "$FEDNAS" keys site keys "site-$i" > /dev/null || exit 1; done

strategy_json() {
  case $1 in
    trimmed_mean) echo '{"name":"trimmed_mean","trim_ratio":0.2}' ;; # cuts one update at each end of five
    krum) echo '{"name":"krum","byzantine":1}' ;;
    *) echo "{\"name\":\"$1\"}" ;;
  esac
}

# run_one STRATEGY ATTACK: one run in $WORK/STRATEGY-ATTACK (ATTACK "clean" or KIND:SCALE);
# prints its final test accuracy.
run_one() {
  local dir="$WORK/$1-${2/:/-}" ep server i rc
  mkdir -p "$dir"
  cat > "$dir/exp.json" << JSON
{ "name": "poison-$1-$2", "seed": 11, "rounds": $ROUNDS,
  "model": { "type": "softmax" }, "data": {},
  "clients": { "count": 5 },
  "strategy": $(strategy_json "$1"),
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.1 },
  "server": { "round_timeout": 120, "register_timeout": 60, "heartbeat": 1 } }
JSON
  "$FEDNAS" server "$dir/exp.json" --keys keys --bind 'tcp://127.0.0.1:*' --db "$dir/r.db" --http off \
    > "$dir/server.out" 2> "$dir/server.err" &
  server=$!
  PIDS+=($server)
  for ((i = 0; i < 300; i++)); do
    ep=$(grep -m1 -oE 'tcp://127\.0\.0\.1:[0-9]+' "$dir/server.out" 2> /dev/null) && break
    kill -0 $server 2> /dev/null || break
    sleep 0.1
  done
  [ -n "${ep:-}" ] || { cat "$dir/server.err" >&2; echo "poison bench: the server of $1/$2 did not start" >&2; return 1; }
  for i in 1 2 3 4 5; do
    if [ "$i" = 5 ] && [ "$2" != clean ]; then
      "$HOSTILE" poison "${2%%:*}" "${2#*:}" "$ep" "keys/sites/site-5" > "$dir/site-5.out" 2>&1 &
    else
      OPENBLAS_NUM_THREADS=1 FEDNAS_THREADS=1 "$FEDNAS" client --connect "$ep" --kit "keys/sites/site-$i" \
        --shard "$((i - 1))/20" > "$dir/site-$i.out" 2>&1 &
    fi
    PIDS+=($!)
  done
  wait $server
  rc=$?
  [ $rc = 0 ] || { tail -n 20 "$dir/server.err" >&2; echo "poison bench: the run $1/$2 failed ($rc)" >&2; return 1; }
  sqlite3 -batch -noheader "$dir/r.db" "select test_accuracy from rounds where round = $ROUNDS"
}

# distance A.db B.db: "L2 relative" between the two runs' final models (their checkpoints).
distance() {
  python3 - "$1" "$2" << 'PY'
import array, math, sqlite3, sys
def params(path):
    row = sqlite3.connect(path).execute("select params from checkpoints order by round desc limit 1").fetchone()
    a = array.array("f"); a.frombytes(row[0]); return a
a, b = params(sys.argv[1]), params(sys.argv[2])
d = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
n = math.sqrt(sum(y * y for y in b))
print("%.3g %.3g" % (d, d / n if n > 0 else float("nan")))
PY
}

echo "poison bench: $ROUNDS rounds, 5 sites (one malicious when attacked), softmax on Fashion-MNIST, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-13s %-9s %-10s %-10s %-10s %-10s\n' strategy attack clean_acc acc dist_L2 dist_rel
status=0
for s in $STRATEGIES; do
  clean_acc=-
  if [ "$CLEAN" = 1 ]; then
    clean_acc=$(run_one "$s" clean) || { status=1; continue; }
    clean_acc=$(printf '%.4f' "$clean_acc")
  fi
  for a in $ATTACKS; do
    acc=$(run_one "$s" "$a") || { status=1; continue; }
    dist="- -"
    [ "$CLEAN" = 1 ] && dist=$(distance "$WORK/$s-${a/:/-}/r.db" "$WORK/$s-clean/r.db")
    printf '%-13s %-9s %-10s %-10.4f %-10s %-10s\n' "$s" "$a" "$clean_acc" "$acc" $dist
  done
done
exit $status
