-- wrk script: read_by_id.lua's requests (GET /fhir/<tenant>/Patient/p<i>, i
-- uniform in 1..BENCH_N, seeded per thread from BENCH_SEED), each timed by
-- the script itself with CLOCK_MONOTONIC (LuaJIT ffi), from request() to
-- response(). Run it with as many threads as connections (wrk -tN -cN): one
-- connection per thread, so request() and response() alternate and each
-- pair is one request. At the end it prints one line:
--   TIMED {"requests":..,"seconds":..,"rps":..,"p50_ms":..,"p90_ms":..,"p99_ms":..,"max_ms":..,
--          "busy":..,"non2xx":..}
-- busy is the sum of the latencies over connections x seconds: about 1 for
-- a closed loop. (On this project's VM, wrk's own latency histogram summed
-- to several times connections x seconds against the server, so its
-- percentiles are not used where this script is.)
--   BENCH_N=1000 BENCH_SEED=42 BENCH_TENANT=quiet wrk -t4 -c4 -d15s -s bench/read_by_id_timed.lua URL
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } medgrid_timespec;
int clock_gettime(int clk_id, medgrid_timespec *tp);
]]
local ts = ffi.new("medgrid_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("index", #threads)
end

local n, prefix, headers, started
samples = {}
non2xx = 0

function init(args)
  n = tonumber(os.getenv("BENCH_N") or "10000")
  prefix = "/fhir/" .. (os.getenv("BENCH_TENANT") or "bench") .. "/Patient/p"
  math.randomseed(tonumber(os.getenv("BENCH_SEED") or "42") * 1000 + index)
  headers = { ["Accept"] = "application/fhir+json" }
end

function request()
  started = now_us()
  return wrk.format("GET", prefix .. math.random(1, n), headers)
end

function response(status, hdrs, body)
  if started then samples[#samples + 1] = now_us() - started end
  started = nil
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local all, bad = {}, 0
  for _, t in ipairs(threads) do
    for _, v in ipairs(t:get("samples")) do all[#all + 1] = v end
    bad = bad + t:get("non2xx")
  end
  table.sort(all)
  local sum = 0
  for _, v in ipairs(all) do sum = sum + v end
  local function pct(p)
    if #all == 0 then return 0 end
    return all[math.max(1, math.ceil(#all * p / 100))] / 1000
  end
  local s = summary.duration / 1e6
  io.write(string.format(
    'TIMED {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
    '"busy":%.2f,"non2xx":%d}\n',
    #all, s, #all / s, pct(50), pct(90), pct(99), pct(100), sum / 1e6 / (#threads * s), bad))
end
