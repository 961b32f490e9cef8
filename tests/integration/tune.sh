#!/usr/bin/env bash
# `fednas tune` end to end on a small model and data subset: the plan (--check), bad tune blocks
# (exit 2, FILE:LINE:COL and the key path), a whole search (every trial a NAS candidate row,
# the best recipe and the experiment's own retrained, best.json / report.md / report.json in the
# run folder, `fednas runs` and `fednas nas export` read it, best.json trains with `fednas
# train`), and a search SIGKILLed twice and resumed that ends exactly as the uninterrupted one.
. "$(dirname "$0")/lib.sh"
export FEDNAS_THREADS=1
cat > "$WORK/exp.json" <<'JSON'
{
  "name": "tune-test",
  "seed": 3,
  "data": {"dataset": "fashion-mnist", "train_subset": 4000, "val_subset": 300, "test_subset": 300},
  "model": {"type": "lenet"},
  "train": {"epochs": 3, "batch_size": 32, "lr": 0.05, "optimizer": {"type": "sgd", "momentum": 0.9}},
  "tune": {"trials": 12, "workers": 2, "space": {"warmup": 0}}
}
JSON

# expect_exit CODE TEXT ARGS...: `fednas tune ARGS` exits with CODE and prints TEXT
expect_exit() {
  local want=$1 text=$2 rc=0
  shift 2
  "$FEDNAS" tune "$@" > "$WORK/out.log" 2>&1 || rc=$?
  [ "$rc" = "$want" ] || { cat "$WORK/out.log"; fail "tune $*: exit $rc, expected $want"; }
  expect_contains "$WORK/out.log" "$text"
}

expect_exit 0 "ok: $WORK/exp.json: 12 trials, random+asha, epochs per rung [0.333, 1, 3], 2 workers" "$WORK/exp.json" --check
expect_exit 0 "40 trials, random+asha" "$WORK/exp.json" --check --trials 40
expect_exit 0 "12 trials, evolution, epochs per rung [3]" "$WORK/exp.json" --check --sampler evolution --early-stopping none
expect_exit 2 "--sampler takes" "$WORK/exp.json" --check --sampler grid
pass "--check prints the plan"

sed 's/"space": {"warmup": 0}/"space": {"warmup": 0,\n    "lr": {"log_uniform": [0.1, 0.01]}}/' "$WORK/exp.json" > "$WORK/range.json"
expect_exit 2 "range.json:8:27: tune.space.lr.log_uniform: expected LO < HI" "$WORK/range.json" --db "$WORK/x.db"
sed 's/"workers": 2/"workers": 2, "sampler": "grid"/' "$WORK/exp.json" > "$WORK/sampler.json"
expect_exit 2 "sampler.json:7:51: tune.sampler: expected \"random\" or \"evolution\"" "$WORK/sampler.json" --db "$WORK/x.db"
sed 's/"trials": 12/"trails": 12/' "$WORK/exp.json" > "$WORK/key.json"
expect_exit 2 "key.json:7:12: tune.trails: unknown key" "$WORK/key.json" --db "$WORK/x.db"
sed 's/"lr": 0.05/"lr": -1/' "$WORK/exp.json" > "$WORK/train.json"
expect_exit 2 "train.json:6:" "$WORK/train.json" --db "$WORK/x.db"
expect_exit 2 "--trials needs an integer" "$WORK/exp.json" --trials 0
[ ! -e "$WORK/x.db" ] || fail "a bad experiment created a run store"
pass "bad tune blocks: exit 2 with file, line, column and key path"

"$FEDNAS" tune "$WORK/exp.json" --db "$WORK/ref.db" > "$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; fail "tune failed"; }
[ "$(sql "$WORK/ref.db" "SELECT strategy FROM nas_runs WHERE run_id = 1")" = "tune:random+asha" ] || fail "nas_runs row"
[ "$(sql "$WORK/ref.db" "SELECT count(*) FROM nas_candidates WHERE rung = 0")" = 12 ] || fail "expected 12 trials at rung 0"
[ "$(sql "$WORK/ref.db" "SELECT count(*) FROM nas_candidates WHERE rung = 1")" -ge 4 ] || fail "ASHA promoted < 12/3 trials"
[ "$(sql "$WORK/ref.db" "SELECT count(*) FROM nas_candidates WHERE status != 'done' OR val_accuracy IS NULL")" = 0 ] ||
  fail "a trial is not done"
sql "$WORK/ref.db" "SELECT genome FROM nas_candidates WHERE seq = 0" | grep -q '"lr":' || fail "the genome is not a recipe"
[ "$(sql "$WORK/ref.db" "SELECT count(*) FROM nas_final WHERE run_id = 1")" = 2 ] || fail "expected the best and the baseline retrained"
[ "$(sql "$WORK/ref.db" "SELECT status FROM runs WHERE id = 1")" = done ] || fail "run not done"
D="$WORK/ref-runs/1"
for f in best.json report.md report.json; do [ -s "$D/$f" ] || fail "$D/$f missing"; done
expect_contains "$D/report.md" "| the experiment's own |"
t1=$(sql "$WORK/ref.db" "SELECT printf('%.4f', test_accuracy) FROM nas_final WHERE rank = 1")
expect_contains "$D/report.md" "| $t1 |"
python3 - "$D/report.json" "$D/best.json" <<'PY' || fail "report.json / best.json content"
import json, sys
r = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
assert r["strategy"] == "random+asha" and len(r["trials"]) >= 16, r
assert 0 <= r["best"]["test_accuracy"] <= 1 and 0 <= r["baseline"]["test_accuracy"] <= 1
assert r["best"]["epochs"] == max(t["epochs"] for t in r["trials"])
assert "tune" not in b and b["train"] == r["best"]["train"] and b["model"] == {"type": "lenet"}
assert b["train"]["lr"] == r["best"]["recipe"]["lr"] and b["train"]["epochs"] == 3
PY
pass "12 trials stored as NAS candidates; best.json, report.md, report.json written"

