#!/usr/bin/env bash
# A federated search (an experiment with "nas" and "clients" blocks) on simulated sites: every
# round's candidates are paths of one supernet, each trained by a share of the sites and scored
# on all sites' held-out samples; the NAS tables hold every candidate with its score and round,
# the best architecture is the search's result, and the rounds after the budget train it. Then
# the combinations a federated search refuses, each with a message naming the key.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fed_nas_lib.sh"
cd "$WORK"
fed_nas_blobs 2400 600
cat > exp.json <<'JSON'
{ "name": "it-fed-nas", "seed": 5, "rounds": 5,
  "data": { "dataset": "csv", "path": "train.csv", "test": "test.csv", "features": 16, "classes": 3 },
  "clients": { "count": 8, "simulate": { "workers": 2 } },
  "train": { "epochs": 2, "batch_size": 16, "lr": 0.05, "optimizer": { "type": "sgd", "momentum": 0.9 } },
  "evaluate": { "holdout": 0.2, "clients_fraction": 1 },
  "server": { "round_timeout": 120, "register_timeout": 60, "heartbeat": 1 },
  "nas": {
    "space": { "type": "macro", "layers": 3, "ops": ["conv3x3", "sepconv3x3", "maxpool3x3", "identity"],
               "widths": [4, 8], "batchnorm": "search", "reductions": 1 },
    "strategy": { "name": "evolution", "population": 4, "sample": 2 },
    "budget": 12 } }
JSON
OPENBLAS_NUM_THREADS=1 "$FEDNAS" run exp.json --db r.db --http off > run.out 2> run.err || fail "the search failed: $(tail -20 run.err)"
[ "$(sql r.db "select group_concat(round) from (select round from rounds order by round)")" = "1,2,3,4,5" ] ||
  fail "rounds: $(sql r.db 'select group_concat(round) from rounds')"
# 12 candidates over the first 3 rounds, 4 a round, each trained by 2 of the 8 sites
[ "$(sql r.db "select count(*) from nas_candidates where status = 'done'")" = 12 ] ||
  fail "candidates: $(sql r.db 'select seq, status, reason from nas_candidates')"
for r in 1 2 3; do
  [ "$(sql r.db "select count(*) from nas_candidates where worker = 'round $r'")" = 4 ] || fail "round $r candidates"
done
[ "$(grep -c ', 2 sites): fed acc' run.err)" = 12 ] || fail "each candidate should train on 2 sites: $(grep 'fed acc' run.err)"
[ "$(sql r.db "select count(*) from nas_candidates where val_accuracy between 0 and 1 and params > 0 and tell_seq >= 0")" = 12 ] ||
  fail "candidate metrics: $(sql r.db 'select seq, val_accuracy, params, tell_seq from nas_candidates')"
# distinct architectures, children of earlier ones after the first round
[ "$(sql r.db "select count(distinct hash) from nas_candidates")" -ge 8 ] || fail "too few distinct candidates"
[ "$(sql r.db "select count(*) from nas_candidates where worker <> 'round 1' and parent >= 0")" = 8 ] ||
  fail "rounds 2-3 should propose mutants: $(sql r.db 'select seq, parent, mutation from nas_candidates')"
# the result: the best candidate (highest federated score) with its weights and test accuracy
best=$(sql r.db "select hash from nas_candidates order by val_accuracy desc, seq limit 1")
[ "$(sql r.db "select c.hash from nas_final f join nas_candidates c on c.seq = f.seq where f.rank = 1")" = "$best" ] ||
  fail "nas_final rank 1 is not the best candidate ($best)"
acc=$(sql r.db "select test_accuracy from nas_final where rank = 1")
awk -v a="$acc" 'BEGIN { exit !(a > 0.45) }' || fail "the best architecture tests at $acc (chance is 0.33)"
[ "$(sql r.db "select count(*) from round_metrics where name = 'fed_eval_accuracy'")" = 5 ] || fail "fed_eval_accuracy per round"
# rounds 4-5 train the best architecture on all 8 sites
[ "$(sql r.db "select group_concat(participants) from (select participants from rounds where round > 3 order by round)")" = "8,8" ] ||
  fail "rounds after the budget: $(sql r.db 'select round, participants from rounds')"
pass "federated search: 5 rounds, 12 candidates, best $best tests at $acc"

# the dashboard's NAS page reads the same tables through store_nas_json (`fednas nas export`)
"$FEDNAS" nas export 1 --top 1 --out exported --db r.db > export.out 2>&1 || fail "nas export: $(cat export.out)"
[ -s exported/rank1.json ] || fail "nas export wrote no rank1.json: $(ls exported)"

