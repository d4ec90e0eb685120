-- Admit one request against one GCRA bucket (gcra.lua is prepended).
-- KEYS[1] the bucket; ARGV[1] interval in microseconds; ARGV[2] capacity;
-- ARGV[3] optional: "now" in microseconds. Production passes none and Redis TIME is the
-- clock; the property tests pass explicit instants to compare against a reference model.
local now = tonumber(ARGV[3]) or redis_now()
return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
