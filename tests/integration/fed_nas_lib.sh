# Shared by the federated-search tests (sourced after lib.sh, inside $WORK).

# fed_nas_blobs TRAIN_ROWS TEST_ROWS: train.csv and test.csv, 16 features (a 4x4 "image") and
# 3 classes of Gaussian blobs that a small convolution learns in a round.
fed_nas_blobs() {
  python3 - "$1" "$2" <<'PY'
import random, sys
def gen(path, rows, seed, feats=16, classes=3):
    r = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            y = r.randrange(classes)
            x = [r.gauss(1.5 if i % 3 == y else -0.5, 0.8) for i in range(feats)]
            f.write(",".join(f"{v:.4f}" for v in x) + f",{y}\n")
gen("train.csv", int(sys.argv[1]), 1); gen("test.csv", int(sys.argv[2]), 2)
PY
}

# fed_nas_start_frozen EXPERIMENT SEED: keys for 9 sites, a server on k.db (S1, its endpoint EP),
# a ninth site that registers first and is then frozen with SIGSTOP (FROZEN; clients.count is 8,
# so a resumed server does not wait for it, but it is dealt a path every round, so every round
# waits on it), and sites 0-7 (each a ninth of train.csv).
fed_nas_client() { # I ENDPOINT SEED
  OPENBLAS_NUM_THREADS=1 "$FEDNAS" client --connect "$2" --kit "keys/sites/site-$1" --data train.csv --shard "$1/9" \
    --seed "$3" > "client-k-$1.out" 2>&1 &
  PIDS+=($!)
}
fed_nas_start_frozen() {
  "$FEDNAS" keys init keys >/dev/null
  local i
  for i in 0 1 2 3 4 5 6 7 8; do "$FEDNAS" keys site keys "site-$i" >/dev/null; done
  OPENBLAS_NUM_THREADS=1 "$FEDNAS" server "$1" --keys keys --bind 'tcp://127.0.0.1:*' --db k.db --http off > s1.out 2> s1.err &
  PIDS+=($!); S1=$!
  EP=$(wait_for_line s1.out 'tcp://127\.0\.0\.1:[0-9]+' 30)
  fed_nas_client 8 "$EP" "$2"; FROZEN=$!
  wait_for_line s1.err 'site site-8 joined' 30 >/dev/null
  kill -STOP $FROZEN
  for i in 0 1 2 3 4 5 6 7; do fed_nas_client $i "$EP" "$2"; done
}
