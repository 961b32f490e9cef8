#!/usr/bin/env bash
# DP-FedAvg end to end with simulated sites: epsilon is recorded every round and equals what
# `fednas privacy` computes for the same (q, sigma, rounds, delta); the run ends cleanly before
# the round that would exceed the budget; a robust strategy cannot be combined with DP.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
cat > dp.json <<'JSON'
{ "name": "it-dp", "seed": 4, "rounds": 50,
  "model": { "type": "softmax" }, "data": {},
  "clients": { "count": 100, "per_round": 20, "simulate": { "workers": 2 } },
  "dp": { "clip": 0.5, "noise_multiplier": 1.1, "delta": 1e-5, "target_epsilon": 3 },
  "train": { "epochs": 1, "batch_size": 20, "lr": 0.1 } }
JSON
"$FEDNAS" run dp.json --db dp.db --http off > run.out 2> run.err; rc=$?
[ $rc = 0 ] || { cat run.out run.err; fail "DP run exited $rc"; }
expect_contains run.err "privacy budget reached"
rounds=$(sql dp.db "select count(*) from rounds")
[ "$rounds" -ge 2 ] && [ "$rounds" -lt 50 ] || fail "the budget should stop the run early, it ran $rounds rounds"
[ "$(sql dp.db "select status from runs")" = done ] || fail "a run stopped by its budget is done"
expect_contains run.out "ended early"
eps=$(sql dp.db "select printf('%.5f', value) from round_metrics where name = 'epsilon' and round = $rounds")
want=$("$FEDNAS" privacy --q 0.2 --sigma 1.1 --steps "$rounds" --delta 1e-5 | awk '/^epsilon:/ { printf "%.5f", $2 }')
[ "$eps" = "$want" ] || fail "stored epsilon $eps differs from fednas privacy's $want after $rounds rounds"
awk -v e="$eps" 'BEGIN { exit !(e <= 3) }' || fail "epsilon $eps exceeds the budget"
next=$("$FEDNAS" privacy --q 0.2 --sigma 1.1 --steps $((rounds + 1)) --delta 1e-5 | awk '/^epsilon:/ { print $2 }')
awk -v e="$next" 'BEGIN { exit !(e > 3) }' || fail "the run stopped although round $((rounds + 1)) fit the budget ($next)"
inc=$(sql dp.db "select count(*) from round_metrics a join round_metrics b on b.round = a.round + 1 and a.name = b.name where a.name = 'epsilon' and b.value <= a.value")
[ "$inc" = 0 ] || fail "epsilon must grow every round"
[ "$(sql dp.db "select count(distinct client_id) from clients")" = 100 ] || fail "100 simulated sites should have joined"
pass "budget stop after $rounds rounds at epsilon $eps (next round: $next)"

# A second store in the same folder: its run 1 gets its own folder and keys.
"$FEDNAS" run dp.json --db other.db --http off > other.out 2> other.err || { cat other.err; fail "a second store in the same folder failed"; }
[ -d dp-runs/1/keys ] && [ -d other-runs/1/keys ] || fail "run folders are not named after their stores"
pass "two stores side by side"

sed 's/"train"/"strategy": { "name": "median" }, "train"/' dp.json > median.json
"$FEDNAS" run median.json --db dp.db --http off > /dev/null 2> err.txt; [ $? = 2 ] || fail "median with DP should be refused with exit 2"
expect_contains err.txt "cannot be combined with differential privacy"
pass "robust strategies refused under DP"
