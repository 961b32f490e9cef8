#!/usr/bin/env bash
# Failing candidates: (1) a learning rate that makes training diverge: NaN candidates are retried
# up to nas.retries times (each retry from another seed), then recorded as failed with the reason,
# and the search goes on to its budget; (2) worker processes killed with SIGKILL mid-evaluation:
# their candidates are retried on fresh workers from the same seed, so the search ends with the
# metrics of an undisturbed run.
. "$(dirname "$0")/lib.sh"
export FEDNAS_THREADS=1
exp() { # exp LR BUDGET TRAIN_SUBSET FILE
  cat > "$4" <<JSON
{
  "name": "nas-retry-test", "seed": 5,
  "data": {"dataset": "fashion-mnist", "train_subset": $3, "val_subset": 256, "test_subset": 256},
  "nas": {
    "space": {"type": "macro", "layers": 2, "ops": ["conv3x3", "sepconv3x3", "maxpool3x3", "identity"],
              "widths": [4, 8], "reductions": 1},
    "strategy": {"name": "random"},
    "budget": $2, "epochs": 1, "workers": 2, "retries": 1, "top_k": 1, "retrain_epochs": 1,
    "batch_size": 32, "lr": $1
  }
}
JSON
}

exp 100 6 512 "$WORK/nan.json"
"$FEDNAS" nas "$WORK/nan.json" --db "$WORK/nan.db" --quiet > "$WORK/nan.log" 2>&1 || { cat "$WORK/nan.log"; fail "diverging search did not finish"; }
rows=$(sql "$WORK/nan.db" "SELECT count(*) FROM nas_candidates WHERE tell_seq IS NOT NULL")
[ "$rows" = 6 ] || fail "expected all 6 candidates told, got $rows"
nf=$(sql "$WORK/nan.db" "SELECT count(*) FROM nas_candidates WHERE status = 'failed' AND attempts = 2 AND diverged = 2 AND reason LIKE 'diverged:%'")
[ "$nf" -ge 1 ] || { sql "$WORK/nan.db" "SELECT seq, status, attempts, reason FROM nas_candidates"; fail "no candidate failed for good after 2 diverged attempts"; }
bad=$(sql "$WORK/nan.db" "SELECT count(*) FROM nas_candidates WHERE status = 'failed' AND attempts <> 2")
[ "$bad" = 0 ] || fail "$bad failed candidates were not retried exactly once"
expect_contains "$WORK/nan.log" "FAILED  after 2 attempts: diverged"
[ "$(sql "$WORK/nan.db" "SELECT status FROM runs WHERE id = 1")" = done ] || fail "the search did not go on to the end"
pass "diverging candidates: $nf failed for good after 1 retry with the reason; the search finished its budget"

exp 0.05 4 4096 "$WORK/ok.json"
"$FEDNAS" nas "$WORK/ok.json" --db "$WORK/ref.db" --quiet > "$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; fail "reference search failed"; }
"$FEDNAS" nas "$WORK/ok.json" --db "$WORK/kw.db" --quiet > "$WORK/kw.log" 2>&1 &
P=$!; PIDS+=($P)
killed=0
for ((i = 0; i < 600 && killed == 0; i++)); do
  if [ "$(sql "$WORK/kw.db" "SELECT count(*) FROM nas_candidates WHERE status = 'running'" 2>/dev/null || echo 0)" -ge 2 ]; then
    for w in $(pgrep -P $P); do kill -9 "$w" && killed=$((killed + 1)); done
  fi
  sleep 0.02
done
[ "$killed" -ge 1 ] || fail "found no worker process to kill"
wait_exit $P 120 || { cat "$WORK/kw.log"; fail "the search did not survive its workers' deaths"; }
died=$(sql "$WORK/kw.db" "SELECT count(*) FROM nas_candidates WHERE reason LIKE '%died: killed by signal 9%' AND status = 'done' AND attempts = 2")
[ "$died" -ge 1 ] || { sql "$WORK/kw.db" "SELECT seq, status, attempts, reason FROM nas_candidates"; fail "no candidate was retried after its worker died"; }
Q="SELECT seq, hash, status, printf('%.17g', val_accuracy), printf('%.17g', val_loss), params FROM nas_candidates ORDER BY seq"
[ "$(sql "$WORK/ref.db" "$Q")" = "$(sql "$WORK/kw.db" "$Q")" ] || fail "killing workers changed the search's results"
pass "$killed workers killed: $died candidates retried on fresh workers, results equal to the undisturbed run"

# The hash cache: a space with two canonical genomes, five random draws: every repeat of a
# (hash, budget) already evaluated takes its metrics from the store instead of a worker.
cat > "$WORK/cache.json" <<'JSON'
{
  "name": "nas-cache-test", "seed": 3,
  "data": {"dataset": "fashion-mnist", "train_subset": 256, "val_subset": 128, "test_subset": 128},
  "nas": {
    "space": {"type": "macro", "layers": 1, "ops": ["conv3x3", "maxpool3x3"], "widths": [4], "reductions": 0},
    "strategy": {"name": "random"},
    "budget": 5, "epochs": 1, "workers": 2, "retries": 0, "top_k": 1, "retrain_epochs": 1, "batch_size": 32, "lr": 0.05
  }
}
JSON
"$FEDNAS" nas "$WORK/cache.json" --db "$WORK/cache.db" --quiet > "$WORK/cache.log" 2>&1 || { cat "$WORK/cache.log"; fail "cache search failed"; }
distinct=$(sql "$WORK/cache.db" "SELECT count(DISTINCT hash) FROM nas_candidates")
cached=$(sql "$WORK/cache.db" "SELECT count(*) FROM nas_candidates WHERE worker = 'cache' AND cached_from IS NOT NULL")
[ "$distinct" -le 2 ] && [ "$cached" = $((5 - distinct)) ] || fail "$distinct distinct genomes but $cached cache hits (want 5 - distinct)"
mismatch=$(sql "$WORK/cache.db" "SELECT count(*) FROM nas_candidates c JOIN nas_candidates s ON s.run_id = c.run_id AND s.seq = c.cached_from
  WHERE c.hash <> s.hash OR c.val_accuracy <> s.val_accuracy OR c.params <> s.params OR s.worker = 'cache'")
[ "$mismatch" = 0 ] || fail "cached candidates do not carry their source's metrics"
pass "hash cache: $cached of 5 candidates reused an earlier evaluation ($distinct evaluated)"
