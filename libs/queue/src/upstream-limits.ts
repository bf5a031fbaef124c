import { UpstreamLimitMirror, UpstreamLimitTake, type UpstreamLimitAnswer, type UpstreamLimitReading, type UpstreamLimitStore } from '@ic/schemas';
import { z } from 'zod';
import type { RedisKeys } from './keys';
import type { Redis } from './redis';

/** A model's mirror goes this long after its last call: a stale one would pace to a limit nobody has read lately. */
const MIRROR_TTL_MS = 10 * 60_000;

/**
 * Both scripts start here: the clock (Redis's own, so every process reckons with the same one), and the
 * calls in flight whose answer never came (their process died mid-call), which stop counting at their
 * deadline. A call's amounts are kept as the state's field `c:<seq>` = "<requests> <tokens>".
 */
const PRELUDE = `
local state, deadlines = KEYS[1], KEYS[2]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function forget(seq)
  local amounts = redis.call('HGET', state, 'c:' .. seq)
  redis.call('ZREM', deadlines, seq)
  if not amounts then return nil, nil end
  redis.call('HDEL', state, 'c:' .. seq)
  local requests, tokens = string.match(amounts, '^(%S+) (%S+)$')
  requests, tokens = tonumber(requests), tonumber(tokens)
  redis.call('HINCRBYFLOAT', state, 'requests:inflight', -requests)
  redis.call('HINCRBYFLOAT', state, 'tokens:inflight', -tokens)
  return requests, tokens
end
for _, seq in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, 100)) do forget(seq) end
local function field(name) return tonumber(redis.call('HGET', state, name)) end
-- A limit's level refilled to now (capped at the limit), or nil while no answer has reported it.
local function levelNow(unit)
  local limit = field(unit .. ':limit')
  if not limit then return nil end
  return math.min(limit, field(unit .. ':level') + math.max(0, now - field(unit .. ':at')) * field(unit .. ':perMs'))
end
-- Where a limit stands, for re-timing the calls waiting for it: level now, all ever taken, rate (as strings: a Lua number reply is truncated).
local function mirror(unit)
  local level = levelNow(unit)
  if not level then return {'', '', ''} end
  return {tostring(level), tostring(field(unit .. ':total') or 0), tostring(field(unit .. ':perMs'))}
end
`;

/**
 * ARGV: tokens, maxWaitMs, expireMs, ttlMs. Reply: {0} unknown; {1, waitMs, limit, seq, requests
 * total, tokens total, token slack} taken (the totals of all ever taken, this call included, '' for a
 * limit not known; the slack is what the call may go short of its tokens: a call bigger than the whole
 * limit goes once the limit is full); {2, waitMs, limit} too long. Each known limit's level is refilled to now at its rate (capped at the
 * limit); the call is due once both cover it (a call needing more than the whole limit, once the limit
 * is full). Its amounts are taken at once, so the level may go below zero: later calls queue behind it.
 */
const TAKE_LUA = `${PRELUDE}
local tokens, maxWaitMs, expireMs, ttlMs = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function place(unit, amount)
  local level = levelNow(unit)
  if not level then return nil, 0, 0 end
  local needed = math.min(amount, math.max(1, field(unit .. ':limit')))
  local wait = 0
  if level < needed then wait = (needed - level) / field(unit .. ':perMs') end
  return level, wait, needed - amount
end
local requestLevel, requestWait = place('requests', 1)
local tokenLevel, tokenWait, tokenSlack = place('tokens', tokens)
if not requestLevel and not tokenLevel then return {0} end
local wait = math.max(requestWait, tokenWait)
local limit = 'requests'
if tokenWait > requestWait then limit = 'tokens' end
if wait > maxWaitMs then return {2, math.ceil(wait), limit} end
local seq = redis.call('HINCRBY', state, 'seq', 1)
local takenRequests, takenTokens, requestsTotal, tokensTotal = 0, 0, '', ''
if requestLevel then
  takenRequests = 1
  redis.call('HSET', state, 'requests:level', requestLevel - 1, 'requests:at', now)
  redis.call('HINCRBYFLOAT', state, 'requests:inflight', 1)
  requestsTotal = redis.call('HINCRBYFLOAT', state, 'requests:total', 1)
end
if tokenLevel then
  takenTokens = tokens
  redis.call('HSET', state, 'tokens:level', tokenLevel - tokens, 'tokens:at', now)
  redis.call('HINCRBYFLOAT', state, 'tokens:inflight', tokens)
  tokensTotal = redis.call('HINCRBYFLOAT', state, 'tokens:total', tokens)
end
redis.call('HSET', state, 'c:' .. seq, takenRequests .. ' ' .. takenTokens)
redis.call('ZADD', deadlines, now + wait + expireMs, seq)
redis.call('PEXPIRE', state, ttlMs)
redis.call('PEXPIRE', deadlines, ttlMs)
return {1, math.ceil(wait), limit, seq, requestsTotal, tokensTotal, tostring(tokenSlack)}
`;

