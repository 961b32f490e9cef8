#!/usr/bin/env bash
# Hierarchical aggregation: a server, two relays (`fednas relay`) and unchanged client agents
# behind them, for three rounds with federated evaluation. Relay B also has a client that
# crashes in round 2: relay B's round completes without it. The rounds must commit with the
# total example count of the clients (and the evaluations with their total held-out count), and
# the relays' logs must show each forwarded one update. Then an experiment with
# secure aggregation through a relay: refused, with a clear message in the relay's and the
# server's logs.
source "$(dirname "$0")/lib.sh"
: "${FAULT_CLIENT:?set FAULT_CLIENT to the fault_client test program}"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-relay", "seed": 9, "rounds": 3,
  "model": { "type": "softmax" }, "data": {},
  "clients": { "count": 2 },
  "evaluate": { "clients_fraction": 1.0, "holdout": 0.1 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.1 },
  "server": { "round_timeout": 60, "register_timeout": 60, "heartbeat": 1 } }
JSON
# The server's keys: the relays are its sites. Each relay has its own keys and its clients' kits.
"$FEDNAS" keys init keys >/dev/null || fail "keys init"
for r in a b; do
  "$FEDNAS" keys site keys "relay-$r" >/dev/null || fail "keys site relay-$r"
  "$FEDNAS" keys init "rkeys-$r" >/dev/null || fail "keys init rkeys-$r"
done
for c in a1 a2; do "$FEDNAS" keys site rkeys-a "site-$c" >/dev/null || fail "kit site-$c"; done
for c in b1 b2 b3; do "$FEDNAS" keys site rkeys-b "site-$c" >/dev/null || fail "kit site-$c"; done

"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db run.db --http off > server.out 2> server.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
# --round-timeout 5: relay B's crashing client ignores evaluation requests; 5 s, not 0.8 x 60.
for r in a b; do
  "$FEDNAS" relay --kit "keys/sites/relay-$r" --keys "rkeys-$r" --connect "$EP" --bind 'tcp://127.0.0.1:*' \
    --heartbeat 1 --round-timeout 5 > "relay-$r.out" 2> "relay-$r.err" &
  PIDS+=($!); eval "RELAY_${r}_PID=$!"
done
RA=$(wait_for_line relay-a.out 'listening on tcp://127\.0\.0\.1:[0-9]+' 30 | cut -d' ' -f3)
RB=$(wait_for_line relay-b.out 'listening on tcp://127\.0\.0\.1:[0-9]+' 30 | cut -d' ' -f3)
pass "server at $EP, relay A at $RA, relay B at $RB"

# Unchanged client agents; each site's kit names its relay's key, so it connects as to a server.
k=0
for c in a1 a2 b1 b2; do
  ep=$RA; [ "${c:0:1}" = b ] && ep=$RB
  OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$ep" --kit "rkeys-${c:0:1}/sites/site-$c" --shard "$k/100" \
    > "client-$c.out" 2>&1 &
  PIDS+=($!); k=$((k + 1))
done
"$FAULT_CLIENT" die-in 2 "$RB" rkeys-b/sites/site-b3 > die.out 2>&1 &
PIDS+=($!)

wait_exit $SERVER 120; rc=$?
[ $rc = 0 ] || { cat server.out server.err relay-*.err; fail "server exited $rc"; }
for r in a b; do
  eval "pid=\$RELAY_${r}_PID"
  wait_exit "$pid" 20; rc=$?
  [ $rc = 0 ] || { cat "relay-$r.err"; fail "relay $r exited $rc"; }
done
expect_contains server.out "round   3/3"
[ "$(sql run.db "select status from runs")" = done ] || fail "run not marked done"
[ "$(sql run.db "select group_concat(name) from (select name from clients order by name)")" = "relay-a,relay-b" ] \
  || fail "the server's sites should be the two relays"
[ "$(sql run.db "select count(*) from rounds where participants = 2 and dropped = 0")" = 3 ] \
  || fail "every round should have the 2 relays' updates: $(sql run.db 'select round, participants, dropped from rounds')"
