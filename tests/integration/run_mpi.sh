#!/usr/bin/env bash
# `mpirun -n 3 fednas run` (rank 0 the server, ranks 1-2 simulating 2 sites each over the usual
# CURVE socket) must give round for round the metrics of the same federation on one machine
# with clients.simulate.workers 2. Skips (77) when fednas was built without MPI. The server
# listens on loopback (--bind), as every test server does: all ranks run on this machine, and a
# fresh machine's host name need not resolve.
. "$(dirname "$0")/lib.sh"
MPIEXEC=${FEDNAS_MPIEXEC:-}
[ -n "$MPIEXEC" ] || { echo "SKIP: fednas was built without MPI"; exit 77; }
cd "$WORK"
cat > mpi.json <<'JSON'
{ "name": "it-mpi-run", "seed": 5, "rounds": 2,
  "model": { "type": "mlp", "hidden": [32] }, "data": {},
  "clients": { "count": 4 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.05 },
  "server": { "round_timeout": 120, "register_timeout": 60 } }
JSON
sed 's/"count": 4 }/"count": 4, "simulate": { "workers": 2 } }/' mpi.json > local.json
Q="SELECT round, participants, printf('%.17g', test_accuracy), printf('%.17g', test_loss), printf('%.17g', train_loss)
   FROM rounds ORDER BY round"
mkdir local.d mpi.d
(cd local.d && OPENBLAS_NUM_THREADS=1 "$FEDNAS" run ../local.json --db run.db --http off > ../local.out 2>&1) ||
  { cat local.out; fail "local run failed"; }
(cd mpi.d && timeout 240 "$MPIEXEC" --allow-run-as-root --oversubscribe -n 3 "$FEDNAS" run ../mpi.json --db run.db \
  --http off --bind 'tcp://127.0.0.1:*' > ../mpi.out 2>&1) || { cat mpi.out; fail "mpirun -n 3 fednas run failed"; }
expect_contains mpi.out "4 sites on MPI ranks 1..2"
[ "$(sql mpi.d/run.db "SELECT status FROM runs WHERE id = 1")" = done ] || fail "MPI run not done"
sql local.d/run.db "$Q" > local.rounds
sql mpi.d/run.db "$Q" > mpi.rounds
[ "$(wc -l < mpi.rounds)" = 2 ] && [ "$(cut -d'|' -f2 mpi.rounds | sort -u)" = 4 ] || { cat mpi.rounds; fail "expected 2 rounds of 4 sites"; }
diff local.rounds mpi.rounds || fail "the MPI federation's rounds differ from the local simulation's"
pass "mpirun -n 3 fednas run: 4 sites on 2 ranks, 2 rounds, metrics equal to the local simulation's ($(tail -1 mpi.rounds))"
