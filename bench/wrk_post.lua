-- wrk script: POST AdmissionReviews to /mutate over keep-alive connections.
-- Usage: wrk ... -s bench/wrk_post.lua https://127.0.0.1:PORT -- BODIES_FILE
-- BODIES_FILE holds one compact JSON AdmissionReview per line; the requests are
-- formatted once per thread in init() and sent in rotation, so request() costs nothing.
local requests = {}
local n = 0
local i = 0

function init(args)
  local file = assert(io.open(args[1], "rb"))
  for line in file:lines() do
    if #line > 0 then
      n = n + 1
      requests[n] = wrk.format("POST", "/mutate?timeout=10s",
        {["Content-Type"] = "application/json", ["Host"] = wrk.host}, line)
    end
  end
  file:close()
  i = math.random(0, n - 1)  -- threads start at different places of the rotation
end

function request()
  i = i % n + 1
  return requests[i]
end

-- One JSON line the runner parses (latencies in microseconds).
function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p99":%d,"p999":%d,"max":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
