#!/usr/bin/env bash
# `fednas nas` refuses bad experiments and arguments with exit status 2 and a message naming the
# file, line and column (and the JSON path), before it creates a run.
. "$(dirname "$0")/lib.sh"
# expect_usage FILE|ARGS... : runs fednas nas with the arguments, wants exit 2 and TEXT in stderr
expect_exit() { # expect_exit STATUS TEXT ARGS...
  local want=$1 text=$2
  shift 2
  "$FEDNAS" nas "$@" > "$WORK/out" 2> "$WORK/err"
  local rc=$?
  [ "$rc" = "$want" ] || { cat "$WORK/err"; fail "fednas nas $*: exit $rc, expected $want"; }
  expect_contains "$WORK/err" "$text"
}
good='"space": {"type": "macro", "layers": 2, "ops": ["conv3x3", "identity"], "widths": [4], "reductions": 1},
    "strategy": {"name": "random"}, "budget": 2'
printf '{\n  "nas": {\n    %s,\n    "bogus": 1\n  }\n}\n' "$good" > "$WORK/unknown.json"
expect_exit 2 "unknown.json:5:" --db "$WORK/x.db" "$WORK/unknown.json"
expect_contains "$WORK/err" "nas.bogus"
pass "unknown nas key: file:line:col and path"

printf '{\n  "nas": {%s},\n  "data": {"dataset": "fashion-mnist",\n           "train_subset": -3}\n}\n' "$good" > "$WORK/subset.json"
expect_exit 2 "subset.json:5:28: data.train_subset: expected an integer" --db "$WORK/x.db" "$WORK/subset.json"
pass "bad data.train_subset: file:line:col"

printf '{\n  "nas": {%s},\n  "train": {"optimizer": {"type": "sgd", "momentum": -1}}\n}\n' "$good" > "$WORK/train.json"
expect_exit 2 "train.json:4:54:" --db "$WORK/x.db" "$WORK/train.json"
expect_contains "$WORK/err" "train.optimizer.momentum"
pass "bad train recipe: file:line:col and path"

printf '{\n  "nas": {%s,\n  }\n}\n' "$good" > "$WORK/syntax.json"
expect_exit 2 "syntax.json:4:" --db "$WORK/x.db" "$WORK/syntax.json"
pass "JSON syntax error: file:line:col"

printf '{"seed": 3, "data": {}}\n' > "$WORK/nonas.json"
expect_exit 2 'no "nas" block' --db "$WORK/x.db" "$WORK/nonas.json"
pass "no nas block: refused"

[ ! -e "$WORK/x.db" ] || [ "$(sql "$WORK/x.db" "SELECT count(*) FROM runs")" = 0 ] || fail "a refused experiment created a run"
expect_exit 2 "missing the EXPERIMENT file"
expect_exit 2 "--resume needs a run id" --resume abc
expect_exit 2 "--out DIR is required" export 1
expect_exit 1 "does not exist" --resume 4 --db "$WORK/none.db"
[ ! -e "$WORK/none.db" ] || fail "--resume created a store"
printf '{}' > "$WORK/dummy"; sqlite3 "$WORK/y.db" "PRAGMA user_version = 0;" > /dev/null
expect_exit 1 "run 4 is not a NAS search" --resume 4 --db "$WORK/y.db"
expect_exit 1 "run 4 has no retrained model" export 4 --db "$WORK/y.db" --out "$WORK/exp"
pass "argument errors: exit 2; an unknown run: exit 1"

for f in "$SRC"/experiments/nas-*.json; do
  "$FEDNAS" nas --check "$f" > "$WORK/out" 2>&1 || { cat "$WORK/out"; fail "$f does not validate"; }
  expect_contains "$WORK/out" ": ok: "
done
pass "experiments/nas-*.json validate (--check)"
