-- wrk script: GET /queue/{ticket} for the tickets listed in TICKETS_FILE, in turn; each of
-- wrk's two threads polls its own half. The server remembers the pace of fewer tickets
-- than a half holds (MAX_POLLS_TRACKED), so no poll is ever too soon.
-- Arguments: TICKETS_FILE [origin]. With "origin", every poll carries an Origin header:
-- the server's protocol leaves such a poll to the app (CORS is the app's), so the same
-- server answers the same polls the other way.
-- Counts 200s as answered, anything else as other; prints one BENCH_JSON line.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("thread_number", counter)  -- 0, 1: each thread polls its own half
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  answered = 0
  other = 0
  requests = {}
  local headers = {}
  if args[2] == "origin" then
    headers["Origin"] = "https://shop.example"
  end
  local all = {}
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    table.insert(all, line)
  end
  file:close()
  local half = math.floor(#all / 2)
  for i = thread_number * half + 1, (thread_number + 1) * half do
    table.insert(requests, wrk.format("GET", "/queue/" .. all[i], headers))
  end
  next_index = 0
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

function response(status, headers, body)
  if status == 200 then
    answered = answered + 1
  else
    other = other + 1
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
