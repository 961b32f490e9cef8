#!/usr/bin/env bash
# fednas privacy: epsilon for known cases, sigma for a target, and bad input exits 2.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

# run_ok OUT ARGS...: expects exit 0
run_ok() { local out=$1; shift; "$FEDNAS" privacy "$@" > "$out" 2> err.txt || { cat err.txt; fail "fednas privacy $* exited $?"; }; }
# value FILE KEY: the number after "KEY: "
value() { sed -n "s/^$2: //p" "$1" | head -1; }
# within A B TOL: |A - B| <= TOL
within() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= t) }'; }

"$FEDNAS" privacy --help > help.out || fail "--help exited non-zero"
expect_contains help.out "Usage: fednas privacy"
expect_contains help.out "--target-epsilon"
pass "--help"

# The DP-SGD example: 5.6320 at order 4.7 (Balle et al. conversion), 6.2787 at 4.9 (classic).
run_ok a.out --q 0.01 --sigma 1.1 --steps 10000 --delta 1e-5 --classic
within "$(value a.out epsilon)" 5.63199 0.00001 || { cat a.out; fail "epsilon for q 0.01, sigma 1.1, T 10000"; }
[ "$(value a.out order)" = 4.7 ] || { cat a.out; fail "best order should be 4.7"; }
within "$(value a.out 'epsilon (classic conversion)')" 6.27871 0.00001 || { cat a.out; fail "classic epsilon"; }
# 100 of 1000 clients per round, sigma 1, 100 rounds: about 7.9.
run_ok b.out --q 0.1 --sigma 1.0 --steps 100 --delta 1e-5
within "$(value b.out epsilon)" 7.89926 0.00001 || { cat b.out; fail "epsilon for q 0.1, sigma 1, T 100"; }
[ "$(value b.out order)" = 3.2 ] || { cat b.out; fail "best order should be 3.2"; }
# q = 1 is the plain Gaussian mechanism.
run_ok c.out --q 1 --sigma 1 --steps 1 --delta 1e-5
within "$(value c.out epsilon)" 4.72851 0.00001 || { cat c.out; fail "epsilon for q 1"; }
pass "epsilon for known cases"

# Calibration inverts accounting: the sigma for epsilon 5.6319923685 is 1.1.
run_ok d.out --q 0.01 --steps 10000 --delta 1e-5 --target-epsilon 5.6319923685
within "$(value d.out sigma)" 1.1 0.000005 || { cat d.out; fail "calibrated sigma should be 1.1"; }
run_ok e.out --q 0.1 --steps 100 --delta 1e-5 --target-epsilon 8
S=$(value e.out sigma)
within "$S" 0.993428 0.000005 || { cat e.out; fail "calibrated sigma for epsilon 8"; }
run_ok f.out --q 0.1 --sigma "$S" --steps 100 --delta 1e-5
awk -v e="$(value f.out epsilon)" 'BEGIN { exit !(e <= 8) }' || { cat f.out; fail "the calibrated sigma does not meet the target"; }
pass "calibration"

# Bad input: exit 2 and a message that names the problem.
bad() { # bad TEXT ARGS...
  local text=$1; shift
  "$FEDNAS" privacy "$@" > o.txt 2> e.txt; local rc=$?
  [ $rc = 2 ] || { cat o.txt e.txt; fail "fednas privacy $* exited $rc, expected 2"; }
  expect_contains e.txt "$text"
}
bad "the sampling rate must be in (0, 1]" --q 1.5 --sigma 1 --steps 10 --delta 1e-5
bad "the sampling rate must be in (0, 1]" --q 0 --sigma 1 --steps 10 --delta 1e-5
bad "--q: \"abc\" is not a number" --q abc --sigma 1 --steps 10 --delta 1e-5
bad "--sigma 0: the noise multiplier must be > 0" --q 0.1 --sigma 0 --steps 10 --delta 1e-5
bad "--steps 2.5: expected an integer" --q 0.1 --sigma 1 --steps 2.5 --delta 1e-5
bad "--delta 1: must be in (0, 1)" --q 0.1 --sigma 1 --steps 10 --delta 1
bad "--delta is required" --q 0.1 --sigma 1 --steps 10
bad "--sigma (or --target-epsilon) is required" --q 0.1 --steps 10 --delta 1e-5
bad "not both" --q 0.1 --sigma 1 --steps 10 --delta 1e-5 --target-epsilon 3
bad "--target-epsilon -1: must be > 0" --q 0.1 --steps 10 --delta 1e-5 --target-epsilon -1
bad "unknown option" --q 0.1 --sigma 1 --steps 10 --delta 1e-5 --frobnicate
bad "--sigma needs a value" --q 0.1 --sigma
bad "unexpected argument" --q 0.1 --sigma 1 --steps 10 --delta 1e-5 extra
bad "cannot be reached" --q 1 --steps 1000000 --delta 1e-5 --target-epsilon 0.01
pass "bad input exits 2 with a clear message"
