#!/usr/bin/env bash
# Issue 13's search-quality comparison (specs/nas.md): random search, regularized evolution and
# NSGA-II at equal budget over three seeds, then the per-seed tables read back from the stores:
#   - best validation accuracy in each search's history (random vs evolution);
#   - hypervolume of the non-dominated (1 - validation accuracy, parameters / HV_SCALE) points with
#     the reference point (1.0, 1.0) (random vs NSGA-II; evolution's is printed beside them).
# Random search's runs serve both comparisons: every search has the same budget and recipe.
#
#   scripts/nas_compare.sh FEDNAS OUT_DIR [run|report|retrain]   (default: run, then report)
#
# retrain: the best <= 100k-parameter architecture of the nine (by validation accuracy) retrained
# from scratch on all 60,000 training images and tested on the 10,000 test images with `fednas
# train` and the recipe of experiments/fmnist-nas-best-retrain-30.json (30 epochs, SGD Nesterov
# momentum 0.9, weight decay 1e-4, lr 0.05, 1-epoch warmup then cosine, label smoothing 0.1,
# horizontal flip): OUT_DIR/best-retrain.json, .log and .safetensors.
#
# Environment: PREFIX and SPACE (experiments/PREFIX-{random,re,nsga2}-SPACE-s{1,2,3}.json; default
# nas-quarter and macro), HV_SCALE (the parameter count that is 1.0 on the hypervolume's second
# axis: 100000, specs/nas.md's reference for the <= 100k space; another space states its own),
# SEEDS ("1 2 3"), JOBS (searches at once; default all nine), NICE (5), AT (report
# only: the tables over each search's first AT candidates, in ask order; since no strategy's
# proposals depend on the budget, that is exactly a search with budget AT, so searches still
# running can be compared at an equal budget; AT=auto: per seed, the longest finished prefix that
# all three searches of the seed share; default: every candidate done), KINDS (run only: the
# strategies to run, default "random re nsga2"; the tables show "-" for one not run). Each search
# has its own store OUT_DIR/NAME.db and log OUT_DIR/NAME.log; a search already done in its store
# is not run again, and one that was interrupted is resumed (`fednas nas --resume`). BUDGET (run
# only): extend every search to that many evaluations (`fednas nas --resume RUN --budget N`; a
# done search with a smaller budget goes on, ending as a search with budget N from the start).
# FEDNAS_THREADS is 1 unless set.
set -euo pipefail
FEDNAS=$(realpath "${1:?usage: $0 FEDNAS OUT_DIR [run|report]}")
OUT=${2:?usage: $0 FEDNAS OUT_DIR [run|report]}
MODE=${3:-all}
SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-nas-quarter}
SPACE=${SPACE:-macro}
HV_SCALE=${HV_SCALE:-100000}
if ! [[ "$SPACE" =~ ^[a-z0-9]+$ ]] || ! [[ "$HV_SCALE" =~ ^[1-9][0-9]{0,8}$ ]]; then
  echo "nas_compare: SPACE=$SPACE must be a lower-case word and HV_SCALE=$HV_SCALE a parameter count (1..999999999)" >&2
  exit 2
fi
SEEDS=${SEEDS:-1 2 3}
NICE=${NICE:-5}
export FEDNAS_THREADS=${FEDNAS_THREADS:-1}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")

