#!/usr/bin/env bash
# A server and three client agents, each its own process, for two rounds over CURVE; a fourth
# agent whose key is not on the allow-list is refused. Then the run store is checked.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-federation", "seed": 3, "rounds": 2,
  "data": { "partition": { "scheme": "dirichlet", "alpha": 1.0 } },
  "model": { "type": "mlp", "hidden": [32] },
  "clients": { "count": 3 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.05 },
  "server": { "round_timeout": 120, "register_timeout": 60 } }
JSON
"$FEDNAS" keys init keys >/dev/null || fail "keys init"
for s in a b; do "$FEDNAS" keys site keys "site-$s" >/dev/null || fail "keys site $s"; done
"$FEDNAS" keys init rogue >/dev/null && "$FEDNAS" keys site rogue intruder >/dev/null || fail "rogue keys"
cp keys/server.pub rogue/sites/intruder/server.pub   # knows the server, but is not allowed
[ "$(stat -c %a keys/server.key)" = 600 ] || fail "server.key is not 0600"

"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db run.db --http 0 > server.out 2> server.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
URL=$(wait_for_line server.out 'https://127\.0\.0\.1:[0-9]+' 30)
pass "server listening on $EP, dashboard $URL"

FEDNAS_LOG=info "$FEDNAS" client --connect "$EP" --kit rogue/sites/intruder --connect-timeout 20 \
  --data /usr/share/datasets/fashion-mnist > rogue.out 2>&1
rc=$?
[ $rc = 3 ] || { cat rogue.out; fail "a client with a key off the allow-list exited $rc, expected 3"; }
expect_contains rogue.out "not on the server's allow-list"
pass "client with an unknown key refused (exit 3)"
"$FEDNAS" keys site keys site-c --connect "$EP" >/dev/null || fail "keys site --connect"
[ "$(stat -c %a keys/sites/site-c/site.key)" = 600 ] || fail "site.key is not 0600"
expect_contains keys/sites/site-c/client.json "$EP"

for i in 0 1 2; do
  s=$(echo a b c | cut -d' ' -f$((i + 1)))
  connect=(--connect "$EP"); [ $s = c ] && connect=()   # site-c's kit names the server itself
  OPENBLAS_NUM_THREADS=1 "$FEDNAS" client "${connect[@]}" --kit "keys/sites/site-$s" --shard "$i/3" \
    --partition dirichlet --alpha 1.0 --seed 3 > "client-$s.out" 2>&1 &
  PIDS+=($!)
done
for ((t = 0; t < 1200; t++)); do kill -0 $SERVER 2>/dev/null || break; sleep 0.1; done
wait $SERVER; rc=$?
[ $rc = 0 ] || { cat server.out server.err; fail "server exited $rc"; }
expect_contains server.err "refused a connection"
expect_contains server.out "round   2/2"

[ "$(sql run.db "select status from runs")" = done ] || fail "run not marked done"
[ "$(sql run.db "select count(*) from rounds where participants = 3 and dropped = 0")" = 2 ] || fail "expected 2 rounds with 3 participants"
[ "$(sql run.db "select count(*) from clients where rounds_contributed = 2")" = 3 ] || fail "expected 3 clients with 2 rounds each"
[ "$(sql run.db "select group_concat(name) from (select name from clients order by name)")" = "site-a,site-b,site-c" ] || fail "client names"
[ "$(sql run.db "select count(*) from clients where name = 'intruder'")" = 0 ] || fail "the intruder was registered"
acc=$(sql run.db "select test_accuracy from rounds where round = 2")
awk -v a="$acc" 'BEGIN { exit !(a > 0.6) }' || fail "round-2 accuracy $acc is not above 0.6"
samples=$(sql run.db "select sum(samples) from clients")
[ "$samples" = 60000 ] || fail "the three shards should cover the 60000 training samples, got $samples"
"$FEDNAS" runs --db run.db > runs.out || fail "fednas runs"
expect_contains runs.out "it-federation"
for s in a b c; do wait_for_line "client-$s.out" "ended the run|^" 1 >/dev/null; done
pass "2 rounds with 3 clients recorded (accuracy $acc)"
