#!/usr/bin/env bash
# The compress recipe's "qat" step end to end: a small CNN (random weights, written here as
# `fednas train --save` writes models) is fine-tuned with fake quantization and exported with its
# tracked ranges: the report has a QAT int8 stage beside PTQ, the file holds int8 weights and the
# ranges' scales; a model with batch norm needs folding first; bad "qat" blocks name
# file:line:col and the key.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/t10k-images-idx3-ubyte" ] || [ -f "$DATA/t10k-images-idx3-ubyte.gz" ] || { echo "SKIP: no $DATA"; exit 77; }
python3 - <<'PY'
import json, random, struct
random.seed(2)
def write(name, arch, v):
    data = struct.pack("<%df" % len(v), *v)
    hdr = {"__metadata__": {"fednas.arch": json.dumps(arch), "fednas.input": "[1,28,28]"},
           "params": {"dtype": "F32", "shape": [len(v)], "data_offsets": [0, len(data)]}}
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    open(name, "wb").write(struct.pack("<Q", len(h)) + h + data)
arch = {"type": "layers", "layers": [
    {"type": "conv2d", "out": 4, "kernel": 3, "padding": "same"}, {"type": "relu"},
    {"type": "maxpool", "kernel": 2}, {"type": "flatten"}, {"type": "linear"}]}
v = [random.gauss(0, 0.5) for _ in range(36)] + [0.0] * 4
v += [random.gauss(0, 0.05) for _ in range(10 * 4 * 14 * 14)] + [0.0] * 10
write("cnn.safetensors", arch, v)
bn = {"type": "layers", "layers": [
    {"type": "conv2d", "out": 4, "kernel": 3, "padding": "same", "bias": False}, {"type": "batchnorm"},
    {"type": "relu"}, {"type": "maxpool", "kernel": 2}, {"type": "flatten"}, {"type": "linear"}]}
v = [random.gauss(0, 0.5) for _ in range(36)] + [1.0] * 4 + [0.0] * 4
v += [random.gauss(0, 0.05) for _ in range(10 * 4 * 14 * 14)] + [0.0] * 10 + [0.1] * 4 + [0.2] * 4
write("bn.safetensors", bn, v)
PY
cat > r.json <<R
{ "data": {"dataset": "fashion-mnist", "path": "$DATA"},
  "quantize": {"calibration_samples": 200},
  "qat": {"train": {"epochs": 1, "batch_size": 32, "lr": 0.01}, "train_samples": 300, "observer_momentum": 0.1},
  "eval_samples": 300, "bench": {"batch": 16, "iters": 1} }
R
"$FEDNAS" compress cnn.safetensors --recipe r.json --out out > c.txt 2>&1 || { cat c.txt; fail "compress with qat failed"; }
cat c.txt
expect_contains c.txt "qat: fine-tuned 1 epochs on 300 samples with fake quantization"
expect_contains c.txt "2 input ranges tracked"
python3 - <<'PY' || fail "qat outputs wrong"
import json, struct
rep = {s["stage"]: s for s in json.load(open("out/report.json"))}
q = [s for n, s in rep.items() if n.startswith("runtime int8 QAT")]
p = [s for n, s in rep.items() if n.startswith("runtime int8 (")]
assert len(q) == 1 and len(p) == 1, rep
assert 0 <= q[0]["accuracy"] <= 1, q
raw = open("out/model.qat.int8.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
assert h["layers.0.weight"]["dtype"] == "I8" and h["layers.0.weight"]["shape"] == [4, 9], h
assert h["layers.0.input_zero_point"]["dtype"] == "I32" and h["__metadata__"]["fednas.quant"] == "int8", h
# pixels are non-negative: the first layer's input grid starts at zero point 0
o = h["layers.0.input_zero_point"]["data_offsets"]
assert struct.unpack("<i", raw[8 + n + o[0]:8 + n + o[1]])[0] == 0
PY
pass "compress: QAT fine-tunes and exports an int8 model beside PTQ"

cat > rbn.json <<R
{ "data": {"dataset": "fashion-mnist", "path": "$DATA"}, "fold": false,
  "qat": {"train_samples": 50}, "eval_samples": 50, "bench": {"iters": 0} }
R
"$FEDNAS" compress bn.safetensors --recipe rbn.json --out obn > e1.txt 2>&1 && fail "qat on an unfolded batch-norm model should fail"
expect_contains e1.txt "qat: the model still has batch norm; fold it first (\"fold\": true)"
sed 's/"fold": false/"fold": true/' rbn.json > rbn2.json
"$FEDNAS" compress bn.safetensors --recipe rbn2.json --out obn2 > e2.txt 2>&1 || { cat e2.txt; fail "qat after folding failed"; }
pass "compress: QAT needs folded batch norm, and works after folding"

printf '{ "data": {"dataset": "fashion-mnist"},\n  "qat": {"train_samples": 0} }' > bad1.json
"$FEDNAS" compress cnn.safetensors --recipe bad1.json --out o1 > e3.txt 2>&1; [ $? = 2 ] || { cat e3.txt; fail "bad qat should exit 2"; }
expect_contains e3.txt "bad1.json:2:28: qat.train_samples: expected an integer >= 1"
printf '{ "data": {"dataset": "fashion-mnist"},\n  "qat": {"train": {"lr": -1}} }' > bad2.json
"$FEDNAS" compress cnn.safetensors --recipe bad2.json --out o2 > e4.txt 2>&1; [ $? = 2 ] || { cat e4.txt; fail "bad qat lr should exit 2"; }
expect_contains e4.txt "bad2.json:2:"
expect_contains e4.txt "qat.train.lr"
pass "compress: bad qat blocks name file:line:col and the key"
