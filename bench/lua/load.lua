-- wrk script used by every bench scenario. Parameters come from the environment:
--   BENCH_METHOD  GET | POST | PUT               BENCH_PATH   request path (and query)
--   BENCH_LINES   file: one request body per line, sent in turn (threads interleave)
--   BENCH_BODY    file: one request body sent whole with every request (e.g. a _bulk body)
--   BENCH_CTYPE   Content-Type of the bodies     BENCH_QUOTA  answers per thread, then stop (0: run -d)
--   BENCH_OUT     where done() writes its JSON: status counts, bytes, latency percentiles
--   BENCH_THREADS the -t given to wrk (bodies are dealt out round-robin over the threads)
--   BENCH_THINK_MS a connection waits this long after each answer before its next request (0: none):
--                 a paced load, the same for every side whatever each side's ceiling
local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local ctype = os.getenv("BENCH_CTYPE") or "application/json"
local quota = tonumber(os.getenv("BENCH_QUOTA") or "0")
local threads = {}
local think = tonumber(os.getenv("BENCH_THINK_MS") or "0")

if think > 0 then
  -- only defined when wanted: wrk adds a timer per request to every script that has delay()
  function delay() return think end
end

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  bodies = {}
  local lines, whole = os.getenv("BENCH_LINES"), os.getenv("BENCH_BODY")
  if lines and lines ~= "" then
    for line in io.lines(lines) do
      if line ~= "" then bodies[#bodies + 1] = line end
    end
  elseif whole and whole ~= "" then
    local f = assert(io.open(whole, "rb"))
    bodies[1] = f:read("*a")
    f:close()
  end
  headers = {}
  if #bodies > 0 then headers["Content-Type"] = ctype end
  if #bodies == 0 then fixed = wrk.format(method, path, headers) end
  cursor = tid - 1
  answered, sent_bytes = 0, 0
  statuses = {}
end

function request()
  local req = fixed
  if not req then
    req = wrk.format(method, path, headers, bodies[(cursor % #bodies) + 1])
    cursor = cursor + nthreads
  end
  sent_bytes = sent_bytes + #req
  return req
end

function response(status, hdrs, body)
  answered = answered + 1
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
  if quota > 0 and answered == quota then
    -- wrk's main thread sleeps for -d: the harness sees these marks and interrupts it (SIGINT).
    local mark = io.open(os.getenv("BENCH_OUT") .. ".done." .. tid, "w")
    if mark then mark:close() end
    wrk.thread:stop()
  end
end

local function json_table(t)
  local parts = {}
  for k, v in pairs(t) do parts[#parts + 1] = string.format("%q:%d", k, v) end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local statuses_all, sent, answered_all = {}, 0, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses") or {}) do statuses_all[k] = (statuses_all[k] or 0) + v end
    sent = sent + (t:get("sent_bytes") or 0)
    answered_all = answered_all + (t:get("answered") or 0)
  end
  local q = {}
  local p = 0.0
  while p < 99.0 do q[#q + 1] = p; p = p + 0.5 end
  for _, x in ipairs({99, 99.1, 99.2, 99.3, 99.4, 99.5, 99.6, 99.7, 99.8, 99.9, 99.95, 99.99, 99.999, 100}) do
    q[#q + 1] = x
  end
  local pct = {}
  for _, x in ipairs(q) do
    local v = latency.max -- percentile(100) answers 0
    if x < 100 then v = latency:percentile(x) end
    pct[#pct + 1] = string.format("[%s,%d]", tostring(x), v)
  end
  local e = summary.errors
  local out = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  out:write("{")
  out:write(string.format('"duration_us":%d,"requests":%d,"answered":%d,"bytes_read":%d,"bytes_written":%d,',
    summary.duration, summary.requests, answered_all, summary.bytes, sent))
  out:write(string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},',
    e.connect, e.read, e.write, e.status, e.timeout))
  out:write('"statuses":' .. json_table(statuses_all) .. ",")
  out:write(string.format('"latency_us":{"min":%d,"mean":%f,"stdev":%f,"max":%d},',
    latency.min, latency.mean, latency.stdev, latency.max))
  out:write('"percentiles_us":[' .. table.concat(pct, ",") .. "]}")
  out:close()
end
