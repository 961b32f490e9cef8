#!/bin/bash
# `fednas profile` end to end: a built-in name, an architecture JSON and a safetensors model each
# give a trace that loads as Chrome trace JSON whose linear/conv forward FLOPs equal the
# network's count times the batch; bad arguments are usage errors.
. "$(dirname "$0")/lib.sh"
check() { # TRACE LAYERS: the trace's ops and FLOPs
  python3 - "$1" "$2" <<'PY' || fail "trace $1 does not check out"
import json, sys
d = json.load(open(sys.argv[1])); layers = int(sys.argv[2])
ev = d["traceEvents"]; meta = d["otherData"]
ops = [e for e in ev if e.get("cat") == "op"]
assert all(e["ph"] == "X" and e["dur"] >= 0 and "pid" in e and "tid" in e for e in ops)
gemm = [e for e in ops if e["args"]["op"] in ("linear", "conv2d") and e["args"]["pass"] == "forward"]
assert len(gemm) == layers * meta["steps"], (len(gemm), layers)
want = meta["net_flops_per_sample"] * meta["batch_size"] * meta["steps"]
got = sum(e["args"]["flops"] for e in gemm)
assert got == want, (got, want)
assert any(e["ph"] == "C" and e["name"] == "arena" for e in ev)
assert meta["arena_used_after_reset"] == 0
# Each op event spans its kernel (timed by the engine itself) plus bookkeeping.
assert 0 < meta["kernel_seconds"] <= meta["forward_seconds"] + meta["backward_seconds"] + 1e-4, meta
PY
}
"$FEDNAS" profile --model cnn --batch-size 4 --steps 2 --output "$WORK/cnn.json" > "$WORK/cnn.txt" || fail "profile cnn"
expect_contains "$WORK/cnn.txt" "conv2d"
expect_contains "$WORK/cnn.txt" "heap growth"
check "$WORK/cnn.json" 4
pass "built-in cnn"

echo '{"type":"mlp","hidden":[32,16]}' > "$WORK/mlp.json"
"$FEDNAS" profile --model "$WORK/mlp.json" --batch-size 16 --output "$WORK/mlp.trace" --metrics flops > "$WORK/mlp.txt" \
  || fail "profile mlp"
grep -q "GFLOP/s" "$WORK/mlp.txt" || fail "flops line missing"
grep -q "^op " "$WORK/mlp.txt" && fail "--metrics flops printed the latency table"
check "$WORK/mlp.trace" 3
pass "architecture JSON, --metrics"

# A model file as `fednas nas export` writes it: one F32 "params" vector, the arch in metadata.
python3 - "$WORK/soft.safetensors" <<'PY'
import json, struct, sys
n = 784 * 10 + 10
hdr = json.dumps({"__metadata__": {"fednas.arch": json.dumps({"type": "softmax"})},
                  "params": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
hdr += b" " * (-len(hdr) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(hdr)) + hdr + struct.pack("<%df" % n, *([0.01] * n)))
PY
"$FEDNAS" profile --model "$WORK/soft.safetensors" --batch-size 2 --output "$WORK/soft.json" > /dev/null || fail "profile safetensors"
check "$WORK/soft.json" 1
pass "safetensors model"

"$FEDNAS" profile --model cnn --batch-size 0 > "$WORK/e1" 2>&1; [ $? = 2 ] || fail "batch 0 accepted"
"$FEDNAS" profile --model cnn --metrics speed > "$WORK/e2" 2>&1; [ $? = 2 ] || fail "bad metric accepted"
"$FEDNAS" profile --model nosuch > "$WORK/e3" 2>&1; [ $? != 0 ] || fail "unknown model accepted"
"$FEDNAS" profile --model "$WORK/cnn.txt" > "$WORK/e4" 2>&1; [ $? != 0 ] || fail "non-JSON model accepted"
pass "bad arguments"
