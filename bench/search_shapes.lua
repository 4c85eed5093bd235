-- wrk script: GET each path of the file BENCH_URLS in turn (one request path
-- per line, already URL-encoded, e.g. /fhir/bench/Patient?gender=male).
-- Thread i of BENCH_THREADS starts at line (i-1)*n/BENCH_THREADS + 1, so the
-- threads walk different parts of the list; each wraps around at the end.
-- At the end it prints one line for bench/search_report.py:
--   BENCH {"requests":..,"seconds":..,"rps":..,"p50_us":..,"p95_us":..,"p99_us":..,"max_us":..,
--          "non2xx":..,"connect":..,"read":..,"write":..,"timeout":..}
--   BENCH_URLS=/tmp/obs_code.paths BENCH_THREADS=2 wrk -t2 -c32 -d20s -s bench/search_shapes.lua URL
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("index", threads)
end

local paths, n, i
local headers = { ["Accept"] = "application/fhir+json" }

function init(args)
  paths = {}
  local file = os.getenv("BENCH_URLS")
  assert(file, "BENCH_URLS is not set")
  for line in io.lines(file) do
    if line ~= "" then paths[#paths + 1] = line end
  end
  n = #paths
  assert(n > 0, "no paths in BENCH_URLS")
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  i = math.floor((index - 1) * n / nthreads)
end

function request()
  i = i % n + 1
  return wrk.format("GET", paths[i], headers)
end

function done(summary, latency, requests)
  local s = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
    summary.requests, s, summary.requests / s, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
