#!/usr/bin/env bash
# Knowledge distillation end to end. `fednas train --teacher`: on generated tabular data a
# teacher MLP is trained and saved, then a student learns from it: the teacher's line is printed,
# its logits are computed once per distinct sample (the memo serves the later epochs), and the
# student's result differs from the same student trained alone. Bad flags and a teacher of the
# wrong shape get clear errors. `fednas compress` with a "distill" step: the student (here a
# softmax regression taught by a small random CNN) becomes the compressed model, distill.json
# holds the comparison, and bad "distill" blocks name file:line:col and the key path.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
gen() {
  python3 - "$@" <<'PY'
import random, sys
path, rows, seed, feats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = random.Random(seed)
with open(path, "w") as f:
    for _ in range(rows):
        y = r.randrange(4)
        x = [r.gauss(1.2 * y if i % 4 == y else -0.5, 1.0) for i in range(feats)]
        f.write(",".join(f"{v:.6f}" for v in x) + f",{y}\n")
PY
}
gen train.csv 1000 1 8
gen test.csv 400 2 8
gen train5.csv 200 3 5
gen test5.csv 100 4 5
exp() { # exp FILE MODEL EPOCHS TRAIN [TEST]
  cat > "$1" <<J
{"seed": 3, "data": {"dataset": "csv", "train": "$4", "test": "${5:-test.csv}"}, "model": $2,
 "train": {"epochs": $3, "batch_size": 32, "lr": 0.05, "optimizer": {"type": "sgd", "momentum": 0.9}}}
J
}
exp teacher.json '{"type":"mlp","hidden":[64]}' 4 train.csv
exp student.json '{"type":"softmax"}' 3 train.csv
exp teacher5.json '{"type":"mlp","hidden":[16]}' 1 train5.csv test5.csv
"$FEDNAS" train teacher.json --quiet --save teacher.safetensors > t.txt 2>&1 || { cat t.txt; fail "teacher training failed"; }
"$FEDNAS" train teacher5.json --quiet --save teacher5.safetensors > t5.txt 2>&1 || { cat t5.txt; fail "teacher5 failed"; }

"$FEDNAS" train student.json --quiet > alone.txt 2>&1 || { cat alone.txt; fail "student alone failed"; }
"$FEDNAS" train student.json --quiet --teacher teacher.safetensors --temperature 3 --alpha 0.8 > kd.txt 2>&1 ||
  { cat kd.txt; fail "distillation failed"; }
cat kd.txt
expect_contains kd.txt "distillation: teacher teacher.safetensors, 836 parameters (23.2x the student's), test accuracy"
expect_contains kd.txt "T 3, alpha 0.8"
# 3 epochs over 1000 distinct samples: the teacher runs once per sample, the memo serves the rest
expect_contains kd.txt "the teacher ran on 1000 samples; 2000 more came from its memo of logits"
a=$(grep -o 'done: test accuracy .*, test loss [0-9.]*' alone.txt)
k=$(grep -o 'done: test accuracy .*, test loss [0-9.]*' kd.txt)
[ -n "$a" ] && [ -n "$k" ] && [ "$a" != "$k" ] || fail "the teacher changed nothing: alone '$a', distilled '$k'"
pass "train --teacher: distils, memoises the teacher's logits, changes the result"

# alpha 0 is the plain cross-entropy: the same result as training alone
"$FEDNAS" train student.json --quiet --teacher teacher.safetensors --alpha 0 > kd0.txt 2>&1 || { cat kd0.txt; fail "alpha 0 failed"; }
k0=$(grep -o 'done: test accuracy .*, test loss [0-9.]*' kd0.txt)
[ "$a" = "$k0" ] || fail "alpha 0 should match training alone: '$a' vs '$k0'"
pass "train --teacher --alpha 0 equals training alone"

"$FEDNAS" train student.json --teacher teacher.safetensors --alpha 2 > e1.txt 2>&1; [ $? = 2 ] || fail "--alpha 2 should exit 2"
expect_contains e1.txt "--alpha needs a number in [0, 1], not \"2\""
"$FEDNAS" train student.json --temperature 2 > e2.txt 2>&1; [ $? = 2 ] || fail "--temperature without --teacher should exit 2"
expect_contains e2.txt "--temperature and --alpha need --teacher"
"$FEDNAS" train student.json --teacher teacher5.safetensors > e3.txt 2>&1 && fail "a teacher of another shape should fail"
expect_contains e3.txt "the teacher teacher5.safetensors takes [5,1,1] inputs; the student's data are [8,1,1]"
"$FEDNAS" train student.json --teacher nosuch.safetensors > e4.txt 2>&1 && fail "a missing teacher should fail"
expect_contains e4.txt "nosuch.safetensors"
pass "train --teacher: bad flags and teachers get clear errors"

