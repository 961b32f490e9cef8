#!/usr/bin/env bash
# Rebuilds the seed corpora in tests/fuzz/corpus/ from the project's own encoders: each target
# that has a seed writer runs it (FUZZ_WRITE_SEEDS=DIR, see fuzz_seed.h); the experiment
# configs and the safetensors fixture are copied; the HTTP parameter seeds are written here.
# Usage: tests/fuzz/gen_seeds.sh [BUILD_DIR]   (default build-fuzz, after `make fuzz-build`)
set -euo pipefail
# Empties a target's seed folder but keeps its regression inputs (regress-*).
fresh() { mkdir -p "$1" && find "$1" -type f ! -name 'regress-*' -delete; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/build-fuzz}/fuzz
C=$ROOT/tests/fuzz/corpus

for t in fuzz_wire fuzz_compress fuzz_safetensors fuzz_idx fuzz_secagg; do
  fresh "$C/$t"
  FUZZ_WRITE_SEEDS="$C/$t" "$BIN/$t" -runs=0 > /dev/null 2>&1
done
cp "$ROOT/tests/data/safetensors/simple.safetensors" "$C/fuzz_safetensors/"

fresh "$C/fuzz_config"
cp "$ROOT"/experiments/*.json "$C/fuzz_config/"
# Every optional block at once (the experiments leave some out), and two errors to locate.
cat > "$C/fuzz_config/all-blocks.json" <<'JSON'
{"name":"all","seed":1,"rounds":2,
 "data":{"dataset":"mnist","path":"/tmp/x","partition":{"scheme":"dirichlet","alpha":0.5,"min_size":2}},
 "model":{"type":"mlp","hidden":[8,4]},
 "clients":{"count":4,"per_round":3,"min_fit":2,"simulate":{"workers":2}},
 "strategy":{"name":"fedavg"},
 "dp":{"clip":1.0,"noise_multiplier":0.8,"delta":1e-5,"target_epsilon":8,
       "adaptive":{"quantile":0.5,"lr":0.2,"count_noise":1}},
 "train":{"epochs":1,"batch_size":16,"lr":0.1},
 "server":{"round_timeout":60,"register_timeout":30,"heartbeat":2,"evaluate_every":1,"phase_timeout":10},
 "evaluate":{"clients_fraction":0.5,"every":1,"holdout":0.2}}
JSON
cat > "$C/fuzz_config/csv-compression.json" <<'JSON'
{"name":"csv","rounds":1,"data":{"dataset":"csv","path":"t.csv","features":4,"classes":3,"test":"s.csv"},
 "model":{"type":"mlp","hidden":[]},"clients":{"count":2,"fraction":1.0},
 "compression":{"quantize":8,"topk":0.1,"error_feedback":true},"train":{"batch_size":8}}
JSON
printf '{"name":"typo","round":3}\n' > "$C/fuzz_config/unknown-key.json"
printf '{\n  "name": "x",\n  "rounds": 0,\n  "clients": {"count": -1}\n}\n' > "$C/fuzz_config/bad-values.json"

fresh "$C/fuzz_http_params"
# Byte 0 picks the limit (0: INT_MAX, 1: INT64_MAX); the rest is the id or the query string.
printf '\0001234' > "$C/fuzz_http_params/since-number"
printf '\001since=17&name=accuracy' > "$C/fuzz_http_params/metrics-query"
printf '\000token=abc&since=%%33&name=loss.mean' > "$C/fuzz_http_params/token-escaped"
printf '\0019223372036854775807' > "$C/fuzz_http_params/int64-max"
printf '\0002147483648' > "$C/fuzz_http_params/int-max-plus-one"

fresh "$C/fuzz_http_request"
V=fuzzViewerToken_0123456789abcdef   # VIEWER_TOKEN of fuzz_http_request.c
req() { printf "$2" > "$C/fuzz_http_request/$1"; }
req healthz 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
req login "GET /runs/1?x=1&token=$V&y=2 HTTP/1.1\r\nHost: localhost:8080\r\n\r\n"
req bearer-rounds "GET /api/runs/1/rounds?since=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer $V\r\n\r\n"
req bearer-metrics "GET /api/runs/1/metrics?name=epsilon&since=0 HTTP/1.1\r\nAuthorization: Bearer $V\r\n\r\n"
req bearer-csv "HEAD /api/runs/1/clients.csv HTTP/1.1\r\nAuthorization: Bearer $V\r\n\r\n"
req bearer-events "GET /api/runs/1/events HTTP/1.1\r\nAuthorization: Bearer $V\r\nConnection: keep-alive\r\n\r\nGET /api/runs/1/privacy HTTP/1.1\r\nAuthorization: Bearer $V\r\n\r\n"
req bearer-post "POST /api/runs/1/stop HTTP/1.1\r\nAuthorization: Bearer $V\r\nContent-Length: 2\r\n\r\n{}"
req bad-host "GET /api/runs HTTP/1.1\r\nHost: evil.example:80\r\nAuthorization: Bearer $V\r\n\r\n"
req dotdot "GET /static/../../etc/passwd?token=$V HTTP/1.0\r\n\r\n"
req metrics "GET /metrics HTTP/1.1\r\nAuthorization: Bearer $V\r\n\r\n"
du -sh "$C"
