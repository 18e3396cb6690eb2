-- wrk: GET /sample with a different seed per request (no two requests alike, so nothing is cached).
local counter = 0
request = function()
  counter = counter + 1
  local path = string.format("/sample?model=%s&seed=%d", os.getenv("MODEL") or "gan-mnist", counter * 7919 + math.random(0, 7918))
  return wrk.format("GET", path)
end
done = function(summary, latency, requests)
  io.write(string.format("p50=%.2fms p90=%.2fms p99=%.2fms errors=%d non2xx=%d\n", latency:percentile(50)/1000,
    latency:percentile(90)/1000, latency:percentile(99)/1000, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
