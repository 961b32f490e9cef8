-- wrk script for tests/bench/serve.sh: POSTs one prediction body (the file $SERVE_BODY) with the
-- bearer token $SERVE_TOKEN and prints one parseable line at the end (errors: connection errors,
-- timeouts and answers with a status of 400 or more).
local f = assert(io.open(os.getenv("SERVE_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SERVE_TOKEN")

-- No response() callback: wrk then skips handing every answer to Lua (its own CPU, on the cores the
-- server shares), and still counts answers with a status above 399 as errors.status.

function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
