#!/usr/bin/env bash
# Search throughput under mpirun: the same random search (the same candidates whatever the
# ranks, so the runs compare like for like) with 1 and with 2 worker ranks (mpirun -n 2 and
# -n 3: rank 0 is the controller), one engine thread each, and for reference the local-process
# search with 2 workers. Prints candidates per hour (search phase: fednas's own "done in", no
# launch or data loading), per CPU-hour (specs/nas.md, cores = workers), and the speedup over
# one worker rank (target: >= 1.7x with 2 ranks on 2 cores). Wall-clock ratios need an otherwise
# idle machine; the CPU seconds per candidate (every rank's, launcher and data loading included)
# do not, and show what MPI costs: equal per-candidate CPU means 2 ranks on 2 idle cores come
# within the tail's idle time of 2x. Never fails on time; fails only when a search does not finish.
#
# Then weight sharing: supernet-training steps per second with 1 rank (plain `fednas nas`, the
# one-process training) and 2 ranks (mpirun -n 2: data-parallel, each rank half of every global
# batch, one MPI_Allreduce per step), alternating A, B, A, B; fednas's own steps/s line, so data
# loading and scoring are not counted.
#
#   build/bench/nas_mpi [FEDNAS_BINARY]      (make bench runs it from build/bench/)
#   NAS_MPI_BENCH_BUDGET=N candidates per search (default 16)
#   NAS_MPI_BENCH_PARTS="search ws" which parts to run (default both)
#   NAS_MPI_BENCH_WS_TRAIN=N training images of the weight-sharing part (default 4096; 1 epoch, batch 64)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
FEDNAS=$(realpath "${1:-$HERE/../fednas}")
BUDGET=${NAS_MPI_BENCH_BUDGET:-16}
PARTS=${NAS_MPI_BENCH_PARTS:-search ws}
WS_TRAIN=${NAS_MPI_BENCH_WS_TRAIN:-4096}
MPIEXEC=$(command -v mpirun || command -v mpiexec || true)
[ -x "$FEDNAS" ] || { echo "nas_mpi bench: no fednas binary at $FEDNAS"; exit 1; }
if [ -z "$MPIEXEC" ] || ! ldd "$FEDNAS" | grep -q libmpi; then
  echo "nas_mpi bench: skipped (fednas built without MPI, or no mpirun)"
  exit 0
fi
WORK=$(mktemp -d /tmp/fednas-bench-nasmpi-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export FEDNAS_THREADS=1
# workers is replaced by the ranks under mpirun; random search asks the same candidates anyway.
cat > "$WORK/exp.json" <<JSON
{
  "name": "bench-nas-mpi",
  "seed": 5,
  "data": {"dataset": "fashion-mnist", "train_subset": 4096, "val_subset": 1024, "test_subset": 256},
  "nas": {
    "space": {"type": "macro", "layers": 3, "ops": ["conv3x3", "sepconv3x3", "maxpool3x3", "identity"],
              "widths": [8, 16], "reductions": 1},
    "strategy": {"name": "random"},
    "budget": $BUDGET, "epochs": 1, "workers": 2, "retries": 0, "top_k": 0,
    "batch_size": 64, "lr": 0.05
  }
}
JSON

# run NAME CMD...: runs a search into $WORK/NAME.db; prints its search seconds and the CPU
# seconds of every process it ran (mpirun waits for its ranks, so theirs count)
run() {
  local name=$1; shift
  TIMEFORMAT=%U+%S
  { time "$@" --db "$WORK/$name.db" --quiet > "$WORK/$name.log" 2>&1; } 2> "$WORK/$name.cpu" ||
    { cat "$WORK/$name.log" >&2; echo "nas_mpi bench: $name failed" >&2; exit 1; }
  echo "$(sed -n 's/^done in \([0-9.]*\)s.*/\1/p' "$WORK/$name.log") $(tail -1 "$WORK/$name.cpu" | awk -F+ '{ print $1 + $2 }')"
}
case " $PARTS " in *" search "*)
echo "fednas nas under mpirun: $BUDGET random candidates (macro, 3 layers, 4096 training / 1024 validation images, 1 epoch)"
echo "FEDNAS_THREADS=1 per worker, $(nproc) cores; before: $(uptime | sed 's/.*load/load/')"
t1=$(run mpi1 "$MPIEXEC" --allow-run-as-root --oversubscribe -n 2 "$FEDNAS" nas "$WORK/exp.json")
t2=$(run mpi2 "$MPIEXEC" --allow-run-as-root --oversubscribe -n 3 "$FEDNAS" nas "$WORK/exp.json")
tl=$(run local2 "$FEDNAS" nas "$WORK/exp.json")
# The same candidates in each (hash order): a like-for-like comparison.
q="SELECT group_concat(hash) FROM (SELECT hash FROM nas_candidates WHERE run_id = 1 ORDER BY seq)"
for n in mpi2 local2; do
  [ "$(sqlite3 "$WORK/mpi1.db" "$q")" = "$(sqlite3 "$WORK/$n.db" "$q")" ] || { echo "nas_mpi bench: $n searched other candidates"; exit 1; }
