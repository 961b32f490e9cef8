#!/usr/bin/env bash
# Many sites on one server (issue 12, load): `fednas run` with 400 simulated sites in ONE worker
# process, each site with its own key pair and CURVE connection, two rounds of FedAvg with every
# site. One worker holds 1,200 ZeroMQ sockets (a DEALER and two monitor ends a site), past
# libzmq's default of 1023 a context, and about 1,600 descriptors: the test runs under a soft
# open-file limit of 1024 (when the hard limit lets fednas raise it), as many systems start.
# tests/bench/sites1000.sh is the 1,000-site version.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
SITES=400
cat > exp.json <<JSON
{ "name": "it-sites-many", "seed": 7, "rounds": 2,
  "data": { "partition": { "scheme": "iid" } },
  "model": { "type": "softmax" },
  "clients": { "count": $SITES, "simulate": { "workers": 1 } },
  "train": { "epochs": 1, "batch_size": 50, "lr": 0.05 },
  "server": { "round_timeout": 300, "register_timeout": 300 } }
JSON
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 4096 ]; then ulimit -Sn 1024; low="soft open-file limit 1024"; else low="open-file limit $hard"; fi
OPENBLAS_NUM_THREADS=1 "$FEDNAS" run exp.json --db run.db --http off > run.out 2> run.err
rc=$?
[ $rc = 0 ] || { tail -n 30 run.out run.err; fail "fednas run with $SITES sites in one worker exited $rc"; }
expect_contains run.out "round   2/2"
[ "$(sql run.db "select status from runs")" = done ] || fail "run not marked done"
[ "$(sql run.db "select count(*) from rounds where participants = $SITES and dropped = 0")" = 2 ] ||
  fail "expected 2 rounds with all $SITES sites: $(sql run.db 'select round, selected, participants, dropped from rounds')"
[ "$(sql run.db "select count(*) from clients where rounds_contributed = 2")" = $SITES ] ||
  fail "expected $SITES clients with 2 rounds each, got $(sql run.db 'select count(*) from clients where rounds_contributed = 2')"
[ "$(sql run.db "select sum(samples) from clients")" = 60000 ] || fail "the sites' shares should cover the 60000 samples"
acc=$(sql run.db "select test_accuracy from rounds where round = 2")
awk -v a="$acc" 'BEGIN { exit !(a > 0.3) }' || fail "round-2 accuracy $acc is not above 0.3"
pass "$SITES sites in one worker ($low): 2 rounds with every site (accuracy $acc)"
