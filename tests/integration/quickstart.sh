#!/usr/bin/env bash
# The README's main job: experiments/quickstart.json through `fednas run` (8 client processes,
# 10 rounds) must reach at least 80% test accuracy on Fashion-MNIST.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
"$FEDNAS" run "$SRC/experiments/quickstart.json" --db q.db --http 0 > run.out 2> run.err
rc=$?
cat run.out
[ $rc = 0 ] || { cat run.err; fail "fednas run exited $rc"; }
expect_contains run.out "dashboard at https://127.0.0.1:"
expect_contains run.out "round  10/10"
expect_contains run.out "final test accuracy"
[ "$(sql q.db "select count(*) from rounds")" = 10 ] || fail "expected 10 rounds in the store"
[ "$(sql q.db "select count(*) from clients")" = 8 ] || fail "expected 8 clients in the store"
acc=$(sql q.db "select test_accuracy from rounds where round = 10")
awk -v a="$acc" 'BEGIN { exit !(a >= 0.80) }' || fail "final accuracy $acc is below 0.80"
pass "quickstart reached $acc"
