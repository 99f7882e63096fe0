-- wrk script: GET /events/{id} for the events listed in TARGETS_FILE, at random: the read
-- storm of an on-sale, everyone refreshing the event page.
-- Arguments: TARGETS_FILE [revalidate]. With "revalidate", every request after a thread's
-- first answer for an event carries that answer's ETag in If-None-Match, as a browser
-- revalidating its copy does (304 while the availability has not changed).
-- Counts 200s and 304s as answered, anything else as other, and prints one BENCH_JSON
-- line with the summary ("created" is 0: nothing is booked).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  answered = 0
  other = 0
  revalidate = args[2] == "revalidate"
  paths = {}
  plain = {}
  conditional = {}  -- path -> request with the last ETag seen
  local seen = {}
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    local event = line:match("^(%S+)")
    if event and not seen[event] then
      seen[event] = true
      local path = "/events/" .. event
      table.insert(paths, path)
      plain[path] = wrk.format("GET", path)
    end
  end
  file:close()
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  local path = paths[math.random(#paths)]
  return (revalidate and conditional[path]) or plain[path]
end

function response(status, headers, body)
  if status == 200 or status == 304 then
    answered = answered + 1
  else
    other = other + 1
  end
  if revalidate and status == 200 and headers["etag"] then
    -- Which event: a thread's connections interleave, so the answer says (its id first).
    -- Formatted once per new tag, not per request: wrk shares the cores with the server.
    local path = "/events/" .. body:match('^{"id":"([^"]+)"')
    conditional[path] = wrk.format("GET", path, {["If-None-Match"] = headers["etag"]})
  end
end

function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("answered")
    o = o + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"created":0,"answered":%d,"other":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, a, o, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.mean))
end
