-- wrk script for scripts/bench-webhooks.sh: POSTs signed pull_request deliveries, each with its
-- own X-GitHub-Delivery. Bodies and signatures are precomputed (wrk has no HMAC) in a file of
-- "signature<TAB>body" lines; thread k sends the PRs with index = k mod threads, so two threads
-- never race on one PR.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   local file = args[1]
   nonce = args[2] or tostring(os.time())
   local nthreads = tonumber(args[3] or "1")
   sigs, bodies = {}, {}
   local i = 0
   for line in io.lines(file) do
      local tab = line:find("\t", 1, true)
      local pr = i % 32
      if pr % nthreads == tid then
         table.insert(sigs, line:sub(1, tab - 1))
         table.insert(bodies, line:sub(tab + 1))
      end
      i = i + 1
   end
   n = #bodies
   counter = 0
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["X-GitHub-Event"] = "pull_request"
end

function request()
   counter = counter + 1
   local i = (counter - 1) % n + 1
   wrk.headers["X-Hub-Signature-256"] = sigs[i]
   wrk.headers["X-GitHub-Delivery"] = string.format("bench-%s-%d-%d", nonce, tid, counter)
   return wrk.format(nil, "/webhook/github", nil, bodies[i])
end

function done(summary, latency, requests)
   io.write(string.format(
      "WRK requests=%d duration_us=%d errors=%d status_errors=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.duration,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
      summary.errors.status,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
