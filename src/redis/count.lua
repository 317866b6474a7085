-- count: the live sessions of one bucket, dropping the entries of expired ones.
-- KEYS: [1] the bucket's live set
live_call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now))
return live_call('ZCARD', KEYS[1])