done
printf "%-28s %7s %7s %10s %14s %7s %11s\n" search workers "wall s" "cand/hour" "cand/CPU-hour" ratio "CPU s/cand"
row() {
  awk -v n="$1" -v w="$2" -v t="${3% *}" -v c="${3#* }" -v ref="${t1% *}" -v b="$BUDGET" \
    'BEGIN { printf "%-28s %7d %7.1f %10.0f %14.0f %6.2fx %11.2f\n", n, w, t, b * 3600 / t, b * 3600 / (t * w), ref / t, c / b }'
}
row "mpirun -n 2 (1 worker rank)" 1 "$t1"
row "mpirun -n 3 (2 worker ranks)" 2 "$t2"
row "local, 2 worker processes" 2 "$tl"
echo "ratio: candidates per hour over 1 worker rank (target >= 1.7x for 2 ranks); $(uptime | sed 's/.*load/load/')"
esac

case " $PARTS " in *" ws "*)
cat > "$WORK/ws.json" <<JSON
{
  "name": "bench-nas-mpi-ws",
  "seed": 5,
  "data": {"dataset": "fashion-mnist", "train_subset": $WS_TRAIN, "val_subset": 256, "test_subset": 64},
  "nas": {
    "space": {"type": "macro", "layers": 3, "ops": ["conv3x3", "sepconv3x3", "maxpool3x3", "identity"],
              "widths": [8, 16], "reductions": 1},
    "strategy": {"name": "random"},
    "budget": 2, "epochs": 1, "workers": 1, "retries": 0, "top_k": 0,
    "batch_size": 64, "lr": 0.05, "evaluation": "weight_sharing"
  }
}
JSON
# ws NAME CMD...: the steps/s that fednas logs for the supernet's training
ws() {
  local name=$1; shift
  "$@" nas "$WORK/ws.json" --db "$WORK/$name.db" --quiet > "$WORK/$name.log" 2>&1 ||
    { cat "$WORK/$name.log" >&2; echo "nas_mpi bench: $name failed" >&2; exit 1; }
  sed -n 's/.*supernet: \([0-9]*\) steps over .*(\([0-9.]*\) steps\/s, \([0-9.]*\) CPU ms\/step.*/\1 \2 \3/p' "$WORK/$name.log"
}
echo
echo "weight sharing: supernet training, $WS_TRAIN images, 1 epoch, global batch 64 (macro, 3 layers, widths 8/16)"
echo "FEDNAS_THREADS=1 per rank, $(nproc) cores; before: $(uptime | sed 's/.*load/load/')"
printf "%-6s %-38s %6s %8s %7s %13s\n" pass training steps "steps/s" ratio "CPU ms/step"
for pass in 1 2; do
  a=$(ws "ws1-$pass" "$FEDNAS")
  b=$(ws "ws2-$pass" "$MPIEXEC" --allow-run-as-root --oversubscribe -n 2 "$FEDNAS")
  awk -v p="$pass" -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    printf "%-6s %-38s %6d %8.2f %6.2fx %13.1f\n", p, "1 rank (one process)", x[1], x[2], 1, x[3];
    printf "%-6s %-38s %6d %8.2f %6.2fx %13.1f\n", p, "2 ranks (mpirun -n 2, data-parallel)", y[1], y[2], y[2] / x[2], y[3] }'
done
echo "ratio: steps/s over 1 rank in the same pass; CPU ms/step: every rank's CPU time in the training per step"
echo "(equal CPU per step: 2 ranks on 2 idle cores come close to 2x); $(uptime | sed 's/.*load/load/')"
esac
