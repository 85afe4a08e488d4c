/**
 * The Lua scripts of the Redis store. Each runs atomically in Redis: every change of a tunnel,
 * its indexes and the event that tells the other nodes about it happen in one step, or not at
 * all. Arguments, not KEYS, name the keys (one standalone Redis or Valkey; not Redis Cluster).
 *
 * Keys, under the prefix P (`localproxy:`):
 *   P t:<id>               hash: r (the record, JSON), v (its version), cs/cd (when the source/
 *                          destination last connected or left, ms), gs/gd (holder generations)
 *   P h:<id>:<mode>        the node holding that peer: JSON {node, url, channel, gen, sig}, with a
 *                          lease (PX); sig: the node's signature (cluster/auth.ts)
 *   P k:<token sha256>     "<id> <mode>": an open tunnel's token
 *   P open                 set of open tunnel ids (the maxOpenTunnels count)
 *   P expiry               zset id → when its lifetime ends (ms); swept by any node
 *   P all, P thing:<name>  zsets id → createdAt (ListTunnels, its thingName filter)
 *   P closed               zset id → when it closed (the oldest beyond maxClosedTunnels are forgotten)
 *   P events               pub/sub channel: closed, revoked, attached (JSON)
 *
 * Records are decoded here (cjson) only to read strings; they are stored as the JSON the relay
 * wrote, and numbers come as arguments, so nothing is re-encoded by Lua.
 */

/**
 * A record changes (compare-and-set on its version) with its indexes, and maybe an event.
 * ARGV: prefix, id, expected version ('0': must not exist), new JSON ('' = forget it), maxOpen,
 * maxClosed, event JSON (''), createdAt, expiry deadline, closedAt.
 * Returns {'ok', version} | {'conflict'} | {'limit'}.
 */
export const COMMIT = `
local P, id = ARGV[1], ARGV[2]
local tkey = P .. 't:' .. id
local v = redis.call('HGET', tkey, 'v') or '0'
if v ~= ARGV[3] then return {'conflict'} end
local oldJson = redis.call('HGET', tkey, 'r')
local old = nil
if oldJson then old = cjson.decode(oldJson) end
local new = nil
if ARGV[4] ~= '' then new = cjson.decode(ARGV[4]) end
local wasOpen = old ~= nil and old.status == 'OPEN'
local isOpen = new ~= nil and new.status == 'OPEN'
if isOpen and not wasOpen and redis.call('SCARD', P .. 'open') >= tonumber(ARGV[5]) then return {'limit'} end
local function forget(gone)
  local gj = redis.call('HGET', P .. 't:' .. gone, 'r')
  if gj then
    local g = cjson.decode(gj)
    if type(g.thingName) == 'string' then redis.call('ZREM', P .. 'thing:' .. g.thingName, gone) end
  end
  redis.call('DEL', P .. 't:' .. gone, P .. 'h:' .. gone .. ':source', P .. 'h:' .. gone .. ':destination')
  redis.call('ZREM', P .. 'all', gone)
  redis.call('ZREM', P .. 'closed', gone)
  redis.call('ZREM', P .. 'expiry', gone)
  redis.call('SREM', P .. 'open', gone)
end
if wasOpen then
  for _, m in ipairs({'source', 'destination'}) do
    local k = P .. 'k:' .. old[m].tokenHash
    if redis.call('GET', k) == id .. ' ' .. m then redis.call('DEL', k) end
  end
end
local version = tonumber(v) + 1
if new == nil then
  if old ~= nil then forget(id) end
else
  if isOpen then
    redis.call('SET', P .. 'k:' .. new.source.tokenHash, id .. ' source')
    redis.call('SET', P .. 'k:' .. new.destination.tokenHash, id .. ' destination')
    redis.call('SADD', P .. 'open', id)
    redis.call('ZADD', P .. 'expiry', 'NX', ARGV[9], id)
  else
    redis.call('SREM', P .. 'open', id)
    redis.call('ZREM', P .. 'expiry', id)
    if old == nil or wasOpen then redis.call('ZADD', P .. 'closed', ARGV[10], id) end
  end
  if old ~= nil and type(old.thingName) == 'string' and old.thingName ~= new.thingName then redis.call('ZREM', P .. 'thing:' .. old.thingName, id) end
  if type(new.thingName) == 'string' then redis.call('ZADD', P .. 'thing:' .. new.thingName, ARGV[8], id) end
  redis.call('ZADD', P .. 'all', ARGV[8], id)
  redis.call('HSET', tkey, 'r', ARGV[4], 'v', version)
end
local excess = redis.call('ZCARD', P .. 'closed') - tonumber(ARGV[6])
if excess > 0 then
  for _, gone in ipairs(redis.call('ZRANGE', P .. 'closed', 0, excess - 1)) do forget(gone) end
end
if ARGV[7] ~= '' then redis.call('PUBLISH', P .. 'events', ARGV[7]) end
return {'ok', tostring(version)}
`;

