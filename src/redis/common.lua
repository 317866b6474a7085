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

-- A session is one string key, "<generation>:<created>:<rotated>:<used>:<covered>",
-- so that one SET ... PX writes it and its TTL: every number an integer in ms but
-- the generation, `used` 1 or 0 (a batch on the current token has been answered),
-- `covered` the deadline its user's index and its bucket's live set are known to
-- outlive (their TTL only grows), so that a rotation within it touches neither.
-- When they must be extended, they are covered to `expiry(created, deadline)`: one
-- more lifespan past `deadline` (never past the maximum age), so a session rotated on
-- every request extends them once per lifespan, not per call.
-- A key of the wrong type or of another form where a session belongs (another
-- program's, or an older version's) is removed, not left to fail every call: the
-- session is gone.
local function load(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then
    redis.call('DEL', key)
    return nil
  end
  if not v then
    return nil
  end
  local g, c, r, u, x = string.match(v, '^(%d+):(%d+):(%d+):([01]):(%d+)$')
  if not g then
    redis.call('DEL', key)
    return nil
  end
  return {g = tonumber(g), c = tonumber(c), r = tonumber(r), u = u == '1', x = tonumber(x)}
end

local function encode(s)
  return int(s.g) .. ':' .. int(s.c) .. ':' .. int(s.r) .. ':' .. (s.u and '1' or '0') .. ':' .. int(s.x)
end

-- Writes session `s` with its TTL: Redis removes it `grace` after it expires.
local function save(key, s)
  local ms = expiry(s.c, s.r) - now + grace
  if ms < 1 then ms = 1 end
  redis.call('SET', key, encode(s), 'PX', int(ms))
end

-- Writes session `s`, keeping its TTL (its expiry has not moved).
local function save_keepttl(key, s)
  redis.call('SET', key, encode(s), 'KEEPTTL')
end

-- The members of a user's index (with their scores when asked), as `load` does.
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
-- A key of the wrong type there is removed, as `load` does, then the call is made again.
local function live_call(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    redis.call('DEL', key)
    r = redis.call(cmd, key, ...)
  end
  return r
end

-- Adds or moves a session's entry. The set's TTL follows its members', so an
-- abandoned bucket's set is reclaimed too: it is extended to `covered` when asked
-- (`extend`), and whenever the entry was missing (the set was lost or trimmed).
local function live_set(key, member, exp, covered, extend)
  local added = live_call('ZADD', key, int(exp), member)
  if extend or added == 1 then
    outlive(key, covered)
  end
end

local function live_drop(key, member)
  live_call('ZREM', key, member)
end
