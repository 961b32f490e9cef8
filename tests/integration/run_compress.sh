#!/usr/bin/env bash
# Issue 16: `fednas run` takes the experiment's "compress" block. After the last round the final
# global model (the run's checkpoint) goes through the same steps as in `fednas train` (one
# implementation, cli/compress_block.c), into the run folder; the stages are stored as metrics of
# the last round. A bad block is refused before anything is recorded (file:line:col, exit 2).
source "$(dirname "$0")/lib.sh"
cd "$WORK"
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/t10k-images-idx3-ubyte" ] || [ -f "$DATA/t10k-images-idx3-ubyte.gz" ] || { echo "SKIP: no $DATA"; exit 77; }
exp() { # COMPRESS-BLOCK: a tiny federated run (a conv with batch norm, 4 sites, 1 round)
  cat <<J
{"name": "it-run-compress", "seed": 3, "rounds": 1,
 "data": {"dataset": "fashion-mnist", "path": "$DATA", "partition": {"scheme": "iid"}},
 "model": {"type": "layers", "layers": [
   {"type": "conv2d", "out": 4, "kernel": 3, "padding": "same", "bias": false}, {"type": "batchnorm"},
   {"type": "relu"}, {"type": "maxpool", "kernel": 2}, {"type": "flatten"}, {"type": "linear"}]},
 "clients": {"count": 4},
 "train": {"epochs": 1, "batch_size": 64, "lr": 0.05},
 "server": {"round_timeout": 120, "register_timeout": 60},
 "compress": $1}
J
}
exp '{"fold": true, "prune": {"sparsity": 0.5, "steps": 1, "finetune_samples": 200},
      "quantize": {"calibration_samples": 100}, "eval_samples": 10000, "bench": {"iters": 0}}' > exp.json
"$FEDNAS" run exp.json --db r.db --http off > run.out 2> run.err
rc=$?
cat run.out
[ $rc = 0 ] || { cat run.err; fail "fednas run with a compress block exited $rc"; }
expect_contains run.out "compress: the final global model (round 1)"
expect_contains run.out "compress: ./r-runs/1/compress/model.safetensors -> ./r-runs/1/compress/"
expect_contains run.out "runtime fp32 folded+fused"
for f in model.safetensors folded.safetensors arch.json model.int8.safetensors report.json; do
  [ -s r-runs/1/compress/$f ] || fail "r-runs/1/compress/$f missing"
done
[ "$(sql r.db "select status from runs where id = 1")" = done ] || fail "the run is not done"
# The model compressed is the final global model: on the whole test set the engine's accuracy in
# the report is the server's last round's (up to a float-rounding tie or two).
acc=$(sql r.db "select test_accuracy from rounds where run_id = 1 and round = 1")
python3 - "$acc" <<'PY' || fail "the report does not describe the final global model"
import json, sys
rep = {s["key"]: s for s in json.load(open("r-runs/1/compress/report.json"))}
assert {"engine", "unfolded", "folded", "pruned", "int8"} <= set(rep), rep
assert abs(rep["engine"]["accuracy"] - float(sys.argv[1])) <= 3e-4, (rep["engine"], sys.argv[1])
assert rep["folded"]["agreement"] >= 0.999, rep["folded"]
PY
stored=$(sql r.db "select count(*) from round_metrics where run_id = 1 and round = 1 and name like 'compress_%'")
[ "$stored" -ge 16 ] || fail "expected compress_* metrics of round 1 in the store, found $stored"
fold_acc=$(sql r.db "select value from round_metrics where run_id = 1 and name = 'compress_folded_accuracy'")
python3 -c "import json,sys; r={s['key']:s for s in json.load(open('r-runs/1/compress/report.json'))}; \
assert abs(r['folded']['accuracy'] - float(sys.argv[1])) < 1e-9" "$fold_acc" || fail "stored folded accuracy $fold_acc differs"
pass "run: the final global model is compressed into the run folder and its stages stored"

# A bad block: refused before the store is even opened.
exp '{"out": "c", "quantize": {"calibrater": "entropy"}}' > bad.json
"$FEDNAS" run bad.json --db bad.db --http off > e1.out 2>&1; [ $? = 2 ] || { cat e1.out; fail "a bad compress block should exit 2"; }
expect_contains e1.out "bad.json:9:40: compress.quantize.calibrater: unknown key"
[ -e bad.db ] && fail "a run was recorded despite a bad compress block"
exp '{"data": {"dataset": "mnist"}}' > bad2.json
"$FEDNAS" run bad2.json --db bad.db --http off > e2.out 2>&1; [ $? = 2 ] || { cat e2.out; fail "compress.data should exit 2"; }
expect_contains e2.out "bad2.json:9:15: compress.data: the data are the experiment's"
sed 's/"fashion-mnist", "path"/"csv", "features": 784, "classes": 10, "path"/' bad2.json |
  sed 's/"compress": .*/"compress": {"fold": true}}/' > bad3.json
"$FEDNAS" run bad3.json --db bad.db --http off > e3.out 2>&1; [ $? = 2 ] || { cat e3.out; fail "compress on csv data should exit 2"; }
expect_contains e3.out "compress: needs \"fashion-mnist\" or \"mnist\" data"
[ -e bad.db ] && fail "a run was recorded despite a bad compress block"
pass "run: bad compress blocks are refused before any round, naming file:line:col and the key"