/**
 * ARGV: seq, sinceAdmittedMs, refused (0/1), ttlMs, unseen requests, unseen tokens, then per limit
 * (requests, tokens) present (0/1), limit, remaining, perMs, then unsent (0/1), then the requests and
 * tokens to give back for an unseen call counted in flight (if it was refused or admitted first), then
 * the answering process's id and the call's ticket there (orders its own unseen calls). Reply: each limit's level now, total taken and rate
 * (empty strings while unknown). An answer with no reading only ends the call's count in flight; an
 * unsent call also gives its place back. As RateLimitPacer's mirror does for one
 * process: the newest call's answer resets the level to what remained at its admission, less every
 * call still in flight (the store's and the answering process's unseen ones), refilled since; an older
 * call's answer gives back what that counted twice (it was refused, or admitted before the newest).
 * A call the store did not see (sent before the limits were known) starts the mirror, or else may only
 * lower its level: it cannot be ordered against the newest.
 */
const ANSWER_LUA = `${PRELUDE}
local seq, sinceAdmittedMs, refused, ttlMs = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', tonumber(ARGV[4])
local unseen = { requests = tonumber(ARGV[5]), tokens = tonumber(ARGV[6]) }
local takenRequests, takenTokens = nil, nil
if seq > 0 then takenRequests, takenTokens = forget(seq) end
local taken = { requests = takenRequests, tokens = takenTokens }
local function reply()
  redis.call('PEXPIRE', state, ttlMs)
  redis.call('PEXPIRE', deadlines, ttlMs)
  local requests, tokens = mirror('requests'), mirror('tokens')
  return {requests[1], requests[2], requests[3], tokens[1], tokens[2], tokens[3]}
end
if ARGV[15] == '1' then
  -- Never sent: its place goes back (the level counted it, as taken or as in flight).
  for unit, amount in pairs(taken) do
    if amount and amount > 0 then redis.call('HINCRBYFLOAT', state, unit .. ':level', amount) end
  end
  return reply()
end
local giveBack = { requests = tonumber(ARGV[16]), tokens = tonumber(ARGV[17]) }
local origin, ticket = ARGV[18], tonumber(ARGV[19])
-- Whether a call the level counted after the basis was not: the upstream refused it, or (more remaining) admitted it first.
local function countedTwice(unit, remaining)
  return refused or remaining >= (field(unit .. ':basisRemaining') or 0)
end
local function answer(unit, offset)
  if ARGV[offset] ~= '1' then return end
  local limit, remaining, perMs = tonumber(ARGV[offset + 1]), tonumber(ARGV[offset + 2]), tonumber(ARGV[offset + 3])
  local known = field(unit .. ':limit') ~= nil
  local basis = 0
  local atMost = nil
  local unseenOrder = nil
  if taken[unit] == nil or taken[unit] == 0 then
    -- An unseen call cannot be ordered against the basis, so its reading may only lower the level;
    -- unless the basis is an unseen call of the same process sent before it (the cold start, one process).
    unseenOrder = origin .. ' ' .. ticket
    if known then
      local unseenBasis = redis.call('HGET', state, unit .. ':unseenBasis')
      local basisOrigin, basisTicket = nil, nil
      if unseenBasis then basisOrigin, basisTicket = string.match(unseenBasis, '^(%S+) (%S+)$') end
      if not (field(unit .. ':basis') == 0 and basisOrigin == origin and ticket > tonumber(basisTicket)) then atMost = levelNow(unit) end
    end
  else
    basis = field(unit .. ':basis') or 0
    if known and seq <= basis then
      if countedTwice(unit, remaining) then redis.call('HINCRBYFLOAT', state, unit .. ':level', taken[unit]) end
      return
    end
    basis = seq
  end
  local level = remaining - (field(unit .. ':inflight') or 0) - unseen[unit]
  if level < limit then level = math.min(limit, level + sinceAdmittedMs * perMs) end
  if atMost then
    if level < atMost then
      redis.call('HSET', state, unit .. ':level', level, unit .. ':at', now)
    elseif giveBack[unit] > 0 and countedTwice(unit, remaining) then
      -- A call the answering process had counted in flight when it reset the level: counted for nothing.
      redis.call('HINCRBYFLOAT', state, unit .. ':level', giveBack[unit])
    end
    return
  end
  redis.call('HSET', state, unit .. ':limit', limit, unit .. ':perMs', perMs, unit .. ':level', level, unit .. ':at', now, unit .. ':basis', basis, unit .. ':basisRemaining', remaining)
  if unseenOrder then redis.call('HSET', state, unit .. ':unseenBasis', unseenOrder) end
end
answer('requests', 7)
answer('tokens', 11)
return reply()
`;

