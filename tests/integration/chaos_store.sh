#!/usr/bin/env bash
# The run store's disk fails under a running server: it fills up (a 1 MiB tmpfs), or the store is
# read-only when a killed run is resumed (the tmpfs remounted ro). Each time the server must say
# what happened, where, and what to do, exit non-zero, and lose no committed round (sqlite3 reads
# them back); once the disk is fixed, --resume finishes the run with the very model an
# uninterrupted run reaches. Mounts live in a private mount namespace (unshare -m): nothing leaks
# to the machine. Needs root (mount); skipped (77) where mounting is not allowed.
if [ -z "${CHAOS_STORE_NS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "skipped: needs root to mount a small file system"; exit 77; }
  unshare -m --propagation private true 2>/dev/null || { echo "skipped: unshare -m is not allowed here"; exit 77; }
  CHAOS_STORE_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"
# The mounts go before the scratch folder does (its processes first: they hold files there).
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; cd /; umount "$WORK/full" "$WORK/ro" 2>/dev/null; cleanup' EXIT
export OPENBLAS_NUM_THREADS=1 FEDNAS_THREADS=1
cd "$WORK"
python3 - <<'PY'
import random
def gen(path, rows, seed):
    r = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            y = r.randrange(3)
            x = [r.gauss(2.0 * y if i % 3 == y % 3 else -1.0, 1.5) for i in range(8)]
            f.write(",".join(f"{v:.5f}" for v in x) + f",{y}\n")
for i in range(3):
    gen(f"site-{i}.csv", 600, i + 1)
gen("test.csv", 1000, 9)
PY
# FedAdam: the checkpoint holds the model and two moment vectors (18,051 values each), about
# 217 kB a round, so a 1 MiB store fills within a few rounds.
cat > exp.json <<JSON
{ "name": "chaos-store", "seed": 31, "rounds": 8,
  "data": { "dataset": "csv", "features": 8, "classes": 3, "test": "$WORK/test.csv" },
  "model": { "type": "mlp", "hidden": [128, 128] },
  "clients": { "count": 3 },
  "strategy": { "name": "fedadam", "server_lr": 0.01 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.05 },
  "server": { "round_timeout": 60, "register_timeout": 60, "heartbeat": 1 } }
JSON
"$FEDNAS" keys init keys >/dev/null
for i in 0 1 2; do "$FEDNAS" keys site keys "site-$i" >/dev/null; done

CL=()
start_clients() { # ENDPOINT TAG
  local i
  for i in 0 1 2; do
    "$FEDNAS" client --connect "$1" --kit "keys/sites/site-$i" --data "site-$i.csv" > "client-$2-$i.out" 2>&1 &
    PIDS+=($!); CL+=($!)
  done
}
stop_clients() { local c; for c in "${CL[@]}"; do kill "$c" 2>/dev/null; done; for c in "${CL[@]}"; do wait "$c" 2>/dev/null; done; CL=(); }
# serve TAG ARGS...: a server in the background (its pid in SRV) with its own clients.
serve() {
  local tag=$1; shift
  "$FEDNAS" server "$@" --keys keys --bind 'tcp://127.0.0.1:*' --http off > "$tag.out" 2> "$tag.err" &
  SRV=$!; PIDS+=($SRV)
  local ep
  ep=$(wait_for_line "$tag.out" 'tcp://127\.0\.0\.1:[0-9]+' 60)
  start_clients "$ep" "$tag"
}
rounds_list() { sql "$1" "select coalesce(group_concat(round), '') from (select round from rounds where run_id = 1 order by round)"; }
model() { sql "$1" "select hex(params) || hex(state) from checkpoints where run_id = 1" | md5sum; }

serve ref exp.json --db ref.db
wait_exit $SRV 300 || fail "reference run failed: $(tail -5 ref.err)"
stop_clients
[ "$(rounds_list ref.db)" = 1,2,3,4,5,6,7,8 ] || fail "reference incomplete"

# 1. A full disk: the round that does not fit is not committed, the ones before it are kept.
mkdir full && mount -t tmpfs -o size=1m tmpfs full || { echo "skipped: cannot mount a tmpfs"; exit 77; }
serve full1 exp.json --db full/s.db
wait_exit $SRV 300; rc=$?
stop_clients
[ $rc != 0 ] && [ $rc != 124 ] || fail "a server whose store filled up should exit non-zero (status $rc)"
msg=$(grep 'fednas: error' full1.err)
echo "$msg"
for want in "database or disk is full" "the disk holding full is full" "free space there" "was not committed" \
            "are safe in the store" "fednas server --resume 1"; do
  expect_contains full1.err "$want"
done
n=$(sql full/s.db "select count(*) from rounds")
[ "$n" -ge 1 ] && [ "$n" -lt 8 ] || fail "the 1 MiB store should hold some rounds but not all 8 (it holds $n)"
[ "$(rounds_list full/s.db)" = "$(seq -s, 1 "$n")" ] || fail "rounds after the full disk: $(rounds_list full/s.db)"
[ "$(sql full/s.db "select round from checkpoints")" = "$n" ] || fail "checkpoint is not round $n"
grep -q "round $((n + 1)) was not committed; rounds 1-$n are safe" full1.err || fail "the error should name round $((n + 1)) and rounds 1-$n"
pass "full disk: exit $rc after round $n, rounds 1-$n intact"
# Space again: the run goes on from round n and ends with the uninterrupted run's model.
mount -o remount,size=64m full
serve full2 --resume 1 --db full/s.db
wait_exit $SRV 300 || fail "resume after freeing space failed: $(tail -5 full2.err)"
stop_clients
expect_contains full2.err "resuming run 1 after round $n"
[ "$(rounds_list full/s.db)" = 1,2,3,4,5,6,7,8 ] || fail "rounds after resuming: $(rounds_list full/s.db)"
[ "$(model ref.db)" = "$(model full/s.db)" ] || fail "the model after the full disk and a resume differs from the uninterrupted run's"
pass "full disk: resumed after round $n once space was freed; final model identical to the uninterrupted run"

# 2. A read-only store: a run killed after round 2, its disk remounted read-only, then resumed.
mkdir ro && mount -t tmpfs -o size=64m tmpfs ro
serve ro1 exp.json --db ro/s.db
for ((t = 0; t < 3000; t++)); do
  [ "$(sql ro/s.db "select count(*) from rounds" 2>/dev/null)" -ge 2 ] 2>/dev/null && break; sleep 0.01
done
kill -9 $SRV; wait $SRV 2>/dev/null
stop_clients
n=$(sql ro/s.db "select count(*) from rounds")
[ "$n" -ge 2 ] && [ "$n" -lt 8 ] || fail "the run should have been killed between rounds 2 and 8 ($n committed)"
mount -o remount,ro ro
"$FEDNAS" server --resume 1 --keys keys --bind 'tcp://127.0.0.1:*' --db ro/s.db --http off > ro2.out 2> ro2.err; rc=$?
[ $rc != 0 ] || fail "resuming on a read-only store should fail"
cat ro2.err
expect_contains ro2.err "run store ro/s.db"
expect_contains ro2.err "mounted read-only: remount it read-write"
# store.c says "mounted read-only: remount it read-write"; a store opened by open(2) first (to set
# its mode) may fail there with strerror's "Read-only file system": both name the cause.
grep -qi "read-only" ro2.err || fail "resuming on a read-only disk: the error should say read-only"
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db ro/new.db --http off > ro3.out 2> ro3.err; rc3=$?
[ $rc3 != 0 ] || fail "a new run on a read-only disk should fail"
cat ro3.err
expect_contains ro3.err "ro/new.db"
grep -qi "read-only" ro3.err || fail "a new store on a read-only disk: the error should say read-only"
mount -o remount,rw ro
[ "$(rounds_list ro/s.db)" = "$(seq -s, 1 "$n")" ] || fail "rounds after the read-only attempts: $(rounds_list ro/s.db)"
serve ro4 --resume 1 --db ro/s.db
wait_exit $SRV 300 || fail "resume once writable failed: $(tail -5 ro4.err)"
stop_clients
expect_contains ro4.err "resuming run 1 after round $n"
[ "$(rounds_list ro/s.db)" = 1,2,3,4,5,6,7,8 ] || fail "rounds after resuming: $(rounds_list ro/s.db)"
[ "$(model ref.db)" = "$(model ro/s.db)" ] || fail "the model after the read-only store and a resume differs from the uninterrupted run's"
pass "read-only store: resume refused (exit $rc) and a new run too (exit $rc3), rounds 1-$n kept; once writable the run finished with the uninterrupted run's model"
