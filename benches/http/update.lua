-- Skypostal password updates (seed 000's request), round robin over the
-- prepared customers: each hashes the new password and commits durably.
-- The bench prepends `customers` ({box_id, key, email} tables) and `app_key`.
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
    '{"user_code":396,"app_key":"%s","customer_box_id":%d,"customer_key":"%s",' ..
    '"customer_email":"%s","customer_new_password":"bench-pass-%d-%d"}',
    app_key, c[1], c[2], c[3], me, n)
  return wrk.format("POST", "/wcf-services/service-customer.svc/customer/customer-update-password",
    { ["Content-Type"] = "application/json" }, body)
end