# The same search with secure aggregation: each site masks the whole supernet's length, zeros
# outside its path, and the server divides each value of the sum by the survivors that trained it.
# The clip (100) is far above any update here, so the result is the plain run's up to the encoding's error:
# the same candidates with the same scores (within a held-out sample or two).
python3 -c "import json; e=json.load(open('exp.json')); e['secure_aggregation']={'mode':'secagg','clip':100,'bits':32}; json.dump(e, open('sa.json','w'))"
OPENBLAS_NUM_THREADS=1 "$FEDNAS" run sa.json --db sa.db --http off > sa.out 2> sa.err || fail "the search under secure aggregation failed: $(tail -20 sa.err)"
expect_contains sa.err "federated search under secure aggregation: every site masks"
expect_contains sa.err "secure aggregation over 8 sites"
[ "$(sql sa.db "select count(*) from nas_candidates where status = 'done'")" = 12 ] || fail "secagg candidates"
sql r.db "select seq || ' ' || hash || ' ' || val_accuracy from nas_candidates order by seq" > plain.txt
sql sa.db "select seq || ' ' || hash || ' ' || val_accuracy from nas_candidates order by seq" > masked.txt
paste -d' ' plain.txt masked.txt | awk '$2 != $5 { print "candidate " $1 ": " $2 " vs " $5; bad = 1 }
  { d = $3 - $6; if (d < 0) d = -d; if (d > 0.02) { print "candidate " $1 " scores " $3 " vs " $6; bad = 1 } }
  END { exit bad }' || fail "secure aggregation changed the search (plain vs masked above)"
pass "the search under secure aggregation matches the plain one"

# NSGA-II with the communication cost (parameters) as its second objective: generations of 4
python3 -c "import json; e=json.load(open('exp.json')); e['nas']['strategy']={'name':'nsga2','mu':4,'lambda':4,'objectives':['val_acc','params']}; json.dump(e, open('ns.json','w'))"
OPENBLAS_NUM_THREADS=1 "$FEDNAS" run ns.json --db ns.db --http off > ns.out 2> ns.err || fail "the NSGA-II search failed: $(tail -20 ns.err)"
[ "$(sql ns.db "select group_concat(n) from (select count(*) as n from nas_candidates group by worker order by worker)")" = "4,4,4" ] ||
  fail "NSGA-II rounds: $(sql ns.db 'select worker, count(*) from nas_candidates group by worker')"
[ "$(sql ns.db "select count(*) from nas_runs where strategy = 'nsga2'")" = 1 ] || fail "nas_runs strategy"
pass "NSGA-II with the communication cost as an objective"

# Central DP with the accountant: clipped updates, one Gaussian noise draw on the round's sum,
# epsilon per round, and the run stops before the round that would pass target_epsilon (35 here:
# rounds 1 and 2 cost about 20 and 32 at q = 1, z = 0.3).
python3 -c "import json; e=json.load(open('exp.json')); e['dp']={'clip':5.0,'noise_multiplier':0.3,'delta':1e-5,'target_epsilon':35}; json.dump(e, open('dp.json','w'))"
OPENBLAS_NUM_THREADS=1 "$FEDNAS" run dp.json --db dp.db --http off > dp.out 2> dp.err || fail "the DP search failed: $(tail -20 dp.err)"
expect_contains dp.out "privacy budget reached"
[ "$(sql dp.db "select count(*) from rounds")" = 2 ] || fail "DP rounds: $(sql dp.db 'select round from rounds')"
[ "$(sql dp.db "select count(*) from round_metrics where name = 'epsilon' and value > 0")" = 2 ] || fail "epsilon per round"
[ "$(sql dp.db "select count(*) from nas_candidates where status = 'done'")" = 8 ] || fail "DP candidates"
pass "central DP: epsilon per round, stopped at the budget"

# refused combinations
refuse() { # FILE-SUFFIX JQ-LIKE-PYTHON MESSAGE
  python3 -c "import json,sys; e=json.load(open('exp.json')); $2; json.dump(e, open('bad-$1.json','w'))"
  "$FEDNAS" run "bad-$1.json" --db bad.db --http off > "bad-$1.out" 2>&1 && fail "bad-$1.json ran"
  expect_contains "bad-$1.out" "$3"
}
refuse noeval "del e['evaluate']" "nas: a federated search scores its candidates on the sites' held-out samples"
refuse ddp "e['dp'] = {'clip': 1.0, 'noise_multiplier': 1.0}; e['secure_aggregation'] = {'mode': 'secagg', 'clip': 1.0}" "dp: a federated search takes central differential privacy only"
refuse fedadam "e['strategy'] = {'name': 'fedadam'}" "strategy.name: a federated search averages each supernet weight"
refuse asha "e['nas']['strategy'] = {'name': 'asha'}" "nas.strategy.name: a federated search trains every candidate"
pass "refused combinations name their key"
