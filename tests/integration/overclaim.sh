#!/usr/bin/env bash
# Issue 12: FedAvg weighs an update by the sample count its site claims. A site that registered
# with 100 samples answers every round with an all-zero update claiming FN_MAX_SAMPLES (1e9):
# unbounded, its weight freezes the model near its initial accuracy (about 10%). Bounded by its
# hello's count, it is one small site among two honest ones and the model learns.
source "$(dirname "$0")/lib.sh"
: "${HOSTILE_CLIENT:?set HOSTILE_CLIENT to the hostile_client test program}"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-overclaim", "seed": 6, "rounds": 2,
  "model": { "type": "softmax" }, "data": {},
  "clients": { "count": 3 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.1 },
  "server": { "round_timeout": 60, "register_timeout": 30, "heartbeat": 1 } }
JSON
"$FEDNAS" keys init keys >/dev/null || fail "keys init"
for s in a b c; do "$FEDNAS" keys site keys "site-$s" >/dev/null || fail "keys site site-$s"; done
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db o.db --http off > server.out 2> server.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
"$HOSTILE_CLIENT" overclaim "$EP" keys/sites/site-c > hostile.out 2>&1 &
PIDS+=($!)
for i in 0 1; do
  s=$(echo a b | cut -d' ' -f$((i + 1)))
  OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$EP" --kit "keys/sites/site-$s" --shard "$i/20" \
    > "client-$s.out" 2>&1 &
  PIDS+=($!)
done
wait_exit $SERVER 120; rc=$?
[ $rc = 0 ] || { kill -9 $SERVER 2>/dev/null; tail -n 20 server.err; fail "server exited $rc"; }
expect_contains hostile.out "round 2 answered claiming 1000000000 samples"
[ "$(sql o.db "select participants from rounds where round = 2")" = 3 ] || fail "round 2 should count all 3 updates"
acc=$(sql o.db "select test_accuracy from rounds where round = 2")
awk -v a="$acc" 'BEGIN { exit !(a > 0.5) }' || fail "test accuracy $acc after 2 rounds: the overclaiming site's weight froze the model"
expect_contains server.err "site site-c: update claims 1000000000 samples, more than the 100 it registered with"
pass "an update claiming 1e9 samples weighed as the 100 registered; accuracy $acc after 2 rounds"
