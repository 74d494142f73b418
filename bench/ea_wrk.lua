-- wrk script of bench/ea_bench.py: replays pre-signed requests, each at most once.
--
--   wrk ... -s bench/ea_wrk.lua URL -- REQUESTS_FILE THREADS RATE CYCLE
--
-- REQUESTS_FILE: one request a line, tab-separated: method, path, then header
-- name/value pairs, the body last (may be empty). Thread i of THREADS sends lines
-- i, i+THREADS, i+2*THREADS, ... in order. A signed request carries a nonce the
-- server accepts once: past its last line a thread starts over only if CYCLE is 1
-- (the bare endpoint); otherwise it counts the wrap, the bench fails the run, and
-- the replayed requests are refused anyway (non-2xx).
-- RATE > 0 paces the run: each thread hands out send slots 1/(RATE/THREADS) apart
-- on the wall clock to whichever of its connections is free (open loop as long as
-- one is); RATE 0 sends as fast as the connections allow. Latency is measured by
-- wrk from the write of a request to its response, never including the wait.
-- done() prints one line, "BENCH_JSON {...}", that the bench parses.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_usec; } bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
]]
local timeval = ffi.new("bench_timeval")

local function now_ms()
  ffi.C.gettimeofday(timeval, nil)
  return tonumber(timeval.tv_sec) * 1000 + tonumber(timeval.tv_usec) / 1000
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("id", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local function split(line)
  local fields = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    table.insert(fields, field)
  end
  return fields
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  rate = tonumber(args[3])
  cycle = args[4] == "1"
  requests = {}
  local line_number = 0
  for line in io.lines(path) do
    if line_number % nthreads == id then
      local fields = split(line)
      local headers = {}
      for index = 3, #fields - 1, 2 do
        headers[fields[index]] = fields[index + 1]
      end
      local body = fields[#fields]
      if body == "" then body = nil end
      table.insert(requests, wrk.format(fields[1], fields[2], headers, body))
    end
    line_number = line_number + 1
  end
  next_index = 0
  wraps = 0
  interval_ms = rate > 0 and 1000 * nthreads / rate or 0
  next_slot = nil
  if rate == 0 then
    delay = nil -- wrk asks for a delay only where the script defines one
  end
end

function request()
  next_index = next_index + 1
  if next_index > #requests then
    next_index = 1
    if not cycle then
      wraps = wraps + 1
      wrk.thread:set("wraps", wraps)
    end
  end
  return requests[next_index]
end

function delay()
  local now = now_ms()
  if next_slot == nil then
    next_slot = now
  end
  local wait = next_slot - now
  next_slot = next_slot + interval_ms
  if wait < 0 then
    return 0
  end
  return wait
end

function done(summary, latency, requests_done)
  local wrapped = 0
  for _, thread in ipairs(threads) do
    wrapped = wrapped + (thread:get("wraps") or 0)
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"timeouts": %d, "wraps": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write, errors.timeout, wrapped,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
