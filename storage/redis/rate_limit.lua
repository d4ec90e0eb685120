-- Admit one request against one GCRA bucket (gcra.lua is prepended).
-- KEYS[1] the bucket; ARGV[1] interval in microseconds; ARGV[2] capacity.
return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), redis_now())
