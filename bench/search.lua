-- wrk script for bench/search: GET /api/v1/orders?q=… of one kind, each
-- connection waiting `pace` ms between requests (so c connections make
-- about c × 1000 / pace searches a second). Counts searches that found
-- nothing: every searched value exists, so a miss is a bug.
-- Arguments: kind (email | tracking | intent), orders, pace, [intents file].
local kind, orders, pace = "email", 1000000, 20
local intents = {}
misses = 0
local threads, counter = {}, 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  kind, orders, pace = args[1], tonumber(args[2]), tonumber(args[3])
  if kind == "intent" then
    for line in io.lines(args[4]) do intents[#intents + 1] = line end
  end
  math.randomseed(os.time() * 100 + tid)
end

function delay()
  return pace
end

function request()
  local q
  if kind == "email" then
    q = "Customer" .. math.random(1, orders) .. "%40Example.com"
  elseif kind == "tracking" then
    q = string.format("TRK%09d", math.random(1, orders))
  else
    q = intents[math.random(1, #intents)]
  end
  return wrk.format("GET", "/api/v1/orders?limit=10&q=" .. q)
end

function response(status, headers, body)
  if status ~= 200 or string.find(body, '"orders":[]', 1, true) then
    misses = misses + 1
  end
end

function done(summary, latency, requests)
  local missed = 0
  for _, t in ipairs(threads) do missed = missed + t:get("misses") end
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%d misses=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests, missed,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status))
end
