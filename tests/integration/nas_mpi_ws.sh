#!/usr/bin/env bash
# Weight sharing under mpirun (nas/supernet_dp.h, nas/mpi.h): every rank trains a replica of the
# supernet on its shard of each global batch, one MPI_Allreduce per step.
# 1. mpi_supernet_dp under -n 2 and -n 3: the replicas' checksums agree, the ranks' supernet equals
#    one process running the same shards in turn (exactly for 2 ranks, to float rounding for 3),
#    and the loss goes down (the program's header explains the tolerance).
# 2. `mpirun -n 2` and `-n 3 fednas nas` of a small weight-sharing search: the search completes,
#    the supernet was trained on every rank with identical replicas, every candidate is scored by
#    a worker rank's replica (no training of its own: train_loss -1), the top one is retrained.
# 3. A global batch too small to split refuses cleanly (no hang, the run marked failed).
# 4. Ranks that read other training data stop at the fingerprint check (before: a hang).
# Skips (77) when fednas was built without MPI (FEDNAS_MPIEXEC empty).
. "$(dirname "$0")/lib.sh"
MPIEXEC=${FEDNAS_MPIEXEC:-}
DP=${FEDNAS_MPI_SUPERNET_DP:-}
[ -n "$MPIEXEC" ] || { echo "SKIP: fednas was built without MPI"; exit 77; }
[ -x "$DP" ] || fail "no mpi_supernet_dp program (FEDNAS_MPI_SUPERNET_DP=$DP)"
mpi() { local n=$1; shift; timeout 240 "$MPIEXEC" --allow-run-as-root --oversubscribe -n "$n" "$@"; }
export FEDNAS_THREADS=1

for run in "2 1" "3 2"; do
  set -- $run
  mpi "$1" "$DP" "$2" > "$WORK/dp$1.log" 2>&1 || { cat "$WORK/dp$1.log"; fail "mpi_supernet_dp under -n $1 failed"; }
  expect_contains "$WORK/dp$1.log" "identical"
  expect_contains "$WORK/dp$1.log" "ok"
  grep -E "^(mpi_supernet_dp|against)" "$WORK/dp$1.log"
done
grep -q "running the 2 shards in turn: max |diff| 0 " "$WORK/dp2.log" || fail "2 ranks should equal the oracle exactly"
pass "data-parallel supernet: identical replicas; 2 ranks = the one-process oracle bit for bit, 3 ranks within rounding"

cat > "$WORK/exp.json" <<'JSON'
{
  "name": "nas-mpi-ws-test",
  "seed": 5,
  "data": {"dataset": "fashion-mnist", "train_subset": 640, "val_subset": 128, "test_subset": 128},
  "nas": {
    "space": {"type": "macro", "layers": 2, "ops": ["conv3x3", "sepconv3x3", "maxpool3x3", "identity"],
              "widths": [4, 8], "reductions": 1},
    "strategy": {"name": "evolution", "population": 4, "sample": 2},
    "budget": 8, "epochs": 1, "workers": 1, "retries": 0, "top_k": 1, "retrain_epochs": 1,
    "batch_size": 32, "lr": 0.05, "evaluation": "weight_sharing"
  }
}
JSON
for n in 2 3; do
  db="$WORK/ws$n.db"
  mpi "$n" "$FEDNAS" nas "$WORK/exp.json" --db "$db" --quiet > "$WORK/ws$n.log" 2>&1 ||
    { cat "$WORK/ws$n.log"; fail "weight-sharing search under mpirun -n $n failed"; }
  expect_contains "$WORK/ws$n.log" "data-parallel on $n ranks"
  expect_contains "$WORK/ws$n.log" "supernet: 20 steps over"
  expect_contains "$WORK/ws$n.log" "on $n ranks ("
  expect_contains "$WORK/ws$n.log" "replicas identical"
  [ "$(sql "$db" "SELECT status FROM runs WHERE id = 1")" = done ] || fail "-n $n: run not done"
  [ "$(sql "$db" "SELECT count(*) FROM nas_candidates WHERE status = 'done' AND val_accuracy BETWEEN 0 AND 1
                    AND val_loss > 0 AND params > 0 AND latency_ms > 0")" = 8 ] || fail "-n $n: 8 scored candidates expected"
  [ "$(sql "$db" "SELECT count(*) FROM nas_candidates WHERE worker LIKE 'mpi:%' AND train_loss = -1")" = \
    "$(sql "$db" "SELECT count(*) FROM nas_candidates WHERE worker LIKE 'mpi:%'")" ] ||
    fail "-n $n: a worker rank trained a candidate instead of scoring it with the supernet"
  [ "$(sql "$db" "SELECT count(*) FROM nas_candidates WHERE worker LIKE 'mpi:%'")" -ge 1 ] || fail "-n $n: no rank scored"
  [ "$(sql "$db" "SELECT count(DISTINCT val_loss) FROM nas_candidates")" -ge 2 ] || fail "-n $n: every candidate got one score"
  [ "$(sql "$db" "SELECT count(*) FROM nas_final WHERE test_accuracy > 0 AND length(weights) > 0")" = 1 ] ||
    fail "-n $n: the top candidate was not retrained"
  pass "mpirun -n $n: supernet trained on $n ranks (identical replicas), 8 candidates scored by worker ranks, top 1 retrained"
