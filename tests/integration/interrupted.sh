#!/usr/bin/env bash
# Issue 12: a run whose server was SIGKILLed reads "interrupted", not "running", in `fednas runs`,
# the dashboard's API and /metrics (common/store_live.h: the recorded pid must still be a process
# holding the store open); resumed, it reads "running" again. The server waits for a site that
# never comes, so it is alive for as long as the test needs, on any machine.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-interrupted", "seed": 3, "rounds": 2,
  "model": { "type": "softmax" }, "data": {},
  "clients": { "count": 1 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.1 },
  "server": { "round_timeout": 60, "register_timeout": 3600, "heartbeat": 1 } }
JSON
"$FEDNAS" keys init keys > /dev/null || fail "keys init"
"$FEDNAS" keys site keys site-a > /dev/null || fail "keys site"
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db i.db --http off > s1.out 2> s1.err &
PIDS+=($!); S1=$!
wait_for_line s1.out 'server listening on' 30 > /dev/null
"$FEDNAS" dashboard --db i.db --http 0 > dash.out 2> dash.err &
PIDS+=($!)
url=$(wait_for_line dash.out 'https://127\.0\.0\.1:[0-9]+/\?token=[0-9a-f]{64}' 30)
base=${url%%/\?*}
token=${url##*token=}
api() { curl -sk -H "Authorization: Bearer $token" "$base$1"; }

# check WANT WHEN: the status every reader shows for run 1
check() {
  "$FEDNAS" runs --db i.db --json > runs.json || fail "fednas runs --json ($2)"
  grep -q "\"status\": \"$1\"" runs.json || { cat runs.json; fail "fednas runs --json does not say $1 $2"; }
  "$FEDNAS" runs --db i.db > runs.txt || fail "fednas runs ($2)"
  grep -qE "^1 +it-interrupted +$1 " runs.txt || { cat runs.txt; fail "fednas runs does not say $1 $2"; }
  api /api/runs/1 > run.json
  grep -qE "\"status\": *\"$1\"" run.json || { cat run.json; fail "/api/runs/1 does not say $1 $2"; }
  api /api/runs > runs-api.json
  grep -qE "\"status\": *\"$1\"" runs-api.json || { cat runs-api.json; fail "/api/runs does not say $1 $2"; }
  api /metrics > metrics.txt
  grep -qx "fednas_runs{status=\"$1\"} 1" metrics.txt || { cat metrics.txt; fail "/metrics does not count the run $1 $2"; }
  for other in running interrupted; do
    [ "$other" = "$1" ] && continue
    grep -qx "fednas_runs{status=\"$other\"} 0" metrics.txt || { cat metrics.txt; fail "/metrics counts it $other $2"; }
  done
}

check running "while its server waits for sites"
kill -9 $S1; wait $S1 2> /dev/null
[ "$(sql i.db "select status from runs where id = 1")" = running ] || fail "the store should still say running"
check interrupted "after its server was SIGKILLed"
grep -q "resume the run" run.json || { cat run.json; fail "/api/runs/1 does not say how to go on"; }

"$FEDNAS" server --resume 1 --keys keys --bind 'tcp://127.0.0.1:*' --db i.db --http off > s2.out 2> s2.err &
PIDS+=($!); S2=$!
wait_for_line s2.out 'server listening on' 30 > /dev/null
check running "once resumed"
pass "a SIGKILLed server's run reads interrupted in fednas runs, /api/runs and /metrics, and running once resumed"