"$FEDNAS" runs --db "$WORK/ref.db" > "$WORK/runs.log" 2>&1 || fail "fednas runs failed"
expect_contains "$WORK/runs.log" "tune-test"
"$FEDNAS" nas export 1 --db "$WORK/ref.db" --top 1 --out "$WORK/export" > "$WORK/export.log" 2>&1 ||
  { cat "$WORK/export.log"; fail "nas export failed"; }
[ -s "$WORK/export/rank1.safetensors" ] || fail "export wrote no weights"
# best.json is an experiment `fednas train` takes (one epoch of it, on the whole data set)
"$FEDNAS" train "$D/best.json" --epochs 1 --quiet > "$WORK/train.log" 2>&1 || { cat "$WORK/train.log"; fail "fednas train best.json failed"; }
expect_contains "$WORK/train.log" "done: test accuracy"
pass "fednas runs, nas export and fednas train read the run and best.json"

# evolution without early stopping: every trial at the full budget, children of the population
sed 's/"tune": {.*}$/"tune": {"trials": 4, "sampler": {"type": "evolution", "population": 2, "sample": 1}}/' \
  "$WORK/exp.json" > "$WORK/evo.json"
"$FEDNAS" tune "$WORK/evo.json" --early-stopping none --no-baseline --db "$WORK/evo.db" --quiet > "$WORK/evo.log" 2>&1 ||
  { cat "$WORK/evo.log"; fail "evolution tune failed"; }
[ "$(sql "$WORK/evo.db" "SELECT count(*) FROM nas_candidates WHERE budget = 3 AND rung = 0 AND status = 'done'")" = 4 ] ||
  fail "evolution: expected 4 trials of 3 epochs"
[ "$(sql "$WORK/evo.db" "SELECT count(*) FROM nas_candidates WHERE seq >= 2 AND parent IN (0, 1) AND mutation != 'random'")" = 2 ] ||
  fail "evolution: trials 2 and 3 are not mutations of the population"
[ "$(sql "$WORK/evo.db" "SELECT group_concat(rank) FROM nas_final")" = 1 ] || fail "--no-baseline retrained the baseline"
pass "evolution, --early-stopping none, --no-baseline"

# done_count DB: finished rows so far (0 before the store exists)
done_count() { sql "$1" "SELECT count(*) FROM nas_candidates WHERE status = 'done'" 2>/dev/null || echo 0; }
kill_after() {
  local i
  for ((i = 0; i < 1200; i++)); do
    if [ "$(done_count "$1")" -ge "$2" ]; then
      kill -9 "$3" 2>/dev/null || fail "the search ended before it could be killed at $2 trials"
      wait "$3" 2>/dev/null
      return 0
    fi
    kill -0 "$3" 2>/dev/null || fail "the search exited before $2 trials were done"
    sleep 0.02
  done
  fail "no $2 done trials within 24 s"
}
"$FEDNAS" tune "$WORK/exp.json" --db "$WORK/k.db" --quiet > "$WORK/k1.log" 2>&1 &
P=$!; PIDS+=($P)
kill_after "$WORK/k.db" 2 $P
[ "$(sql "$WORK/k.db" "SELECT status FROM runs WHERE id = 1")" = running ] || fail "killed run not left running"
expect_exit 2 "drop --trials" --resume 1 --db "$WORK/k.db" --trials 3
"$FEDNAS" tune --resume 1 --db "$WORK/k.db" --quiet > "$WORK/k2.log" 2>&1 &
P=$!; PIDS+=($P)
kill_after "$WORK/k.db" 7 $P
"$FEDNAS" tune --resume 1 --db "$WORK/k.db" > "$WORK/k3.log" 2>&1 || { cat "$WORK/k3.log"; fail "the last resume failed"; }
expect_contains "$WORK/k3.log" "(resumed)"
Q="SELECT seq, cand_id, rung, hash, genome, status, tell_seq, cached_from, parent, mutation, budget,
   printf('%.17g', val_accuracy), printf('%.17g', val_loss) FROM nas_candidates ORDER BY seq"
sql "$WORK/ref.db" "$Q" > "$WORK/ref.rows"
sql "$WORK/k.db" "$Q" > "$WORK/k.rows"
diff "$WORK/ref.rows" "$WORK/k.rows" > "$WORK/rows.diff" || { head -20 "$WORK/rows.diff"; fail "the resumed search differs"; }
QF="SELECT rank, seq, recipe, printf('%.17g', test_accuracy), hex(weights) FROM nas_final ORDER BY rank"
cmp -s <(sql "$WORK/ref.db" "$QF") <(sql "$WORK/k.db" "$QF") || fail "the resumed retraining differs"
python3 -c 'import json, sys; a, b = (json.load(open(f)) for f in sys.argv[1:]); sys.exit(a["train"] != b["train"])' \
  "$D/best.json" "$WORK/k-runs/1/best.json" || fail "best.json's recipe differs after resume"
pass "killed twice (SIGKILL) and resumed: the same trials, metrics, retrained models and best.json"
