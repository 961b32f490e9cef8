#!/usr/bin/env bash
# Issue 12: a refused peer in a loop does not flood the log (zap_limit_t, server/zap.h). A key not
# on the allow-list reconnects 100 times: one line in full, the rest counted and logged as one
# summary (at the latest when the server stops). A site floods hellos, then its key is taken off
# the allow-list while its connection stays open (ROUTER cannot close it): its thousands of
# messages from then on get one line and a count. The server waits for a site that never comes,
# so it is up as long as the test needs; SIGTERM stops it, and its last lines are the counts.
source "$(dirname "$0")/lib.sh"
: "${HOSTILE_CLIENT:?set HOSTILE_CLIENT to the hostile_client test program}"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-refusal-log", "seed": 3, "rounds": 1,
  "model": { "type": "softmax" }, "data": {},
  "clients": { "count": 3 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.1 },
  "server": { "round_timeout": 60, "register_timeout": 3600, "heartbeat": 5 } }
JSON
"$FEDNAS" keys init keys > /dev/null || fail "keys init"
for s in a b; do "$FEDNAS" keys site keys "site-$s" > /dev/null || fail "keys site site-$s"; done
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db r.db --http off > server.out 2> server.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)

# 1. One stranger key, 100 connections.
"$HOSTILE_CLIENT" strangerloop 100 "$EP" keys/sites/site-a > loop.out 2>&1 || fail "strangerloop failed"
key=$(awk '/stranger key/ { print $NF }' loop.out)
[ -n "$key" ] || fail "strangerloop did not say its key"

# 2. site-b floods hellos, then loses its place on the allow-list.
"$HOSTILE_CLIENT" flood "$EP" keys/sites/site-b > flood.out 2>&1 &
PIDS+=($!); FLOOD=$!
wait_for_line server.err 'site site-b joined' 30 > /dev/null
grep -v '^site-b ' keys/allowed_clients > allowed.new && mv allowed.new keys/allowed_clients
wait_for_line server.err 'site-b: message from a key no longer on the allow-list dropped' 30 > /dev/null
# Thousands more after that line (the flood prints every 10,000 it sent).
for ((t = 0; t < 300; t++)); do [ "$(grep -c 'hellos sent' flood.out)" -ge 3 ] && break; sleep 0.1; done
kill $FLOOD
kill -TERM $SERVER
wait_exit $SERVER 60 # it exits 1 ("stopped while waiting for sites")
[ $? != 124 ] || { tail -n 20 server.err; fail "the server did not stop on SIGTERM"; }

full=$(grep -F "refused a connection" server.err | grep -cF -e "$key")
[ "$full" = 1 ] || { grep -F -e "$key" server.err | head; fail "$full lines in full for the stranger key, not 1"; }
counted=$(grep -F "more connections" server.err | grep -F -e "key $key" | grep -oE 'refused [0-9]+' | awk '{ s += $2 } END { print s + 0 }')
[ "$counted" -ge 10 ] || { grep -F -e "$key" server.err; fail "only $counted of the stranger's 99 other refusals counted"; }
full=$(grep -c "message from a key no longer on the allow-list dropped" server.err)
[ "$full" = 1 ] || fail "$full lines in full for site-b's dropped messages, not 1"
dropped=$(grep -E 'site site-b \(key .*\): [0-9]+ more messages dropped' server.err | grep -oE '[0-9]+ more messages' | awk '{ s += $1 } END { print s + 0 }')
[ "$dropped" -ge 100 ] || { tail -n 5 server.err; fail "only $dropped of site-b's dropped messages counted"; }
lines=$(wc -l < server.err)
[ "$lines" -lt 100 ] || fail "the server logged $lines lines"
pass "a stranger reconnecting 100 times: 1 line and $counted counted; a revoked site's flood: 1 line and $dropped counted ($lines lines in all)"
