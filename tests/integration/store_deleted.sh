#!/usr/bin/env bash
# A user deletes the run store (fednas.db) but not its run folders (fednas-runs/): the next
# `fednas run` must not fail on the old run 1's keys ("site site-1 is already in ...") nor
# mix them into the new run. The orphan folder is moved aside as ID.orphan-TIMESTAMP, with a
# notice, its files unchanged; the new run gets fresh keys in ID/ and finishes.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
cat > exp.json <<'JSON'
{ "name": "it-store-deleted", "seed": 4, "rounds": 1,
  "model": { "type": "softmax" }, "data": { "partition": { "scheme": "iid" } },
  "clients": { "count": 2 },
  "train": { "epochs": 1, "batch_size": 64, "lr": 0.05 } }
JSON
"$FEDNAS" run exp.json --db fednas.db --http off > run1.out 2> run1.err || { cat run1.out run1.err; fail "first run failed"; }
[ -f fednas-runs/1/keys/allowed_clients ] || fail "the first run left no fednas-runs/1/keys"
(cd fednas-runs/1 && find . -type f | sort | xargs sha256sum) > before.sums

for n in 2 3; do
  rm fednas.db fednas.db-wal fednas.db-shm 2>/dev/null
  "$FEDNAS" run exp.json --db fednas.db --http off > run$n.out 2> run$n.err
  rc=$?
  [ $rc = 0 ] || { cat run$n.out run$n.err; fail "run $n after deleting the store exited $rc"; }
  expect_contains run$n.err "fednas: notice: run folder ./fednas-runs/1 belongs to no run in fednas.db"
  grep -q "already in" run$n.err && fail "run $n still complains about the old keys"
  [ "$(sql fednas.db "select status from runs where id = 1")" = done ] || fail "run $n is not done in the new store"
done
orphans=(fednas-runs/1.orphan-*)
[ ${#orphans[@]} = 2 ] || { ls -la fednas-runs; fail "expected two orphan folders, got ${#orphans[@]}"; }
# The first orphan is the first run's folder, byte for byte; each notice names where it went.
first=$(grep -o 'moved it to [^ ]*' run2.err | sed 's/moved it to //')
[ -d "$first" ] || fail "the notice names $first, which is not there"
(cd "$first" && find . -type f | sort | xargs sha256sum) > after.sums
cmp -s before.sums after.sums || { diff before.sums after.sums; fail "the orphan's files changed"; }
[[ "$(basename "$first")" =~ ^1\.orphan-[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$ ]] || fail "orphan name $first"
# The new run's keys are its own, not the orphan's.
cmp -s fednas-runs/1/keys/server.pub "$first/keys/server.pub" && fail "the new run reused the orphan's server key"
[ "$(grep -c "^site-" fednas-runs/1/keys/allowed_clients)" = 2 ] || fail "the new run's allow-list should name its 2 sites"

# A folder that does belong to a run of the store is left alone: a second run in the same store
# gets folder 2 and no notice.
"$FEDNAS" run exp.json --db fednas.db --http off > run4.out 2> run4.err || { cat run4.err; fail "run 4 failed"; }
grep -q notice run4.err && fail "a run in an intact store printed a notice"
[ -d fednas-runs/2/keys ] || fail "the store's second run has no folder 2"
[ "$(ls -d fednas-runs/1.orphan-* | wc -l)" = 2 ] || fail "an intact store's run moved folders aside"
pass "a deleted store's run folders are set aside and new runs start"
