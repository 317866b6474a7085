-- authenticate: SPEC §2's decision table, one atomic step (src/decision.rs is the
-- same table in Rust; the two must agree row for row).
-- KEYS: [1] session hash  [2] current token's plaintext  [3] the user's index
-- ARGV: [5] batch window  [6] min rotation interval  [7] rotation on (1/0)
--       [8] recovery window  [9] revoke on replay (1/0)
--       [10] keyed hash of the presented token ('' when it is not a token at all)
--       [11] candidate successor, plaintext  [12] its keyed hash
--       [13] older generations still recognised  [14] client id
-- Returns {code, expiry ms, token}: code 1 Rotated (token: the candidate),
-- 2 Batched on the presented current token, 3 Batched on the stored current token
-- (token: its plaintext), 0 unknown session, -1 expired, -2 replayed, -3 invalid,
-- -4 the plaintext a batch needs is gone (Redis evicted it).
local window = tonumber(ARGV[5])
local min_interval = tonumber(ARGV[6])
local rotation = ARGV[7] == '1'
local recovery = tonumber(ARGV[8])
local revoke_on_replay = ARGV[9] == '1'
local presented = ARGV[10]
local depth = tonumber(ARGV[13])
local client = ARGV[14]

local s = redis.call('HMGET', KEYS[1], 'g', 'c', 'r', 'u', 'h', 'p', 'x')
if not s[1] then
  return {0, 0, ''}
end
local g, created, rotated = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
local used = s[4] == '1'
local current, previous, older = s[5], s[6], s[7] or ''

local function finish()
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('ZREM', KEYS[3], client)
end

local exp = expiry(created, rotated)
if now >= exp then
  finish()
  return {-1, exp, ''}
end
local since = now - rotated
if since < 0 then since = 0 end

-- Keyed hashes, not tokens, are compared: timing can reveal nothing of a token.
local kind = 'invalid'
if presented ~= '' then
  if presented == current then
    kind = 'current'
  elseif previous and presented == previous then
    kind = 'previous'
  else
    for i = 1, #older, 32 do
      if string.sub(older, i, i + 31) == presented then
        kind = 'older'
        break
      end
    end
  end
end

local function stored_current()
  local tok = redis.call('GET', KEYS[2])
  if not tok then
    return {-4, exp, ''}
  end
  return {3, exp, tok}
end

if kind == 'current' then
  if not rotation or since < min_interval then
    if recovery > 0 and not used then
      redis.call('HSET', KEYS[1], 'u', '1')
      -- The successor is now used: only the batch window still needs its plaintext.
      if now < rotated + window then
        expire_at(KEYS[2], rotated + window)
      else
        redis.call('DEL', KEYS[2])
      end
    end
    return {2, exp, ''}
  end
  -- A clock that stepped back never moves the rotation (or expiry) back.
  local at = math.max(now, rotated)
  local kept = string.sub((previous or '') .. older, 1, depth * 32)
  redis.call('HSET', KEYS[1], 'g', int(g + 1), 'r', int(at), 'u', '0',
    'h', ARGV[12], 'p', current, 'x', kept)
  local next_exp = expiry(created, at)
  expire_at(KEYS[1], next_exp)
  keep_index(KEYS[3], next_exp)
  -- The plaintext lives only as long as a batch or a recovery may need it.
  local hold = math.max(window, recovery)
  if hold > 0 then
    redis.call('SET', KEYS[2], ARGV[11])
    expire_at(KEYS[2], math.min(at + hold, next_exp))
  else
    redis.call('DEL', KEYS[2])
  end
  return {1, next_exp, ''}
end

if kind == 'previous' then
  if since < window then
    return stored_current()
  end
  if since < recovery and not used then
    return stored_current()
  end
end

if kind == 'previous' or kind == 'older' then
  if revoke_on_replay then
    finish()
  end
  return {-2, exp, ''}
end

return {-3, exp, ''}
