-- wrk script: GET /fhir/<tenant>/Patient/p<i>, i uniform in 1..BENCH_N.
-- Each thread has its own generator, seeded from BENCH_SEED and its index,
-- so a run's id sequence is reproducible.
-- With BENCH_TOKEN set, each request carries it as a bearer token.
--   BENCH_N=10000 BENCH_SEED=42 BENCH_TENANT=bench wrk -s bench/read_by_id.lua URL
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("index", threads)
end

local n, prefix, headers

function init(args)
  n = tonumber(os.getenv("BENCH_N") or "10000")
  prefix = "/fhir/" .. (os.getenv("BENCH_TENANT") or "bench") .. "/Patient/p"
  math.randomseed(tonumber(os.getenv("BENCH_SEED") or "42") * 1000 + index)
  headers = { ["Accept"] = "application/fhir+json" }
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
end

function request()
  return wrk.format("GET", prefix .. math.random(1, n), headers)
end
