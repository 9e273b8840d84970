-- One script for every cell; bench/run.ts configures it through the environment:
--   BENCH_METHOD, BENCH_HEADERS ("Name: value" lines), BENCH_BODY_BYTES,
--   BENCH_TOKENS (a file of JWTs: each request takes the next one as a Bearer token).
-- done() prints one machine-readable line that run.ts parses.
wrk.method = os.getenv("BENCH_METHOD") or "GET"
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end
local size = tonumber(os.getenv("BENCH_BODY_BYTES") or "0")
if size > 0 then
  wrk.body = string.rep("x", size)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

local tokens = os.getenv("BENCH_TOKENS")
if tokens then
  -- Pre-format every request in init(): a request() that only indexes a table keeps
  -- wrk's per-request Lua cost tiny. Defining request() at all is what makes wrk
  -- call it instead of sending one static request.
  local prepared, n, i = {}, 0, 0
  -- setup() runs in the main Lua state, once per thread: give each thread an id so
  -- the threads walk the token list far apart (else one thread would reuse tokens
  -- the other just had verified, and hit the proxy's per-token cache).
  local threads = 0
  function setup(thread)
    threads = threads + 1
    thread:set("id", threads)
  end
  function init(args)
    for tok in io.lines(tokens) do
      wrk.headers["Authorization"] = "Bearer " .. tok
      n = n + 1
      prepared[n] = wrk.format()
    end
    i = ((id or 1) - 1) * 499 % n
  end
  function request()
    i = i % n + 1
    return prepared[i]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%.0f,"p99_us":%.0f,"http":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
