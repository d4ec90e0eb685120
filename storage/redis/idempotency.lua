-- Idempotency records: one hash per (API key, Idempotency-Key), changed atomically.
-- KEYS[1] the record. ARGV[1] the operation, then its arguments:
--   begin    fingerprint, token, in-progress TTL (ms)
--            -> {'run'} (the record is now ours), {'mismatch'}, {'in_progress'},
--               or {'replay', status, content_type, body}
--   complete token, status, content_type, body, TTL (s) -> 1 if stored, 0 if no longer ours
--   abandon  token -> 1 if the in-progress record was ours and is gone, else 0
-- "Ours" means the token written by begin is still there: an in-progress record that
-- expired and was taken by another request is never overwritten or deleted.
local op = ARGV[1]

if op == 'begin' then
  local record = redis.call('HMGET', KEYS[1], 'state', 'fingerprint', 'status', 'content_type', 'body')
  if not record[1] then
    redis.call('HSET', KEYS[1], 'state', 'in_progress', 'fingerprint', ARGV[2], 'token', ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    return {'run'}
  end
  if record[2] ~= ARGV[2] then
    return {'mismatch'}
  end
  if record[1] == 'in_progress' then
    return {'in_progress'}
  end
  return {'replay', record[3], record[4], record[5]}
end

local owned = redis.call('HGET', KEYS[1], 'token') == ARGV[2]
  and redis.call('HGET', KEYS[1], 'state') == 'in_progress'

if op == 'complete' then
  if not owned then
    return 0
  end
  redis.call('HSET', KEYS[1], 'state', 'completed', 'status', ARGV[3], 'content_type', ARGV[4], 'body', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  return 1
end

if op == 'abandon' then
  if not owned then
    return 0
  end
  redis.call('DEL', KEYS[1])
  return 1
end

return redis.error_reply('unknown idempotency operation: ' .. tostring(op))