/**
 * This node now holds a peer (its handshake was accepted): the holder key with a lease, a new
 * generation, the connection time, and an 'attached' event.
 * ARGV: prefix, id, mode, tokenHash, node, url, channel, sig, leaseMs, now.
 * Returns {'ok', gen, previous holder JSON or '', other mode's holder JSON or ''} | {'closed'|'revoked'|'unknown'}.
 */
export const HOLD = `
local P, id, mode = ARGV[1], ARGV[2], ARGV[3]
local tkey = P .. 't:' .. id
local rj = redis.call('HGET', tkey, 'r')
if not rj then return {'unknown'} end
local r = cjson.decode(rj)
if r.status ~= 'OPEN' then return {'closed'} end
if r[mode].tokenHash ~= ARGV[4] then return {'revoked'} end
local short = 'd'
local other = 'source'
if mode == 'source' then short = 's'; other = 'destination' end
local gen = redis.call('HINCRBY', tkey, 'g' .. short, 1)
local value = cjson.encode({node = ARGV[5], url = ARGV[6], channel = ARGV[7], gen = gen, sig = ARGV[8]})
local prev = redis.call('SET', P .. 'h:' .. id .. ':' .. mode, value, 'PX', ARGV[9], 'GET')
redis.call('HSET', tkey, 'c' .. short, ARGV[10])
local otherHolder = redis.call('GET', P .. 'h:' .. id .. ':' .. other)
redis.call('PUBLISH', P .. 'events', cjson.encode({t = 'attached', id = id, mode = mode, node = ARGV[5], url = ARGV[6], channel = ARGV[7], gen = gen, sig = ARGV[8]}))
return {'ok', tostring(gen), prev or '', otherHolder or ''}
`;

/**
 * The peer left this node: its holder key goes if it is still ours, and the connection time moves.
 * ARGV: prefix, id, mode, channel, now.
 */
export const RELEASE = `
local P, id, mode = ARGV[1], ARGV[2], ARGV[3]
local hkey = P .. 'h:' .. id .. ':' .. mode
local cur = redis.call('GET', hkey)
if not cur then return 0 end
if cjson.decode(cur).channel ~= ARGV[4] then return 0 end
redis.call('DEL', hkey)
local tkey = P .. 't:' .. id
if redis.call('EXISTS', tkey) == 1 then
  local short = 'd'
  if mode == 'source' then short = 's' end
  redis.call('HSET', tkey, 'c' .. short, ARGV[5])
end
return 1
`;

/**
 * Renews this node's leases, and says for each peer whether it may stay. A lease that ran out
 * with nobody else holding the peer (or lost by a Redis restart, or never recorded because Redis
 * was away at the connect) is taken again, as a new holder: a new generation and an 'attached'
 * event, so the node of the other peer learns where it is.
 * ARGV: prefix, leaseMs, then per peer 8 values: id, mode, channel, tokenHash, node, url, gen, sig.
 * Returns per peer {verdict, other mode's holder JSON or '', new generation or ''}: verdict
 * ok | replaced | revoked | closed | unknown.
 */
export const RENEW = `
local P, lease = ARGV[1], ARGV[2]
local out = {}
local i = 3
while i + 7 <= #ARGV do
  local id, mode, channel, tokenHash = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local hkey = P .. 'h:' .. id .. ':' .. mode
  local other = 'source'
  if mode == 'source' then other = 'destination' end
  local verdict = 'ok'
  local taken = ''
  local rj = redis.call('HGET', P .. 't:' .. id, 'r')
  if not rj then
    verdict = 'unknown'
  else
    local r = cjson.decode(rj)
    if r.status ~= 'OPEN' then
      verdict = 'closed'
    elseif r[mode].tokenHash ~= tokenHash then
      verdict = 'revoked'
    else
      local cur = redis.call('GET', hkey)
      if cur then
        if cjson.decode(cur).channel == channel then redis.call('PEXPIRE', hkey, lease) else verdict = 'replaced' end
      else
        local short = 'd'
        if mode == 'source' then short = 's' end
        local gen = redis.call('HINCRBY', P .. 't:' .. id, 'g' .. short, 1)
        redis.call('SET', hkey, cjson.encode({node = ARGV[i + 4], url = ARGV[i + 5], channel = channel, gen = gen, sig = ARGV[i + 7]}), 'PX', lease)
        redis.call('PUBLISH', P .. 'events', cjson.encode({t = 'attached', id = id, mode = mode, node = ARGV[i + 4], url = ARGV[i + 5], channel = channel, gen = gen, sig = ARGV[i + 7]}))
        taken = tostring(gen)
      end
    end
  end
  table.insert(out, verdict)
  table.insert(out, redis.call('GET', P .. 'h:' .. id .. ':' .. other) or '')
  table.insert(out, taken)
  i = i + 8
end
return out
`;

/**
 * Tunnels whose lifetime ended by `now`, claimed for `claimMs` so that one node closes each:
 * their expiry moves to now + claimMs (a node that dies before closing leaves it to the next sweep).
 * ARGV: prefix, now, claimMs, limit. Returns the ids.
 */
export const SWEEP = `
local P, now = ARGV[1], tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(due) do redis.call('ZADD', P .. 'expiry', now + tonumber(ARGV[3]), id) end
return due
`;