/** A number the script sent as a string ('' for a limit not known). */
const optionalNumber = z.string().transform((text) => (text === '' ? undefined : Number(text)));

const TakeReply = z.union([
  z.tuple([z.literal(0)]).transform((): unknown => ({ kind: 'unknown' })),
  z
    .tuple([z.literal(1), z.number(), z.string(), z.number(), optionalNumber, optionalNumber, optionalNumber])
    .transform(([, waitMs, limit, seq, requests, tokens, tokenSlack]): unknown => ({ kind: 'taken', waitMs, limit, seq, takenThrough: { requests, tokens }, tokenSlack: tokenSlack ?? 0 })),
  z.tuple([z.literal(2), z.number(), z.string()]).transform(([, waitMs, limit]): unknown => ({ kind: 'too-long', waitMs, limit })),
]);

const AnswerReply = z
  .tuple([optionalNumber, optionalNumber, optionalNumber, optionalNumber, optionalNumber, optionalNumber])
  .transform(([requestLevel, requestTotal, requestPerMs, tokenLevel, tokenTotal, tokenPerMs]): unknown => ({
    requests: requestLevel === undefined ? undefined : { level: requestLevel, total: requestTotal, perMs: requestPerMs },
    tokens: tokenLevel === undefined ? undefined : { level: tokenLevel, total: tokenTotal, perMs: tokenPerMs },
  }));

interface LimitCommands {
  icTakeUpstreamLimits(state: string, deadlines: string, ...args: Array<string | number>): Promise<unknown>;
  icAnswerUpstreamLimits(state: string, deadlines: string, ...args: Array<string | number>): Promise<unknown>;
}

/** One mirror of each model's limits in Redis for every process (libs/model SharedRateLimitPacer). */
export class RedisUpstreamLimits implements UpstreamLimitStore {
  private readonly commands: LimitCommands;

  constructor(
    redis: Redis,
    private readonly keys: RedisKeys,
  ) {
    redis.defineCommand('icTakeUpstreamLimits', { numberOfKeys: 2, lua: TAKE_LUA });
    redis.defineCommand('icAnswerUpstreamLimits', { numberOfKeys: 2, lua: ANSWER_LUA });
    this.commands = redis as unknown as LimitCommands;
  }

  async take(key: string, call: { tokens: number; maxWaitMs: number; expireMs: number }): Promise<UpstreamLimitTake> {
    const { state, deadlines } = this.keys.upstreamLimits(key);
    const reply = await this.commands.icTakeUpstreamLimits(state, deadlines, Math.max(0, Math.ceil(call.tokens)), Math.max(0, Math.floor(call.maxWaitMs)), Math.ceil(call.expireMs), MIRROR_TTL_MS);
    return UpstreamLimitTake.parse(TakeReply.parse(reply));
  }

  async answer(key: string, answer: UpstreamLimitAnswer): Promise<UpstreamLimitMirror> {
    const { state, deadlines } = this.keys.upstreamLimits(key);
    const limit = (reading: UpstreamLimitReading | undefined) => (reading ? [1, reading.limit, reading.remaining, reading.perMs] : [0, 0, 0, 0]);
    const reply = await this.commands.icAnswerUpstreamLimits(
      state,
      deadlines,
      answer.seq,
      Math.max(0, Math.round(answer.sinceAdmittedMs)),
      answer.refused ? 1 : 0,
      MIRROR_TTL_MS,
      answer.unseenInFlight.requests,
      answer.unseenInFlight.tokens,
      ...limit(answer.requests),
      ...limit(answer.tokens),
      answer.unsent ? 1 : 0,
      answer.giveBack?.requests ?? 0,
      answer.giveBack?.tokens ?? 0,
      answer.origin ?? '-',
      answer.ticket ?? 0,
    );
    return UpstreamLimitMirror.parse(AnswerReply.parse(reply));
  }
}
