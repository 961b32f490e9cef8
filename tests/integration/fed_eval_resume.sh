#!/usr/bin/env bash
# Issue 12: federated evaluation runs after a round's commit (under DP a model may leave the
# server only once its cost is committed), so a server killed in between leaves a committed round
# without its fed_eval_* metrics. Resumed, the server evaluates that round's model (its
# checkpoint) again before it goes on, and records what an uninterrupted run recorded: the same
# model, sites and held-out samples give the same answer. The state a kill leaves is made
# exactly (the metrics deleted, the run "running"), so the test does not depend on hitting a
# window with a signal; the kill itself is the chaos test's.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-fed-eval-resume", "seed": 5, "rounds": 2,
  "model": { "type": "softmax" }, "data": {},
  "clients": { "count": 2 },
  "evaluate": { "every": 1, "clients_fraction": 1.0 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.1 },
  "server": { "round_timeout": 60, "register_timeout": 60, "heartbeat": 1 } }
JSON
"$FEDNAS" keys init keys > /dev/null || fail "keys init"
for s in a b; do "$FEDNAS" keys site keys "site-$s" > /dev/null || fail "keys site"; done
start_clients() { # ENDPOINT TAG
  local i s
  for i in 0 1; do
    s=$(echo a b | cut -d' ' -f$((i + 1)))
    OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$1" --kit "keys/sites/site-$s" --shard "$i/20" \
      > "client-$2-$s.out" 2>&1 &
    PIDS+=($!)
  done
}
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db r.db --http off > s1.out 2> s1.err &
PIDS+=($!); S1=$!
start_clients "$(wait_for_line s1.out 'tcp://127\.0\.0\.1:[0-9]+' 30)" first
wait_exit $S1 180 || { tail -n 20 s1.err; fail "the first server failed"; }
metrics() { sql r.db "select name || '=' || value from round_metrics where round = 2 and name like 'fed_eval_%' order by name"; }
want=$(metrics)
[ "$(echo "$want" | grep -c fed_eval_)" = 3 ] || fail "round 2 should have 3 fed_eval metrics, has: $want"

# What a kill between round 2's commit and its federated evaluation leaves behind.
sql r.db "delete from round_metrics where round = 2 and name like 'fed_eval_%'; update runs set status = 'running'"
[ -z "$(metrics)" ] || fail "the metrics were not deleted"
"$FEDNAS" server --resume 1 --keys keys --bind 'tcp://127.0.0.1:*' --db r.db --http off > s2.out 2> s2.err &
PIDS+=($!); S2=$!
start_clients "$(wait_for_line s2.out 'tcp://127\.0\.0\.1:[0-9]+' 30)" second
wait_exit $S2 180 || { tail -n 20 s2.err; fail "the resumed server failed"; }
expect_contains s2.err "round 2 was committed without its federated evaluation"
got=$(metrics)
[ "$got" = "$want" ] || fail "recovered fed_eval metrics differ: got [$got], the uninterrupted run recorded [$want]"
[ "$(sql r.db "select count(*) from rounds")" = 2 ] || fail "the resume ran more rounds"
[ "$(sql r.db "select status from runs")" = done ] || fail "the resumed run is not done"
# A resume that finds them recorded evaluates nothing again.
sql r.db "update runs set status = 'running'"
"$FEDNAS" server --resume 1 --keys keys --bind 'tcp://127.0.0.1:*' --db r.db --http off > s3.out 2> s3.err &
PIDS+=($!); S3=$!
start_clients "$(wait_for_line s3.out 'tcp://127\.0\.0\.1:[0-9]+' 30)" third
wait_exit $S3 180 || { tail -n 20 s3.err; fail "the third server failed"; }
grep -q "without its federated evaluation" s3.err && fail "a resume evaluated a round whose metrics were recorded"
pass "a round committed without its federated evaluation gets it on resume, equal to the uninterrupted run's ($want)"
