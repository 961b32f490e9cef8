#!/usr/bin/env bash
# Chaos: the server is SIGKILLed at CHAOS_KILLS (default 20) moments of two runs and restarted
# with --resume each time; its four client agents keep running and rejoin by themselves.
#   plain   FedAdam + federated evaluation: the final model and optimizer state must be
#           bit-for-bit those of an uninterrupted run with the same seed, keys and data.
#   ddp     secure aggregation + distributed DP: every committed round survives, rounds stay
#           consecutive, and the epsilon each resumed run reports is never below what the store
#           says was charged (every unmask request, committed or not: README, DP section).
# Kill moments: each kill targets a phase the server writes to runs.phase (round-robin over the
# run's phases from a random offset, so every phase is aimed at) plus a random delay (0-199 ms in
# the long phases, 0-2 ms in the short ones), or "startup" (while a resumed server loads). A
# phase too short to be seen is overshot: the kill lands just after it (tests/integration/
# chaos_kill.py), and the table shows the phase the store says the server was in. Draws come from CHAOS_SEED (printed first; set it to
# replay a failure). A table of kills, phases hit and rounds committed closes the log.
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
KILLS=${CHAOS_KILLS:-20}
SEED=${CHAOS_SEED:-$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}
echo "chaos: seed $SEED, $KILLS kills (replay: CHAOS_SEED=$SEED CHAOS_KILLS=$KILLS $0 $FEDNAS)"
RANDOM=$SEED
[ "$KILLS" -ge 2 ] || fail "CHAOS_KILLS must be >= 2"
KILLS_PLAIN=$((KILLS * 2 / 5))
KILLS_DDP=$((KILLS - KILLS_PLAIN))
export OPENBLAS_NUM_THREADS=1 FEDNAS_THREADS=1
cd "$WORK"
T0=$(date +%s)

# Gaussian blobs, one centre per class (as csv_site.sh): 8 features, 3 classes.
python3 - <<'PY'
import random
def gen(path, rows, seed):
    r = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            y = r.randrange(3)
            x = [r.gauss(2.0 * y if i % 3 == y % 3 else -1.0, 1.5) for i in range(8)]
            f.write(",".join(f"{v:.5f}" for v in x) + f",{y}\n")
for i in range(4):
    gen(f"site-{i}.csv", 3000, i + 1)
gen("test.csv", 4000, 9)  # big enough that evaluating takes a few ms and can be hit
PY
"$FEDNAS" keys init keys >/dev/null
for i in 0 1 2 3; do "$FEDNAS" keys site keys "site-$i" >/dev/null; done

# A kill can cost more than one round: a fast machine finishes a round or two inside the up to
# 199 ms delay after a long phase. Four rounds a kill leave room for that (CI once ran out at one).
R_PLAIN=$((4 * KILLS_PLAIN + 3))
R_DDP=$((4 * KILLS_DDP + 3))
cat > plain.json <<JSON
{ "name": "chaos-plain", "seed": 21, "rounds": $R_PLAIN,
  "data": { "dataset": "csv", "features": 8, "classes": 3, "test": "$WORK/test.csv" },
  "model": { "type": "mlp", "hidden": [128, 128] },
  "clients": { "count": 4 },
  "strategy": { "name": "fedadam", "server_lr": 0.01 },
  "evaluate": { "every": 1, "clients_fraction": 1.0 },
  "train": { "epochs": 2, "batch_size": 16, "lr": 0.05 },
  "server": { "round_timeout": 60, "register_timeout": 60, "heartbeat": 1 } }
JSON
cat > ddp.json <<JSON
{ "name": "chaos-ddp", "seed": 22, "rounds": $R_DDP,
  "data": { "dataset": "csv", "features": 8, "classes": 3, "test": "$WORK/test.csv" },
  "model": { "type": "mlp", "hidden": [128, 128] },
  "clients": { "count": 4, "per_round": 4, "min_fit": 3 },
  "dp": { "clip": 0.5, "noise_multiplier": 0.5, "delta": 1e-5 },
  "secure_aggregation": { "mode": "secagg", "threshold": 3, "bits": 32 },
  "train": { "epochs": 2, "batch_size": 16, "lr": 0.1 },
  "server": { "round_timeout": 60, "register_timeout": 60, "heartbeat": 1, "phase_timeout": 30 } }
JSON

CLIENTS=()
start_clients() { # ENDPOINT TAG
  local i
  CLIENTS=()
  for i in 0 1 2 3; do
    "$FEDNAS" client --connect "$1" --kit "keys/sites/site-$i" --data "site-$i.csv" > "client-$2-$i.out" 2>&1 &
    PIDS+=($!); CLIENTS+=($!)
  done
}
# finish_run PID TAG SECONDS: the last server must end by itself, with status 0, as must the clients.
finish_run() {
  wait_exit "$1" "$3"; local rc=$?
  [ $rc = 0 ] || { tail -n 30 "$2.out" "$2.err"; fail "$2: server exited $rc"; }
  local c
  for c in "${CLIENTS[@]}"; do
    wait_exit "$c" 30 || fail "$2: a client did not end with the run (status $?)"
  done
}
rounds_list() { sql "$1" "select coalesce(group_concat(round), '') from (select round from rounds where run_id = 1 order by round)"; }
seq_list() { [ "$1" -ge 1 ] && seq -s, 1 "$1" || echo ""; }

