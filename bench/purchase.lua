-- wrk script: POST /api/v1/purchase with a distinct Idempotency-Key per
-- request; counts responses that are not 201. Usage:
--   wrk ... -s bench/purchase.lua http://127.0.0.1:18080 -- <run-id>
local threads = {}
local next_tid = 0

function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
  table.insert(threads, thread)
end

local body = [[{"customer":{"email":"bench@example.com","name":"Bench Buyer"},
"items":[{"sku":"SKU-1","quantity":2},{"sku":"SKU-3","quantity":1}],"currency":"usd",
"shipping_address":{"line1":"1 Main St","line2":null,"city":"London","postal_code":"N1 9GU","country":"GB"},
"payment_method":"pm_card_visa"}]]
local counter = 0
local run_id = "run"
bad = 0

function init(args)
  run_id = args[1] or "run"
end

function request()
  counter = counter + 1
  local key = string.format("bench-%s-%d-%d", run_id, tid, counter)
  return wrk.format("POST", "/api/v1/purchase",
    {["Content-Type"] = "application/json", ["Idempotency-Key"] = key}, body)
end

function response(status, headers, body)
  if status ~= 201 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, t in ipairs(threads) do total_bad = total_bad + t:get("bad") end
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%d not_201=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, total_bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status))
end
