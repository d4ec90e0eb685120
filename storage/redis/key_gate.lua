-- The gate of every authenticated request, in one round trip (gcra.lua is prepended):
-- read the cached API key record and, if there is one, admit against its bucket.
-- KEYS[1] the key record (a hash); KEYS[2] its GCRA bucket. Both share one hash tag.
-- ARGV[1] "1" to rate-limit, "0" to only read the record (limits switched off).
-- Returns {0} when the record is not cached, else {1, <record fields...>, <gcra result...>}.
local fields = {'id', 'workspace_id', 'account_id', 'scopes', 'tier', 'expires_at', 'revoked_at', 'limit', 'capacity'}
local record = redis.call('HMGET', KEYS[1], unpack(fields))
if not record[1] then
  return {0}
end
local limit = tonumber(record[8])
local decision = {1, tonumber(record[9]), 0, 0}
if ARGV[1] == '1' then
  decision = gcra(KEYS[2], math.floor(60000000 / limit), tonumber(record[9]), redis_now())
end
return {1, record[1], record[2], record[3], record[4], record[5], record[6], record[7], record[8], record[9],
        decision[1], decision[2], decision[3], decision[4]}
