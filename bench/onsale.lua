-- wrk script: the million-attempt sale (bench/onsale.py). Each wrk thread plays a slice of
-- the customers; every customer is a little state machine, driven by request()/response():
--
--   room:    join ─> poll (after pollAfterSeconds) ... ─> admitted ─> hold ─> confirm (90 %)
--   no room: hold ─> confirm (90 %)
--
-- A hold refused for want of seats takes what is left of its section, else tries the next
-- of its sections (up to MAX_SECTIONS); 429 and 503 are retried after Retry-After (or 1 s).
--
-- wrk's connections are a pool, not customers: request() sends the earliest action due
-- (a heap by due time), and each request carries X-Request-ID "<customer>.<n>" (the server
-- echoes it), which is how response() finds whose answer it is. delay() parks a
-- connection until the next action is due, claiming that action so two connections do
-- not wake for one; a connection woken with nothing due sends a "filler" GET /healthz,
-- counted apart.
--
-- Bots (a customer's kind): "joins" fires BOT_JOINS parallel joins, then behaves; "fast"
-- polls 20 times sooner than told (Retry-After ignored); "forge" polls once with a forged ticket (its own, with
-- the order key zeroed: the first place in line, under the original signature), then
-- behaves.
--
-- Arguments: CUSTOMERS_FILE SECTIONS_FILE OUT_PREFIX EVENT_ID MODE(room|noroom) THREADS
-- T0_MS CONFIRM_SHARE HOLD_TTL_SECONDS. CUSTOMERS_FILE lines: "<index> <kind> <arrival ms
-- after T0> <api key>"; thread t plays the lines with index % THREADS == t. Output, per
-- thread, OUT_PREFIX<t>.log: "R <ms since T0> <class> <status> <latency ms> <customer>" per
-- answer, "C <customer> <kind> <final> <bought> <joined ms> <admitted ms> <bought ms>
-- <polls> <admittedUntil> <ticket>" per customer once it is done, "J <customer> <ticket>" per
-- customer when its join is answered, "B <ticket>" per join of the "joins" bot
-- answered 201, and "DONE" when every one of the
-- slice is; the Python side stops wrk once every thread has written it.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } onsale_timespec;
int clock_gettime(int clock, onsale_timespec *tp);
]]
local timespec = ffi.new("onsale_timespec")
local function wall_ms()
  ffi.C.clock_gettime(0, timespec) -- CLOCK_REALTIME: the Python side's clock too
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local BOT_JOINS = 100
local MAX_SECTIONS = 4
local FAST = 20 -- the "fast" bot polls this many times sooner than told
local FAST_POLLS = 60 -- and gives up after this many polls

local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

-- Per customer (arrays indexed by customer number within this thread).
local key, kind, state, ticket, token, hold_id, qty, sections, tried, left
local joined_at, admitted_at, bought_at, polls, bought, sent_at, inflight, admitted_until
local inflight_n = {}
local sent_who, sent_n, sent_time, sent_head, sent_tail = {}, {}, {}, 1, 0
local LOST_MS = 40000 -- past wrk's --timeout (30 s): the request is not coming back
local out, event_id, mode, t0, confirm_share, ttl, section_ids
local remaining_customers, bot_joins_out, told = 0, 0, {}
-- Two heaps by due time: actions waiting for a connection, and actions a parked connection
-- will wake for (claimed by delay(); see the top).
local function new_heap() return {due = {}, who = {}, n = 0} end
local waiting, claimed, arrivals = new_heap(), new_heap(), new_heap()

local function heap_push(heap, due, who)
  local hd, hw = heap.due, heap.who
  heap.n = heap.n + 1
  local i = heap.n
  while i > 1 do
    local parent = math.floor(i / 2)
    if hd[parent] <= due then break end
    hd[i], hw[i] = hd[parent], hw[parent]
    i = parent
  end
  hd[i], hw[i] = due, who
end

local function heap_pop(heap)
  local hd, hw, n = heap.due, heap.who, heap.n
  local due, who = hd[1], hw[1]
  local last_due, last_who = hd[n], hw[n]
  hd[n], hw[n] = nil, nil
  n = n - 1
  heap.n = n
  local i = 1
  while true do
    local child = i * 2
    if child > n then break end
    if child < n and hd[child + 1] < hd[child] then child = child + 1 end
    if last_due <= hd[child] then break end
    hd[i], hw[i] = hd[child], hw[child]
    i = child
  end
  if n > 0 then hd[i], hw[i] = last_due, last_who end
  return due, who