DATA=/usr/share/datasets/fashion-mnist
if [ -f "$DATA/t10k-images-idx3-ubyte" ] || [ -f "$DATA/t10k-images-idx3-ubyte.gz" ]; then
  python3 - <<'PY'
import json, random, struct
random.seed(1)
arch = {"type": "layers", "layers": [
    {"type": "conv2d", "out": 4, "kernel": 3, "padding": "same"}, {"type": "relu"},
    {"type": "maxpool", "kernel": 2}, {"type": "flatten"}, {"type": "linear"}]}
v = [random.gauss(0, 0.5) for _ in range(4 * 9)] + [0.0] * 4
v += [random.gauss(0, 0.05) for _ in range(10 * 4 * 14 * 14)] + [0.0] * 10
data = struct.pack("<%df" % len(v), *v)
hdr = {"__metadata__": {"fednas.arch": json.dumps(arch), "fednas.input": "[1,28,28]"},
       "params": {"dtype": "F32", "shape": [len(v)], "data_offsets": [0, len(data)]}}
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
open("cnn.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
  cat > r.json <<R
{ "data": {"dataset": "fashion-mnist", "path": "$DATA"},
  "distill": {"student": {"type": "softmax"}, "train": {"epochs": 1, "batch_size": 32, "lr": 0.01},
              "temperature": 2, "alpha": 0.5, "train_samples": 400, "seed": 5},
  "quantize": {"calibration_samples": 100}, "eval_samples": 200, "bench": {"batch": 16, "iters": 0} }
R
  "$FEDNAS" compress cnn.safetensors --recipe r.json --out out > c.txt 2>&1 || { cat c.txt; fail "compress with distill failed"; }
  cat c.txt
  expect_contains c.txt "distill: student alone: 7850 parameters, 1 epochs on 400 samples"
  expect_contains c.txt "distill: student distilled: 7850 parameters"
  python3 - <<'PY' || fail "distill outputs wrong"
import json
d = json.load(open("out/distill.json"))
assert d["teacher_params"] == 7890 and d["student_params"] == 7850, d
assert d["temperature"] == 2 and d["alpha"] == 0.5 and d["train_samples"] == 400 and d["seed"] == 5, d
for k in ("teacher_accuracy", "student_alone_accuracy", "student_distilled_accuracy"):
    assert 0 <= d[k] <= 1, d
assert d["student_alone_accuracy"] != d["student_distilled_accuracy"], d
arch = json.load(open("out/arch.json"))
assert arch["type"] == "layers" and [l["type"] for l in arch["layers"]] == ["flatten", "linear"], arch
PY
  for f in folded.safetensors model.int8.safetensors report.json; do [ -s out/$f ] || fail "out/$f missing"; done
  pass "compress: the distilled student is the model the later steps compress"

  printf '{ "data": {"dataset": "fashion-mnist"},\n  "distill": {"student": {"type": "softmax"}, "temprature": 4} }' > bad1.json
  "$FEDNAS" compress cnn.safetensors --recipe bad1.json --out o1 > e5.txt 2>&1; [ $? = 2 ] || { cat e5.txt; fail "bad distill key should exit 2"; }
  expect_contains e5.txt "bad1.json:2:47: distill.temprature: unknown key"
  printf '{ "data": {"dataset": "fashion-mnist"},\n  "distill": {"student": {"type": "softmax"},\n    "train": {"optimizer": {"type": "sgd", "momentum": 2}}} }' > bad2.json
  "$FEDNAS" compress cnn.safetensors --recipe bad2.json --out o2 > e6.txt 2>&1; [ $? = 2 ] || { cat e6.txt; fail "bad distill train should exit 2"; }
  expect_contains e6.txt "bad2.json:3:"
  expect_contains e6.txt "distill.train.optimizer.momentum"
  printf '{ "data": {"dataset": "fashion-mnist"},\n  "distill": {"student": {"type": "softmax"}, "alpha": 1.5} }' > bad3.json
  "$FEDNAS" compress cnn.safetensors --recipe bad3.json --out o3 > e7.txt 2>&1; [ $? = 2 ] || { cat e7.txt; fail "bad alpha should exit 2"; }
  expect_contains e7.txt "bad3.json:2:56: distill.alpha: expected a number in [0, 1]"
  pass "compress: bad distill blocks name file:line:col and the key"
else
  echo "no $DATA: the compress part is skipped"
fi
