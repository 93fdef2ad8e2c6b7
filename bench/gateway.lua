-- wrk script: POST pre-signed gateway events to the inbox, one line each of
-- the file named by the first argument ("<Stripe-Signature>\t<body>"),
-- cycling; an optional second argument paces each connection (ms between
-- its requests), for a fixed offered rate. RESULT line as bench/read.lua.
local lines, next_line, pace = {}, 1, 0
local counts = { ok = 0, other = 0 }
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("index", threads)
end

function init(args)
  for line in io.lines(args[1]) do lines[#lines + 1] = line end
  pace = tonumber(args[2] or "0")
  -- Each thread starts at its own share of the file, so threads send
  -- different events (wrk seeds every thread's random source alike).
  next_line = math.floor((index - 1) * #lines / 2) + 1
end

function request()
  local line = lines[next_line]
  next_line = next_line % #lines + 1
  local tab = line:find("\t", 1, true)
  return wrk.format("POST", "/api/v1/gateway/webhooks",
    { ["Content-Type"] = "application/json", ["Stripe-Signature"] = line:sub(1, tab - 1) },
    line:sub(tab + 1))
end

function delay()
  return pace
end

function response(status)
  if status == 200 then counts.ok = counts.ok + 1 else counts.other = counts.other + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%d socket_errors=%d non_2xx=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
