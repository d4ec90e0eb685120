-- A workspace's Stats API budget: milliseconds of ClickHouse time per minute (Redis' clock), one
-- key per workspace holding {minute, spent}; a new minute starts from nothing.
-- KEYS[1] the workspace's budget. ARGV[1] "admit" or "spend".
-- admit: ARGV[2] the budget in ms. Returns {allowed (1/0), spent ms this minute, seconds until
--   the next minute}. A query is admitted while the minute's spending is below the budget.
-- spend: ARGV[2] milliseconds a query took. Returns the minute's spending after it.
local now = redis.call('TIME')
local minute = math.floor(tonumber(now[1]) / 60)
local left = 60 - (tonumber(now[1]) % 60)
local stored = redis.call('HMGET', KEYS[1], 'minute', 'spent')
local spent = 0
if tonumber(stored[1]) == minute then spent = tonumber(stored[2]) or 0 end

if ARGV[1] == 'spend' then
  spent = spent + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'minute', minute, 'spent', spent)
  redis.call('EXPIRE', KEYS[1], 120)
  return spent
end
if spent < tonumber(ARGV[2]) then return {1, spent, left} end
return {0, spent, left}
