#!/usr/bin/env bash
# `mpirun -n 3 fednas nas` (rank 0 the controller, ranks 1-2 the workers) must find exactly the
# candidates, metrics and retrained model of the single-process search with the same seed,
# workers and threads; a job whose mpirun is killed (SIGKILL: no rank may outlive it) resumes,
# under another number of ranks, to that same end; a rank 0 that fails early ends the job.
# Skips (77) when fednas was built without MPI (FEDNAS_MPIEXEC empty).
. "$(dirname "$0")/lib.sh"
MPIEXEC=${FEDNAS_MPIEXEC:-}
[ -n "$MPIEXEC" ] || { echo "SKIP: fednas was built without MPI"; exit 77; }
mpi() { local n=$1; shift; "$MPIEXEC" --allow-run-as-root --oversubscribe -n "$n" "$@"; }
export FEDNAS_THREADS=1
cat > "$WORK/exp.json" <<'JSON'
{
  "name": "nas-mpi-test",
  "seed": 11,
  "data": {"dataset": "fashion-mnist", "train_subset": 1536, "val_subset": 256, "test_subset": 256},
  "nas": {
    "space": {"type": "macro", "layers": 2, "ops": ["conv3x3", "sepconv3x3", "maxpool3x3", "identity"],
              "widths": [4, 8], "reductions": 1},
    "strategy": {"name": "evolution", "population": 4, "sample": 2},
    "budget": 10, "epochs": 1, "workers": 2, "retries": 1, "top_k": 1, "retrain_epochs": 1,
    "batch_size": 32, "lr": 0.05
  }
}
JSON
Q_CAND="SELECT seq, cand_id, hash, genome, status, attempts, reason, tell_seq, cached_from, parent, mutation, budget,
        printf('%.17g', val_accuracy), printf('%.17g', val_loss), printf('%.17g', train_loss), params, flops, threads
        FROM nas_candidates WHERE run_id = 1 ORDER BY seq"
Q_FINAL="SELECT rank, seq, printf('%.17g', test_accuracy), printf('%.17g', test_loss), hex(weights) FROM nas_final
         WHERE run_id = 1 ORDER BY rank"
# same_as_ref DB WHAT: the candidates and the retrained model equal the reference's
same_as_ref() {
  sql "$1" "$Q_CAND" > "$WORK/got.cand"
  diff "$WORK/ref.cand" "$WORK/got.cand" > "$WORK/cand.diff" || { head -20 "$WORK/cand.diff"; fail "$2: candidates differ from the single-process search"; }
  sql "$1" "$Q_FINAL" > "$WORK/got.final"
  cmp -s "$WORK/ref.final" "$WORK/got.final" || fail "$2: the retrained model differs from the single-process search's"
}

"$FEDNAS" nas "$WORK/exp.json" --db "$WORK/ref.db" --quiet > "$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; fail "single-process search failed"; }
sql "$WORK/ref.db" "$Q_CAND" > "$WORK/ref.cand"
sql "$WORK/ref.db" "$Q_FINAL" > "$WORK/ref.final"
[ "$(wc -l < "$WORK/ref.cand")" = 10 ] && [ "$(wc -l < "$WORK/ref.final")" = 1 ] || fail "reference: 10 candidates and 1 retrained model expected"
pass "single-process search (2 local workers x 1 thread): 10 candidates"

mpi 3 "$FEDNAS" nas "$WORK/exp.json" --db "$WORK/mpi.db" --quiet > "$WORK/mpi.log" 2>&1 || { cat "$WORK/mpi.log"; fail "mpirun -n 3 search failed"; }
expect_contains "$WORK/mpi.log" "2 workers x 1 thread on cpu (MPI ranks)"
same_as_ref "$WORK/mpi.db" "mpirun -n 3"
[ "$(sql "$WORK/mpi.db" "SELECT group_concat(DISTINCT worker) FROM (SELECT worker FROM nas_candidates WHERE worker LIKE 'mpi:%' ORDER BY worker)")" = "mpi:1,mpi:2" ] ||
  fail "both worker ranks should have evaluated candidates: $(sql "$WORK/mpi.db" "SELECT group_concat(worker) FROM nas_candidates")"
