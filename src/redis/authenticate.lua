-- authenticate: SPEC §2's decision table, one atomic step (src/decision.rs is the
-- same table in Rust; the two must agree row for row), on generations and times only:
-- the node has checked the presented token against the session's key and sends no
-- token, only the generation of a genuine one.
-- KEYS: [1] session hash  [2] the user's index  [3] the bucket's live set
-- ARGV: [5] batch window  [6] min rotation interval  [7] rotation on (1/0)
--       [8] recovery window  [9] revoke on replay (1/0)
--       [10] the generation of the presented token if it is genuine, else ''
--       [11] client id  [12] the user's tag (the live-set member is "<tag>:<client>")
-- Returns {code, expiry ms, generation}: code 1 Rotated (to that generation),
-- 2 Batched on the presented current token, 3 Batched on the current token of that
-- generation, 0 unknown session, -1 expired, -2 replayed, -3 invalid.
local window = tonumber(ARGV[5])
local min_interval = tonumber(ARGV[6])
local rotation = ARGV[7] == '1'
local recovery = tonumber(ARGV[8])
local revoke_on_replay = ARGV[9] == '1'
local client = ARGV[11]
local member = ARGV[12] .. ':' .. client

local s = fields(KEYS[1], 'g', 'c', 'r', 'u')
if not s[1] then
  -- Gone by its TTL, or removed as a key of the wrong type: not live either.
  live_drop(KEYS[3], member)
  return {0, 0, 0}
end
local g, created, rotated = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
local used = s[4] == '1'

local function finish()
  redis.call('DEL', KEYS[1])
  redis.pcall('ZREM', KEYS[2], client)
  live_drop(KEYS[3], member)
end

local exp = expiry(created, rotated)
if now >= exp then
  finish()
  return {-1, exp, g}
end
local since = now - rotated
if since < 0 then since = 0 end

local kind = 'invalid'
if ARGV[10] ~= '' then
  local k = tonumber(ARGV[10])
  if k == g then
    kind = 'current'
  elseif k + 1 == g then
    kind = 'previous'
  elseif k < g then
    kind = 'older'
  end
  -- A genuine token ahead of the session (k > g) stays 'invalid'.
end

if kind == 'current' then
  if not rotation or since < min_interval then
    if recovery > 0 and not used then
      redis.call('HSET', KEYS[1], 'u', '1')
    end
    return {2, exp, g}
  end
  if g >= max_generation then
    finish()
    return {-1, exp, g}
  end
  -- A clock that stepped back never moves the rotation (or expiry) back.
  local at = math.max(now, rotated)
  redis.call('HSET', KEYS[1], 'g', int(g + 1), 'r', int(at), 'u', '0')
  local next_exp = expiry(created, at)
  expire_at(KEYS[1], next_exp)
  outlive(KEYS[2], next_exp)
  live_set(KEYS[3], member, next_exp)
  return {1, next_exp, g + 1}
end

if kind == 'previous' then
  if since < window then
    return {3, exp, g}
  end
  if since < recovery and not used then
    return {3, exp, g}
  end
end

if kind == 'previous' or kind == 'older' then
  if revoke_on_replay then
    finish()
  end
  return {-2, exp, g}
end

return {-3, exp, g}
