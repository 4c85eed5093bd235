-- wrk script: POST /fhir/<tenant>/Patient with one fixed body, read from the
-- file named by BENCH_CREATE_BODY (see gen_patients.py --create-body).
--   BENCH_CREATE_BODY=body.json BENCH_TENANT=bench wrk -s bench/create.lua URL
local f = assert(io.open(assert(os.getenv("BENCH_CREATE_BODY"), "BENCH_CREATE_BODY is not set"), "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.path = "/fhir/" .. (os.getenv("BENCH_TENANT") or "bench") .. "/Patient"
wrk.body = body
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.headers["Accept"] = "application/fhir+json"
