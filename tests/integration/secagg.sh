#!/usr/bin/env bash
# Secure aggregation through the real server and client code, with dropouts at every phase.
# Nine sites run fault_client's "sa" mode (the real client-side protocol code with a known
# constant update each, and a distinct claimed sample count) so the expected model is computable:
#   round 1: site-i dies before its advert, site-h after its shares (its pairwise masks must be
#            rebuilt), site-f and site-g after their masked inputs (their self masks must be
#            rebuilt); t = 5 of the 9 selected: the round sums a..g, and the model moves by the
#            UNWEIGHTED mean of their values within the documented encoding error;
#   round 2: site-e ignores its first key list, so only 4 < t sites share keys: the attempt aborts,
#            nothing is committed, and the round runs again with fresh keys and all 5 sites;
#   round 3: normal. Also: the config checks of the new block.
source "$(dirname "$0")/lib.sh"
: "${FAULT_CLIENT:?set FAULT_CLIENT to the fault_client test program}"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-secagg", "seed": 9, "rounds": 3,
  "model": { "type": "mlp", "hidden": [16] }, "data": {},
  "clients": { "count": 9, "min_fit": 3 },
  "secure_aggregation": { "mode": "secagg", "threshold": 5, "clip": 1.0, "bits": 32 },
  "train": { "epochs": 1, "batch_size": 64, "lr": 0.05 },
  "server": { "round_timeout": 60, "register_timeout": 60, "heartbeat": 1, "phase_timeout": 3 } }
JSON
"$FEDNAS" keys init keys >/dev/null
SITES=(a b c d e f g h i)
for s in "${SITES[@]}"; do "$FEDNAS" keys site keys "site-$s" >/dev/null; done
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db s.db --http off > server.out 2> server.err &
PIDS+=($!); SERVER=$!
EP=$(wait_for_line server.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
mkdir dump
# site k (id k) sends 0.0001 * k in every coordinate ("0.000k") and claims 100 * k samples
for k in 1 2 3 4 5 6 7 8 9; do
  s=${SITES[$((k - 1))]}
  case $s in
    e) act="mute-shares 2" ;;
    f|g) act="die-after-masked 1" ;;
    h) act="die-after-shares 1" ;;
    i) act="die-before 1" ;;
    *) act="none 0" ;;
  esac
  dump=; [ "$s" = a ] && dump=dump
  FAULT_DUMP=$dump "$FAULT_CLIENT" sa "0.000${k}" $((100 * k)) $act "$EP" "keys/sites/site-$s" > "site-$s.out" 2>&1 &
  PIDS+=($!)
done
for ((t = 0; t < 1200; t++)); do kill -0 $SERVER 2>/dev/null || break; sleep 0.1; done
wait $SERVER; rc=$?
[ $rc = 0 ] || { cat server.out server.err; fail "server exited $rc"; }
expect_contains site-i.out "dying before the advert in round 1"
expect_contains site-h.out "exiting after sa_shares in round 1"
expect_contains site-f.out "exiting after sa_masked in round 1"
expect_contains site-g.out "exiting after sa_masked in round 1"
expect_contains site-e.out "ignoring sa_keys in round 2"
metric() { sql s.db "select cast(value as int) from round_metrics where round = $1 and name = '$2'"; }
got="$(metric 1 secagg_u1)/$(metric 1 secagg_u2)/$(metric 1 secagg_u3)/$(metric 1 secagg_summed)"
[ "$got" = 8/8/7/7 ] || fail "round 1: U1/U2/U3/summed should be 8/8/7/7, got $got"
[ "$(sql s.db "select participants || '/' || selected || '/' || dropped from rounds where round = 1")" = 7/9/2 ] ||
  fail "round 1 should record 7 of 9 summed: $(sql s.db 'select * from rounds where round = 1')"
for p in advert shares masked unmask; do
  [ -n "$(sql s.db "select value from round_metrics where round = 1 and name = 'phase_${p}_s'")" ] || fail "no phase_${p}_s"
