-- authenticate: SPEC §2's decision table, one atomic step (src/decision.rs is the
-- same table in Rust; the two must agree row for row), on generations and times only:
-- the node has checked the presented token against the session's key and sends no
-- token, only the generation of a genuine one.
-- KEYS: [1] session  [2] the user's index  [3] the bucket's live set
-- ARGV: [5] batch window  [6] min rotation interval  [7] rotation on (1/0)
--       [8] recovery window  [9] revoke on replay (1/0)
--       [10] the generation of the presented token if it is genuine, else ''
--       [11] client id  [12] the user's tag (the live-set member is "<tag>:<client>")
--       [13] 1 if the caller waits for replicas after a write (see below), else 0
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

local s = load(KEYS[1])
if not s then
  -- Gone by its TTL, or removed as a key of the wrong form: not live either.
  live_drop(KEYS[3], member)
  return {0, 0, 0}
end
local g, created, rotated = s.g, s.c, s.r
local used = s.u

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
      s.u = true
      save_keepttl(KEYS[1], s)
    end
    return {2, exp, g}
  end
  if g >= max_generation then
    finish()
    return {-1, exp, g}
  end
  -- A clock that stepped back never moves the rotation (or expiry) back.
  local at = math.max(now, rotated)
  local next_exp = expiry(created, at)
  local extend = next_exp > s.x
  if extend then
    s.x = expiry(created, next_exp)
    outlive(KEYS[2], s.x)
  end
  s.g, s.r, s.u = g + 1, at, false
  save(KEYS[1], s)
  live_set(KEYS[3], member, next_exp, s.x, extend)
  return {1, next_exp, g + 1}
end

-- A batch hands out the current token, whose rotation another call made. When the
-- caller waits for replicas, this call writes too (the session, unchanged), so that
-- its WAIT covers that rotation: a primary that made it and then lost it in a
-- failover (cut off, then demoted) never hands out a token no replica has.
local acked = ARGV[13] == '1'
local function batched()
  if acked then
    save_keepttl(KEYS[1], s)
  end
  return {3, exp, g}
end

if kind == 'previous' then
  if since < window then
    return batched()
  end
  if since < recovery and not used then
    return batched()
  end
end

if kind == 'previous' or kind == 'older' then
  if revoke_on_replay then
    finish()
  end
  return {-2, exp, g}
end

return {-3, exp, g}
