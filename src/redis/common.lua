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

-- A user's index, and a bucket's live set, outlive every session in them: their
-- TTL only ever grows.
local function outlive(idx, deadline)
  local ms = deadline - now + grace
  if redis.call('PTTL', idx) < ms then
    redis.call('PEXPIRE', idx, string.format('%d', ms))
  end
end

local function int(x)
  return string.format('%d', x)
end

-- A key of the wrong type where a user's key belongs (another program's, or an older
-- version's) is removed, not left to fail every call, and sign-in, of that user.
local function fields(key, ...)
  local s = redis.pcall('HMGET', key, ...)
  if type(s) == 'table' and s.err then
    redis.call('DEL', key)
    return {}
  end
  return s
end

-- The members of a user's index (with their scores when asked), as `fields` does.
local function members(idx, withscores)
  local m
  if withscores then
    m = redis.pcall('ZRANGE', idx, 0, -1, 'WITHSCORES')
  else
    m = redis.pcall('ZRANGE', idx, 0, -1)
  end
  if type(m) == 'table' and m.err then
    redis.call('DEL', idx)
    return {}
  end
  return m
end

-- The highest generation a session reaches (src/session/word.rs's MAX_GENERATION, the
-- same on both backends); the rotation past it ends the session rather than wrap.
local max_generation = 67108863

-- The bucket's live-session set ("<tag>:<client>" -> expiry ms): what `live()` counts.
-- A key of the wrong type there is removed, as `fields` does, then the call is made again.
local function live_call(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    redis.call('DEL', key)
    r = redis.call(cmd, key, ...)
  end
  return r
end

-- The set's TTL follows its members', so an abandoned bucket's set is reclaimed too.
local function live_set(key, member, exp)
  live_call('ZADD', key, int(exp), member)
  outlive(key, exp)
end

local function live_drop(key, member)
  live_call('ZREM', key, member)
end
