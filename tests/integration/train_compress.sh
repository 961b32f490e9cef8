#!/usr/bin/env bash
# An experiment's "compress" block: `fednas train` trains, saves the model into the block's
# "out" folder and runs the recipe there (the experiment's data). A bad block is refused before
# any training with file:line:col and the key path, exit 2.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/t10k-images-idx3-ubyte" ] || [ -f "$DATA/t10k-images-idx3-ubyte.gz" ] || { echo "SKIP: no $DATA"; exit 77; }
cat > exp.json <<J
{"seed": 1, "data": {"dataset": "fashion-mnist", "path": "$DATA"}, "model": {"type": "softmax"},
 "train": {"epochs": 1, "batch_size": 64, "lr": 0.05},
 "compress": {"out": "cdir", "quantize": {"calibration_samples": 100},
              "qat": {"train_samples": 500}, "eval_samples": 300, "bench": {"iters": 0}}}
J
"$FEDNAS" train exp.json --quiet > t.txt 2>&1 || { cat t.txt; fail "train with a compress block failed"; }
cat t.txt
expect_contains t.txt "compress: cdir/model.safetensors -> cdir/"
for f in model.safetensors folded.safetensors arch.json model.int8.safetensors model.qat.int8.safetensors report.json; do
  [ -s cdir/$f ] || fail "cdir/$f missing"
done
python3 - <<'PY' || fail "report wrong"
import json
rep = {s["stage"]: s for s in json.load(open("cdir/report.json"))}
assert any(n.startswith("runtime int8 QAT") for n in rep) and any(n.startswith("runtime int8 (") for n in rep), rep
PY
pass "train: the compress block compresses the trained model"

cat > bad.json <<J
{"seed": 1, "data": {"dataset": "fashion-mnist", "path": "$DATA"}, "model": {"type": "softmax"},
 "train": {"epochs": 1},
 "compress": {"out": "c2",
   "quantize": {"calibrater": "entropy"}}}
J
"$FEDNAS" train bad.json --quiet > e1.txt 2>&1; [ $? = 2 ] || { cat e1.txt; fail "a bad compress block should exit 2"; }
expect_contains e1.txt "bad.json:4:17: compress.quantize.calibrater: unknown key"
grep -q "^epoch" e1.txt && fail "training ran despite a bad compress block"
cat > bad2.json <<J
{"seed": 1, "data": {"dataset": "fashion-mnist", "path": "$DATA"}, "model": {"type": "softmax"},
 "train": {"epochs": 1},
 "compress": {"quantize": {}}}
J
"$FEDNAS" train bad2.json --quiet > e2.txt 2>&1; [ $? = 2 ] || { cat e2.txt; fail "a compress block without out should exit 2"; }
expect_contains e2.txt "bad2.json:3:14: compress: expected {\"out\": DIR"
cat > bad3.json <<J
{"seed": 1, "data": {"dataset": "fashion-mnist", "path": "$DATA"}, "model": {"type": "softmax"},
 "train": {"epochs": 1},
 "compress": {"out": "c3", "distill": {"student": {"type": "softmax"}, "alpha": 7}}}
J
"$FEDNAS" train bad3.json --quiet > e3.txt 2>&1; [ $? = 2 ] || { cat e3.txt; fail "a bad distill in the compress block should exit 2"; }
expect_contains e3.txt "compress.distill.alpha: expected a number in [0, 1]"
pass "train: bad compress blocks are refused before training, naming file:line:col and the key"
