-- wrk script for tests/bench/web_run.sh: cycles over the dashboard pages and API answers a
-- watcher's browser loads during a run (paths in $WEB_PATHS, space-separated), with the bearer
-- token $WEB_TOKEN; counts non-200 answers and prints one parseable line at the end.
local paths = {}
for p in string.gmatch(os.getenv("WEB_PATHS"), "%S+") do paths[#paths + 1] = p end
local i = 0
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WEB_TOKEN")

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end

local bad = 0
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
