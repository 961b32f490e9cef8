#!/usr/bin/env bash
# Issue 12: one site sends share ciphertexts that cannot authenticate. Six sites run fault_client's
# "sa" mode (the real client code); site-c garbles every share ciphertext in round 1. The honest
# sites accuse it (sa_accuse) instead of aborting silently; the attempt aborts; the server leaves
# the dispute pair (site-c and its first accuser) out of round 1's next attempt, which commits the
# other four sites' unweighted mean; round 2 runs with all six. Before issue 12 every attempt of
# round 1 aborted and the run failed after 8.
source "$(dirname "$0")/lib.sh"
: "${FAULT_CLIENT:?set FAULT_CLIENT to the fault_client test program}"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-secagg-garble", "seed": 4, "rounds": 2,
  "model": { "type": "mlp", "hidden": [8] }, "data": {},
  "clients": { "count": 6, "min_fit": 3 },
  "secure_aggregation": { "mode": "secagg", "threshold": 4, "clip": 1.0, "bits": 32 },
  "train": { "epochs": 1, "batch_size": 64, "lr": 0.05 },
  "server": { "round_timeout": 60, "register_timeout": 60, "heartbeat": 1, "phase_timeout": 20 } }
JSON
"$FEDNAS" keys init keys >/dev/null
SITES=(a b c d e f)
for s in "${SITES[@]}"; do "$FEDNAS" keys site keys "site-$s" >/dev/null; done
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db s.db --http off > server.out 2> server.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
mkdir dump
for k in 1 2 3 4 5 6; do
  s=${SITES[$((k - 1))]}
  act="none 0"; [ "$s" = c ] && act="garble-shares 1"
  dump=; [ "$s" = f ] && dump=dump
  FAULT_DUMP=$dump "$FAULT_CLIENT" sa "0.000${k}" 100 $act "$EP" "keys/sites/site-$s" > "site-$s.out" 2>&1 &
  PIDS+=($!)
done
wait_exit $SERVER 120; rc=$?
[ $rc = 0 ] || { cat server.out server.err; fail "server exited $rc (the garbling site must not fail the run)"; }
expect_contains site-c.out "garbled its share ciphertexts in round 1"
expect_contains site-a.out "sending sa_accuse in round 1"
metric() { sql s.db "select cast(value as int) from round_metrics where round = $1 and name = '$2'"; }
[ "$(metric 1 secagg_attempts)" = 2 ] || fail "round 1 should have needed 2 attempts, got $(metric 1 secagg_attempts)"
[ "$(metric 1 secagg_excluded)" = 2 ] || fail "round 1 should have excluded 2 sites, got $(metric 1 secagg_excluded)"
cid=$(sql s.db "select client_id from clients where name = 'site-c'")
accuser=$(metric 1 "secagg_accused_$cid")
[ -n "$accuser" ] && [ "$accuser" != "$cid" ] || fail "site-c (id $cid) should be recorded as accused, got '$accuser'"
[ "$(metric 1 secagg_summed)" = 4 ] || fail "round 1 should sum the 4 sites left, got $(metric 1 secagg_summed)"
[ "$(metric 2 secagg_summed)" = 6 ] || fail "round 2 should sum all 6 sites, got $(metric 2 secagg_summed)"
expect_contains server.err "did not authenticate"
# Round 1: the four sites other than site-c (3) and its accuser: mean of the other values.
acc_name=$(sql s.db "select name from clients where client_id = $accuser")
want=$(awk -v a="${acc_name#site-}" 'BEGIN { split("a b c d e f", n, " "); s = 0;
  for (k = 1; k <= 6; k++) if (n[k] != "c" && n[k] != a) s += 0.0001 * k; printf "%.6f", s / 4 }')
"$FAULT_CLIENT" check dump/r1.f32 dump/r2.f32 "$want" 4 4 1.0 32 > check1.out 2>&1 || { cat check1.out; fail "round 1 model is not the mean of the 4 sites left"; }
[ "$(sql s.db "select status from runs")" = done ] || fail "run not done"
pass "a garbling site was accused, left out with $acc_name, and round 1 committed 4 sites ($(cat check1.out))"

# The new keys are checked like the others.
sed 's/"bits": 32 }/"bits": 32, "dropout": 0.5 }/' exp.json > bad1.json
"$FEDNAS" run bad1.json --db x.db --http off > /dev/null 2> err1.txt; [ $? = 2 ] || fail "dropout 0.5 should be refused"
expect_contains err1.txt "secure_aggregation.dropout"
sed 's/"bits": 32 }/"bits": 32, "corruption": -0.1 }/' exp.json > bad2.json
"$FEDNAS" run bad2.json --db x.db --http off > /dev/null 2> err2.txt; [ $? = 2 ] || fail "corruption -0.1 should be refused"
expect_contains err2.txt "secure_aggregation.corruption"
pass "secure_aggregation.dropout and .corruption are checked"
