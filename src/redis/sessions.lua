-- sessions: the live sessions of one user in issue order, as
-- {client, generation, created ms, rotated ms, expiry ms}; expired ones are removed.
-- KEYS: [1] the user's index  [2] the bucket's live set
-- ARGV: [5] the user's key prefix  [6] the user's tag
local base = ARGV[5]
local clients = members(KEYS[1], false)
local out = {}
for _, c in ipairs(clients) do
  local key = base .. 's:' .. c
  local s = fields(key, 'g', 'c', 'r')
  if not s[1] then
    redis.call('ZREM', KEYS[1], c)
    live_drop(KEYS[2], ARGV[6] .. ':' .. c)
  else
    local created, rotated = tonumber(s[2]), tonumber(s[3])
    local e = expiry(created, rotated)
    if now >= e then
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[1], c)
      live_drop(KEYS[2], ARGV[6] .. ':' .. c)
    else
      out[#out + 1] = {c, tonumber(s[1]), created, rotated, e}
    end
  end
end
return out
