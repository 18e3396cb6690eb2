-- wrk script: optional POST body from env, and a JSON summary line at the end.
local body_file = os.getenv("WRK_BODY_FILE")
if body_file then
  local f = assert(io.open(body_file, "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
  -- the binary tensor extension: the JSON header's length, the raw tensors after it
  local header_length = os.getenv("WRK_HEADER_LENGTH")
  if header_length then
    wrk.headers["Inference-Header-Content-Length"] = header_length
  end
end

-- WRK_PATH: request path; "{seed}" in it becomes a fresh random seed per request, so no two
-- requests ask for the same image (a cache could otherwise flatter the server).
local path_template = os.getenv("WRK_PATH")
-- WRK_BODY_TEMPLATE: a POST body with "{seed}" in it (LitServe's endpoints take JSON bodies).
local body_template = os.getenv("WRK_BODY_TEMPLATE")
if body_template then
  math.randomseed(os.time())
  request = function()
    local body = string.gsub(body_template, "{seed}", tostring(math.random(0, 2147483647)))
    return wrk.format("POST", path_template, {["Content-Type"] = "application/json"}, body)
  end
elseif path_template and string.find(path_template, "{seed}", 1, true) then
  math.randomseed(os.time())
  request = function()
    local path = string.gsub(path_template, "{seed}", tostring(math.random(0, 2147483647)))
    return wrk.format(nil, path)
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  local non2xx = errors.status
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_s": %.6f, "bytes": %d, "rps": %.2f, ' ..
    '"p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "mean_ms": %.3f, ' ..
    '"errors_connect": %d, "errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d}\n',
    summary.requests, summary.duration / 1e6, summary.bytes, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, latency.mean / 1e3,
    errors.connect, errors.read, errors.write, non2xx, errors.timeout))
end