[ "$(sql "$WORK/mpi.db" "SELECT status FROM runs WHERE id = 1")" = done ] || fail "MPI run not done"
pass "mpirun -n 3: same candidates, metrics, tell order and retrained weights; ranks 1 and 2 both evaluated"

done_count() { sql "$1" "SELECT count(*) FROM nas_candidates WHERE status = 'done'" 2>/dev/null || echo 0; }
# mpirun itself, not a shell function around it, so that $! is mpirun's pid
"$MPIEXEC" --allow-run-as-root --oversubscribe -n 3 "$FEDNAS" nas "$WORK/exp.json" --db "$WORK/k.db" --quiet > "$WORK/k1.log" 2>&1 &
P=$!; PIDS+=($P)
for ((i = 0; i < 600; i++)); do
  [ "$(done_count "$WORK/k.db")" -ge 3 ] && break
  kill -0 $P 2>/dev/null || { cat "$WORK/k1.log"; fail "the MPI search ended before 3 candidates were done"; }
  sleep 0.05
done
ranks=$(pgrep -P $P | tr '\n' ' ')
kill -9 $P 2>/dev/null || fail "the MPI search ended before it could be killed"
wait $P 2>/dev/null
[ -n "$ranks" ] || fail "mpirun had no rank processes to check"
for ((i = 0; i < 100; i++)); do
  alive=""; for r in $ranks; do kill -0 "$r" 2>/dev/null && alive="$alive $r"; done
  [ -z "$alive" ] && break
  sleep 0.1
done
[ -z "$alive" ] || fail "ranks$alive outlived the killed mpirun"
n1=$(done_count "$WORK/k.db")
[ "$n1" -lt 10 ] || fail "the search finished before the kill took effect"
[ "$(sql "$WORK/k.db" "SELECT status FROM runs WHERE id = 1")" = running ] || fail "killed run not left running"
pass "mpirun killed (SIGKILL) with $n1 of 10 done; its ranks ($ranks) went with it"

# Resumed with one worker rank: the ask window is the run's (2 workers), so the end is the same.
mpi 2 "$FEDNAS" nas --resume 1 --db "$WORK/k.db" --quiet > "$WORK/k2.log" 2>&1 || { cat "$WORK/k2.log"; fail "resume under mpirun -n 2 failed"; }
expect_contains "$WORK/k2.log" "(resumed)"
[ "$(sql "$WORK/k.db" "SELECT status FROM runs WHERE id = 1")" = done ] || fail "resumed run not done"
same_as_ref "$WORK/k.db" "killed and resumed"
pass "resumed under mpirun -n 2: same 10 candidates and retrained model as the single-process search"

# Rank 0 fails before the search starts (no such run): the worker ranks are told to stop and the
# job ends with rank 0's error instead of hanging.
timeout 60 "$MPIEXEC" --allow-run-as-root --oversubscribe -n 3 "$FEDNAS" nas --resume 7 --db "$WORK/k.db" > "$WORK/bad.log" 2>&1
rc=$?
[ $rc != 124 ] || fail "a failing rank 0 left the job hanging"
[ $rc != 0 ] || fail "a failing rank 0 should fail the job"
expect_contains "$WORK/bad.log" "7"
pass "rank 0 failing early ends the job (exit $rc)"

# Tasks that MPI does not join into one world (srun without an MPI plugin) must not each run the
# whole search into the same store.
SLURM_PROCID=1 SLURM_STEP_NUM_TASKS=3 timeout 60 "$FEDNAS" nas "$WORK/exp.json" --db "$WORK/lone.db" > "$WORK/lone.log" 2>&1 &&
  fail "a task of 3 that MPI sees alone ran a search"
expect_contains "$WORK/lone.log" "MPI sees a world of 1"
[ ! -e "$WORK/lone.db" ] || fail "the lone task created a store"
pass "a task of 3 that MPI sees as a world of one refuses to search"
