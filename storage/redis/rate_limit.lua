-- GCRA rate limit: admit one request if the bucket has room, in one atomic step.
-- KEYS[1]  the limiter key (hash-tagged by the caller)
-- ARGV[1]  emission interval in microseconds (60 s / limit per minute)
-- ARGV[2]  capacity: how many requests the full bucket holds (limit + burst)
-- Returns {allowed (1/0), remaining, microseconds until full, microseconds to wait (0 if allowed)}
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - capacity * interval
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / interval), new_tat - now, 0}
