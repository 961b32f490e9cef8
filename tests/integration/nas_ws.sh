#!/usr/bin/env bash
# `"evaluation": "weight_sharing"`: a small search trains one supernet, scores every candidate
# with it (stored like standalone results, worker "supernet:0"), retrains the top k from scratch,
# and gives the same scores when run again with the same seed.
. "$(dirname "$0")/lib.sh"
export FEDNAS_THREADS=1
cat > "$WORK/exp.json" <<'JSON'
{
  "name": "nas-ws-test",
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
Q="SELECT seq, hash, status, worker, printf('%.17g', val_accuracy), printf('%.17g', val_loss), params
   FROM nas_candidates WHERE run_id = 1 ORDER BY seq"
for run in a b; do
  "$FEDNAS" nas "$WORK/exp.json" --db "$WORK/$run.db" --quiet > "$WORK/$run.log" 2>&1 ||
    { cat "$WORK/$run.log"; fail "weight-sharing search $run failed"; }
done
expect_contains "$WORK/a.log" "supernet: 20 steps"
[ "$(sql "$WORK/a.db" "SELECT count(*) FROM nas_candidates WHERE status = 'done'")" = 8 ] || fail "8 done candidates expected"
[ "$(sql "$WORK/a.db" "SELECT count(*) FROM nas_candidates WHERE worker = 'supernet:0'")" -ge 1 ] ||
  fail "no candidate was scored by the supernet"
[ "$(sql "$WORK/a.db" "SELECT count(*) FROM nas_candidates WHERE val_accuracy BETWEEN 0 AND 1 AND val_loss > 0
                         AND params > 0 AND latency_ms > 0")" = 8 ] || fail "candidates lack scores"
[ "$(sql "$WORK/a.db" "SELECT count(DISTINCT val_loss) FROM nas_candidates")" -ge 2 ] ||
  fail "every candidate got the same score"
pass "weight-sharing search: 8 candidates scored by the supernet"
[ "$(sql "$WORK/a.db" "SELECT count(*) FROM nas_final WHERE test_accuracy > 0 AND length(weights) > 0")" = 1 ] ||
  fail "the top candidate was not retrained"
pass "top 1 retrained from scratch"
[ "$(sql "$WORK/a.db" "$Q")" = "$(sql "$WORK/b.db" "$Q")" ] || fail "the same seed gave other scores"
pass "same seed, same scores"
