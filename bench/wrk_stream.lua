-- wrk script: POST the request bodies of a file (one JSON body a line), cycling through them.
-- Environment: BENCH_BODIES (the file), BENCH_PATH (the endpoint), BENCH_TOKEN (API key).
-- Prints one JSON line at the end: requests, duration, errors, latency percentiles (us).

local thread_count = 0

function setup(thread)
   thread_count = thread_count + 1
   thread:set("tid", thread_count)
end

local bodies = {}
local index = 0
local path = os.getenv("BENCH_PATH") or "/access/v1/evaluation"

function init(args)
   for line in io.lines(os.getenv("BENCH_BODIES")) do
      bodies[#bodies + 1] = line
   end
   -- threads start at different places in the stream
   index = ((tid or 1) - 1) * 7919 % #bodies
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   local token = os.getenv("BENCH_TOKEN")
   if token and token ~= "" then
      wrk.headers["Authorization"] = "Bearer " .. token
   end
end

function request()
   index = index % #bodies + 1
   return wrk.format("POST", path, nil, bodies[index])
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,"read_errors":%d,' ..
      '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
      summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
