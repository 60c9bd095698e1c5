-- wrk script for the HTTP KV benchmark (benches/run.sh).
-- Arguments (after `--`): MIX DEPTH KEYS VALUE_BYTES
--   MIX    get (90% GET, 10% PUT), put (10% GET, 90% PUT) or preload
--          (PUT every key once, in order, then again)
--   DEPTH  requests written at a time: 1 (request-response) or 16 (pipelined)
--   KEYS   key space size; VALUE_BYTES  PUT body size
-- Requests are built once in init() and cycled, so the script costs wrk
-- little per request. With DEPTH > 1 wrk records one latency per batch (the
-- time until all DEPTH responses arrived).
local batches = {}
local count = 0
local index = 0

init = function(args)
   local mix = args[1] or "get"
   local depth = tonumber(args[2] or "1")
   local keys = tonumber(args[3] or "1000")
   local value = string.rep("v", tonumber(args[4] or "64"))
   local put_per_10 = (mix == "put") and 9 or 1
   count = (mix == "preload") and math.ceil(keys / depth) or 1000
   local n = 0
   for i = 1, count do
      local batch = {}
      for j = 1, depth do
         n = n + 1
         local key, put
         if mix == "preload" then
            key = (n - 1) % keys
            put = true
         else
            key = math.random(keys) - 1
            put = (n % 10) < put_per_10
         end
         local path = "/kv/key" .. key
         if put then
            batch[j] = wrk.format("PUT", path, nil, value)
         else
            batch[j] = wrk.format("GET", path)
         end
      end
      batches[i] = table.concat(batch)
   end
end

request = function()
   index = index % count + 1
   return batches[index]
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d status_errors=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.timeout, e.status))
end
