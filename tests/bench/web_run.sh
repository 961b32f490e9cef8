#!/usr/bin/env bash
# The dashboard under load while a federated run is active: `fednas server` with 4 simulated
# sites (Gaussian blobs in CSV, so rounds are short and many) keeps a run going; for
# WEB_RUN_SECONDS (default 10) each, the run goes (1) unloaded, (2) with wrk cycling over the
# pages and API answers a watcher's browser loads (runs list, the run, its new rounds, clients,
# privacy, events, /metrics, the page and its script) and WEB_RUN_SOCKETS (default 8, the most
# the dashboard serves at once: web/events.c WEB_WS_MAX) open
# WebSockets reading the live events, (3) unloaded again. Prints wrk's requests/s, latency
# percentiles and errors, the WebSocket messages received, and for each window the rounds
# completed and their mean and longest time (the run's own clock, in the store), so the cost of the
# load to the run is a ratio measured in the same run. Never fails on time; fails on HTTP
# errors, a WebSocket that is refused, or a run that completes no round under load.
#
#   tests/bench/web_run.sh [FEDNAS_BINARY]
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
FEDNAS=$(realpath "${1:-$HERE/../../build/fednas}")
DUR=${WEB_RUN_SECONDS:-10}
CONNS=${WEB_RUN_CONNECTIONS:-16}
SOCKETS=${WEB_RUN_SOCKETS:-8}
command -v wrk > /dev/null || { echo "web_run bench: wrk is not installed (scripts/setup.sh installs it)"; exit 1; }
[ -x "$FEDNAS" ] || { echo "web_run bench: no fednas binary at $FEDNAS"; exit 1; }
WORK=$(mktemp -d /tmp/fednas-bench-webrun-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK" || exit 1
export OPENBLAS_NUM_THREADS=1 FEDNAS_THREADS=1 FEDNAS_LOG=warn
python3 - << 'PY'
import random
r = random.Random(1)
with open("table.csv", "w") as f:
    for _ in range(4000):
        y = r.randrange(3)
        f.write(",".join(f"{r.gauss(2.0 * y if i % 3 == y % 3 else -1.0, 1.5):.5f}" for i in range(8)) + f",{y}\n")
PY
cat > exp.json << JSON
{ "name": "bench-web-run", "seed": 3, "rounds": 1000000,
  "data": { "dataset": "csv", "path": "$WORK/table.csv", "features": 8, "classes": 3, "test": "$WORK/table.csv" },
  "model": { "type": "mlp", "hidden": [64] },
  "clients": { "count": 4 },
  "train": { "epochs": 1, "batch_size": 32, "lr": 0.05 },
  "server": { "round_timeout": 30, "register_timeout": 120, "heartbeat": 1 } }
JSON
"$FEDNAS" keys init keys > /dev/null || exit 1
for k in 1 2 3 4; do "$FEDNAS" keys site keys "site-$k" > /dev/null || exit 1; done
"$FEDNAS" server exp.json --keys keys --bind 'tcp://127.0.0.1:*' --db run.db --http 0 > server.out 2> server.err &
PIDS+=($!)
EP= URL=
for _ in $(seq 300); do
  EP=$(grep -m1 -oE 'tcp://127\.0\.0\.1:[0-9]+' server.out 2> /dev/null)
  URL=$(grep -m1 -oE 'https://127\.0\.0\.1:[0-9]+/\?token=[0-9a-f]+' server.out 2> /dev/null)
  [ -n "$EP" ] && [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$EP" ] && [ -n "$URL" ] || { cat server.out server.err; echo "web_run bench: the server did not start"; exit 1; }
TOKEN=${URL##*token=}
BASE=${URL%%/\?token=*}
"$FEDNAS" client --connect "$EP" --simulate 0-3/4 --kits keys/sites --data table.csv > worker.out 2>&1 &
PIDS+=($!)
rounds() { sqlite3 -batch -noheader run.db "select count(*) from rounds" 2> /dev/null || echo 0; }
for _ in $(seq 600); do [ "$(rounds)" -ge 3 ] && break; sleep 0.1; done
[ "$(rounds)" -ge 3 ] || { tail worker.out server.err; echo "web_run bench: the run did not start its rounds"; exit 1; }

window() { # START END -> "rounds mean_s max_s" of the rounds that started and ended inside
  sqlite3 -batch -noheader -separator ' ' run.db "select count(*), printf('%.4f', coalesce(avg(ended_at - started_at), 0)),
    printf('%.4f', coalesce(max(ended_at - started_at), 0)) from rounds where started_at >= $1 and ended_at <= $2"
}
now() { date +%s.%N; }

a0=$(now); sleep "$DUR"; a1=$(now)

# Loaded: WebSockets first (they stay open through the wrk window), then wrk.
python3 - "$BASE" "$TOKEN" "$SOCKETS" "$((DUR + 2))" > ws.out 2>&1 << 'PY' &
import base64, os, select, socket, ssl, sys, time
base, token, n, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
host, port = base.split("//")[1].split(":")
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
socks, refused = [], 0
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk: break
        head += chunk
    if head.startswith(b"HTTP/1.1 101"):
        s.setblocking(False); socks.append(s)
    else:
        refused += 1; s.close()
got, end = 0, time.time() + secs
while time.time() < end and socks:
    r, _, _ = select.select(socks, [], [], 0.2)
    for s in r:
        try:
            data = s.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            continue
        got += len(data)
print(f"WS open={len(socks)} refused={refused} bytes={got}")
PY
WSPID=$!; PIDS+=($WSPID)
sleep 1
last=$(rounds)
PATHS="/api/runs /api/runs/1 /api/runs/1/rounds?since=$last /api/runs/1/clients /api/runs/1/privacy /api/runs/1/events /metrics / /app.js"
b0=$(now)
WEB_PATHS=$PATHS WEB_TOKEN=$TOKEN wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -s "$HERE/web_run.lua" "$BASE" > wrk.out 2>&1
b1=$(now)
wait $WSPID
c0=$(now); sleep "$DUR"; c1=$(now)

read -r ra ma xa <<< "$(window "$a0" "$a1")"
read -r rb mb xb <<< "$(window "$b0" "$b1")"
read -r rc mc xc <<< "$(window "$c0" "$c1")"
res=$(grep '^RESULT' wrk.out)
val() { sed -nE "s/.*$1=([0-9.]+).*/\1/p" <<< "$res"; }
ws=$(cat ws.out)
echo
echo "fednas dashboard during a run: wrk -t2 -c$CONNS for $DUR s over $(wc -w <<< "$PATHS") paths, plus $SOCKETS WebSockets; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '+-------------------------+-----------+-----------+-----------+\n'
printf '| wrk                     | req/s     | p50 ms    | p99 ms    |\n'
printf '| %-23s | %9s | %9s | %9s |\n' "$(val requests) requests, $(val errors) errors" "$(val rps)" "$(val p50_ms)" "$(val p99_ms)"
printf '+-------------------------+-----------+-----------+-----------+\n'
printf '| run, %2d s windows       | rounds    | mean s    | max s     |\n' "$DUR"
printf '| %-23s | %9s | %9s | %9s |\n' "before (no load)" "$ra" "$ma" "$xa" "under wrk + WebSockets" "$rb" "$mb" "$xb" \
  "after (no load)" "$rc" "$mc" "$xc"
printf '+-------------------------+-----------+-----------+-----------+\n'
awk -v a="$ma" -v b="$mb" -v c="$mc" 'BEGIN { u = (a + c) / 2; if (u > 0) printf "mean round under load / unloaded: %.2f\n", b / u }'
echo "WebSockets: $ws"
[ -n "$res" ] || { cat wrk.out; echo "web_run bench: wrk gave no result"; exit 1; }
[ "$(val errors)" = 0 ] || { echo "web_run bench: HTTP errors under load"; exit 1; }
grep -q "refused=0" <<< "$ws" || { echo "web_run bench: WebSockets refused"; exit 1; }
[ "$rb" -gt 0 ] || { echo "web_run bench: the run completed no round under load"; exit 1; }
exit 0
