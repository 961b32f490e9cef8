#!/usr/bin/env bash
# Compression benchmark (issue 16's targets) with `fednas compress`, every stage of a recipe
# timed in the same run (CPU ms per forward pass of a batch, best of 3 interleaved turns, one
# thread: FEDNAS_THREADS=1 OPENBLAS_NUM_THREADS=1):
#   fold   experiments/fmnist-cnn-bn.json's model, batch 64 and batch 1: predictions of the folded
#          model against the original on the test set, and its speed against the unfolded model
#          on the engine and on the same runtime (target: identical predictions, >= 1.2x);
#   int8   the FedAvg CNN (experiments/fmnist-cnn-central.json), entropy-calibrated PTQ, batch 64
#          (target: <= 1.0 point lost, >= 2x the speed of the faster fp32 path, the engine's or
#          the folded runtime's);
#   prune  the same CNN, 50% of the channels in 3 cubic steps, each fine-tuned for one pass over
#          the 60,000 training images, batch 64 (target: <= 1.5 points lost, >= 1.6x).
# The models are trained first unless COMPRESS_BENCH_CNN / COMPRESS_BENCH_BN name `fednas train
# --save` files (COMPRESS_BENCH_EPOCHS, default 4, for the CNN; the BN model takes its file's 2).
# Never fails on time or accuracy, only when a command fails.
#
#   build/bench/compress [FEDNAS_BINARY]      (make bench runs it from build/bench/)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
FEDNAS=$(realpath "${1:-$HERE/../fednas}")
SRC=${FEDNAS_SOURCE_DIR:-$(cd "$HERE/../.." && pwd)}
[ -f "$SRC/experiments/fmnist-cnn-bn.json" ] || SRC=$(cd "$HERE/../.." && pwd)
[ -f "$SRC/experiments/fmnist-cnn-bn.json" ] || { echo "compress bench: set FEDNAS_SOURCE_DIR to the source tree"; exit 1; }
[ -x "$FEDNAS" ] || { echo "compress bench: no fednas binary at $FEDNAS"; exit 1; }
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/t10k-images-idx3-ubyte" ] || [ -f "$DATA/t10k-images-idx3-ubyte.gz" ] || { echo "compress bench: no $DATA"; exit 1; }
WORK=$(mktemp -d /tmp/fednas-bench-compress-XXXXXX)
trap '[ -n "${COMPRESS_BENCH_KEEP:-}" ] || rm -rf "$WORK"' EXIT
export FEDNAS_THREADS=1 OPENBLAS_NUM_THREADS=1
load() { uptime | sed 's/.*load/load/'; }
echo "compress bench: $(nproc) cores, one thread; $(load)"

CNN=${COMPRESS_BENCH_CNN:-}
BN=${COMPRESS_BENCH_BN:-}
if [ -z "$CNN" ]; then
  CNN=$WORK/cnn.safetensors
  echo "training the FedAvg CNN (${COMPRESS_BENCH_EPOCHS:-4} epochs) ..."
  "$FEDNAS" train "$SRC/experiments/fmnist-cnn-central.json" --epochs "${COMPRESS_BENCH_EPOCHS:-4}" --save "$CNN" --quiet \
    > "$WORK/cnn.log" 2>&1 || { cat "$WORK/cnn.log"; echo "compress bench: training failed"; exit 1; }
fi
if [ -z "$BN" ]; then
  BN=$WORK/bn.safetensors
  echo "training the CNN with batch norm ..."
  "$FEDNAS" train "$SRC/experiments/fmnist-cnn-bn.json" --save "$BN" --quiet > "$WORK/bn.log" 2>&1 ||
    { cat "$WORK/bn.log"; echo "compress bench: training failed"; exit 1; }
fi

# recipe NAME JSON-BODY: runs it on MODEL into $WORK/NAME (report.json), its table on stdout
recipe() {
  local name=$1 model=$2
  printf '{"data": {"dataset": "fashion-mnist", "path": "%s"}, %s}\n' "$DATA" "$3" > "$WORK/$name.json"
  echo "-- $name ($(load))"
  "$FEDNAS" compress "$model" --recipe "$WORK/$name.json" --out "$WORK/$name" > "$WORK/$name.log" 2>&1 ||
    { cat "$WORK/$name.log"; echo "compress bench: $name failed"; exit 1; }
  grep -A20 '^stage' "$WORK/$name.log" | grep -v '^wrote'
}
recipe fold64 "$BN" '"fold": true, "eval_samples": 10000, "bench": {"batch": 64, "iters": 20}'
recipe fold1 "$BN" '"fold": true, "eval_samples": 10000, "bench": {"batch": 1, "iters": 300}'
recipe int8 "$CNN" '"fold": true, "quantize": {"calibrator": "entropy", "calibration_samples": 1000}, "eval_samples": 10000,
  "bench": {"batch": 64, "iters": 20}'
recipe prune "$CNN" '"fold": true, "prune": {"sparsity": 0.5, "schedule": "cubic", "steps": 3, "finetune_samples": 60000,
  "lr": 0.01}, "eval_samples": 10000, "bench": {"batch": 64, "iters": 20}'

echo
echo "summary (speed-ups: CPU time of the reference over the stage's, same run; accuracy in points)"
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
def rep(n):
    return {s["key"]: s for s in json.load(open(f"{w}/{n}/report.json"))}
rows = []
for n, b in (("fold64", 64), ("fold1", 1)):
    r = rep(n)
    e, u, f = r["engine"], r["unfolded"], r["folded"]
    ok = f["agreement"] == 1.0 and e["ms_per_batch"] / f["ms_per_batch"] >= 1.2
    rows.append((f"fold, batch {b}", f"agree {f['agreement']:.4f}, acc {100*(f['accuracy']-e['accuracy']):+.2f}",
                 f"{e['ms_per_batch']/f['ms_per_batch']:.2f}x engine, {u['ms_per_batch']/f['ms_per_batch']:.2f}x runtime unfolded",
                 "identical, >= 1.2x", "met" if ok else "NOT met"))
r = rep("int8")
e, f, q = r["engine"], r["folded"], r["int8"]
d = 100 * (q["accuracy"] - e["accuracy"])
ok = d >= -1.0 and min(e["ms_per_batch"], f["ms_per_batch"]) / q["ms_per_batch"] >= 2  # against the faster fp32
rows.append(("int8 PTQ, batch 64", f"acc {d:+.2f}", f"{e['ms_per_batch']/q['ms_per_batch']:.2f}x engine fp32, "
             f"{f['ms_per_batch']/q['ms_per_batch']:.2f}x runtime fp32 folded", ">= -1.0, >= 2x both", "met" if ok else "NOT met"))
r = rep("prune")
e, p = r["engine"], r["pruned"]
d = 100 * (p["accuracy"] - e["accuracy"])
ok = d >= -1.5 and e["ms_per_batch"] / p["ms_per_batch"] >= 1.6
rows.append(("prune 50%, batch 64", f"acc {d:+.2f}", f"{e['ms_per_batch']/p['ms_per_batch']:.2f}x engine fp32, "
             f"{r['folded']['ms_per_batch']/p['ms_per_batch']:.2f}x runtime fp32 folded", ">= -1.5, >= 1.6x",
             "met" if ok else "NOT met"))
for row in [("case", "accuracy", "speed", "target", "")] + rows:
    print(f"{row[0]:<20} {row[1]:<32} {row[2]:<48} {row[3]:<20} {row[4]}")
PY
