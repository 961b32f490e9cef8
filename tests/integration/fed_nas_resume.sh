#!/usr/bin/env bash
# A federated search's server killed with SIGKILL after its second round and resumed with
# --resume: the supernet comes back from the round's checkpoint, the strategy is rebuilt by
# replaying the stored candidates (the server checks each replayed proposal's hash), the sites
# rejoin by themselves, and the run ends with every round and every candidate of its budget,
# the committed ones unchanged.
#
# The kill needs rounds that last: a ninth site (clients.count is 8, so a resumed server does not
# wait for it) registers first and is then frozen (SIGSTOP). Selected
# every round, it makes each round wait out round_timeout (1 s) for its update and its first
# evaluation, so a round cannot end inside the test's polling, on any machine; heartbeats are slow
# enough that the server keeps it in the draw.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fed_nas_lib.sh"
cd "$WORK"
fed_nas_blobs 2700 300
cat > exp.json <<'JSON'
{ "name": "it-fed-nas-resume", "seed": 8, "rounds": 5,
  "data": { "dataset": "csv", "path": "train.csv", "test": "test.csv", "features": 16, "classes": 3 },
  "clients": { "count": 8, "min_fit": 4 },
  "train": { "epochs": 1, "batch_size": 16, "lr": 0.05 },
  "evaluate": { "holdout": 0.2, "clients_fraction": 1 },
  "server": { "round_timeout": 1, "register_timeout": 30, "heartbeat": 60 },
  "nas": {
    "space": { "type": "macro", "layers": 3, "ops": ["conv3x3", "maxpool3x3", "identity"],
               "widths": [4, 8], "batchnorm": "search", "reductions": 1 },
    "strategy": { "name": "evolution", "population": 4, "sample": 2 },
    "budget": 12 } }
JSON
fed_nas_start_frozen exp.json 8
for ((t = 0; t < 1200; t++)); do
  [ "$(sql k.db "select count(*) from rounds" 2>/dev/null)" -ge 2 ] 2>/dev/null && break; sleep 0.05
done
kill -9 $S1; wait $S1 2>/dev/null
kill -9 $FROZEN; kill -CONT $FROZEN 2>/dev/null; wait $FROZEN 2>/dev/null
done_rounds=$(sql k.db "select count(*) from rounds")
[ "$done_rounds" -ge 2 ] && [ "$done_rounds" -lt 5 ] || fail "killed after $done_rounds rounds (expected 2-4)"
[ "$(sql k.db "select round from checkpoints")" = "$done_rounds" ] || fail "checkpoint and committed rounds differ"
before=$(sql k.db "select group_concat(seq || ':' || hash || ':' || val_accuracy, ' ') from (select * from nas_candidates order by seq)")
ncand=$(sql k.db "select count(*) from nas_candidates")
[ "$ncand" = $((4 * (done_rounds < 3 ? done_rounds : 3))) ] || fail "$ncand candidates after $done_rounds rounds"

"$FEDNAS" server --resume 1 --keys keys --bind "$EP" --db k.db --http off > s2.out 2> s2.err &
PIDS+=($!); S2=$!
wait_exit $S2 240 || fail "resumed server failed: $(tail -20 s2.err)"
expect_contains s2.err "resuming federated search 1 after round $done_rounds ($ncand candidates asked, $ncand told)"
[ "$(sql k.db "select group_concat(round) from (select round from rounds order by round)")" = "1,2,3,4,5" ] ||
  fail "rounds after resume: $(sql k.db 'select group_concat(round) from rounds')"
[ "$(sql k.db "select status from runs")" = done ] || fail "resumed run not done"
[ "$(sql k.db "select count(*) from nas_candidates where status = 'done'")" = 12 ] ||
  fail "candidates after resume: $(sql k.db 'select seq, status, worker from nas_candidates')"
[ "$(sql k.db "select count(distinct seq) from nas_candidates")" = 12 ] || fail "candidate rows repeated"
after=$(sql k.db "select group_concat(seq || ':' || hash || ':' || val_accuracy, ' ') from (select * from nas_candidates where seq < $ncand order by seq)")
[ "$before" = "$after" ] || fail "committed candidates changed: $before / $after"
[ "$(sql k.db "select count(*) from nas_final where rank = 1")" = 1 ] || fail "no result after resume"
for i in 0 1 2 3 4 5 6 7; do expect_contains "client-k-$i.out" "rejoining"; done
pass "federated search resumed after round $done_rounds and finished its 5 rounds and 12 candidates"