names=()
KINDS=${KINDS:-random re nsga2}
for s in $SEEDS; do for k in $KINDS; do names+=("$PREFIX-$k-$SPACE-s$s"); done; done
JOBS=${JOBS:-${#names[@]}}

# logged NAME WHAT ARGS...: `fednas nas ARGS` at nice NICE, its start and end in OUT/NAME.log;
# returns fednas's status
logged() {
  local name=$1 what=$2 rc=0
  shift 2
  echo "start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)$what" >>"$OUT/$name.log"
  nice -n "$NICE" "$FEDNAS" nas "$@" --quiet >>"$OUT/$name.log" 2>&1 || rc=$?
  echo "end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)$([ "$rc" = 0 ] || echo " exit $rc")" >>"$OUT/$name.log"
  return "$rc"
}
run_one() { # NAME: run (or resume, or extend to BUDGET) one search into its own store
  local name=$1 db="$OUT/$1.db" cfg="$SRC/experiments/$1.json" last run has ext=()
  [ -f "$cfg" ] || { echo "nas_compare: $cfg: no such experiment" >&2; return 2; }
  if [ ! -f "$db" ] || [ -z "$(sqlite3 "$db" "SELECT 1 FROM nas_runs LIMIT 1" 2>/dev/null || true)" ]; then
    echo "$name: starting ($db, log $OUT/$name.log)"
    # a search that stopped (Ctrl-C) or failed is left for the next invocation, not resumed here
    logged "$name" "" "$cfg" --db "$db" || { echo "$name: stopped or failed (see $OUT/$name.log)"; return 0; }
  fi
  last=$(sqlite3 "$db" "SELECT r.id || ' ' || r.status || ' ' || n.budget FROM runs r JOIN nas_runs n ON n.run_id = r.id ORDER BY r.id DESC LIMIT 1" 2>/dev/null || true)
  [ -n "$last" ] || { echo "$name: no search in $db (see $OUT/$name.log)"; return 0; }
  read -r run status has <<< "$last"
  [ -n "${BUDGET:-}" ] && [ "$has" -lt "$BUDGET" ] && ext=(--budget "$BUDGET")
  if [ "$status" = done ] && [ ${#ext[@]} = 0 ]; then
    echo "$name: done in $db (run $run, budget $has)"
  elif [ "$status" = done ]; then
    echo "$name: extending run $run in $db from $has to $BUDGET evaluations"
    logged "$name" " (extend to $BUDGET)" --resume "$run" "${ext[@]}" --db "$db" || echo "$name: stopped or failed"
  else
    echo "$name: resuming run $run in $db"
    logged "$name" " (resume)" --resume "$run" "${ext[@]}" --db "$db" || echo "$name: stopped or failed"
  fi
}

if [ -n "${BUDGET:-}" ] && ! [[ "$BUDGET" =~ ^[1-9][0-9]{0,7}$ ]]; then
  echo "nas_compare: BUDGET=$BUDGET is not a number of evaluations (1..99999999)" >&2
  exit 2
fi
if [ "$MODE" = run ] || [ "$MODE" = all ]; then
  export -f run_one logged
  export OUT SRC NICE FEDNAS BUDGET
  printf '%s\n' "${names[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one "$@"' _ {}
fi
[ "$MODE" = run ] && exit 0
if [ "$MODE" = retrain ]; then
  python3 - "$OUT" "$PREFIX" "$SRC/experiments/fmnist-nas-best-retrain-30.json" "$SPACE" $SEEDS <<'PY'
import json, os, sqlite3, sys
out, prefix, recipe, space, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
best = None
for s in seeds:
    for k in ("random", "re", "nsga2"):
        db = os.path.join(out, f"{prefix}-{k}-{space}-s{s}.db")
        if not os.path.exists(db):
            continue
        for seq, acc, params, arch in sqlite3.connect(db).execute(
                "SELECT seq, val_accuracy, params, arch FROM nas_candidates WHERE status = 'done' AND params <= 100000 "
                "AND run_id = (SELECT MAX(run_id) FROM nas_runs)"):
            if best is None or acc > best[3]:
                best = (k, s, seq, acc, params, arch)
if best is None:
    sys.exit("nas_compare: no finished candidate in the stores of " + out)
k, s, seq, acc, params, arch = best
e = json.load(open(recipe))
e["name"] = f"{prefix}-best-retrain"
e["description"] = (f"The best <= 100k-parameter candidate of the {prefix} searches: {prefix}-{k}-{space}-s{s}, "
                    f"candidate seq {seq}, validation accuracy {acc:.4f}, {params} parameters; recipe of {os.path.basename(recipe)}.")
e["model"] = json.loads(arch)
json.dump(e, open(os.path.join(out, "best-retrain.json"), "w"), indent=2)
print(e["description"])
PY
  { echo "start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
    nice -n "$NICE" "$FEDNAS" train "$OUT/best-retrain.json" --quiet --save "$OUT/best-retrain.safetensors" || echo "exit $?"
    echo "end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"; } >>"$OUT/best-retrain.log" 2>&1
  tail -n 3 "$OUT/best-retrain.log"
  exit 0
fi

python3 - "$OUT" "$PREFIX" "${AT:-0}" "$SPACE" "$HV_SCALE" $SEEDS <<'PY'
import os, sqlite3, sys
out, prefix, at_arg, space, hv_scale, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6:]

def prefix_done(name):
    # how many of the search's first candidates (in ask order) are finished, done or failed
    db = os.path.join(out, name + ".db")
    if not os.path.exists(db):
        return 0
    c = sqlite3.connect(db)
    n = 0
    for (st,) in c.execute("SELECT status FROM nas_candidates WHERE run_id = (SELECT MAX(run_id) FROM nas_runs) ORDER BY seq"):
        if st not in ("done", "failed"):
            break
        n += 1
    return n

def ran(name):
    return os.path.exists(os.path.join(out, name + ".db"))

# auto: over the strategies that have a store (KINDS may have left one out)
AT = {s: (min([prefix_done(f"{prefix}-{k}-{space}-s{s}") for k in ("random", "re", "nsga2")
               if ran(f"{prefix}-{k}-{space}-s{s}")] or [0]) if at_arg == "auto" else int(at_arg)) for s in seeds}

def hypervolume(pts, rx=1.0, ry=1.0):
    # specs/nas.md: the area the non-dominated points dominate inside the box up to (rx, ry)
    pts = sorted((x, y) for x, y in pts if x < rx and y < ry)
    hv, besty, last = 0.0, ry, None
    for x, y in pts:
        if y >= besty:
            continue
        if last is not None:
            hv += (x - last) * (ry - besty)
        besty, last = y, x
    if last is not None:
        hv += (rx - last) * (ry - besty)
    return hv

def load(name, at):
    db = os.path.join(out, name + ".db")
    if not os.path.exists(db):
        return None
    c = sqlite3.connect(db)
    row = c.execute("SELECT r.id, r.status, r.started_at, r.ended_at FROM runs r JOIN nas_runs n ON n.run_id = r.id "
                    "ORDER BY r.id DESC LIMIT 1").fetchone()
    if not row:
        return None
    rid, status, t0, t1 = row
    cands = c.execute("SELECT seq, status, val_accuracy, params, seconds, cached_from, arch, hash FROM nas_candidates "
                      "WHERE run_id = ? ORDER BY seq", (rid,)).fetchall()
    if at > 0:
        # the first AT asks; the comparison is at budget AT only when all of them are finished
        cands = cands[:at]
        if len(cands) < at or any(x[1] not in ("done", "failed") for x in cands):
            status = "short of " + str(at)
        else:
            status = "done"
    done = [x for x in cands if x[1] == "done" and x[2] is not None]
    best = max(done, key=lambda x: (x[2], -x[0])) if done else None
    return {"run": rid, "status": status, "n": len(cands), "done": len(done),
            "failed": sum(1 for x in cands if x[1] == "failed"), "cached": sum(1 for x in done if x[5] is not None and x[5] >= 0),
            "best": best, "hv": hypervolume([(1 - x[2], x[3] / hv_scale) for x in done]),
            "mean": sum(x[2] for x in done) / len(done) if done else float("nan"),
            "wall": (t1 - t0) if t1 and t0 else None, "eval_s": sum(x[4] or 0 for x in done), "db": db,
            "hashes": [x[7] for x in cands], "cands": cands}

R = {(k, s): load(f"{prefix}-{k}-{space}-s{s}", AT[s]) for s in seeds for k in ("random", "re", "nsga2")}

# With one seed every strategy starts from the same random genomes (its first P or mu draws):
# the shared prefix is the run of leading candidates with the same hash in all three searches.
SHARED = {}
for s in seeds:
    hs = [R[(k, s)]["hashes"] for k in ("random", "re", "nsga2") if R[(k, s)]]
    n = 0
    while hs and all(len(h) > n for h in hs) and len({h[n] for h in hs}) == 1:
        n += 1
    SHARED[s] = n

def mean_after(r, n):
    v = [x[2] for x in r["cands"][n:] if x[1] == "done" and x[2] is not None]
    return (f"{sum(v) / len(v):.4f} ({len(v)})") if v else "-"

def val(r, key):
    if r is None or r["best"] is None:
        return None
    return r["best"][2] if key == "best" else r[key]

def cell(r, key):
    v = val(r, key)
    if v is None:
        return "-"
    return f"{v:.4f}" + ("" if r["status"] == "done" else f" ({r['status']}: {r['done']} of {r['n']} asked)")

def mean(vals):
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")

print(f"\n1. Best validation accuracy in each search's history ({prefix}, specs/nas.md)")
if any(AT.values()):
    print("   budget compared, per seed (the first N evaluations of each search): "
          + ", ".join(f"seed {s}: {AT[s]}" for s in seeds))
print()
print("| seed | regularized evolution | random search | evolution - random |")
print("|-----:|---:|---:|---:|")
for s in seeds:
    a, b = val(R[("re", s)], "best"), val(R[("random", s)], "best")
    d = "-" if a is None or b is None else f"{a - b:+.4f}"
    print(f"| {s} | {cell(R[('re', s)], 'best')} | {cell(R[('random', s)], 'best')} | {d} |")
m = {k: mean([val(R[(k, s)], "best") for s in seeds]) for k in ("re", "random")}
print(f"| **mean** | **{m['re']:.4f}** | **{m['random']:.4f}** | **{m['re'] - m['random']:+.4f}** |")

print(f"\n2. Hypervolume of (1 - val acc, params / {hv_scale:,}), reference (1.0, 1.0)\n")
print("| seed | NSGA-II | random search | NSGA-II - random | regularized evolution |")
print("|-----:|---:|---:|---:|---:|")
for s in seeds:
    a, b = val(R[("nsga2", s)], "hv"), val(R[("random", s)], "hv")
    d = "-" if a is None or b is None else f"{a - b:+.4f}"
    print(f"| {s} | {cell(R[('nsga2', s)], 'hv')} | {cell(R[('random', s)], 'hv')} | {d} | {cell(R[('re', s)], 'hv')} |")
hv = {k: mean([val(R[(k, s)], "hv") for s in seeds]) for k in ("nsga2", "random", "re")}
print(f"| **mean** | **{hv['nsga2']:.4f}** | **{hv['random']:.4f}** | **{hv['nsga2'] - hv['random']:+.4f}** | {hv['re']:.4f} |")

print("\n3. Each search: evaluations, mean validation accuracy, wall and evaluation seconds\n")
print("| search | run | status | done / asked | failed | from the store | mean val acc | mean val acc after the shared prefix (n) | best val acc (params) | wall s | sum of eval s |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in seeds:
    for k in ("random", "re", "nsga2"):
        r = R[(k, s)]
        if r is None or r["best"] is None:
            print(f"| {k} s{s} | - | not run or nothing done | | | | | | | | |")
            continue
        b = r["best"]
        print(f"| {k} s{s} | {r['run']} | {r['status']} | {r['done']} / {r['n']} | {r['failed']} | {r['cached']} | "
              f"{r['mean']:.4f} | {mean_after(r, SHARED[s])} | {b[2]:.4f} ({b[3]}) | {r['wall'] or 0:.0f} | {r['eval_s']:.0f} |")
def prefix_gap(s):
    # the largest difference between searches in a shared candidate's validation accuracy: 0 when
    # one build ran them all; a build whose kernels round differently moves the proxy's results
    rs = [R[(k, s)] for k in ("random", "re", "nsga2") if R[(k, s)]]
    gap = 0.0
    for i in range(SHARED[s]):
        v = [r["cands"][i][2] for r in rs if r["cands"][i][2] is not None]
        gap = max(gap, max(v) - min(v)) if v else gap
    return gap
print("\nShared prefix per seed (the same genomes in all the searches run; the largest difference in "
      "their validation accuracy): " + ", ".join(f"seed {s}: {SHARED[s]} ({prefix_gap(s):.4f})" for s in seeds))

best = None
for (k, s), r in R.items():
    if r and r["best"] and r["best"][3] <= 100000 and (best is None or r["best"][2] > best[2][2]):
        best = (k, s, r["best"], r)
if best:
    k, s, b, r = best
    print(f"\nBest <= 100k-parameter architecture: {prefix}-{k}-{space}-s{s}, candidate seq {b[0]} (run {r['run']} in {r['db']}): "
          f"val {b[2]:.4f}, {b[3]} parameters\n{b[6]}")
PY
