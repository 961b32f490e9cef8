#!/usr/bin/env bash
# Issue 12, model poisoning: one of five sites sends Gaussian noise of std 10 as its update
# (hostile_client poison noise 10: well-formed, finite, the right size, an honest sample count,
# so every check the server makes passes). Under FedAvg it takes the model to near chance within
# two rounds; median, trimmed mean and Krum keep it learning. The small version of
# tests/bench/poison.sh (which also measures the clean runs and the distance between models).
source "$(dirname "$0")/lib.sh"
: "${HOSTILE_CLIENT:?set HOSTILE_CLIENT to the hostile_client test program}"
POISON_ROUNDS=2 POISON_CLEAN=0 POISON_STRATEGIES="fedavg median trimmed_mean krum" POISON_ATTACKS="noise:10" \
  bash "$SRC/tests/bench/poison.sh" "$FEDNAS" "$HOSTILE_CLIENT" > "$WORK/table.txt" 2>&1 ||
  { cat "$WORK/table.txt"; fail "a poisoning run failed"; }
cat "$WORK/table.txt"
acc() { awk -v s="$1" '$1 == s && $2 == "noise:10" { print $4 }' "$WORK/table.txt"; }
a=$(acc fedavg)
awk -v a="$a" 'BEGIN { exit !(a != "" && a < 0.4) }' ||
  fail "FedAvg kept accuracy $a under a noise-sending site: the attack (or this test) is broken"
for s in median trimmed_mean krum; do
  b=$(acc $s)
  awk -v a="$b" 'BEGIN { exit !(a != "" && a > 0.65) }' || fail "$s reached only accuracy $b with one poisoning site of five"
done
pass "one poisoning site of five: FedAvg $a; median $(acc median), trimmed mean $(acc trimmed_mean), Krum $(acc krum)"
