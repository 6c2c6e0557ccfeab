-- SkyERP reset requests (POST) for known emails, a different customer per
-- request: durable writes that hash nothing. The bench prepends
-- `first`, `count` (the customers reset<first..first+count-1>@bench.example)
-- and `shop`.
local thread_no = 0
n = 0 -- global: the bench reads it from each thread (done)
local me = 0
local threads = 1

local all_threads = {}

function setup(thread)
  thread:set("me", thread_no)
  thread_no = thread_no + 1
  table.insert(all_threads, thread)
end

function init(args)
  threads = tonumber(args[1]) or 1
end

function request()
  -- Each thread walks its own slice of the customers.
  local slice = math.floor(count / threads)
  local i = first + me * slice + (n % slice)
  n = n + 1
  local body = '{"email":"reset' .. i .. '@bench.example"}'
  return wrk.format("POST", "/api/v1/" .. shop .. "/customers/reset-password",
    { ["Content-Type"] = "application/json" }, body)
end

-- A customer asked again within the throttle's minute gets the same answer
-- for less work: say how many requests went round their slice, so that the
-- bench can refuse figures that include such requests.
function done(summary, latency, requests)
  local slice = math.floor(count / #all_threads)
  local reused = 0
  for _, t in ipairs(all_threads) do
    local sent = t:get("n") or 0
    if sent > slice then
      reused = reused + sent - slice
    end
  end
  io.write(string.format("reused customers: %d\n", reused))
end
