#!/usr/bin/env bash
# Faults during rounds: a client that crashes mid-round (the round completes without it, well
# before the deadline) and a client that sends replays, wrong sizes, NaN and other runs'
# updates (each rejected and logged; its valid update still counts).
source "$(dirname "$0")/lib.sh"
: "${FAULT_CLIENT:?set FAULT_CLIENT to the fault_client test program}"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-faults", "seed": 5, "rounds": 3,
  "model": { "type": "mlp", "hidden": [16] }, "data": {},
  "clients": { "count": 4, "min_fit": 2 },
  "train": { "epochs": 1, "batch_size": 64, "lr": 0.05 },
  "server": { "round_timeout": 120, "register_timeout": 60, "heartbeat": 1 } }
JSON
"$FEDNAS" keys init keys >/dev/null
for s in a b c d; do "$FEDNAS" keys site keys "site-$s" >/dev/null; done
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db f.db --http off > server.out 2> server.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
for i in 0 1; do
  s=$(echo a b | cut -d' ' -f$((i + 1)))
  OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$EP" --kit "keys/sites/site-$s" --shard "$i/2" > "client-$s.out" 2>&1 &
  PIDS+=($!)
done
"$FAULT_CLIENT" bad-updates "$EP" keys/sites/site-c > bad.out 2>&1 &
PIDS+=($!)
"$FAULT_CLIENT" die-in 2 "$EP" keys/sites/site-d > die.out 2>&1 &
PIDS+=($!)
for ((t = 0; t < 900; t++)); do kill -0 $SERVER 2>/dev/null || break; sleep 0.1; done
wait $SERVER; rc=$?
[ $rc = 0 ] || { cat server.out server.err; fail "server exited $rc"; }
expect_contains die.out "dying in round 2"
expect_contains server.err "site site-d disconnected during round 2; the round goes on without it"
expect_contains server.err "update for run"      # replay / other run ignored
expect_contains server.err "ignored (now: run"
expect_contains server.err "update rejected: expected"   # wrong size
expect_contains server.err "is not finite"
expect_contains server.err "duplicate update"
[ "$(sql f.db "select participants || '/' || selected || '/' || dropped from rounds where round = 1")" = 4/4/0 ] || fail "round 1 should have 4 updates"
[ "$(sql f.db "select participants || '/' || selected || '/' || dropped from rounds where round = 2")" = 3/4/1 ] || fail "round 2 should have 3 of 4, one dropped: $(sql f.db 'select * from rounds where round = 2')"
d=$(sql f.db "select ended_at - started_at from rounds where round = 2")
awk -v d="$d" 'BEGIN { exit !(d < 30) }' || fail "round 2 took $d s: the crash was not noticed before the deadline"
[ "$(sql f.db "select participants from rounds where round = 3")" = 3 ] || fail "round 3 should go on with the 3 live sites"
[ "$(sql f.db "select status from runs")" = done ] || fail "run not done"
pass "crash mid-round noticed in ${d}s; replays, wrong sizes, NaN, other runs and duplicates rejected"
