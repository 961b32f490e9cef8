#!/usr/bin/env bash
# A small standalone search is killed with SIGKILL twice and resumed each time; it must end with
# exactly the candidates (genomes, statuses, tell order) and metrics of an uninterrupted run with
# the same seed, and with the same retrained top-k. Also: export writes JSON + safetensors.
. "$(dirname "$0")/lib.sh"
export FEDNAS_THREADS=1
cat > "$WORK/exp.json" <<'JSON'
{
  "name": "nas-resume-test",
  "seed": 11,
  "data": {"dataset": "fashion-mnist", "train_subset": 1536, "val_subset": 256, "test_subset": 256},
  "nas": {
    "space": {"type": "macro", "layers": 2, "ops": ["conv3x3", "sepconv3x3", "maxpool3x3", "identity"],
              "widths": [4, 8], "reductions": 1},
    "strategy": {"name": "evolution", "population": 4, "sample": 2},
    "budget": 12, "epochs": 1, "workers": 2, "retries": 1, "top_k": 2, "retrain_epochs": 1,
    "batch_size": 32, "lr": 0.05
  }
}
JSON
Q_CAND="SELECT seq, cand_id, hash, genome, status, attempts, reason, tell_seq, cached_from, parent, mutation, budget,
        printf('%.17g', val_accuracy), printf('%.17g', val_loss), printf('%.17g', train_loss), params, flops
        FROM nas_candidates WHERE run_id = 1 ORDER BY seq"
Q_FINAL="SELECT rank, seq, printf('%.17g', test_accuracy), printf('%.17g', test_loss), hex(weights) FROM nas_final
         WHERE run_id = 1 ORDER BY rank"

"$FEDNAS" nas "$WORK/exp.json" --db "$WORK/ref.db" --quiet > "$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; fail "reference search failed"; }
[ "$(sql "$WORK/ref.db" "SELECT count(*) FROM nas_candidates WHERE status = 'done'")" = 12 ] || fail "reference: 12 done candidates expected"
pass "uninterrupted search: 12 candidates"

# done_count DB: finished candidates so far (0 while the store is not created yet)
done_count() { sql "$1" "SELECT count(*) FROM nas_candidates WHERE status = 'done'" 2>/dev/null || echo 0; }
# kill_after DB N PID: SIGKILL PID once N candidates are done (it must still be running then)
kill_after() {
  local i
  for ((i = 0; i < 600; i++)); do
    if [ "$(done_count "$1")" -ge "$2" ]; then
      kill -9 "$3" 2>/dev/null || fail "the search ended before it could be killed at $2 candidates"
      wait "$3" 2>/dev/null
      return 0
    fi
    kill -0 "$3" 2>/dev/null || fail "the search exited before $2 candidates were done"
    sleep 0.05
  done
  fail "no $2 done candidates within 30 s"
}

"$FEDNAS" nas "$WORK/exp.json" --db "$WORK/k.db" --quiet > "$WORK/k1.log" 2>&1 &
P=$!; PIDS+=($P)
kill_after "$WORK/k.db" 3 $P
n1=$(done_count "$WORK/k.db"); r1=$(sql "$WORK/k.db" "SELECT count(*) FROM nas_candidates WHERE status IN ('running','queued')")
[ "$(sql "$WORK/k.db" "SELECT status FROM runs WHERE id = 1")" = running ] || fail "killed run not left running"
pass "killed (SIGKILL) with $n1 done, $r1 queued or running"

"$FEDNAS" nas --resume 1 --db "$WORK/k.db" --quiet > "$WORK/k2.log" 2>&1 &
P=$!; PIDS+=($P)
kill_after "$WORK/k.db" 7 $P
n2=$(done_count "$WORK/k.db")
[ "$(sql "$WORK/k.db" "SELECT status FROM runs WHERE id = 1")" = running ] || fail "second kill came after the end"
pass "resumed and killed again with $n2 done"

"$FEDNAS" nas --resume 1 --db "$WORK/k.db" --quiet > "$WORK/k3.log" 2>&1 || { cat "$WORK/k3.log"; fail "final resume failed"; }
expect_contains "$WORK/k3.log" "(resumed)"
[ "$(sql "$WORK/k.db" "SELECT status FROM runs WHERE id = 1")" = done ] || fail "resumed run not done"

sql "$WORK/ref.db" "$Q_CAND" > "$WORK/ref.cand"
sql "$WORK/k.db" "$Q_CAND" > "$WORK/k.cand"
diff "$WORK/ref.cand" "$WORK/k.cand" > "$WORK/cand.diff" || { head -20 "$WORK/cand.diff"; fail "resumed search differs from the uninterrupted one"; }
[ "$(wc -l < "$WORK/k.cand")" = 12 ] || fail "expected 12 candidate rows"
sql "$WORK/ref.db" "$Q_FINAL" > "$WORK/ref.final"
sql "$WORK/k.db" "$Q_FINAL" > "$WORK/k.final"
[ "$(wc -l < "$WORK/k.final")" = 2 ] || fail "expected 2 retrained models"
cmp -s "$WORK/ref.final" "$WORK/k.final" || fail "retrained top-k differ (accuracy or weights)"
pass "killed twice: same 12 candidates, metrics, tell order and retrained top-2 as the uninterrupted run"

