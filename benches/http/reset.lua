-- SkyERP reset requests (POST) for known emails, a different customer per
-- request: durable writes that hash nothing. The bench prepends
-- `first`, `count` (the customers reset<first..first+count-1>@bench.example)
-- and `shop`.
local thread_no = 0
local n = 0
local me = 0
local threads = 1

function setup(thread)
  thread:set("me", thread_no)
  thread_no = thread_no + 1
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
