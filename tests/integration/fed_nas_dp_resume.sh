#!/usr/bin/env bash
# Central DP in a federated search: a round's noised supernet leaves the server (its paths go to
# the sites to be scored) before the round is committed. A server SIGKILLed while scoring round 2
# has released that round's noise without committing it; the resumed server runs round 2 again
# with fresh noise. Both releases must be charged: the round stores dp_releases = 2, the resumed
# server says so, and every round's epsilon equals `fednas privacy` over all the releases up to
# it (each at the sampling rate its round recorded).
#
# Scoring must last: as in fed_nas_resume.sh, a ninth site is registered and then frozen
# (SIGSTOP); it is dealt a path every round, so every round's scoring waits half of round_timeout
# (2 s) for it before going on without it.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fed_nas_lib.sh"
cd "$WORK"
fed_nas_blobs 2700 300
cat > exp.json <<'JSON'
{ "name": "it-fed-nas-dp-resume", "seed": 9, "rounds": 4,
  "data": { "dataset": "csv", "path": "train.csv", "test": "test.csv", "features": 16, "classes": 3 },
  "clients": { "count": 8, "min_fit": 4 },
  "train": { "epochs": 1, "batch_size": 16, "lr": 0.05 },
  "evaluate": { "holdout": 0.2, "clients_fraction": 1 },
  "dp": { "clip": 5.0, "noise_multiplier": 0.8, "delta": 1e-5 },
  "server": { "round_timeout": 2, "register_timeout": 30, "heartbeat": 60 },
  "nas": {
    "space": { "type": "macro", "layers": 3, "ops": ["conv3x3", "maxpool3x3", "identity"],
               "widths": [4, 8], "batchnorm": "search", "reductions": 1 },
    "strategy": { "name": "evolution", "population": 4, "sample": 2 },
    "budget": 12 } }
JSON
fed_nas_start_frozen exp.json 9
# Kill while round 2 is being scored: its release is stored, its round is not.
hit=
for ((t = 0; t < 2400; t++)); do
  if [ "$(sql k.db "select phase || ':' || phase_round from runs where id = 1" 2>/dev/null)" = "federated_evaluation:2" ] &&
     [ "$(sql k.db "select count(*) from rounds" 2>/dev/null)" = 1 ]; then
    kill -9 $S1; hit=1; break
  fi
  sleep 0.05
done
wait $S1 2>/dev/null
[ -n "$hit" ] || fail "the server never reached the scoring of round 2 (phase: $(sql k.db 'select phase, phase_round from runs'))"
kill -9 $FROZEN; kill -CONT $FROZEN 2>/dev/null; wait $FROZEN 2>/dev/null
[ "$(sql k.db "select count(*) from rounds")" = 1 ] || fail "round 2 was committed before the kill"
[ "$(sql k.db "select cast(value as int) from round_metrics where round = 2 and name = 'dp_releases'")" = 1 ] ||
  fail "round 2's release was not stored before its paths were sent to be scored"

"$FEDNAS" server --resume 1 --keys keys --bind "$EP" --db k.db --http off > s2.out 2> s2.err &
PIDS+=($!); S2=$!
wait_exit $S2 240 || fail "resumed server failed: $(tail -20 s2.err)"
expect_contains s2.err "resuming: 1 noised model(s) of the round after the last committed one were sent to sites"
[ "$(sql k.db "select group_concat(round) from (select round from rounds order by round)")" = "1,2,3,4" ] ||
  fail "rounds after resume: $(sql k.db 'select group_concat(round) from rounds')"
[ "$(sql k.db "select group_concat(cast(value as int)) from (select value from round_metrics where name = 'dp_releases' order by round)")" = "1,2,1,1" ] ||
  fail "releases per round: $(sql k.db "select group_concat(round || '=' || value) from round_metrics where name = 'dp_releases'")"
# Every round's epsilon is the accountant's over all releases so far (rounds' rates may differ).
total=0
for r in 1 2 3 4; do
  n=$(sql k.db "select cast(value as int) from round_metrics where round = $r and name = 'dp_releases'")
  q=$(sql k.db "select value from round_metrics where round = $r and name = 'sampling_rate'")
  total=$((total + n))
  [ "$(sql k.db "select count(distinct value) from round_metrics where name = 'sampling_rate' and round <= $r")" = 1 ] ||
    fail "rounds 1-$r recorded different sampling rates; this test's check assumes one"
  want=$("$FEDNAS" privacy --q "$q" --sigma 0.8 --steps "$total" --delta 1e-5 | awk '/^epsilon:/ { print $2 }')
  eps=$(sql k.db "select value from round_metrics where round = $r and name = 'epsilon'")
  expect_rel_close "$eps" "$want" 1e-4 "round $r: epsilon $eps, but $total releases were made up to it ($want)"
done
pass "a federated search killed while scoring round 2 under DP charged both of that round's releases ($total in all)"
