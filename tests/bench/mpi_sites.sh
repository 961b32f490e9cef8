#!/usr/bin/env bash
# Issue 15 at scale: a SITES-site (default 2000) FedAvg simulation under
# `mpirun --oversubscribe -n 3 fednas run EXP` (rank 0 the server, ranks 1-2 simulating 1,000
# sites each over the usual CURVE socket) against the same experiment without MPI
# (clients.simulate.workers 2, the same split of sites). Prints each run's rounds, final test
# accuracy and wall time; fails when a run does not finish its rounds with every site or when the
# two final accuracies differ by more than 0.005 (the runs are the same computation: the sum of
# the sites' updates may differ only in the order of arrival). Never fails on time.
#
#   tests/bench/mpi_sites.sh [FEDNAS_BINARY]       (SITES, ROUNDS: default 2000 and 3)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
FEDNAS=$(realpath "${1:-$HERE/../../build/fednas}")
SITES=${SITES:-2000}
ROUNDS=${ROUNDS:-3}
DATA=${FEDNAS_DATA:-/usr/share/datasets/fashion-mnist}
MPIEXEC=$(command -v mpirun || command -v mpiexec || true)
[ -x "$FEDNAS" ] || { echo "mpi_sites bench: no fednas binary at $FEDNAS"; exit 1; }
if [ -z "$MPIEXEC" ] || ! ldd "$FEDNAS" | grep -q libmpi; then
  echo "mpi_sites bench: skipped (fednas built without MPI, or no mpirun)"
  exit 0
fi
WORK=$(mktemp -d /tmp/fednas-bench-mpisites-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK" || exit 1
export OPENBLAS_NUM_THREADS=1 FEDNAS_THREADS=1
cat > mpi.json << JSON
{ "name": "mpi-sites-$SITES", "seed": 11, "rounds": $ROUNDS,
  "data": { "path": "$DATA", "partition": { "scheme": "iid" } },
  "model": { "type": "softmax" },
  "clients": { "count": $SITES },
  "train": { "epochs": 1, "batch_size": 10, "lr": 0.05 },
  "server": { "round_timeout": 900, "register_timeout": 900, "heartbeat": 5 } }
JSON
sed "s/\"count\": $SITES }/\"count\": $SITES, \"simulate\": { \"workers\": 2 } }/" mpi.json > local.json
echo "mpi_sites bench: $SITES sites, $ROUNDS rounds, 2 simulating processes each way; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
mkdir local.d mpi.d
t0=$(date +%s.%N)
(cd local.d && "$FEDNAS" run ../local.json --db run.db --http off > ../local.out 2>&1) ||
  { tail -n 30 local.out; echo "mpi_sites bench: the run without MPI failed"; exit 1; }
t1=$(date +%s.%N)
(cd mpi.d && "$MPIEXEC" --allow-run-as-root --oversubscribe -n 3 "$FEDNAS" run ../mpi.json --db run.db --http off \
  --bind 'tcp://127.0.0.1:*' > ../mpi.out 2>&1) || { tail -n 30 mpi.out; echo "mpi_sites bench: mpirun -n 3 fednas run failed"; exit 1; }
t2=$(date +%s.%N)
grep -q "$SITES sites on MPI ranks 1..2" mpi.out || { tail -n 30 mpi.out; echo "mpi_sites bench: the sites were not on ranks 1..2"; exit 1; }
full() { sqlite3 -batch -noheader "$1" "select count(*) from rounds where participants = $SITES"; }
acc() { sqlite3 -batch -noheader "$1" "select printf('%.4f', test_accuracy) from rounds where round = $ROUNDS"; }
rtime() { sqlite3 -batch -noheader "$1" "select printf('%.2f', avg(ended_at - started_at)) from rounds"; }
printf '\n+-------------------------+-----------------+-----------------+\n'
printf '| %-23s | %15s | %15s |\n' "$SITES sites" "without MPI" "mpirun -n 3"
printf '+-------------------------+-----------------+-----------------+\n'
printf '| %-23s | %15s | %15s |\n' "rounds with every site" "$(full local.d/run.db)/$ROUNDS" "$(full mpi.d/run.db)/$ROUNDS"
printf '| %-23s | %15s | %15s |\n' "final test accuracy" "$(acc local.d/run.db)" "$(acc mpi.d/run.db)"
printf '| %-23s | %15s | %15s |\n' "mean round (s)" "$(rtime local.d/run.db)" "$(rtime mpi.d/run.db)"
printf '| %-23s | %15.1f | %15.1f |\n' "wall, start to end (s)" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
  "$(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }')"
printf '+-------------------------+-----------------+-----------------+\n'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$(full local.d/run.db)" = "$ROUNDS" ] && [ "$(full mpi.d/run.db)" = "$ROUNDS" ] ||
  { echo "mpi_sites bench: a run did not finish its rounds with every site"; exit 1; }
awk -v a="$(acc local.d/run.db)" -v b="$(acc mpi.d/run.db)" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.005) }' ||
  { echo "mpi_sites bench: the accuracies differ by more than 0.005"; exit 1; }
echo "mpi_sites bench: same accuracy with and without MPI"
