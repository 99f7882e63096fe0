-- wrk script: checkout. Each new request holds 1 seat of a random target (POST /holds);
-- each hold answered 201 is confirmed by a later request (POST /holds/{id}/confirm).
-- Arguments: TARGETS_FILE. "created" counts confirmations (completed checkouts),
-- "holds" the holds placed; anything not 201 is "other".
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  created = 0
  holds = 0
  other = 0
  waiting = {}
  local file = assert(io.open(args[1], "r"))
  bodies = {}
  for line in file:lines() do
    local event, section = line:match("^(%S+)%s+(%S+)$")
    table.insert(bodies, '{"eventId":"' .. event .. '","items":[{"sectionId":"' .. section ..
      '","qty":1}]}')
  end
  file:close()
  headers = {["Content-Type"] = "application/json"}
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  local id = table.remove(waiting)
  if id then
    return wrk.format("POST", "/holds/" .. id .. "/confirm", headers,
      '{"paymentReference":"bench"}')
  end
  return wrk.format("POST", "/holds", headers, bodies[math.random(#bodies)])
end

function response(status, headers, body)
  if status ~= 201 then
    other = other + 1
    return
  end
  local id = body:match('^{"id":"([%x%-]+)"')
  if id then
    holds = holds + 1
    table.insert(waiting, id)
  else
    created = created + 1
  end
end

function done(summary, latency, requests)
  local c, o, h = 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created")
    o = o + t:get("other")
    h = h + t:get("holds")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"created":%d,"holds":%d,"other":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, c, h, o, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.mean))
end
