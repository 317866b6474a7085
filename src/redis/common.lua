-- Shared by every baton script. ARGV[1..4] are the same for all of them:
--   [1] now, ms since the Unix epoch, or '' to read this server's TIME, so every
--       node of a service runs on one clock
--   [2] token lifespan, ms    [3] max age, ms    [4] TTL grace, ms
-- Numbers stay below 2^53, so Lua's doubles hold them exactly.
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local lifespan = tonumber(ARGV[2])
local max_age = tonumber(ARGV[3])
local grace = tonumber(ARGV[4])

local function expiry(created, rotated)
  return math.min(rotated + lifespan, created + max_age)
end

-- Redis removes a key this long after it stops mattering at `deadline`. The script's
-- own checks decide every answer; the TTL only reclaims memory.
local function expire_at(key, deadline)
  local ms = deadline - now + grace
  if ms < 1 then ms = 1 end
  redis.call('PEXPIRE', key, string.format('%d', ms))
end

-- A user's index outlives all of the user's sessions: its TTL only ever grows.
local function keep_index(idx, deadline)
  local ms = deadline - now + grace
  if redis.call('PTTL', idx) < ms then
    redis.call('PEXPIRE', idx, string.format('%d', ms))
  end
end

local function int(x)
  return string.format('%d', x)
end
