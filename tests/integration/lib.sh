# Shared by the integration tests: a scratch folder, process cleanup, assertions.
set -u
FEDNAS=${1:?usage: $0 PATH-TO-fednas}
SRC=${FEDNAS_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
WORK=$(mktemp -d /tmp/fednas-it-XXXXXX)
PIDS=()
FAILED=0
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "$FAILED" = 0 ]; then rm -rf "$WORK"; else echo "left $WORK for inspection"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; FAILED=1; exit 1; }
pass() { echo "ok: $*"; }
# expect_contains FILE TEXT
# expect_rel_close A B TOL MESSAGE: fails with MESSAGE unless |A - B| / B < TOL (B > 0).
expect_rel_close() {
  awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(b > 0 && d / b < t) }' || fail "$4"
}
expect_contains() { grep -qF -- "$2" "$1" || { echo "--- $1"; cat "$1"; fail "$1 lacks: $2"; }; }
# expect_exit_of STATUS TEXT COMMAND...: COMMAND exits with STATUS and says TEXT (stdout and
# stderr together, kept in $WORK/cmd.log)
expect_exit_of() {
  local want=$1 text=$2 rc=0
  shift 2
  "$@" > "$WORK/cmd.log" 2>&1 || rc=$?
  [ "$rc" = "$want" ] || { cat "$WORK/cmd.log"; fail "$*: exit $rc, expected $want"; }
  expect_contains "$WORK/cmd.log" "$text"
}
# wait_for_line FILE REGEX SECONDS: prints the first match
wait_for_line() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if grep -m1 -oE -- "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "--- $1"; cat "$1"; fail "no line matching $2 in $1 within $3 s"
}
sql() { sqlite3 -batch -noheader "$1" "$2"; }
# wait_exit PID SECONDS: waits for a background process to end; its exit status, or 124 when it
# is still running after SECONDS (then it is left running for cleanup to stop).
wait_exit() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$1" 2>/dev/null || { wait "$1"; return $?; }
    sleep 0.1
  done
  return 124
}
# sum_training_samples LOG...: the samples the client agents say they train on, summed
sum_training_samples() { grep -ohE 'training on [0-9]+ samples' "$@" | awk '{ s += $3 } END { print s + 0 }'; }
