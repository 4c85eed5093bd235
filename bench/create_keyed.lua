-- wrk script: POST /fhir/<tenant>/Patient as create.lua, with an
-- Idempotency-Key. BENCH_KEY_MODE=unique: a new key per request (every
-- request writes and records its key); BENCH_KEY_MODE=same: one key for all
-- (the first writes, every later one is a replay).
--   BENCH_CREATE_BODY=body.json BENCH_KEY_MODE=unique wrk -s bench/create_keyed.lua URL
local f = assert(io.open(assert(os.getenv("BENCH_CREATE_BODY"), "BENCH_CREATE_BODY is not set"), "rb"))
local body = f:read("*a")
f:close()
local mode = os.getenv("BENCH_KEY_MODE") or "unique"
local path = "/fhir/" .. (os.getenv("BENCH_TENANT") or "bench") .. "/Patient"
local counter = 0
-- Each wrk thread has its own Lua state; setup() runs in the main one and
-- numbers them, so keys never repeat across threads.
local threads = 0
prefix = "t0"

function setup(thread)
  threads = threads + 1
  thread:set("prefix", "t" .. threads .. "-" .. os.time())
end

function request()
  counter = counter + 1
  local key = mode == "same" and "bench-replay" or (prefix .. "-" .. counter)
  return wrk.format("POST", path, {["Content-Type"] = "application/fhir+json", ["Accept"] = "application/fhir+json",
                                   ["Idempotency-Key"] = key}, body)
end
