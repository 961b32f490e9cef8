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

# `fednas serve` runs the int8 file as int8: it says so, and its answers agree with the fp32
# folded model's on the test images it is asked about (classes, almost all); a tampered int8
# file is refused at start, naming the tensor.
TOKEN=serve_int8_token_0123456789
for M in folded model.int8; do
  FEDNAS_SERVE_TOKEN=$TOKEN "$FEDNAS" serve cdir/$M.safetensors --http 0 --state-dir "$WORK" > serve_$M.out 2>&1 &
  PIDS+=($!)
  wait_for_line serve_$M.out 'https://127\.0\.0\.1:[0-9]+/v1/predict' 20 | sed -E 's#.*:([0-9]+)/v1/predict#\1#' > port_$M
done
expect_contains serve_model.int8.out "model.int8.safetensors (int8) on https://"
grep -q "(int8)" serve_folded.out && fail "the fp32 model was served as int8"
python3 - "$(cat port_folded)" "$(cat port_model.int8)" "$TOKEN" "$DATA" <<'PY' || fail "int8 serving answers wrong"
import base64, gzip, http.client, json, ssl, struct, sys
p32, p8, tok, data = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
img = gzip.open(data + "/t10k-images-idx3-ubyte.gz").read()[16:]
ctx = ssl._create_unverified_context()
def classes(port):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
    ims = [base64.b64encode(struct.pack("<784f", *[b / 255.0 for b in img[i * 784:(i + 1) * 784]])).decode() for i in range(64)]
    c.request("POST", "/v1/predict", body=json.dumps({"images": ims}),
              headers={"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
    r = c.getresponse()
    d = json.loads(r.read())
    assert r.status == 200, d
    for p in d["predictions"]:
        assert len(p["probabilities"]) == 10 and abs(sum(p["probabilities"]) - 1) < 1e-4, p
    return [p["class"] for p in d["predictions"]]
a, b = classes(p32), classes(p8)
same = sum(x == y for x, y in zip(a, b))
assert same >= 58, f"int8 and fp32 agree on {same} of 64 images"
print(f"int8 and fp32 agree on {same} of 64 images")
PY
python3 - <<'PY'
import json, struct
d = open("cdir/model.int8.safetensors", "rb").read()
n = struct.unpack("<Q", d[:8])[0]
h = json.loads(d[8:8 + n])
name = [k for k in h if k.endswith(".weight_scale")][0]
b, e = h[name]["data_offsets"]
body = bytearray(d[8 + n:])
body[b:b + 4] = struct.pack("<f", -1.0)  # a negative weight scale
open("bad.int8.safetensors", "wb").write(d[:8 + n] + bytes(body))
PY
"$FEDNAS" serve bad.int8.safetensors --http 0 --state-dir "$WORK" > e4.txt 2>&1; rc=$?
[ $rc = 2 ] || { cat e4.txt; fail "a tampered int8 file should exit 2, got $rc"; }
expect_contains e4.txt "weight_scale holds -1 at 0, expected a finite positive number"
pass "serve: an int8 file is served in int8 (agreeing with fp32), a tampered one refused naming the tensor"
