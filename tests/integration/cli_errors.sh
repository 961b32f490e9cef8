#!/usr/bin/env bash
# Bad input gets a clear message and the documented exit status.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

for c in run server client runs keys dashboard privacy train; do
  "$FEDNAS" $c --help > help.out || fail "fednas $c --help exited non-zero"
  expect_contains help.out "Usage: fednas $c"
done
"$FEDNAS" frobnicate 2> e.out; [ $? = 2 ] || fail "unknown command should exit 2"
pass "--help for every command"

# A malformed experiment: exit 2, file:line:col and the key path.
printf '{\n  "name": "x",\n  "rounds": 0,\n  "data": {}, "model": {"type": "mlp"},\n  "clients": {"count": 1}, "train": {"lr": 0.1}\n}\n' > bad.json
"$FEDNAS" run bad.json --db e.db --http off > out.txt 2> err.txt; rc=$?
[ $rc = 2 ] || fail "malformed config exited $rc, expected 2"
expect_contains err.txt "bad.json:3:13: rounds: expected an integer"
printf '{ "name": "x", "rounds": 1, "data": {}, "model": {"type": "mlp"}, "clients": {"count": 1}, "train": {"lr": 0.1}, "extra": 1 }' > unk.json
"$FEDNAS" run unk.json --db e.db --http off 2> err.txt; [ $? = 2 ] || fail "unknown key should exit 2"
expect_contains err.txt "extra: unknown key"
printf '{ "name": "x", "rounds": 1, ' > trunc.json
"$FEDNAS" run trunc.json --db e.db --http off 2> err.txt; [ $? = 2 ] || fail "truncated JSON should exit 2"
expect_contains err.txt "trunc.json:1:"
"$FEDNAS" run missing.json --db e.db --http off 2> err.txt; [ $? = 2 ] || fail "missing config should exit 2"
expect_contains err.txt "missing.json"
printf '{ "name": "x", "rounds": 1, "data": {}, "model": {"type": "cnn9"}, "clients": {"count": 1}, "train": {"lr": 0.1} }' > arch.json
"$FEDNAS" run arch.json --db e.db --http off 2> err.txt; [ $? = 2 ] || fail "unknown model type should exit 2"
expect_contains err.txt "arch.json:1:"
printf '{ "name": "x", "rounds": 1, "data": {}, "model": {"type": "mlp"}, "clients": {"count": 1},\n  "train": {"lr": 0.1, "optimizer": {"type": "sgd", "momentun": 0.9}} }' > opt.json
"$FEDNAS" run opt.json --db e.db --http off 2> err.txt; [ $? = 2 ] || fail "a misspelt optimizer key should exit 2"
expect_contains err.txt "opt.json:2:"
expect_contains err.txt "momentun"
pass "malformed experiments exit 2 with file, line, column and key path"

# A missing data set says how to install it.
printf '{ "name": "x", "rounds": 1, "data": {"path": "%s/nodata"}, "model": {"type": "mlp", "hidden": [8]}, "clients": {"count": 1}, "train": {"lr": 0.1} }' "$WORK" > nodata.json
"$FEDNAS" run nodata.json --db e.db --http off > out.txt 2> err.txt; rc=$?
[ $rc != 0 ] || fail "missing data set should fail"
expect_contains err.txt "apt-get install dataset-fashion-mnist"
[ "$(sql e.db "select status from runs order by id desc limit 1")" = failed ] || fail "the failed run is not recorded as failed"
pass "missing data set explained"

# Ports already in use: the ZeroMQ port and the dashboard port.
printf '{ "name": "wait", "rounds": 1, "data": {}, "model": {"type": "mlp", "hidden": [8]}, "clients": {"count": 2}, "train": {"lr": 0.1}, "server": {"register_timeout": 60} }' > wait.json
"$FEDNAS" keys init k > /dev/null
"$FEDNAS" server wait.json --keys k --bind 'tcp://127.0.0.1:*' --db s.db --http 0 > s.out 2> s.err &
PIDS+=($!)
EP=$(wait_for_line s.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
HTTP=$(wait_for_line s.out 'https://127\.0\.0\.1:[0-9]+' 30)
HPORT=${HTTP##*:}
"$FEDNAS" server wait.json --keys k --bind "$EP" --db s.db --http off > o.txt 2> err.txt; rc=$?
[ $rc = 1 ] || fail "a taken server port exited $rc, expected 1"
expect_contains err.txt "already in use"
"$FEDNAS" server wait.json --keys k --bind 'tcp://127.0.0.1:*' --db s.db --http "$HPORT" > o.txt 2> err.txt; rc=$?
[ $rc = 1 ] || fail "a taken dashboard port exited $rc, expected 1"
expect_contains err.txt "already in use"
pass "ports in use explained"

# An unreachable server: the client retries with backoff, says so, and gives up with exit 4.
"$FEDNAS" keys site k lonely > /dev/null
PORT=${EP##*:}
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null; PIDS=()
FEDNAS_LOG=info "$FEDNAS" client --connect "tcp://127.0.0.1:$PORT" --kit k/sites/lonely --connect-timeout 4 > c.out 2>&1; rc=$?
[ $rc = 4 ] || { cat c.out; fail "unreachable server: exit $rc, expected 4"; }
expect_contains c.out "retrying"
expect_contains c.out "unreachable"
pass "unreachable server: retried with backoff, then exit 4"
