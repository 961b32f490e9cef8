#!/usr/bin/env bash
# Update compression end to end: the same 4-site, 3-round federation uncompressed, with 8-bit
# quantization (client agents, one process each) and with top-k 5% plus error feedback
# (simulation workers). Each must reach a plausible accuracy while the uplink bytes recorded
# per round shrink to what the encoding promises; compression with secure aggregation is refused.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
make_exp() { # NAME EXTRA-TOP-LEVEL-JSON CLIENTS-EXTRA
  cat > "$1.json" <<JSON
{ "name": "it-$1", "seed": 5, "rounds": 3,
  "model": { "type": "mlp", "hidden": [32] }, "data": {},
  "clients": { "count": 4 $3 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.05 },
  "server": { "round_timeout": 120, "register_timeout": 60 } $2 }
JSON
}
make_exp plain "" ""
make_exp q8 ', "compression": { "quantize": 8 }' ""
make_exp topk ', "compression": { "topk": 0.05, "error_feedback": true }' ', "simulate": { "workers": 2 }'
for n in plain q8 topk; do
  # each store in its own folder (run folders are named after their store, so this is tidiness)
  mkdir "$n.d" && (cd "$n.d" && OPENBLAS_NUM_THREADS=1 "$FEDNAS" run "../$n.json" --db run.db --http off \
    > "../$n.out" 2> "../$n.err"); rc=$?
  [ $rc = 0 ] || { cat "$n.out" "$n.err"; fail "$n run exited $rc"; }
  [ "$(sql "$n.d/run.db" "select count(*) from rounds where participants = 4")" = 3 ] || fail "$n: expected 3 rounds of 4"
done
grep -q "rejected" q8.err topk.err && { grep rejected q8.err topk.err; fail "a compressed update was rejected"; }
up() { sql "$1.d/run.db" "select avg(bytes_up) from rounds"; }
acc() { sql "$1.d/run.db" "select test_accuracy from rounds where round = 3"; }
P=$(up plain); Q=$(up q8); T=$(up topk)
echo "bytes_up per round: plain $P, q8 $Q, topk+ef $T; accuracy at round 3: $(acc plain) $(acc q8) $(acc topk)"
awk -v p="$P" -v q="$Q" 'BEGIN { exit !(q <= 0.3 * p) }' || fail "8-bit uplink $Q is not <= 0.3 x $P"
awk -v p="$P" -v t="$T" 'BEGIN { exit !(t <= 0.15 * p) }' || fail "top-k uplink $T is not <= 0.15 x $P"
for n in plain q8 topk; do
  awk -v a="$(acc $n)" 'BEGIN { exit !(a > 0.6) }' || fail "$n: round-3 accuracy $(acc $n) is not above 0.6"
done
awk -v p="$(acc plain)" -v q="$(acc q8)" 'BEGIN { exit !(q > p - 0.05) }' || fail "8-bit accuracy $(acc q8) far below $(acc plain)"
pass "compressed uplink: q8 $(awk -v p="$P" -v q="$Q" 'BEGIN { printf "%.3f", q / p }')x, top-k+ef $(awk -v p="$P" -v t="$T" 'BEGIN { printf "%.3f", t / p }')x of plain"

# Federated evaluation: every 2nd round half the sites measure the model on their held-out 10%,
# once with simulation workers (client/sim.c) and once with one agent process a site (client.c).
for mode in workers agents; do
  sim=', "simulate": { "workers": 2 }'; [ $mode = agents ] && sim=""
  make_exp "eval-$mode" ', "evaluate": { "clients_fraction": 0.5, "every": 2, "holdout": 0.1 }' "$sim"
  sed -i 's/"rounds": 3/"rounds": 4/' "eval-$mode.json"
  mkdir "eval-$mode.d" && (cd "eval-$mode.d" && OPENBLAS_NUM_THREADS=1 "$FEDNAS" run "../eval-$mode.json" --db run.db \
    --http off > ../eval.out 2> ../eval.err) || { cat eval.out eval.err; fail "evaluate run ($mode) failed"; }
  E=eval-$mode.d/run.db
  got=$(sql $E "select group_concat(round) from (select distinct round from round_metrics where name = 'fed_eval_accuracy' order by round)")
  [ "$got" = "2,4" ] || fail "$mode: fed_eval_accuracy should be recorded for rounds 2 and 4, got \"$got\""
  for name in fed_eval_loss fed_eval_samples; do
    [ "$(sql $E "select count(*) from round_metrics where name = '$name'")" = 2 ] || fail "$mode: $name should be recorded twice"
  done
  # 2 of 4 sites, each holding out floor(0.1 * 15000) = 1500 of its samples
  fs=$(sql $E "select value from round_metrics where name = 'fed_eval_samples' and round = 4")
  awk -v s="$fs" 'BEGIN { exit !(s == 3000) }' || fail "$mode: expected 3000 held-out samples evaluated, got $fs"
  fa=$(sql $E "select value from round_metrics where name = 'fed_eval_accuracy' and round = 4")
  ta=$(sql $E "select test_accuracy from rounds where round = 4")
  awk -v f="$fa" -v t="$ta" 'BEGIN { exit !(f > 0.6 && f < 1 && f > t - 0.08 && f < t + 0.08) }' \
    || fail "$mode: federated accuracy $fa is not plausible next to the test accuracy $ta"
  # the sites trained on the other 90%: 4 x 13500 samples a round
  tr=$(sql $E "select samples from rounds where round = 1")
  [ "$tr" = 54000 ] || fail "$mode: sites should train on 54000 samples, got $tr"
  grep -q "fed acc" eval.out || fail "$mode: the progress line lacks the federated accuracy"
  pass "federated evaluation ($mode): rounds 2 and 4, accuracy $fa on $fs held-out samples (test $ta)"
done

cat > bad.json <<'JSON'
{ "name": "it-bad", "rounds": 1, "model": { "type": "mlp", "hidden": [8] }, "data": {},
  "clients": { "count": 3 }, "train": { "lr": 0.05 },
  "secure_aggregation": { "mode": "secagg", "clip": 1.0 },
  "compression": { "quantize": 8 } }
JSON
"$FEDNAS" run bad.json --db bad.db --http off > /dev/null 2> err.txt; rc=$?
[ $rc = 2 ] || { cat err.txt; fail "compression with secure aggregation exited $rc, expected 2"; }
expect_contains err.txt "bad.json:4:"
expect_contains err.txt "cannot be combined with secure aggregation"
sed 's/"quantize": 8/"quantize": 4/' bad.json > bad4.json
"$FEDNAS" run bad4.json --db bad.db --http off > /dev/null 2> err4.txt; [ $? = 2 ] || fail "quantize 4 should be refused"
expect_contains err4.txt "compression.quantize"
pass "compression with secure aggregation and unsupported settings refused (exit 2)"
