#!/usr/bin/env bash
# `fednas compress` end to end on a small batch-norm CNN with random weights (written here as a
# safetensors file, as `fednas train --save` writes them): folding keeps every prediction, the
# outputs exist and load, a bad recipe names file:line:col and the key.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/t10k-images-idx3-ubyte" ] || [ -f "$DATA/t10k-images-idx3-ubyte.gz" ] || { echo "SKIP: no $DATA"; exit 77; }

python3 - <<'PY'
import json, random, struct
random.seed(1)
arch = {"type": "layers", "layers": [
    {"type": "conv2d", "out": 4, "kernel": 3, "padding": "same", "bias": False},
    {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool", "kernel": 2},
    {"type": "flatten"}, {"type": "linear"}]}
conv = [random.gauss(0, 0.5) for _ in range(4 * 9)]
bn = [random.uniform(0.5, 1.5) for _ in range(4)] + [random.gauss(0, 0.3) for _ in range(4)]
lin = [random.gauss(0, 0.05) for _ in range(10 * 4 * 14 * 14)] + [0.0] * 10
buf = [random.gauss(0.2, 0.1) for _ in range(4)] + [random.uniform(0.05, 0.3) for _ in range(4)]
v = conv + bn + lin + buf
data = struct.pack("<%df" % len(v), *v)
hdr = {"__metadata__": {"fednas.arch": json.dumps(arch), "fednas.input": "[1,28,28]"},
       "params": {"dtype": "F32", "shape": [len(v)], "data_offsets": [0, len(data)]}}
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
open("m.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
[ -f m.safetensors ] || fail "could not write the model"

cat > r.json <<R
{ "data": {"dataset": "fashion-mnist", "path": "$DATA"},
  "quantize": {"calibrator": "percentile", "percentile": 99.9, "calibration_samples": 200},
  "eval_samples": 500, "bench": {"batch": 16, "iters": 1} }
R
"$FEDNAS" compress m.safetensors --recipe r.json --out out > out.txt 2> err.txt || { cat err.txt; fail "compress failed"; }
cat out.txt
for f in folded.safetensors arch.json model.int8.safetensors report.json; do
  [ -s out/$f ] || fail "out/$f missing"
done
python3 - <<'PY' || fail "report or outputs wrong"
import json, struct
rep = json.load(open("out/report.json"))
st = {s["stage"]: s for s in rep}
assert st["runtime fp32 folded+fused"]["agreement"] == 1.0, rep
assert st["runtime fp32 (unfolded)"]["agreement"] == 1.0, rep
q = [s for s in rep if s["stage"].startswith("runtime int8")][0]
assert q["agreement"] > 0.9, rep
arch = json.load(open("out/arch.json"))
assert not any(l["type"] == "batchnorm" for l in arch["layers"]), arch
raw = open("out/model.int8.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
assert h["layers.0.weight"]["dtype"] == "I8" and h["layers.0.weight"]["shape"] == [4, 9], h
assert h["layers.0.weight_scale"]["shape"] == [4] and h["layers.0.input_zero_point"]["dtype"] == "I32", h
assert h["__metadata__"]["fednas.quant"] == "int8"
PY
pass "compress: folding keeps predictions; int8 file has I8 weights and scales"

# The folded model is an ordinary model: it compresses again (nothing left to fold).
"$FEDNAS" compress out/folded.safetensors --recipe r.json --out out2 > out2.txt 2>&1 || fail "re-compressing the folded model failed"
pass "folded model loads"

# Pruning half the channels (no fine-tuning samples): a smaller model that still builds and runs.
cat > rp.json <<R
{ "data": {"dataset": "fashion-mnist", "path": "$DATA"},
  "prune": {"sparsity": 0.5, "schedule": "linear", "steps": 2, "finetune_samples": 0},
  "eval_samples": 200, "bench": {"batch": 16, "iters": 1} }
R
"$FEDNAS" compress m.safetensors --recipe rp.json --out outp > outp.txt 2> err.txt || { cat err.txt; fail "prune failed"; }
python3 - <<'PY' || fail "pruned model wrong"
import json
arch = json.load(open("outp/arch.json"))
assert arch["layers"][0]["out"] == 2, arch
PY
pass "compress: pruning 50% of channels gives a smaller model that runs"

printf '{ "data": {"dataset": "fashion-mnist"},\n  "quantize": {"calibrater": "entropy"} }' > bad.json
"$FEDNAS" compress m.safetensors --recipe bad.json --out o3 2> err.txt; [ $? = 2 ] || fail "bad recipe should exit 2"
expect_contains err.txt "bad.json:2:16: quantize.calibrater: unknown key"
printf '{ "data": {"dataset": "fashion-mnist"}, "bench": {"batch": 0} }' > bad2.json
"$FEDNAS" compress m.safetensors --recipe bad2.json --out o3 2> err.txt; [ $? = 2 ] || fail "bad batch should exit 2"
expect_contains err.txt "bench.batch: expected an integer in 1..4096"
"$FEDNAS" compress missing.safetensors --recipe r.json --out o3 2> err.txt && fail "missing model should fail"
expect_contains err.txt "missing.safetensors"
pass "compress: bad input named"
