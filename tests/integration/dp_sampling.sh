#!/usr/bin/env bash
# DP accounting when not every site is online: 3 of the experiment's 4 sites connect, so a cohort
# of 2 samples each online user with probability 2/3, not the configured 2/4. The server logs
# that, records sampling_rate 2/3 each round, and its epsilon is `fednas privacy` at q = 2/3.
# register_timeout 15: three clients loading Fashion-MNIST under ASan on a busy machine took over 4.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-dp-sampling", "seed": 4, "rounds": 2,
  "data": { "partition": { "scheme": "iid" } },
  "model": { "type": "softmax" },
  "clients": { "count": 4, "per_round": 2, "min_fit": 2 },
  "dp": { "clip": 1.0, "noise_multiplier": 1.0, "delta": 1e-5 },
  "train": { "epochs": 1, "batch_size": 50, "lr": 0.1 },
  "server": { "register_timeout": 15, "round_timeout": 120 } }
JSON
"$FEDNAS" keys init keys >/dev/null || fail "keys init"
for s in a b c d; do "$FEDNAS" keys site keys "site-$s" >/dev/null || fail "keys site $s"; done
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db dp.db --http off > server.out 2> server.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
for i in 0 1 2; do
  s=$(echo a b c | cut -d' ' -f$((i + 1)))
  OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$EP" --kit "keys/sites/site-$s" --shard "$i/4" --seed 4 \
    > "client-$s.out" 2>&1 &
  PIDS+=($!)
done
wait_exit $SERVER 120; rc=$?
[ $rc = 0 ] || { cat server.out server.err; fail "server exited $rc"; }
expect_contains server.err "3 of 4 sites connected: privacy accounted at sampling rate 2/3"
for r in 1 2; do
  q=$(sql dp.db "select printf('%.6f', value) from round_metrics where round = $r and name = 'sampling_rate'")
  [ "$q" = 0.666667 ] || fail "round $r: sampling_rate $q, expected 2/3"
done
eps=$(sql dp.db "select value from round_metrics where round = 2 and name = 'epsilon'")
want=$("$FEDNAS" privacy --q 0.6666666667 --sigma 1.0 --steps 2 --delta 1e-5 | awk '/^epsilon:/ { print $2 }')
expect_rel_close "$eps" "$want" 1e-4 "epsilon $eps after 2 rounds, want $want (q = 2/3)"
pass "3 of 4 sites online: accounted at q = 2/3 (epsilon $eps)"
