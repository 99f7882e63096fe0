-- wrk script: POST /book (or /noop) for the targets listed in TARGETS_FILE, at random.
-- Arguments: PATH TARGETS_FILE [idempotent]. With "idempotent", every request carries
-- an Idempotency-Key of its own (thread id and a counter: unique within the run).
-- With BENCH_AUTHORIZATION in the environment, every request sends it as its
-- Authorization header (an API key: "Bearer bo_live_...").
-- Counts 201s per thread and prints one BENCH_JSON line with the summary.
local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

function init(args)
  created = 0
  other = 0
  sent = 0
  local path = args[1]
  local file = assert(io.open(args[2], "r"))
  idempotent = args[3] == "idempotent"
  prefix = string.format("%d-%d-", os.time(), tid or 0)
  prepared = {}
  bodies = {}
  authorization = os.getenv("BENCH_AUTHORIZATION")
  for line in file:lines() do
    local event, section = line:match("^(%S+)%s+(%S+)$")
    local body = '{"eventId":"' .. event .. '","sectionId":"' .. section .. '","qty":1}'
    table.insert(bodies, body)
    table.insert(prepared, wrk.format("POST", path, headers_for(nil), body))
  end
  file:close()
  bench_path = path
  math.randomseed(os.time() + math.floor(os.clock() * 1000000) + (tid or 0))
  -- Keyed requests made up front: wrk shares the two cores with the server, and
  -- formatting each request as it goes would take its CPU from the server.
  keyed = {}
  if idempotent then
    for n = 1, KEYED_UP_FRONT do
      keyed[n] = keyed_request(n)
    end
  end
end

KEYED_UP_FRONT = 60000

function headers_for(key)
  local headers = {["Content-Type"] = "application/json"}
  if key then
    headers["Idempotency-Key"] = key
  end
  if authorization then
    headers["Authorization"] = authorization
  end
  return headers
end

function keyed_request(n)
  return wrk.format("POST", bench_path, headers_for(prefix .. n), bodies[math.random(#bodies)])
end

function request()
  if not idempotent then
    return prepared[math.random(#prepared)]
  end
  sent = sent + 1
  return keyed[sent] or keyed_request(sent)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local c, o = 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created")
    o = o + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"created":%d,"other":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, c, o, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.mean))
end
