#!/bin/bash
# `fednas serve` end to end over HTTPS: dynamic batching never mixes up answers (48 concurrent
# clients, each with its own image, must get exactly what that image gets alone in a batch of
# one), multi-image requests keep their order, bad bodies get 400 with a reason, a missing or
# wrong token 401, and /metrics counts it all.
. "$(dirname "$0")/lib.sh"
TOKEN=serve_test_token_0123456789
echo '{"type":"mlp","hidden":[64]}' > "$WORK/mlp.json"
# tanh is not an inference-runtime layer: this model is served by the engine (cli/infer.c)
echo '{"type":"layers","layers":[{"type":"flatten"},{"type":"linear","out":48},{"type":"tanh"},{"type":"linear"}]}' \
  > "$WORK/tanh.json"
for MODEL in mlp tanh; do
rm -f "$WORK/serve.out"
FEDNAS_SERVE_TOKEN=$TOKEN "$FEDNAS" serve "$WORK/$MODEL.json" --http 0 --max-batch 16 --max-wait-ms 50 --workers 64 \
  > "$WORK/serve.out" 2>&1 &
PIDS+=($!)
SPID=$!
PORT=$(wait_for_line "$WORK/serve.out" 'https://127\.0\.0\.1:[0-9]+/v1/predict' 20 | sed -E 's#.*:([0-9]+)/v1/predict#\1#')
[ -d "$WORK/tls" ] || fail "no certificate made in the model's folder"

python3 - "$PORT" "$TOKEN" <<'PY' || fail "serve checks ($MODEL)"
import base64, http.client, json, random, ssl, struct, sys, threading
port, token = int(sys.argv[1]), sys.argv[2]
ctx = ssl._create_unverified_context()

def call(body, tok=token, path="/v1/predict", method="POST", headers=None, conn=None):
    c = conn or http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
    h = {"Content-Type": "application/json"}
    if tok:
        h["Authorization"] = "Bearer " + tok
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read().decode()
    c.close()
    return r.status, data

N = 48
rng = random.Random(11)
imgs = [[rng.random() * (1 + i % 5) for _ in range(784)] for i in range(N)]
alone = []
for im in imgs:
    st, body = call(json.dumps({"images": [im]}))
    assert st == 200, (st, body)
    d = json.loads(body)
    assert d["batch_size"] == 1, d["batch_size"]  # nothing else queued: a single-sample forward
    alone.append(d["predictions"][0])
assert len({tuple(p["probabilities"]) for p in alone}) == N, "images are not told apart"

def close(a, b):
    return a["class"] == b["class"] and all(abs(x - y) < 1e-5 for x, y in zip(a["probabilities"], b["probabilities"]))

