-- The cluster's matchmaker, run atomically inside Redis: one call either pairs a session
-- with the best waiting stranger or queues it. Everything here is a random id or a keyed hash
-- (the nodes hold the plaintext); every key it writes has a TTL.
--
-- Keys (standalone Redis: built here from the prefix, not declared):
--   <p>w:<session>          hash: node, mode, ticket, open, ints (space-separated interest hashes)
--   <p>open:<mode>          zset of open sessions (they accept anyone), score = ticket
--   <p>int:<mode>:<hash>    zset of sessions holding an interest, score = ticket
--   <p>cool:<a>:<b>         the two sessions chatted recently (a < b)
--   <p>node:<node>          a node's heartbeat (written by the node, read here)
--
-- ARGV: prefix, op, then per op:
--   join  session node mode open wait_ttl_ms cooldown_ms scan_limit n_interests hash...
--         -> {"matched", partner, partner_node, shared} | {"waiting"}
--   leave session -> 1 if it was waiting
--
-- A candidate counts only while its waiting entry exists and its node's heartbeat does; stale
-- references are dropped as they are met, so a dead node's sessions vanish from every queue.

local prefix, op = ARGV[1], ARGV[2]

local function waiting_key(session) return prefix .. 'w:' .. session end

local function alive(session)
  local node = redis.call('HGET', waiting_key(session), 'node')
  return node and redis.call('EXISTS', prefix .. 'node:' .. node) == 1
end

local function cooldown_key(a, b)
  if a < b then return prefix .. 'cool:' .. a .. ':' .. b end
  return prefix .. 'cool:' .. b .. ':' .. a
end

local function split(text)
  local items = {}
  for item in string.gmatch(text or '', '%S+') do items[#items + 1] = item end
  return items
end

-- Removes a session from every index and deletes its entry.
local function unqueue(session)
  local entry = redis.call('HMGET', waiting_key(session), 'mode', 'ints')
  local mode, ints = entry[1], entry[2]
  if not mode then return 0 end
  redis.call('ZREM', prefix .. 'open:' .. mode, session)
  for _, hash in ipairs(split(ints)) do
    redis.call('ZREM', prefix .. 'int:' .. mode .. ':' .. hash, session)
  end
  redis.call('DEL', waiting_key(session))
  return 1
end

if op == 'leave' then
  return unqueue(ARGV[3])
end

if op ~= 'join' then
  return redis.error_reply('unknown op')
end

local session, node, mode = ARGV[3], ARGV[4], ARGV[5]
local open = ARGV[6] == '1'
local wait_ttl, cooldown, scan_limit = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local n_interests = tonumber(ARGV[10])
local interests = {}
for i = 1, n_interests do interests[i] = ARGV[10 + i] end

local function eligible(candidate)
  if candidate == session then return false end
  if not alive(candidate) then
    unqueue(candidate)
    return false
  end
  return redis.call('EXISTS', cooldown_key(session, candidate)) == 0
end

-- Most shared interests first, the longest waiting among equals.
local shared, tickets, refused = {}, {}, {}
for _, hash in ipairs(interests) do
  local holders = redis.call('ZRANGE', prefix .. 'int:' .. mode .. ':' .. hash, 0, scan_limit - 1, 'WITHSCORES')
  for i = 1, #holders, 2 do
    local candidate, ticket = holders[i], tonumber(holders[i + 1])
    if shared[candidate] then
      shared[candidate] = shared[candidate] + 1
    elseif not refused[candidate] then
      if eligible(candidate) then
        shared[candidate], tickets[candidate] = 1, ticket
      else
        refused[candidate] = true
      end
    end
  end
end
local partner, best, best_ticket = nil, 0, 0
for candidate, count in pairs(shared) do
  if count > best or (count == best and tickets[candidate] < best_ticket) then
    partner, best, best_ticket = candidate, count, tickets[candidate]
  end
end

-- Otherwise, when this session takes anyone: the longest-waiting open session.
if not partner and open then
  local first = redis.call('ZRANGE', prefix .. 'open:' .. mode, 0, scan_limit - 1)
  for _, candidate in ipairs(first) do
    if eligible(candidate) then
      partner = candidate
      break
    end
  end
end

if partner then
  local partner_node = redis.call('HGET', waiting_key(partner), 'node')
  unqueue(partner)
  unqueue(session)
  -- Set now, not when the chat ends, so a quick `next` cannot meet the same stranger again.
  redis.call('SET', cooldown_key(session, partner), '1', 'PX', cooldown)
  return {'matched', partner, partner_node, best}
end

-- Queue it (again, when it only became open): keep its place in line.
local key = waiting_key(session)
local ticket = redis.call('HGET', key, 'ticket')
if not ticket then
  -- Microseconds since the epoch, built as text: Lua's numbers would print it as 1.7e+15.
  local now = redis.call('TIME')
  ticket = now[1] .. string.rep('0', 6 - #now[2]) .. now[2]
end
unqueue(session)
redis.call('HSET', key, 'node', node, 'mode', mode, 'ticket', ticket, 'open', open and '1' or '0',
  'ints', table.concat(interests, ' '))
redis.call('PEXPIRE', key, wait_ttl)
for _, hash in ipairs(interests) do
  local index = prefix .. 'int:' .. mode .. ':' .. hash
  redis.call('ZADD', index, ticket, session)
  redis.call('PEXPIRE', index, wait_ttl)
end
if open then
  local index = prefix .. 'open:' .. mode
  redis.call('ZADD', index, ticket, session)
  redis.call('PEXPIRE', index, wait_ttl)
end
return {'waiting'}
