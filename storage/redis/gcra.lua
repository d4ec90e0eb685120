-- Shared by rate_limit.lua and key_gate.lua (prepended when the script is loaded).
-- GCRA: a bucket of `capacity` requests refilled one per `interval` microseconds.
-- Returns {allowed (1/0), remaining, microseconds until full, microseconds to wait}.
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function gcra(key, interval, capacity, now)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - capacity * interval
  if now < allow_at then
    return {0, 0, tat - now, allow_at - now}
  end
  redis.call('SET', key, new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
  return {1, math.floor((now - allow_at) / interval), new_tat - now, 0}
end