"$FEDNAS" nas export 1 --db "$WORK/k.db" --top 2 --out "$WORK/export" > "$WORK/export.log" 2>&1 || { cat "$WORK/export.log"; fail "export failed"; }
for r in 1 2; do
  [ -s "$WORK/export/rank$r.json" ] && [ -s "$WORK/export/rank$r.safetensors" ] || fail "export rank $r missing"
done
grep -q '"type": "layers"' "$WORK/export/rank1.json" || fail "rank1.json is not a layers model"
want=$(sql "$WORK/k.db" "SELECT length(weights) FROM nas_final WHERE run_id = 1 AND rank = 1")
hdr=$(python3 -c "import struct,sys; d=open(sys.argv[1],'rb').read(); n=struct.unpack('<Q',d[:8])[0]; print(len(d)-8-n)" "$WORK/export/rank1.safetensors")
[ "$hdr" = "$want" ] || fail "rank1.safetensors holds $hdr bytes of weights, the store $want"
pass "export: rank1/rank2 JSON and safetensors ($want bytes of weights)"

# --budget: the same search with budget 7, finished (and its top 2 retrained), then extended to
# 12 with --resume --budget 12, must end as the budget-12 search (2 workers: the controller's
# virtual clock replays the schedule, so the asks the shorter search never made come where the
# longer one made them); a search can only grow, and a new search cannot take --budget.
sed 's/"budget": 12/"budget": 7/' "$WORK/exp.json" > "$WORK/exp7.json"
"$FEDNAS" nas "$WORK/exp7.json" --db "$WORK/x.db" --quiet > "$WORK/x1.log" 2>&1 || { cat "$WORK/x1.log"; fail "budget-7 search failed"; }
[ "$(sql "$WORK/x.db" "SELECT status || ' ' || (SELECT count(*) FROM nas_final WHERE run_id = 1) FROM runs WHERE id = 1")" = "done 2" ] ||
  fail "the budget-7 search did not finish with its top 2"
expect_exit_of 2 "budget is already 7; a search can only be extended" "$FEDNAS" nas --resume 1 --budget 7 --db "$WORK/x.db"
expect_exit_of 2 "--budget extends a search with --resume" "$FEDNAS" nas "$WORK/exp.json" --budget 12 --db "$WORK/y2.db"
expect_exit_of 2 "--budget needs a number" "$FEDNAS" nas --resume 1 --budget none --db "$WORK/x.db"
# the extension is killed midway: the budget-7 top 2 stay, and a plain resume goes on to 12
"$FEDNAS" nas --resume 1 --budget 12 --db "$WORK/x.db" --quiet > "$WORK/x2.log" 2>&1 &
P=$!; PIDS+=($P)
kill_after "$WORK/x.db" 9 $P
[ "$(sql "$WORK/x.db" "SELECT count(*) FROM nas_final WHERE run_id = 1")" = 2 ] || fail "an interrupted extension lost the top 2"
expect_contains "$WORK/x2.log" "budget 12"
"$FEDNAS" nas --resume 1 --db "$WORK/x.db" --quiet > "$WORK/x3.log" 2>&1 || { cat "$WORK/x3.log"; fail "resuming the extension failed"; }
sql "$WORK/x.db" "$Q_CAND" > "$WORK/x.cand"
diff "$WORK/ref.cand" "$WORK/x.cand" > "$WORK/x.diff" || { head -20 "$WORK/x.diff"; fail "the extended search differs from the budget-12 one"; }
sql "$WORK/x.db" "$Q_FINAL" > "$WORK/x.final"
cmp -s "$WORK/ref.final" "$WORK/x.final" || fail "the extended search's retrained top 2 differ from the budget-12 search's"
[ "$(sql "$WORK/x.db" "SELECT status || ' ' || rounds_planned FROM runs WHERE id = 1")" = "done 12" ] || fail "extended run not done with 12 planned"
pass "--resume --budget: a finished budget-7 search extended to 12 (killed midway, resumed) equals the budget-12 search, top 2 included"

# Neither --resume nor --resume --budget touches a search another process is still running.
"$FEDNAS" nas "$WORK/exp.json" --db "$WORK/live.db" --quiet > "$WORK/live.log" 2>&1 &
P=$!; PIDS+=($P)
for ((i = 0; i < 600 && $(done_count "$WORK/live.db") < 1; i++)); do sleep 0.05; done
kill -0 $P 2>/dev/null || fail "the search ended before the resume checks"
expect_exit_of 1 "run 1 is running (pid $P holds" "$FEDNAS" nas --resume 1 --budget 20 --db "$WORK/live.db"
expect_exit_of 1 "stop it first, then resume" "$FEDNAS" nas --resume 1 --db "$WORK/live.db"
[ "$(sql "$WORK/live.db" "SELECT budget FROM nas_runs WHERE run_id = 1")" = 12 ] || fail "a refused --budget changed the budget"
wait $P || fail "the running search failed after the refused resumes"
pass "--resume and --resume --budget refuse a search that is still running"
