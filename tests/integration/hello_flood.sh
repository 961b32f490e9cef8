#!/usr/bin/env bash
# Issue 12: a site that floods "hello" and never reads must not stall the round thread. Before
# the fix every hello got a welcome (and, mid-round, the whole model) on a ROUTER whose sends
# block, so once the flooder's pipe was full the server (and a relay: the same site layer) hung
# in zmq_send: no deadline fired and nobody else could register. Now sends never block, a peer
# whose queue is full is dropped, and repeated hellos on a connected route are ignored: the
# honest sites finish every round, each within its deadline.
source "$(dirname "$0")/lib.sh"
: "${HOSTILE_CLIENT:?set HOSTILE_CLIENT to the hostile_client test program}"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-flood", "seed": 3, "rounds": 2,
  "model": { "type": "softmax" }, "data": {},
  "clients": { "count": 3, "min_fit": 2 },
  "train": { "epochs": 1, "batch_size": 64, "lr": 0.1 },
  "server": { "round_timeout": 8, "register_timeout": 30, "heartbeat": 5 } }
JSON
"$FEDNAS" keys init keys >/dev/null || fail "keys init"
for s in a b c; do "$FEDNAS" keys site keys "site-$s" >/dev/null || fail "keys site site-$s"; done
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db f.db --http off > server.out 2> server.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
"$HOSTILE_CLIENT" flood "$EP" keys/sites/site-c > flood.out 2>&1 &
PIDS+=($!)
sleep 1 # the flood is under way before the honest sites say hello
for i in 0 1; do
  s=$(echo a b | cut -d' ' -f$((i + 1)))
  OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$EP" --kit "keys/sites/site-$s" --shard "$i/20" \
    > "client-$s.out" 2>&1 &
  PIDS+=($!)
done
# Two rounds of at most 8 s each, plus registration and training: a stalled server never ends.
wait_exit $SERVER 90; rc=$?
[ $rc = 124 ] && { kill -9 $SERVER; tail -5 server.err; tail -2 flood.out; fail "the server is stalled by the hello flood (still running after 90 s)"; }
[ $rc = 0 ] || { tail -n 20 server.err; fail "server exited $rc"; }
[ "$(sql f.db "select count(*) from rounds where participants = 2")" = 2 ] \
  || fail "both rounds should commit the 2 honest updates: $(sql f.db 'select round, participants, selected from rounds')"
d=$(sql f.db "select max(ended_at - started_at) from rounds")
awk -v d="$d" 'BEGIN { exit !(d < 20) }' || fail "a round took $d s, past its 8 s deadline"
n=$(grep -oE '[0-9]+ hellos sent' flood.out | tail -1 | cut -d' ' -f1)
[ "${n:-0}" -ge 10000 ] || fail "the flood did not get going (${n:-0} hellos)"
joins=$(grep -c 'site site-c joined\|site site-c rejoined' server.err)
[ "$joins" -le 3 ] || fail "the flooder's repeated hellos were taken as $joins joins"
pass "server: 2 rounds (longest ${d}s) under a flood of ${n} hellos"

# The same through a relay: its clients face the same site layer.
cat > exp2.json <<'JSON'
{ "name": "it-flood-relay", "seed": 4, "rounds": 2,
  "model": { "type": "softmax" }, "data": {},
  "clients": { "count": 1 },
  "train": { "epochs": 1, "batch_size": 64, "lr": 0.1 },
  "server": { "round_timeout": 30, "register_timeout": 30, "heartbeat": 5 } }
JSON
"$FEDNAS" keys init keys2 >/dev/null && "$FEDNAS" keys site keys2 relay-a >/dev/null && "$FEDNAS" keys init rkeys >/dev/null \
  || fail "relay keys"
for c in r1 r2; do "$FEDNAS" keys site rkeys "site-$c" >/dev/null || fail "kit site-$c"; done
"$FEDNAS" server exp2.json --keys keys2 --bind 'tcp://127.0.0.1:*' --db r.db --http off > server2.out 2> server2.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server2.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
"$FEDNAS" relay --kit keys2/sites/relay-a --keys rkeys --connect "$EP" --bind 'tcp://127.0.0.1:*' --clients 2 \
  --heartbeat 5 --round-timeout 8 > relay.out 2> relay.err &
PIDS+=($!); RELAY=$!
RA=$(wait_for_line relay.out 'listening on tcp://127\.0\.0\.1:[0-9]+' 30 | cut -d' ' -f3)
"$HOSTILE_CLIENT" flood "$RA" rkeys/sites/site-r2 > flood2.out 2>&1 &
PIDS+=($!)
sleep 1
OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$RA" --kit rkeys/sites/site-r1 --shard 0/20 > client-r1.out 2>&1 &
PIDS+=($!)
wait_exit $SERVER 90; rc=$?
[ $rc = 124 ] && { kill -9 $SERVER $RELAY; tail -5 relay.err; fail "the relay is stalled by the hello flood (the server still runs after 90 s)"; }
[ $rc = 0 ] || { tail -n 20 server2.err relay.err; fail "server exited $rc"; }
[ "$(sql r.db "select count(*) from rounds where participants = 1")" = 2 ] || fail "both rounds should commit the relay's update"
expect_contains relay.err "forwarded the mean of 1 of 2 client updates"
pass "relay: 2 rounds under a flood of $(grep -oE '[0-9]+ hellos sent' flood2.out | tail -1 | cut -d' ' -f1) hellos"
