-- revoke: ends one session (sign-out). Returns 1 if it was live, else 0.
-- KEYS: [1] session hash  [2] the user's index  [3] the bucket's live set
-- ARGV: [5] client id  [6] the user's tag (the live-set member is "<tag>:<client>")
local s = fields(KEYS[1], 'c', 'r')
redis.call('DEL', KEYS[1])
redis.pcall('ZREM', KEYS[2], ARGV[5])
live_drop(KEYS[3], ARGV[6] .. ':' .. ARGV[5])
if s[1] and now < expiry(tonumber(s[1]), tonumber(s[2])) then
  return 1
end
return 0