# The reference, uninterrupted.
"$FEDNAS" server plain.json --keys keys --bind 'tcp://127.0.0.1:*' --db ref.db --http off > ref.out 2> ref.err &
PIDS+=($!); REF=$!
start_clients "$(wait_for_line ref.out 'tcp://127\.0\.0\.1:[0-9]+' 60)" ref
finish_run $REF ref 600
[ "$(rounds_list ref.db)" = "$(seq_list $R_PLAIN)" ] || fail "reference run incomplete: $(rounds_list ref.db)"
T_REF=$(($(date +%s) - T0))

TABLE=()
declare -A HIT=()
# chaos NAME EXPERIMENT KILLS PHASE...: the run of EXPERIMENT in NAME.db, killed KILLS times;
# PHASE... are the phases aimed at, in the order a round goes through them ("startup" first).
chaos() {
  local name=$1 exp=$2 kills=$3; shift 3
  local phases=("$@") db=$name.db k=0 off=$((RANDOM % $#)) target delay line phase rnd before after pid ep hp
  local order
  order=$(IFS=,; echo "${phases[*]:1}")
  for ((k = 1; k <= kills + 1; k++)); do
    if [ $k -le "$kills" ]; then # the killer first: it must see the phases the new server writes
      target=${phases[$(((k + off) % ${#phases[@]}))]}
      case $target in # long phases: anywhere in their first 200 ms; short ones: right away
        startup | waiting | training | advertise_keys | federated_evaluation) delay=$((RANDOM % 200)) ;;
        *) delay=$((RANDOM % 3)) ;;
      esac
      # The first kill always lands before round 1 is committed: the resume of a run with no
      # committed round (it starts over from the seeded model) is checked every time.
      [ $k = 1 ] && target=waiting delay=$((RANDOM % 3))
      rm -f "$name.pid" "$name.pid.ready"
      python3 "$HERE/chaos_kill.py" "$db" "$name.pid" "$target" "$order" "$delay" 30 > "$name-kill-$k.txt" &
      hp=$!
      for ((t = 0; t < 3000; t++)); do [ -e "$name.pid.ready" ] && break; sleep 0.01; done
    fi
    if [ $k = 1 ]; then
      "$FEDNAS" server "$exp" --keys keys --bind 'tcp://127.0.0.1:*' --db "$db" --http off > "$name-0.out" 2> "$name-0.err" &
      PIDS+=($!); pid=$!
      echo $pid > "$name.pid"
      ep=$(wait_for_line "$name-0.out" 'tcp://127\.0\.0\.1:[0-9]+' 60)
      start_clients "$ep" "$name"
    else
      "$FEDNAS" server --resume 1 --keys keys --bind "$ep" --db "$db" --http off > "$name-$((k - 1)).out" 2> "$name-$((k - 1)).err" &
      PIDS+=($!); pid=$!
      echo $pid > "$name.pid"
    fi
    [ $k -le "$kills" ] || break
    wait $hp || { tail -n 20 "$name-$((k - 1)).err"; fail "$name: the server ended before kill $k (run too short for $kills kills?)"; }
    { wait "$pid"; } 2>/dev/null
    read -r phase rnd before after < "$name-kill-$k.txt"
    HIT[$phase]=$((${HIT[$phase]:-0} + 1))
    # Nothing committed is lost: no round disappears, rounds stay 1..n, the checkpoint is round n.
    [ "$after" -ge "$before" ] || fail "$name kill $k ($phase): committed rounds went from $before to $after"
    [ "$(rounds_list "$db")" = "$(seq_list "$after")" ] || fail "$name kill $k: rounds not consecutive: $(rounds_list "$db")"
    if [ "$after" -ge 1 ]; then
      [ "$(sql "$db" "select round from checkpoints where run_id = 1")" = "$after" ] ||
        fail "$name kill $k: checkpoint round $(sql "$db" "select round from checkpoints") but $after rounds committed"
    fi
    [ "$(sql "$db" "select status from runs where id = 1")" = running ] || fail "$name kill $k: a killed run should read running"
    TABLE+=("$(printf '%-6s %3d  %-21s +%3d ms  %-28s %3d %5d' "$name" "$k" "$target" "$delay" "$phase (round $rnd)" "$after" \
      $((before > after ? before - after : 0)))")
    eval "${name}_AFTER[$k]=$after"
  done
  finish_run $pid "$name-$kills" 600
  # Each resumed server started from exactly the rounds its predecessor had committed.
  local a
  for ((k = 1; k <= kills; k++)); do
    eval "a=\${${name}_AFTER[$k]}"
    local said
    said=$(grep -oE 'resuming run 1 after round [0-9]+' "$name-$k.err")
    if [ -z "$said" ]; then # killed while loading, before it could say
      [ $k -lt "$kills" ] && grep -q '^startup ' "$name-kill-$((k + 1)).txt" ||
        { tail -n 20 "$name-$k.err"; fail "$name: resumed server $k never said it resumed"; }
    elif [ "$said" != "resuming run 1 after round $a" ]; then
      tail -n 20 "$name-$k.err"; fail "$name: resumed server $k: '$said', but $a rounds were committed"
    fi
  done
  [ "$(rounds_list "$db")" = "$(seq_list "$(sql "$db" "select rounds_planned from runs")")" ] ||
    fail "$name: rounds at the end: $(rounds_list "$db")"
  [ "$(sql "$db" "select status from runs where id = 1")" = done ] || fail "$name: run not done"
  cat "$name"-[0-9]*.err | grep -q "resuming run 1 after round 0 (none was committed)" ||
    fail "$name: the first kill (before round 1 was committed) was not resumed from round 0"
}

declare -a plain_AFTER=() ddp_AFTER=()
chaos plain plain.json "$KILLS_PLAIN" startup waiting training aggregating evaluating federated_evaluation
T_PLAIN=$(($(date +%s) - T0 - T_REF))
a=$(sql ref.db "select hex(params) || hex(state) from checkpoints" | md5sum)
b=$(sql plain.db "select hex(params) || hex(state) from checkpoints" | md5sum)
MATCH=yes
[ "$a" = "$b" ] || MATCH=no
[ "$MATCH" = yes ] || fail "after $KILLS_PLAIN kills the final model (or FedAdam state) differs from the uninterrupted run's"
[ "$(sql ref.db "select group_concat(printf('%.9f', test_accuracy)) from rounds")" = \
  "$(sql plain.db "select group_concat(printf('%.9f', test_accuracy)) from rounds")" ] ||
  fail "per-round test accuracy differs from the uninterrupted run's"
# Federated evaluation follows each round's commit; a kill in between is made good on resume
# (server_eval.c, eval_recover): every round has it, with the uninterrupted run's value.
fed() { sql "$1" "select group_concat(round || ':' || printf('%.9f', value)) from (select round, value from round_metrics where name = 'fed_eval_accuracy' order by round)"; }
[ "$(fed ref.db)" = "$(fed plain.db)" ] ||
  fail "per-round federated accuracy differs from the uninterrupted run's: $(fed plain.db) against $(fed ref.db)"
pass "plain: $KILLS_PLAIN kills, $R_PLAIN rounds, final model and FedAdam state identical to the uninterrupted run"

T1=$(date +%s)
chaos ddp ddp.json "$KILLS_DDP" startup waiting advertise_keys share_keys masked_input unmasking aggregating evaluating
T_DDP=$(($(date +%s) - T1))
# Privacy: every unmask request is charged (dp_releases, per round, committed or not). The
# epsilon each round stored must be that of all the releases up to it (q = 1: every site every
# round), and every resumed server's first report must not undercount what was charged before it.
eps_for() { "$FEDNAS" privacy --q 1 --sigma 0.5 --steps "$1" --delta 1e-5 | awk '/^epsilon:/ { print $2 }'; }
total=0
for ((r = 1; r <= R_DDP; r++)); do
  n=$(sql ddp.db "select cast(value as int) from round_metrics where run_id = 1 and round = $r and name = 'dp_releases'")
  [ -n "$n" ] && [ "$n" -ge 1 ] || fail "ddp round $r: no release recorded ('$n')"
  total=$((total + n))
  eps=$(sql ddp.db "select value from round_metrics where run_id = 1 and round = $r and name = 'epsilon'")
  expect_rel_close "$eps" "$(eps_for $total)" 1e-4 "ddp round $r: epsilon $eps, but $total releases were charged up to it ($(eps_for $total))"
done
charged_extra=$((total - R_DDP))
replayed=$(cat ddp-*.err | grep -oE 'resuming: [0-9]+ secure-aggregation sum' | awk '{ s += $2 } END { print s + 0 }')
pass "ddp: $KILLS_DDP kills, $R_DDP rounds consecutive, $total releases charged ($charged_extra from rounds a kill interrupted after the unmask request; the resumed servers' warnings replayed such sums $replayed times, once per resume of their round), final epsilon $(eps_for $total)"

echo
echo "chaos table (seed $SEED): kill target, phase the server was in (runs.phase), rounds committed after the kill"
printf '%-6s %3s  %-21s %7s  %-28s %3s %5s\n' run kill target delay "phase hit" rds lost
for l in "${TABLE[@]}"; do echo "$l"; done
echo "phases hit: $(for p in "${!HIT[@]}"; do printf '%s=%d ' "$p" "${HIT[$p]}"; done)"
echo "final model matched the uninterrupted run (plain): $MATCH"
echo "times: reference ${T_REF}s, plain with $KILLS_PLAIN kills ${T_PLAIN}s, ddp with $KILLS_DDP kills ${T_DDP}s"
pass "$KILLS kills: no committed round lost"
