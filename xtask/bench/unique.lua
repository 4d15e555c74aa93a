-- wrk script for `cargo xtask bench cache`: every request asks for a new URL, so every
-- request misses the cache (and, on the cached proxy, is stored).
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
local n = 0
function request()
  n = n + 1
  return wrk.format("GET", "/?miss=" .. id .. "-" .. n)
end
