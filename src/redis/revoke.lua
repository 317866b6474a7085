-- revoke: ends one session (sign-out). Returns 1 if it was live, else 0.
-- KEYS: [1] session hash  [2] current token's plaintext  [3] the user's index
-- ARGV: [5] client id
local s = redis.call('HMGET', KEYS[1], 'c', 'r')
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[5])
if s[1] and now < expiry(tonumber(s[1]), tonumber(s[2])) then
  return 1
end
return 0