end

local function schedule(who, after_ms)
  heap_push(waiting, wall_ms() + after_ms, who)
end

local function finish(who, final)
  state[who] = "done"
  local t = function(ms) return ms and string.format("%.1f", ms - t0) or "-" end
  out:write(string.format("C %d %s %s %d %s %s %s %d %s %s\n", who, kind[who], final,
    bought[who], t(joined_at[who]), t(admitted_at[who]), t(bought_at[who]), polls[who],
    admitted_until[who] or "-", ticket[who] or "-"))
  remaining_customers = remaining_customers - 1
  if remaining_customers == 0 then
    out:write("DONE\n")
    out:flush()
  end
end

function init(args)
  local tid = tonumber(tid)
  local nthreads = tonumber(args[6])
  event_id, mode, t0 = args[4], args[5], tonumber(args[7])
  confirm_share, ttl = tonumber(args[8]), tonumber(args[9])
  out = assert(io.open(args[3] .. tid .. ".log", "w"))
  section_ids = {}
  for line in io.lines(args[2]) do table.insert(section_ids, line) end
  key, kind, state, ticket, token, hold_id, qty, sections, tried, left = {}, {}, {}, {}, {}, {},
    {}, {}, {}, {}
  joined_at, admitted_at, bought_at, polls, bought, sent_at, inflight, admitted_until = {}, {}, {},
    {}, {}, {}, {}, {}
  math.randomseed(1000 + tid)
  for line in io.lines(args[1]) do
    local index, what, arrival, api_key = line:match("^(%d+) (%S+) (%d+) (%S+)$")
    index = tonumber(index)
    if index % nthreads == tid then
      key[index], kind[index], polls[index], bought[index] = api_key, what, 0, 0
      qty[index] = math.random(1, 4)
      -- A section of its choice, then the others in a random order.
      local order = {}
      for s = 1, #section_ids do order[s] = s end
      for s = #order, 2, -1 do
        local r = math.random(s)
        order[s], order[r] = order[r], order[s]
      end
      sections[index], tried[index] = order, 1
      state[index] = mode == "room" and "join" or "hold"
      heap_push(arrivals, t0 + tonumber(arrival), index)
      remaining_customers = remaining_customers + 1
    end
  end
  if remaining_customers == 0 then out:write("DONE\n") out:flush() end
end

-- Requests sent longest ago first: those answered are dropped, one unanswered for LOST_MS
-- is sent again.
local function find_lost()
  local now = wall_ms()
  while sent_head <= sent_tail do
    local who, n = sent_who[sent_head], sent_n[sent_head]
    if inflight[who] == n and now - sent_time[sent_head] < LOST_MS then return end
    sent_who[sent_head], sent_n[sent_head], sent_time[sent_head] = nil, nil, nil
    sent_head = sent_head + 1
    if inflight[who] == n then
      inflight[who] = nil
      out:write(string.format("L %.1f %d %s\n", now - t0, who, state[who]))
      heap_push(waiting, now, who)
    end
  end
end

-- The heap to take from next: a customer already in the sale (a poll, a hold, a confirm)
-- due now goes before the arrivals, even overdue ones. Each customer is a client of its
-- own; only wrk's pool of connections is shared, and a backlog of arrivals (a server
-- slower than they come) must not hold up those already in line. How late arrivals were
-- sent is measured (arrival to join, in the report).
local function source(now)
  if waiting.n > 0 and waiting.due[1] <= now then return waiting end
  if arrivals.n == 0 then return waiting.n > 0 and waiting or nil end
  if waiting.n == 0 or arrivals.due[1] <= waiting.due[1] then return arrivals end
  return waiting
end

-- Park this connection until the next action is due, and claim that action.
function delay()
  find_lost()
  local now = wall_ms()
  local from = source(now)
  if from == nil then return 1000 end
  local due, who = heap_pop(from)
  heap_push(claimed, due, who)
  local wait = due - now
  if wait < 0 then return 0 end
  return math.floor(wait)
end

