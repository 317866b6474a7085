-- revoke_user: ends every session of one user. Returns how many were live.
-- KEYS: [1] the user's index  [2] the bucket's live set
-- ARGV: [5] the user's key prefix  [6] the user's tag
local base = ARGV[5]
local clients = members(KEYS[1], false)
local live = 0
for _, c in ipairs(clients) do
  local key = base .. 's:' .. c
  local s = fields(key, 'c', 'r')
  if s[1] and now < expiry(tonumber(s[1]), tonumber(s[2])) then
    live = live + 1
  end
  redis.call('DEL', key)
  live_drop(KEYS[2], ARGV[6] .. ':' .. c)
end
redis.call('DEL', KEYS[1])
return live
