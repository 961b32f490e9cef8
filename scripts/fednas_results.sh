#!/usr/bin/env bash
# Federated NAS results (issue 15): the search of experiments/fmnist-fednas-niid.json (or of SEARCH,
# below), its best architecture retrained with FedAvg as experiments/fmnist-fednas-niid-retrain.json,
# and the FedAvg CNN baseline experiments/fmnist-niid-fedavg-cnn.json, all on the same 10 sites with
# Dirichlet(0.5) label skew; prints a table of test accuracy, parameters and bytes communicated.
#
#   scripts/fednas_results.sh FEDNAS OUT_DIR
#
# The full set-up (the experiments as they are: 50 rounds of 10 local epochs for both FedAvg runs)
# takes many CPU-hours. On a small machine reduce it with the environment (the table says what ran):
#   SEARCH                                           the search experiment's name in experiments/
#                                                    (default fmnist-fednas-niid; fmnist-fednas-niid-conv
#                                                    searches the convolution-only space)
#   SEARCH_ROUNDS, SEARCH_BUDGET, SEARCH_POPULATION  the search (defaults: the experiment's)
#   FL_ROUNDS, FL_EPOCHS                             both FedAvg runs (defaults: the experiments')
#   DATA_SUBSET="TRAIN TEST"                         the first TRAIN training and TEST test images
#                                                    only (IDX copies in OUT_DIR/data)
# The baseline runs beside the search (it needs nothing from it); the retraining follows the search.
set -euo pipefail
FEDNAS=$(realpath "${1:?usage: $0 FEDNAS OUT_DIR}")
OUT=${2:?usage: $0 FEDNAS OUT_DIR}
SRC=$(cd "$(dirname "$0")/.." && pwd)
SEARCH=${SEARCH:-fmnist-fednas-niid}
[[ $SEARCH =~ ^[A-Za-z0-9._-]+$ && -f $SRC/experiments/$SEARCH.json ]] ||
  { echo "$0: SEARCH=$SEARCH names no file experiments/$SEARCH.json (give the name without .json)" >&2; exit 2; }
mkdir -p "$OUT"
cd "$OUT"
if [ -n "${DATA_SUBSET:-}" ]; then
  python3 - $DATA_SUBSET <<'PY'
import gzip, os, struct, sys
ntrain, ntest = int(sys.argv[1]), int(sys.argv[2])
src, dst = "/usr/share/datasets/fashion-mnist", "data"
os.makedirs(dst, exist_ok=True)
for split, n in (("train", ntrain), ("t10k", ntest)):
    img = gzip.open(f"{src}/{split}-images-idx3-ubyte.gz").read()
    lab = gzip.open(f"{src}/{split}-labels-idx1-ubyte.gz").read()
    _, _, r, c = struct.unpack(">IIII", img[:16])
    with gzip.open(f"{dst}/{split}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, r, c) + img[16:16 + n * r * c])
    with gzip.open(f"{dst}/{split}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + lab[8:8 + n])
PY
  export DATA_PATH=$PWD/data
fi
python3 - "$SRC/experiments" "$SEARCH" <<'PY'
import json, os, sys
src = sys.argv[1]
def load(n): return json.load(open(os.path.join(src, n + ".json")))
env = os.environ.get
s = load(sys.argv[2])
if env("SEARCH_ROUNDS"): s["rounds"] = int(env("SEARCH_ROUNDS"))
if env("SEARCH_BUDGET"): s["nas"]["budget"] = int(env("SEARCH_BUDGET"))
if env("SEARCH_POPULATION"): s["nas"]["strategy"]["population"] = int(env("SEARCH_POPULATION"))
if env("DATA_PATH"): s["data"]["path"] = env("DATA_PATH")
json.dump(s, open("search.json", "w"), indent=1)
for n, out in (("fmnist-niid-fedavg-cnn", "cnn.json"), ("fmnist-fednas-niid-retrain", "retrain-template.json")):
    e = load(n)
    if env("FL_ROUNDS"): e["rounds"] = int(env("FL_ROUNDS"))
    if env("FL_EPOCHS"): e["train"]["epochs"] = int(env("FL_EPOCHS"))
    if env("DATA_PATH"): e["data"]["path"] = env("DATA_PATH")
    json.dump(e, open(out, "w"), indent=1)
PY
run() { # NAME JSON
  rm -f "$1.db"
  echo "== $1: $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$FEDNAS" run "$2" --db "$1.db" --http off > "$1.out" 2> "$1.err"
  echo "== $1 done: $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
}
run cnn cnn.json &
BASE=$!
run search search.json
rm -rf export && "$FEDNAS" nas export 1 --top 1 --out export --db search.db
python3 - <<'PY'
import json
e = json.load(open("retrain-template.json"))
e["model"] = json.load(open("export/rank1.json"))  # the architecture, as "model" takes it
e["description"] = "the best architecture of the federated search, retrained with FedAvg"
json.dump(e, open("retrain.json", "w"), indent=1)
PY
run retrain retrain.json
wait $BASE
python3 - <<'PY' | tee table.md
import sqlite3
def stats(db):
    c = sqlite3.connect(db)
    rounds, acc, down, up = c.execute("select count(*), (select test_accuracy from rounds order by round desc limit 1), "
                                      "sum(bytes_down), sum(bytes_up) from rounds").fetchone()
    return c, rounds, acc, down + up
cs, rs, acc_s, bytes_s = stats("search.db")
best = cs.execute("select params, test_accuracy, val_accuracy from nas_final where rank = 1").fetchone()
cr, rr, acc_r, bytes_r = stats("retrain.db")
cc, rc, acc_c, bytes_c = stats("cnn.db")
cnn_params = 1663370
print("| model | rounds | test accuracy | parameters | bytes communicated |")
print("|---|---|---|---|---|")
print(f"| FedAvg CNN | {rc} | {100*acc_c:.2f}% | {cnn_params:,} | {bytes_c/1e6:,.1f} MB |")
print(f"| federated NAS best, retrained with FedAvg | {rr} | {100*acc_r:.2f}% | {best[0]:,} | {(bytes_s+bytes_r)/1e6:,.1f} MB (search {bytes_s/1e6:,.1f} + retraining {bytes_r/1e6:,.1f}) |")
print(f"| (the same architecture on the supernet's weights after the search) | {rs} | {100*best[1]:.2f}% | {best[0]:,} | (search) |")
PY
