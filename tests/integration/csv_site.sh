#!/usr/bin/env bash
# Partner sites with their own tabular data: `fednas client --data site.csv`. Two sites, each
# with its own generated CSV (4 features, 3 classes), train an MLP for 2 rounds against a
# server that has no test set (federated evaluation only). Then a server with a test table and
# two broken sites, one with a column too many and one with a label out of range: each exits
# non-zero naming its file and line, and the server goes on with the good site.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
# gen FILE ROWS SEED [FEATURES] [CLASSES] [HEADER]: Gaussian blobs, one centre per class.
gen() {
  python3 - "$@" <<'PY'
import random, sys
path, rows, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
feats = int(sys.argv[4]) if len(sys.argv) > 4 else 4
classes = int(sys.argv[5]) if len(sys.argv) > 5 else 3
r = random.Random(seed)
with open(path, "w") as f:
    if len(sys.argv) > 6:
        f.write(",".join([f"x{i}" for i in range(feats)] + ["label"]) + "\n")
    for _ in range(rows):
        y = r.randrange(classes)
        x = [r.gauss(2.0 * y if i % 3 == y % 3 else -1.0, 0.7) for i in range(feats)]
        f.write(",".join(f"{v:.5f}" for v in x) + f",{y}\n")
PY
}
gen site-a.csv 300 1
gen site-b.csv 200 2 4 3 header
gen test.csv 300 3
gen site-c.csv 100 4 5 3 header              # 5 features where the experiment has 4
gen site-d.csv 100 5 4 4                     # labels 0..3 where the experiment has 3 classes
line_d=$(awk -F, '$NF == 3 { print NR; exit }' site-d.csv)

cat > exp.json <<'JSON'
{ "name": "it-csv", "seed": 4, "rounds": 2,
  "data": { "dataset": "csv", "features": 4, "classes": 3 },
  "model": { "type": "mlp", "hidden": [16] },
  "clients": { "count": 2 },
  "train": { "epochs": 2, "batch_size": 16, "lr": 0.1 },
  "server": { "round_timeout": 60, "register_timeout": 60, "heartbeat": 1 } }
JSON
"$FEDNAS" keys init keys >/dev/null || fail "keys init"
for s in a b c d; do "$FEDNAS" keys site keys "site-$s" >/dev/null || fail "keys site $s"; done
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db csv.db --http off > server.out 2> server.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
for s in a b; do
  OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$EP" --kit "keys/sites/site-$s" --data "site-$s.csv" \
    > "client-$s.out" 2>&1 &
  PIDS+=($!)
done
wait_exit $SERVER 120; rc=$?
[ $rc = 0 ] || { cat server.out server.err client-*.out; fail "server exited $rc"; }
expect_contains server.err "no test set (data.test): the model is measured by federated evaluation only"
expect_contains client-a.out "training on 300 samples of site-a.csv"
expect_contains client-b.out "training on 200 samples of site-b.csv"   # the header is not a sample
[ "$(sql csv.db "select status from runs")" = done ] || fail "run not marked done"
[ "$(sql csv.db "select count(*) from rounds where participants = 2 and test_accuracy is null")" = 2 ] \
  || fail "expected 2 rounds of 2 sites and no server-side test accuracy: $(sql csv.db 'select * from rounds')"
# Each site holds out a tenth for federated evaluation and trains on the rest: 270 + 180 rows.
[ "$(sql csv.db "select group_concat(samples) from rounds")" = "450,450" ] || fail "rounds should train on 450 rows"
[ "$(sql csv.db "select value from round_metrics where round = 2 and name = 'fed_eval_samples'")" = 50.0 ] \
  || fail "federated evaluation should cover the 30 + 20 held-out rows"
acc=$(sql csv.db "select value from round_metrics where round = 2 and name = 'fed_eval_accuracy'")
awk -v a="$acc" 'BEGIN { exit !(a > 0.6) }' || fail "federated accuracy $acc after 2 rounds is not above 0.6"
pass "2 sites trained on their own CSVs for 2 rounds; federated accuracy $acc"

# A server with a test table, a good site and two broken ones.
sed -e 's/"classes": 3 }/"classes": 3, "test": "test.csv" }/' -e 's/"count": 2 }/"count": 3, "min_fit": 1 }/' \
  exp.json > exp2.json
"$FEDNAS" server exp2.json --keys keys --bind 'tcp://127.0.0.1:*' --db csv2.db --http off > server2.out 2> server2.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server2.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
for s in a c d; do
  OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$EP" --kit "keys/sites/site-$s" --data "site-$s.csv" \
    > "bad-$s.out" 2>&1 &
  PIDS+=($!); eval "PID_$s=$!"
done
for s in c d; do
  eval "pid=\$PID_$s"
  wait_exit "$pid" 60; rc=$?
  [ $rc = 2 ] || { cat "bad-$s.out"; fail "site $s with a bad CSV exited $rc, expected 2"; }
done
expect_contains bad-c.out "site-c.csv:2: 6 columns (5 features and the label), but the experiment's model takes 4 features (data.features)"
expect_contains bad-d.out "site-d.csv:$line_d: label 3 is out of range: the experiment has 3 classes (data.classes), so labels must be integers 0..2"
wait_exit $SERVER 120; rc=$?
[ $rc = 0 ] || { cat server2.out server2.err; fail "server exited $rc with broken sites"; }
expect_contains server2.err "site site-c disconnected during round 1"
[ "$(sql csv2.db "select count(*) from rounds where participants = 1 and test_accuracy > 0.6")" = 2 ] \
  || fail "the good site's 2 rounds should commit with a test accuracy: $(sql csv2.db 'select * from rounds')"
pass "sites with a wrong column count or a label out of range exit 2 naming file and line; the run goes on"