done
[ "$(sql "$WORK/ws3.db" "SELECT group_concat(DISTINCT worker) FROM (SELECT worker FROM nas_candidates WHERE worker LIKE 'mpi:%' ORDER BY worker)")" = "mpi:1,mpi:2" ] ||
  fail "-n 3: both worker ranks should have scored candidates"
pass "mpirun -n 3: ranks 1 and 2 both scored with their replicas"

# A global batch that leaves a rank fewer than 2 samples: every rank refuses at once.
sed 's/"batch_size": 32/"batch_size": 3/' "$WORK/exp.json" > "$WORK/small.json"
mpi 2 "$FEDNAS" nas "$WORK/small.json" --db "$WORK/small.db" --quiet > "$WORK/small.log" 2>&1
rc=$?
[ $rc != 124 ] || fail "a refused split left the job hanging"
[ $rc != 0 ] || fail "a batch of 3 over 2 ranks should fail the search"
expect_contains "$WORK/small.log" "raise nas.batch_size to >= 4"
[ "$(sql "$WORK/small.db" "SELECT status FROM runs WHERE id = 1")" = failed ] || fail "the refused run should be marked failed"
pass "a batch of 3 over 2 ranks is refused with the fix, the run marked failed (exit $rc)"

# Ranks that read other data (each reads data.path itself; here node B's copy holds 700 images,
# so its training split is 600 against 640): every rank stops at the fingerprint check with the
# fix, instead of pairing unrelated all-reduces (before: a hang).
FM=/usr/share/datasets/fashion-mnist
mkdir -p "$WORK/A/fm" "$WORK/B/fm"
for f in "$FM"/*; do ln -s "$f" "$WORK/A/fm/"; done
for f in t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do ln -s "$FM/$f" "$WORK/B/fm/"; done
{ printf '\x00\x00\x08\x03\x00\x00\x02\xbc'; zcat "$FM/train-images-idx3-ubyte.gz" | tail -c +9 | head -c $((8 + 700 * 784)); } |
  gzip > "$WORK/B/fm/train-images-idx3-ubyte.gz"
{ printf '\x00\x00\x08\x01\x00\x00\x02\xbc'; zcat "$FM/train-labels-idx1-ubyte.gz" | tail -c +9 | head -c 700; } |
  gzip > "$WORK/B/fm/train-labels-idx1-ubyte.gz"
sed 's/"data": {/"data": {"path": "fm", "validation": 100, /' "$WORK/exp.json" > "$WORK/mm.json"
timeout 240 "$MPIEXEC" --allow-run-as-root --oversubscribe \
  -n 1 -wdir "$WORK/A" "$FEDNAS" nas "$WORK/mm.json" --db "$WORK/mm.db" --quiet : \
  -n 1 -wdir "$WORK/B" "$FEDNAS" nas "$WORK/mm.json" --db "$WORK/mm.db" --quiet > "$WORK/mm.log" 2>&1
rc=$?
[ $rc != 124 ] || fail "ranks with other data left the job hanging"
[ $rc != 0 ] || fail "ranks with other data should fail the search"
expect_contains "$WORK/mm.log" "do not hold the same training data (rank 0: 640 images"
expect_contains "$WORK/mm.log" "(rank 1: 600 images"
[ "$(sql "$WORK/mm.db" "SELECT status FROM runs WHERE id = 1")" = failed ] || fail "the run should be marked failed"
pass "ranks with other training data stop at once with the cause (exit $rc), the run marked failed"

# A worker rank that cannot read its data: the job ends (no hang) and the error names the rank.
mkdir -p "$WORK/C"
timeout 240 "$MPIEXEC" --allow-run-as-root --oversubscribe \
  -n 1 -wdir "$WORK/A" "$FEDNAS" nas "$WORK/mm.json" --db "$WORK/nodata.db" --quiet : \
  -n 1 -wdir "$WORK/C" "$FEDNAS" nas "$WORK/mm.json" --db "$WORK/nodata.db" --quiet > "$WORK/nodata.log" 2>&1
rc=$?
[ $rc != 124 ] || fail "a worker rank without data left the job hanging"
[ $rc != 0 ] || fail "a worker rank without data should fail the job"
expect_contains "$WORK/nodata.log" "MPI rank 1 (a worker; the job is aborted): Fashion-MNIST directory fm not found"
pass "a worker rank without its data ends the job with the rank named (exit $rc)"
