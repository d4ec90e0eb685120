-- Entitlement counter of one workspace and feature, checked and changed in one atomic step,
-- so no number of concurrent callers can take it past its limit.
-- KEYS[1] the counter; KEYS[2] optional: the marker of a client event id. One hash tag for both.
-- ARGV[1] "consume" or "release".
--
-- consume: ARGV[2] quantity (negative gives stock back, never below 0); ARGV[3] limit;
--   ARGV[4] the value a missing counter starts from, or "" when it must be rebuilt first
--   (stock counters: Postgres holds the truth); ARGV[5] unix time the counter expires, "0" never;
--   ARGV[6] seconds the event marker is kept.
--   Returns {status, used, applied}. status 1 accepted, 0 refused (over the limit, nothing
--   changed), 2 duplicate (the event id was counted before; used is what that call answered),
--   3 missing (call again with the rebuilt value in ARGV[4]).
-- release: ARGV[2] the applied quantity to take back (a failed hand-off after consume);
--   deletes the marker so a retry of the same event counts. Returns the counter.
local counter, marker = KEYS[1], KEYS[2]

if ARGV[1] == 'release' then
  if marker then redis.call('DEL', marker) end
  if redis.call('EXISTS', counter) == 0 then return 0 end
  local used = redis.call('DECRBY', counter, ARGV[2])
  if used < 0 then
    redis.call('SET', counter, 0, 'KEEPTTL')
    used = 0
  end
  return used
end

if marker then
  local seen = redis.call('GET', marker)
  if seen then return {2, tonumber(seen), 0} end
end
local raw = redis.call('GET', counter)
if not raw then
  if ARGV[4] == '' then return {3, 0, 0} end
  raw = ARGV[4]
end
local used, quantity, limit = tonumber(raw), tonumber(ARGV[2]), tonumber(ARGV[3])
if quantity > 0 and used + quantity > limit then
  return {0, used, 0}
end
local applied = quantity
if used + quantity < 0 then applied = -used end
used = used + applied
redis.call('SET', counter, used)
if ARGV[5] ~= '0' then redis.call('EXPIREAT', counter, ARGV[5]) end
if marker then redis.call('SET', marker, used, 'EX', ARGV[6]) end
return {1, used, applied}
