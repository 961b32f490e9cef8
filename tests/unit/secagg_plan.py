#!/usr/bin/env python3
"""Independent check of crypto/secagg_params.c (secagg_plan_plus): the same union bounds
evaluated in log space with Python floats, printing the (k, t_nb, log2 abort, log2 privacy)
that tests/unit/test_secagg_plan.c expects. Targets: abort 2^-20, privacy 2^-40."""
from math import lgamma, log, exp

def lpmf(k, i, p):
    if p <= 0: return 0.0 if i == 0 else -1e300
    if p >= 1: return 0.0 if i == k else -1e300
    return lgamma(k + 1) - lgamma(i + 1) - lgamma(k - i + 1) + i * log(p) + (k - i) * log(1 - p)

def lse(xs):
    m = max(xs)
    return -1e300 if m < -1e299 else m + log(sum(exp(x - m) for x in xs))

def below(k, t, p): return lse([lpmf(k, i, p) for i in range(0, t)]) if t > 0 else -1e300
def at_least(k, t, p): return lse([lpmf(k, i, p) for i in range(t, k + 1)]) if t <= k else -1e300

def plan(n, d, g, ta=-20, tp=-40):
    for k in range(2, n - 1, 2):
        if d + g > 0 and (log(n) + (k // 2) * log(d + g)) / log(2) > tp:
            continue  # split: k/2 consecutive positions without an honest survivor
        for t in range((k + 1) // 2 + 1, k + 2):
            ab = (log(n) + below(k, t, 1 - d)) / log(2)
            if ab > ta: break
            pr = (log(n) + at_least(k, t, g)) / log(2)
            if pr <= tp: return k, t, ab, pr
    return None  # full SecAgg

for case in [(1000, .1, .05), (1000, .05, .05), (100, .1, .05), (10000, .1, .05), (1000, .3, .1), (50, .1, .05),
             (20, .1, .05)]:
    print(case, plan(*case))
print("old default n=1000 k=20 t_nb=14: log2 abort", (log(1000) + below(20, 14, .9)) / log(2))