-- The earliest action claimed, or else the next one due: a connection woken for a later
-- one leaves it to the next wakeup, so nothing due waits behind something parked.
local function next_action()
  local now = wall_ms()
  local from = source(now)
  if claimed.n > 0 and (from == nil or claimed.due[1] <= math.max(now, from.due[1])) then
    local _, who = heap_pop(claimed)
    return who
  end
  if from ~= nil then
    local _, who = heap_pop(from)
    return who
  end
  return nil
end

local function auth(who, extra, ident)
  local headers = {["Authorization"] = "Bearer " .. key[who], ["X-Request-ID"] = ident,
    ["Content-Type"] = "application/json"}
  if extra then for name, value in pairs(extra) do headers[name] = value end end
  return headers
end

local function forged(real)
  -- Characters 22..32 of the base64 cover bytes 16..23, the order key: all zero bits.
  local body = real:sub(5)
  return "wq1." .. body:sub(1, 21) .. string.rep("A", 11) .. body:sub(33)
end

function request()
  local who = next_action()
  if who == nil then
    return wrk.format("GET", "/healthz", {["X-Request-ID"] = "filler"})
  end
  local now = wall_ms()
  sent_at[who] = now
  local ident = tostring(who)
  if who > 0 then
    -- Remembered until answered: a request wrk loses (a connection closed under it) is
    -- sent again once LOST_MS have passed without an answer.
    local n = (inflight_n[who] or 0) + 1
    inflight_n[who], inflight[who] = n, n
    ident = who .. "." .. n
    sent_tail = sent_tail + 1
    sent_who[sent_tail], sent_n[sent_tail], sent_time[sent_tail] = who, n, now
  end
  local s = state[who]
  if s == "join" then
    if kind[who] == "joins" and bot_joins_out == 0 then
      -- The bot's burst: BOT_JOINS joins of one customer at once, one per wakeup.
      bot_joins_out = BOT_JOINS
      for _ = 2, BOT_JOINS do heap_push(waiting, 0, -who) end -- due long ago: first
    end
    return wrk.format("POST", "/events/" .. event_id .. "/queue", auth(who, nil, ident), "{}")
  elseif who < 0 then -- one of the bot's burst
    sent_at[who] = wall_ms()
    return wrk.format("POST", "/events/" .. event_id .. "/queue", auth(-who, nil, tostring(who)),
      "{}")
  elseif s == "poll" then
    return wrk.format("GET", "/queue/" .. ticket[who], {["X-Request-ID"] = ident})
  elseif s == "forge" then
    return wrk.format("GET", "/queue/" .. forged(ticket[who]), {["X-Request-ID"] = ident})
  elseif s == "hold" then
    local extra = token[who] and {["Admission-Token"] = token[who]} or nil
    local section = section_ids[sections[who][tried[who]]]
    return wrk.format("POST", "/holds", auth(who, extra, ident), '{"eventId":"' .. event_id ..
      '","items":[{"sectionId":"' .. section .. '","qty":' .. qty[who] .. '}],"ttlSeconds":' ..
      ttl .. '}')
  elseif s == "confirm" then
    return wrk.format("POST", "/holds/" .. hold_id[who] .. "/confirm", auth(who, nil, ident),
      '{"paymentReference":"onsale"}')
  end
  -- Not reached unless this script is wrong: say so, and keep wrk (and the others) going.
  out:write(string.format("E customer %d in state %s\n", who, tostring(s)))
  return wrk.format("GET", "/healthz", {["X-Request-ID"] = "filler"})
end

local function retry_after(headers)
  local after = tonumber(headers["retry-after"] or headers["Retry-After"] or "1") or 1
  return math.max(after, 1) * 1000
end

-- What a join's or a poll's answer says to do next.
local function follow(who, now, body)
  local status = body:match('"status":"([%a_]+)"')
  if status == "waiting" then
    local after = tonumber(body:match('"pollAfterSeconds":(%d+)')) * 1000
    if kind[who] == "fast" then
      after = after / FAST
      told[who] = after
    end
    state[who] = "poll"
    if kind[who] == "forge" and polls[who] == 0 then state[who] = "forge" end
    schedule(who, after)
  elseif status == "admitted" then
    admitted_at[who] = admitted_at[who] or now
    token[who] = body:match('"admissionToken":"([^"]+)"')
    admitted_until[who] = admitted_until[who] or body:match('"admittedUntil":"([^"]+)"')
    state[who] = "hold"
    schedule(who, 0)
  else
    finish(who, status or "bad_answer")
  end
