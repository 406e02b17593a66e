"""The Lua scripts of the router's Redis state (router.shared_state): each runs
atomically on the server, so replicas never interleave inside one update."""

# KEYS: cool, probe; ARGV: now, lease ms, owner -> 1 when this caller probes
CLAIM_PROBE = """
local ends = redis.call('GET', KEYS[1])
if not ends or tonumber(ends) > tonumber(ARGV[1]) then return 0 end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# KEYS: spend; ARGV: seed, expire-at -> the total (seeded when absent)
READ_SPEND = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
  v = ARGV[1]
end
return v
"""
# KEYS: spend; ARGV: usd, seed, expire-at -> the new total
ADD_SPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[2]) end
local v = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return v
"""
# KEYS: ab; ARGV: proposed arm, ttl, valid arms... -> the kept arm
STICKY = """
local v = redis.call('GET', KEYS[1])
for i = 3, #ARGV do
  if ARGV[i] == v then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    return v
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""
# KEYS: bucket; ARGV: capacity, refill per second -> {1, 0} taken or {0, wait ms}. The
# server's clock, not each replica's (theirs may differ).
TAKE = """
local t = redis.call('TIME')
local cap, rate, now = tonumber(ARGV[1]), tonumber(ARGV[2]), t[1] + t[2] / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]) or cap, tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - at) * rate)
local taken = 0
if tokens >= 1 then tokens, taken = tokens - 1, 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(cap / rate) + 60)
if taken == 1 then return {1, 0} end
return {0, math.ceil((1 - tokens) / rate * 1000)}
"""