done
# Round 1: sites 1..7 summed; unweighted mean 0.0004 (a sample-weighted one would be 0.0005).
"$FAULT_CLIENT" check dump/r1.f32 dump/r2.f32 0.0004 9 7 1.0 32 > check1.out 2>&1 || { cat check1.out; fail "round 1 model is not the unweighted mean of the 7 masked inputs"; }
pass "round 1 (dropouts before advert, after shares, after masked): $(cat check1.out)"
expect_contains server.err "secure aggregation aborted"
[ "$(metric 2 secagg_attempts)" = 2 ] || fail "round 2 should have needed 2 attempts, got $(metric 2 secagg_attempts)"
[ "$(metric 2 secagg_summed)" = 5 ] || fail "round 2's second attempt should sum the 5 live sites"
[ "$(sql s.db "select count(*) from rounds")" = 3 ] || fail "the aborted attempt must not be recorded as a round"
"$FAULT_CLIENT" check dump/r2.f32 dump/r3.f32 0.0003 5 5 1.0 32 > check2.out 2>&1 || { cat check2.out; fail "round 2 model is not the mean of sites 1..5"; }
sql s.db "select writefile('final.f32', params) from checkpoints" > /dev/null
"$FAULT_CLIENT" check dump/r3.f32 final.f32 0.0003 5 5 1.0 32 > check3.out 2>&1 || { cat check3.out; fail "round 3 model is not the mean of sites 1..5"; }
[ "$(sql s.db "select status from runs")" = done ] || fail "run not done"
pass "below t the attempt aborted and round 2 ran again with fresh keys; rounds 2 and 3: $(cat check3.out)"

# Configuration: the block is checked like the others; robust strategies are refused.
sed 's/"bits": 32/"bits": 40/' exp.json > bad1.json
"$FEDNAS" run bad1.json --db x.db --http off > /dev/null 2> err1.txt; [ $? = 2 ] || fail "bits 40 should be refused"
expect_contains err1.txt "bad1.json:4:"
expect_contains err1.txt "secure_aggregation.bits"
sed 's/"clip": 1.0,/"clip": 1.0, "cilp": 1,/' exp.json > bad2.json
"$FEDNAS" run bad2.json --db x.db --http off > /dev/null 2> err2.txt; [ $? = 2 ] || fail "unknown key should be refused"
expect_contains err2.txt "secure_aggregation.cilp: unknown key"
sed 's/"train"/"strategy": { "name": "median" }, "train"/' exp.json > bad3.json
"$FEDNAS" run bad3.json --db x.db --http off > /dev/null 2> err3.txt; [ $? = 2 ] || fail "median with secure aggregation should be refused"
expect_contains err3.txt "cannot be combined with secure aggregation"
pass "config errors name file, line, column and key"

# Both agents end to end: `fednas run` of the quickstart with secure aggregation (one `fednas
# client` process per site) and a simulated SecAgg+ federation (sites hosted by two workers).
sed 's/"rounds": 10/"rounds": 3/' "$SRC/experiments/quickstart-secagg.json" > qs.json
mkdir qs && (cd qs && "$FEDNAS" run ../qs.json --db q.db --http off > run.out 2> run.err) || { cat qs/run.err; fail "quickstart-secagg failed"; }
[ "$(sql qs/q.db "select count(*) from round_metrics where name = 'secagg_summed' and value = 8")" = 3 ] || fail "every quickstart round should sum all 8 sites"
acc=$(sql qs/q.db "select test_accuracy from rounds where round = 3")
awk -v a="$acc" 'BEGIN { exit !(a >= 0.78) }' || fail "quickstart-secagg accuracy $acc after 3 rounds is below 0.78"
cat > plus.json <<'JSON'
{ "name": "it-secagg-plus", "seed": 3, "rounds": 2,
  "model": { "type": "mlp", "hidden": [32] }, "data": {},
  "clients": { "count": 20, "per_round": 12, "min_fit": 8, "simulate": { "workers": 2 } },
  "secure_aggregation": { "mode": "secagg+", "clip": 5, "bits": 32, "neighbours": 6 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.05 } }
JSON
# (12 sites: k derived from the dropout rate would be the complete graph, so k is given here)
mkdir plus && (cd plus && "$FEDNAS" run ../plus.json --db p.db --http off > run.out 2> run.err) || { cat plus/run.err; fail "simulated secagg+ run failed"; }
grep -q "SecAgg+ with k = 6 neighbours" plus/run.out plus/run.err || fail "the secagg+ run should log its k and failure bounds"
[ "$(sql plus/p.db "select count(*) from round_metrics where name = 'secagg_summed' and value = 12")" = 2 ] || fail "every secagg+ round should sum its 12 sites"
acc2=$(sql plus/p.db "select test_accuracy from rounds where round = 2")
awk -v a="$acc2" 'BEGIN { exit !(a >= 0.6) }' || fail "secagg+ accuracy $acc2 is below 0.6"
pass "quickstart-secagg (client processes) reached $acc in 3 rounds; simulated secagg+ reached $acc2 in 2"