end

function response(status, headers, body)
  local now = wall_ms()
  local ident = headers["x-request-id"] or headers["X-Request-ID"] or "?"
  if ident == "filler" then
    out:write(string.format("R %.1f filler %d 0 -\n", now - t0, status))
    return
  end
  local who, n = ident:match("^(%-?%d+)%.?(%d*)$")
  who, n = tonumber(who), tonumber(n)
  if who ~= nil and who > 0 and inflight[who] ~= n then
    -- The answer to a request given up as lost and sent again: the new one counts.
    out:write(string.format("R %.1f stale %d 0 %d\n", now - t0, status, who))
    return
  end
  if who == nil then
    out:write(string.format("R %.1f unknown %d 0 %s\n", now - t0, status, ident))
    return
  end
  if who < 0 then -- one of the bot's burst of joins
    out:write(string.format("R %.1f bot_join %d %.2f %d\n", now - t0, status,
      now - sent_at[who], -who))
    if status == 201 then out:write("B " .. body:match('"ticket":"([^"]+)"') .. "\n") end
    return
  end
  inflight[who] = nil
  local s = state[who]
  local class = s
  if kind[who] == "joins" and s == "join" then class = "bot_join" end
  if kind[who] == "fast" and s == "poll" then class = "bot_poll" end
  if s == "forge" then class = "forged" end
  out:write(string.format("R %.1f %s %d %.2f %d\n", now - t0, class, status,
    now - sent_at[who], who))
  if status == 429 or status >= 500 then
    if kind[who] == "fast" and s == "poll" then
      polls[who] = polls[who] + 1
      if polls[who] >= FAST_POLLS then return finish(who, "bot_stopped") end
      return schedule(who, told[who] or 50) -- Retry-After ignored, as a bot would
    end
    schedule(who, retry_after(headers))
    return
  end
  if s == "join" then
    if status ~= 201 then return finish(who, "join_" .. status) end
    joined_at[who] = now
    ticket[who] = body:match('"ticket":"([^"]+)"')
    if kind[who] == "joins" then out:write("B " .. ticket[who] .. "\n") end
    -- Its place in line, now: a customer still waiting when the run stops writes no "C".
    out:write("J " .. who .. " " .. ticket[who] .. "\n")
    return follow(who, now, body)
  elseif s == "forge" then
    -- Refused, as it should be (anything else is counted as a failed check): on with the
    -- real ticket.
    polls[who] = polls[who] + 1
    state[who] = "poll"
    return schedule(who, 1000)
  elseif s == "poll" then
    polls[who] = polls[who] + 1
    if status ~= 200 then return finish(who, "poll_" .. status) end
    if kind[who] == "fast" and polls[who] >= FAST_POLLS then return finish(who, "bot_stopped") end
    return follow(who, now, body)
  elseif s == "hold" then
    if status == 201 then
      hold_id[who] = body:match('^{"id":"([^"]+)"')
      if math.random() < confirm_share then
        state[who] = "confirm"
        return schedule(who, 0)
      end
      return finish(who, "abandoned")
    end
    local code = body:match('"code":"([%a_]+)"') or tostring(status)
    if code == "insufficient_seats" then
      local remaining = tonumber(body:match('"remaining":(%d+)') or "0")
      if remaining > 0 and remaining < qty[who] then
        qty[who] = remaining
      elseif tried[who] < MAX_SECTIONS then
        tried[who] = tried[who] + 1
      else
        return finish(who, "no_seats")
      end
      return schedule(who, 0)
    end
    return finish(who, "hold_" .. code)
  elseif s == "confirm" then
    if status == 201 then
      bought[who] = qty[who]
      bought_at[who] = now
      return finish(who, "bought")
    end
    local code = body:match('"code":"([%a_]+)"') or tostring(status)
    return finish(who, "confirm_" .. code)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'ONSALE_JSON {"requests":%d,"duration_us":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_timeout":%d,"p99_us":%d}\n', summary.requests, summary.duration,
    e.connect, e.read, e.write, e.timeout, latency:percentile(99)))
end
