#!/usr/bin/env bash
# Every link `fednas run` prints works when the user reads it. In a pipe the run exits when done,
# so its last line is the `fednas dashboard` command (which serves the store again), never a link
# to the dashboard that stopped with the run. At a terminal (script(1) gives it one) the
# dashboard outlives the run: the last line is its link, which logs in and shows the finished
# run, until SIGINT ends the process with the run's status (0).
source "$(dirname "$0")/lib.sh"
cd "$WORK"
command -v script > /dev/null || fail "script(1) from util-linux (Debian: bsdutils) is missing"
cat > exp.json <<'JSON'
{ "name": "it-run-links", "seed": 6, "rounds": 2,
  "model": { "type": "softmax" }, "data": { "partition": { "scheme": "iid" } },
  "clients": { "count": 2 },
  "train": { "epochs": 1, "batch_size": 64, "lr": 0.05 } }
JSON
# login URL: 303 with a session cookie in JAR; then the run's API answers with the cookie.
check_link() { # URL JAR WHAT
  local base=${1%%/\?*}
  code=$(curl -sk -o /dev/null -c "$2" -w '%{http_code}' "${1%%#*}") || fail "$3: curl failed on $1"
  [ "$code" = 303 ] || fail "$3: the link answered $code, not 303 (login)"
  grep -q fednas_session_ "$2" || fail "$3: the link set no session cookie"
  curl -sk -b "$2" "$base/api/runs/1" > "$2.run" || fail "$3: /api/runs/1 failed"
  grep -q '"status": *"done"' "$2.run" || { cat "$2.run"; fail "$3: the run is not shown done"; }
}

# 1. In a pipe.
"$FEDNAS" run exp.json --db p.db --http 0 > pipe.out 2> pipe.err || { cat pipe.out pipe.err; fail "piped run failed"; }
last=$(tail -n 1 pipe.out)
[ "$last" = 'dashboard: to look at this run, start `fednas dashboard --db p.db` (it prints a link)' ] ||
  fail "piped run's last line: $last"
grep -n 'https://' pipe.out | grep -v 'fednas: dashboard at https://127.0.0.1:[0-9]*/?token=[0-9a-f]\{64\}#run=1$' &&
  fail "the piped run printed a link other than its live dashboard's (above)"
# The command it names works.
"$FEDNAS" dashboard --db p.db --http 0 > dash.out 2> dash.err &
PIDS+=($!)
DASH=$!
url=$(wait_for_line dash.out 'https://127\.0\.0\.1:[0-9]+/\?token=[0-9a-f]{64}' 30) || exit 1
check_link "$url" dash.jar "fednas dashboard"
kill -INT $DASH
wait_exit $DASH 10 || fail "fednas dashboard did not stop on SIGINT"

# 2. At a terminal.
# timeout(1) bounds it, should this script be killed before its SIGINT: the hang-up of the
# terminal when script(1) goes ends `fednas run` too.
timeout 120 script -qfec "'$FEDNAS' run exp.json --db t.db --http 0" /dev/null < /dev/null > tty.out 2>&1 &
PIDS+=($!)
SCRIPT=$!
wait_for_line tty.out 'Ctrl-C stops it' 60 > /dev/null || exit 1
tr -d '\r' < tty.out > tty.txt
last=$(grep -v '^$' tty.txt | tail -n 1)
[[ "$last" =~ ^dashboard:\ (https://127\.0\.0\.1:[0-9]+/\?token=[0-9a-f]{64}#run=1)\ \(still\ up\ after\ the\ run\;\ Ctrl-C\ stops\ it\)$ ]] ||
  fail "the interactive run's last line: $last"
url=${BASH_REMATCH[1]}
sleep 1 # the run has ended: its clients are gone, the dashboard stays
[ "$(sql t.db "select status from runs where id = 1")" = done ] || fail "the run is not done"
check_link "$url" tty.jar "the last link after the run"
pid=$(sql t.db "select pid from runs where id = 1")
kill -0 "$pid" 2>/dev/null || fail "the run's process $pid is gone while its link was printed as up"
kill -INT "$pid"
wait_exit $SCRIPT 10
rc=$?
[ $rc = 0 ] || fail "after SIGINT the interactive run exited $rc (124: still running)"
curl -sk -o /dev/null "${url%%#*}" && fail "the dashboard still answers after SIGINT"
pass "the links fednas run prints work when printed; its dashboard stays up at a terminal until SIGINT"
