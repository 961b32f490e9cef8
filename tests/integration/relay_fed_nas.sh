#!/usr/bin/env bash
# A federated search through the relay tier: a server whose sites are two relays (two clients
# each) and two direct clients. The server deals each round's candidate paths to its four sites;
# a relay passes its path's train message down unchanged, its clients train that path, and the
# relay forwards their example-weighted mean, so a relay is one site of the search. Candidates are
# scored by federated evaluation through the relays too. The rounds must commit with every
# client's examples, every candidate must be scored, and the best architecture must learn.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fed_nas_lib.sh"
cd "$WORK"
fed_nas_blobs 2400 600
cat > exp.json <<'JSON'
{ "name": "it-relay-fed-nas", "seed": 7, "rounds": 6,
  "data": { "dataset": "csv", "path": "train.csv", "test": "test.csv", "features": 16, "classes": 3 },
  "clients": { "count": 4 },
  "train": { "epochs": 2, "batch_size": 16, "lr": 0.05, "optimizer": { "type": "sgd", "momentum": 0.9 } },
  "evaluate": { "holdout": 0.2, "clients_fraction": 1 },
  "server": { "round_timeout": 120, "register_timeout": 60, "heartbeat": 1 },
  "nas": {
    "space": { "type": "macro", "layers": 2, "ops": ["conv3x3", "sepconv3x3", "identity"],
               "widths": [8, 16], "batchnorm": "search", "reductions": 0 },
    "strategy": { "name": "evolution", "population": 2, "sample": 2 },
    "budget": 6 } }
JSON
"$FEDNAS" keys init keys >/dev/null || fail "keys init"
for r in a b; do
  "$FEDNAS" keys site keys "relay-$r" >/dev/null || fail "keys site relay-$r"
  "$FEDNAS" keys init "rkeys-$r" >/dev/null || fail "keys init rkeys-$r"
  for c in 1 2; do "$FEDNAS" keys site "rkeys-$r" "site-$r$c" >/dev/null || fail "kit site-$r$c"; done
done
for c in d1 d2; do "$FEDNAS" keys site keys "site-$c" >/dev/null || fail "kit site-$c"; done

OPENBLAS_NUM_THREADS=1 "$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db run.db --http off \
  > server.out 2> server.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
for r in a b; do
  "$FEDNAS" relay --kit "keys/sites/relay-$r" --keys "rkeys-$r" --connect "$EP" --bind 'tcp://127.0.0.1:*' \
    --heartbeat 1 --clients 2 > "relay-$r.out" 2> "relay-$r.err" &
  PIDS+=($!); eval "RELAY_${r}_PID=$!"
done
RA=$(wait_for_line relay-a.out 'listening on tcp://127\.0\.0\.1:[0-9]+' 30 | cut -d' ' -f3)
RB=$(wait_for_line relay-b.out 'listening on tcp://127\.0\.0\.1:[0-9]+' 30 | cut -d' ' -f3)
k=0
for c in a1 a2 b1 b2 d1 d2; do
  case $c in a*) ep=$RA kit=rkeys-a/sites/site-$c ;; b*) ep=$RB kit=rkeys-b/sites/site-$c ;; *) ep=$EP kit=keys/sites/site-$c ;; esac
  OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$ep" --kit "$kit" --data train.csv --shard "$k/6" --seed 7 \
    > "client-$c.out" 2>&1 &
  PIDS+=($!); k=$((k + 1))
done
pass "server at $EP, relay A at $RA, relay B at $RB, two direct sites"

wait_exit $SERVER 300; rc=$?
[ $rc = 0 ] || { tail -30 server.err relay-*.err; fail "server exited $rc"; }
for r in a b; do
  eval "pid=\$RELAY_${r}_PID"
  wait_exit "$pid" 30; rc=$?
  [ $rc = 0 ] || { tail -20 "relay-$r.err"; fail "relay $r exited $rc"; }
done
[ "$(sql run.db "select group_concat(round) from (select round from rounds order by round)")" = "1,2,3,4,5,6" ] ||
  fail "rounds: $(sql run.db 'select group_concat(round) from rounds')"
[ "$(sql run.db "select group_concat(name) from (select name from clients order by name)")" = "relay-a,relay-b,site-d1,site-d2" ] ||
  fail "the server's sites should be the two relays and the two direct sites: $(sql run.db 'select name from clients')"
# 6 candidates over the first 3 rounds, 2 a round, each trained by 2 of the 4 sites
[ "$(sql run.db "select count(*) from nas_candidates where status = 'done' and val_accuracy between 0 and 1")" = 6 ] ||
  fail "candidates: $(sql run.db 'select seq, status, val_accuracy, reason from nas_candidates')"
[ "$(grep -c ', 2 sites): fed acc' server.err)" = 6 ] || fail "each candidate should train on 2 sites: $(grep 'fed acc' server.err)"
# Every round carries all six clients' training examples: a relay's update counts its two clients'.
n=$(sum_training_samples client-*.out)
[ "$n" -gt 0 ] || fail "the clients did not log their sample counts"
held=$(grep -ohE 'training on [0-9]+ samples' client-*.out | awk '{ s += int($3 * 0.2) } END { print s + 0 }')
total=$((n - held))
[ "$(sql run.db "select count(*) from rounds where samples = $total and participants = 4")" = 6 ] ||
  fail "each round should commit the 4 sites' $total examples: $(sql run.db 'select round, participants, samples from rounds')"
# Candidates are scored by federated evaluation: through a relay, its two clients answer.
for r in a b; do
  grep -qE 'forwarded the mean of 2 of 2 client updates' "relay-$r.err" || fail "relay $r forwarded no full update: $(tail -5 relay-$r.err)"
done
acc=$(sql run.db "select test_accuracy from nas_final where rank = 1")
awk -v a="$acc" 'BEGIN { exit !(a > 0.6) }' || fail "the best architecture tests at $acc (chance is 0.33)"
pass "a federated search through 2 relays: 6 rounds, 6 candidates, $total examples a round, best tests at $acc"
