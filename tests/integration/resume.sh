#!/usr/bin/env bash
# A server killed with SIGKILL after round 2 and resumed with --resume loses no committed round,
# its clients rejoin by themselves, and the final model is bit-for-bit the one an uninterrupted
# run with the same seed and keys reaches. FedAdam, so the optimizer state must survive too.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-resume", "seed": 11, "rounds": 8,
  "model": { "type": "mlp", "hidden": [32] }, "data": {},
  "clients": { "count": 3 },
  "strategy": { "name": "fedadam", "server_lr": 0.01 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.05 },
  "server": { "round_timeout": 120, "register_timeout": 60, "heartbeat": 1 } }
JSON
"$FEDNAS" keys init keys >/dev/null
for s in a b c; do "$FEDNAS" keys site keys "site-$s" >/dev/null; done

start_clients() { # ENDPOINT TAG
  for i in 0 1 2; do
    s=$(echo a b c | cut -d' ' -f$((i + 1)))
    OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$1" --kit "keys/sites/site-$s" --shard "$i/3" --seed 11 > "client-$2-$s.out" 2>&1 &
    PIDS+=($!)
  done
}
wait_exit() { for ((t = 0; t < 1200; t++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done; wait "$1"; }

# The reference: uninterrupted.
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db ref.db --http off > ref.out 2> ref.err &
PIDS+=($!); REF=$!
start_clients "$(wait_for_line ref.out 'tcp://127\.0\.0\.1:[0-9]+' 30)" ref
wait_exit $REF || fail "reference server failed: $(cat ref.err)"
[ "$(sql ref.db "select count(*) from rounds")" = 8 ] || fail "reference run incomplete"

# The same, killed after round 2 is committed.
OPENBLAS_NUM_THREADS=1 "$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db k.db --http off > k1.out 2> k1.err &
PIDS+=($!); S1=$!
EP=$(wait_for_line k1.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
start_clients "$EP" k
for ((t = 0; t < 3000; t++)); do
  [ "$(sql k.db "select count(*) from rounds" 2>/dev/null)" -ge 2 ] 2>/dev/null && break; sleep 0.01
done
kill -9 $S1; wait $S1 2>/dev/null
done_rounds=$(sql k.db "select count(*) from rounds")
[ "$done_rounds" -ge 2 ] || fail "the server was killed before round 2 was committed"
[ "$done_rounds" -lt 8 ] || fail "the run finished before it could be killed (machine too fast for this test?)"
[ "$(sql k.db "select status from runs")" = running ] || fail "a killed run should still read running"
ck=$(sql k.db "select round from checkpoints")
[ "$ck" = "$done_rounds" ] || fail "checkpoint round $ck differs from committed rounds $done_rounds"

"$FEDNAS" server --resume 1 --keys keys --bind "$EP" --db k.db --http off > k2.out 2> k2.err &
PIDS+=($!); S2=$!
wait_exit $S2 || fail "resumed server failed: $(cat k2.out k2.err)"
expect_contains k2.out "resuming run 1"
expect_contains k2.err "resuming run 1 after round $done_rounds"
for s in a b c; do expect_contains "client-k-$s.out" "rejoining"; done
[ "$(sql k.db "select group_concat(round) from (select round from rounds order by round)")" = "1,2,3,4,5,6,7,8" ] || fail "rounds after resume: $(sql k.db 'select group_concat(round) from rounds')"
[ "$(sql k.db "select status from runs")" = done ] || fail "resumed run not done"
a=$(sql ref.db "select hex(params) from checkpoints" | md5sum)
b=$(sql k.db "select hex(params) from checkpoints" | md5sum)
[ "$a" = "$b" ] || fail "the resumed run's final model differs from the uninterrupted run's"
a=$(sql ref.db "select hex(state) from checkpoints" | md5sum)
b=$(sql k.db "select hex(state) from checkpoints" | md5sum)
[ "$a" = "$b" ] || fail "the resumed run's FedAdam state differs"
acc=$(sql k.db "select test_accuracy from rounds where round = 8")
pass "killed after round $done_rounds, resumed; final model identical to the uninterrupted run (accuracy $acc)"
