-- Skypostal logins (seed 001's request), round robin over the prepared
-- customers (so that no account has more attempts in flight than its
-- lock-out budget). The bench prepends `customers` ({email} tables),
-- `password` and `app_key`.
local n = 0
local me = 0
local thread_no = 0

function setup(thread)
  thread:set("me", thread_no)
  thread_no = thread_no + 1
end

function request()
  n = n + 1
  local c = customers[((me * 7919 + n) % #customers) + 1]
  local body = string.format(
    '{"user_code":396,"app_key":"%s","customer_email":"%s","customer_password":"%s"}',
    app_key, c[1], password)
  return wrk.format("POST", "/wcf-services/service-customer.svc/customer/customer-login",
    { ["Content-Type"] = "application/json" }, body)
end