# Concurrent rounds: each client opens its TLS connection first, then all send at once. Every
# round must answer each image with its own prediction; batching is the server's choice (it waits
# only while another request is being read), so on a loaded machine a round may find every
# request alone: rounds go on (at most 8) until two have run and one shared a pass.
rounds, shared = 0, 0
while rounds < 2 or (shared == 0 and rounds < 8):
    rnd = rounds
    got, errs = [None] * N, []
    go = threading.Barrier(N)
    def client(i):
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
            conn.connect()
            go.wait()
            enc = base64.b64encode(struct.pack("<784f", *imgs[i])).decode() if (i + rnd) % 2 else imgs[i]
            st, body = call(json.dumps({"images": [enc]}), conn=conn)
            got[i] = (st, json.loads(body))
        except Exception as e:
            errs.append(repr(e))
    ts = [threading.Thread(target=client, args=(i,)) for i in range(N)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert not errs, errs
    batched = 0
    for i in range(N):
        st, d = got[i]
        assert st == 200, (i, st, d)
        assert close(d["predictions"][0], alone[i]), ("mixed up", i)
        batched += d["batch_size"] > 1
    print("round", rnd, ":", batched, "of", N, "answers came from shared passes")
    rounds, shared = rounds + 1, shared + batched
assert shared > 0, "48 concurrent requests never shared a forward pass in %d rounds" % rounds

st, body = call(json.dumps([imgs[3], imgs[7], imgs[1]]))
assert st == 200, body
ps = json.loads(body)["predictions"]
assert [close(p, alone[j]) for p, j in zip(ps, (3, 7, 1))] == [True] * 3, "multi-image order"
# base64 images as the server's JSON-free fast path reads them (a bare list, whitespace between
# tokens, URL-safe digits, no padding), and one with JSON escapes ("\/"), which only the full
# parser reads: the same predictions
b64 = lambda im: base64.b64encode(struct.pack("<784f", *im)).decode()
st, body = call("\n [ \"%s\" ,\r\n\t\"%s\",\"%s\" ] \n" % (
    b64(imgs[5]), base64.urlsafe_b64encode(struct.pack("<784f", *imgs[2])).decode().rstrip("="), b64(imgs[4])))
assert st == 200, body
ps = json.loads(body)["predictions"]
assert [close(p, alone[j]) for p, j in zip(ps, (5, 2, 4))] == [True] * 3, "multi-image base64 order"
# answers keep the connection open (written whole by the server, not through civetweb's headers):
# three requests on one connection, then one that asks to close it
kc = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
for j, hdr in ((0, {}), (1, {}), (2, {"Connection": "close"})):
    kc.request("POST", "/v1/predict", body=json.dumps({"images": [b64(imgs[j])]}),
               headers={"Content-Type": "application/json", "Authorization": "Bearer " + token, **hdr})
    r = kc.getresponse()
    assert r.status == 200 and close(json.loads(r.read())["predictions"][0], alone[j]), j
    assert r.getheader("Connection") == ("close" if hdr else "keep-alive"), r.getheader("Connection")
    assert r.getheader("Content-Type") == "application/json" and r.getheader("Date"), r.getheaders()
kc.close()
esc = b64(imgs[6])
assert "/" in esc or "+" in esc
st, body = call('{"images": ["%s"]}' % esc.replace("/", "\\/"))
assert st == 200 and close(json.loads(body)["predictions"][0], alone[6]), (st, body)

bad = [
    ("{\"images\": [", "invalid JSON"),
    (json.dumps({"images": [imgs[0][:100]]}), "expected 784 numbers"),
    (json.dumps({"images": []}), "1..64 images"),
    (json.dumps({"images": [imgs[0]] * 65}), "1..64 images"),
    (json.dumps({"images": [imgs[0]], "extra": 1}), "unknown key"),
    (json.dumps({"images": [["x"] * 784]}), "images[0][0]: not a finite number"),
    (json.dumps({"images": [base64.b64encode(b"\0" * 100).decode()]}), "base64 must decode"),
    (json.dumps({"images": [base64.b64encode(struct.pack("<784f", *([float("nan")] * 784))).decode()]}), "not a finite"),
    (json.dumps({"images": "abc"}), "the body must be"),
    (json.dumps({"images": [b64(imgs[0])]}) + " x", "invalid JSON"),
    (json.dumps({"images": [b64(imgs[0])] * 65}), "1..64 images"),
    ('{"images": ["%s"], "images": ["%s"]}' % (b64(imgs[0]), b64(imgs[0])), "invalid JSON"),
    (json.dumps({"images": [b64(imgs[0])[:8] + "=" + b64(imgs[0])[9:]]}), "base64 must decode"),
    (json.dumps({"images": [b64(imgs[0]) + "AAAA"]}), "base64 must decode"),
    ("", "invalid JSON"),
]
for body, want in bad:
    st, resp = call(body)
    assert st == 400 and want in json.loads(resp)["error"], (body[:40], st, resp)
st, resp = call(None, method="GET")
assert st == 405, (st, resp)
st, resp = call(json.dumps({"images": [imgs[0]]}), tok=None)
assert st == 401 and "Bearer" in resp, (st, resp)
st, resp = call(json.dumps({"images": [imgs[0]]}), tok="wrong_token_0123456789")
assert st == 401, (st, resp)
st, resp = call(None, path="/metrics", method="GET", tok=None)
assert st == 401, st
st, resp = call(None, path="/healthz", method="GET", tok=None)
assert st == 200 and "ok" in resp, (st, resp)

st, text = call(None, path="/metrics", method="GET")
assert st == 200, st
m = {}
for line in text.splitlines():
    if line and not line.startswith("#"):
        k, v = line.rsplit(" ", 1)
        m[k] = float(v)
ok = N + rounds * N + 6
assert m['fednas_serve_requests_total{code="2xx"}'] == ok, m['fednas_serve_requests_total{code="2xx"}']
assert m['fednas_serve_requests_total{code="4xx"}'] == len(bad) + 4, m['fednas_serve_requests_total{code="4xx"}']
assert m["fednas_serve_images_total"] == ok + 4
assert m['fednas_serve_batch_size_bucket{le="+Inf"}'] == m["fednas_serve_batch_size_count"]
assert m['fednas_serve_batch_size_bucket{le="1"}'] < m["fednas_serve_batch_size_count"], "no batch above 1"
assert m["fednas_serve_batch_size_sum"] == ok + 4
assert 0 < m['fednas_serve_latency_seconds{quantile="0.5"}'] <= m['fednas_serve_latency_seconds{quantile="0.99"}']
assert m["fednas_serve_requests_per_second"] > 0
assert 1 <= m["fednas_serve_pass_images"] <= 16, m["fednas_serve_pass_images"]
PY
pass "$MODEL: batching keeps answers apart; 400s, 401s and /metrics"
[ "$MODEL" = tanh ] && break
kill "$SPID"
wait_exit "$SPID" 20 || fail "serve did not stop on SIGTERM"
done

# A body over the limit is refused from its Content-Length, before it is read.
code=$(head -c 3000000 /dev/zero | curl -sk -o "$WORK/big.out" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
  --data-binary @- "https://127.0.0.1:$PORT/v1/predict")
[ "$code" = 413 ] || fail "3 MB body: HTTP $code"
pass "oversized body"

kill "$SPID"
wait_exit "$SPID" 20 || fail "serve did not stop on SIGTERM"
FEDNAS_SERVE_TOKEN=$TOKEN "$FEDNAS" serve "$WORK/mlp.json" > "$WORK/e1" 2>&1; [ $? = 2 ] || fail "no --http accepted"
"$FEDNAS" serve "$WORK/mlp.json" --http 0 --max-batch 0 > "$WORK/e2" 2>&1; [ $? = 2 ] || fail "max batch 0 accepted"
pass "arguments"