# The clients' own counts: each holds out floor(0.1 n) of its n samples for evaluation and
# trains on the rest, so these are the examples behind every round and every evaluation.
n=$(sum_training_samples client-a1.out client-a2.out client-b1.out client-b2.out)
[ "$n" -gt 0 ] || fail "the clients did not log their sample counts"
held() { grep -ohE 'training on [0-9]+ samples' "$@" | awk '{ s += int($3 * 0.1) } END { print s + 0 }'; }
heldout=$(held client-a1.out client-a2.out client-b1.out client-b2.out)
total=$((n - heldout))
# Round 1 also carries the crashing client's update (it claims 100 samples); rounds 2 and 3 only
# the four real clients', whose total the server must see as the round's example count.
r1=$(sql run.db "select samples from rounds where round = 1")
r2=$(sql run.db "select samples from rounds where round = 2")
r3=$(sql run.db "select samples from rounds where round = 3")
[ "$r1" = $((total + 100)) ] || fail "round 1 committed $r1 samples, expected $((total + 100))"
[ "$r2" = "$total" ] && [ "$r3" = "$total" ] || fail "rounds 2 and 3 committed $r2 and $r3 samples, expected $total"
na=$(( $(sum_training_samples client-a1.out client-a2.out) - $(held client-a1.out client-a2.out) ))
expect_contains relay-a.err "round 1: forwarded the mean of 2 of 2 client updates ($na samples, 0 dropped)"
expect_contains relay-a.err "round 3: forwarded the mean of 2 of 2 client updates ($na samples, 0 dropped)"
[ "$(sql run.db "select count(*) from round_metrics where name = 'fed_eval_samples' and value = $heldout")" = 3 ] \
  || fail "each round's federated evaluation should cover the clients' $heldout held-out samples: $(sql run.db "select round, value from round_metrics where name = 'fed_eval_samples'")"
pass "3 rounds through 2 relays, $total examples a round from 4 clients, $heldout evaluated"

expect_contains die.out "dying in round 2"
expect_contains relay-b.err "client site-b3 disconnected during round 2; the round goes on without it"
expect_contains relay-b.err "round 2: forwarded the mean of 2 of 3 client updates"
expect_contains relay-b.err "round 1: forwarded the mean of 3 of 3 client updates"
d=$(sql run.db "select ended_at - started_at from rounds where round = 2")
awk -v d="$d" 'BEGIN { exit !(d < 30) }' || fail "round 2 took $d s: the relay did not notice its client's crash"
acc=$(sql run.db "select test_accuracy from rounds where round = 3")
awk -v a="$acc" 'BEGIN { exit !(a > 0.5) }' || fail "round-3 accuracy $acc is not above 0.5"
pass "a client killed behind relay B: its relay's round 2 went on without it (${d}s); accuracy $acc"

# Secure aggregation cannot run through a relay: the relay refuses it and says why.
cat > sa.json <<'JSON'
{ "name": "it-relay-secagg", "seed": 9, "rounds": 2,
  "model": { "type": "softmax" }, "data": {},
  "clients": { "count": 2 },
  "secure_aggregation": { "mode": "secagg", "clip": 10 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.1 },
  "server": { "round_timeout": 30, "register_timeout": 30, "heartbeat": 1, "phase_timeout": 5 } }
JSON
"$FEDNAS" keys site keys site-direct >/dev/null || fail "kit site-direct"
"$FEDNAS" server sa.json --keys keys --bind 'tcp://127.0.0.1:*' --db sa.db --http off > sa-server.out 2> sa-server.err &
PIDS+=($!); SA_SERVER=$!
EP2=$(wait_for_line sa-server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
"$FEDNAS" relay --kit keys/sites/relay-a --keys rkeys-a --connect "$EP2" --bind 'tcp://127.0.0.1:*' --clients 1 \
  > sa-relay.out 2> sa-relay.err &
PIDS+=($!); SA_RELAY=$!
RA2=$(wait_for_line sa-relay.out 'listening on tcp://127\.0\.0\.1:[0-9]+' 30 | cut -d' ' -f3)
OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$RA2" --kit rkeys-a/sites/site-a1 --shard 0/100 > sa-a1.out 2>&1 &
PIDS+=($!)
OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$EP2" --kit keys/sites/site-direct --shard 1/100 > sa-direct.out 2>&1 &
PIDS+=($!)
wait_exit $SA_RELAY 60; rc=$?
[ $rc = 1 ] || { cat sa-relay.err; fail "the relay should refuse secure aggregation and exit 1, got $rc"; }
expect_contains sa-relay.err "refusing round 1: the experiment uses secure aggregation, which a relay cannot honour"
wait_for_line sa-server.err "site relay-a refused round 1: the experiment uses secure aggregation" 20 >/dev/null
expect_contains sa-a1.out "the server ended the run: the experiment uses secure aggregation"
[ "$(sql sa.db "select count(*) from rounds")" = 0 ] || fail "a round was committed through a refusing relay"
kill $SA_SERVER 2>/dev/null
pass "secure aggregation through a relay refused: relay and server say why, nothing committed"
