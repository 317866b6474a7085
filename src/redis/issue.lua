-- issue: a new session, evicting one if the user is at the cap, one atomic step.
-- KEYS: [1] the user's index (sorted set: client -> issue order)  [2] the bucket's live set
-- ARGV: [5] the user's key prefix  [6] max clients per user  [7] new client id
--       [8] the user's tag (a live-set member is "<tag>:<client>")
-- Returns {code, expiry ms, evicted}: code 1 issued, 0 the client id is taken.
local idx = KEYS[1]
local base = ARGV[5]
local cap = tonumber(ARGV[6])
local client = ARGV[7]
local live_key = KEYS[2]
local tag = ARGV[8]

-- Sessions of this bucket that expired since: Redis dropped their keys by TTL, this
-- drops their live-set entries (`count.lua` does too), so the set stays bounded.
live_call('ZREMRANGEBYSCORE', live_key, '-inf', int(now))

if redis.call('EXISTS', base .. 's:' .. client) == 1 then
  return {0, 0, 0}
end

local entries = members(idx, true)
local live = {}
local last = 0
for i = 1, #entries, 2 do
  local c, order = entries[i], tonumber(entries[i + 1])
  if order > last then last = order end
  local key = base .. 's:' .. c
  local s = load(key)
  if not s then
    redis.call('ZREM', idx, c)
    live_drop(live_key, tag .. ':' .. c)
  else
    local e = expiry(s.c, s.r)
    if now >= e then
      redis.call('DEL', key)
      redis.call('ZREM', idx, c)
      live_drop(live_key, tag .. ':' .. c)
    else
      live[#live + 1] = {c, e, s.r, order}
    end
  end
end

local evicted = 0
if #live >= cap then
  -- The one that expires first; ties: least recently rotated, then oldest.
  local v = live[1]
  for i = 2, #live do
    local o = live[i]
    if o[2] < v[2] or (o[2] == v[2] and (o[3] < v[3] or (o[3] == v[3] and o[4] < v[4]))) then
      v = o
    end
  end
  redis.call('DEL', base .. 's:' .. v[1])
  redis.call('ZREM', idx, v[1])
  live_drop(live_key, tag .. ':' .. v[1])
  evicted = 1
end

local key = base .. 's:' .. client
local exp = expiry(now, now)
local s = {g = 0, c = now, r = now, u = false, x = expiry(now, exp)}
save(key, s)
redis.call('ZADD', idx, int(last + 1), client)
outlive(idx, s.x)
live_set(live_key, tag .. ':' .. client, exp, s.x, true)
return {1, exp, evicted}
