import { randomBytes } from 'node:crypto';
import type { UpstreamLimitAnswer, UpstreamLimitTake } from '@ic/schemas';
import { RedisKeys } from './keys';
import { createRedis, waitUntilReady, type Redis } from './redis';
import { RedisUpstreamLimits } from './upstream-limits';
import { createLogger } from '@ic/telemetry';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

describe('shared pacing mirror (Redis)', () => {
  const prefix = `ictest${randomBytes(4).toString('hex')}`;
  const keys = new RedisKeys(prefix);
  let redis: Redis;
  let store: RedisUpstreamLimits;
  let key: string;
  /** 10 requests, refilled one per 100 ms; no token limit. */
  const requests = (remaining: number) => ({ limit: 10, remaining, perMs: 0.01 });
  const answer = (seq: number, fields: Partial<UpstreamLimitAnswer> = {}): UpstreamLimitAnswer => ({
    seq,
    sinceAdmittedMs: 0,
    refused: false,
    unseenInFlight: { requests: 0, tokens: 0 },
    ...fields,
  });
  const take = (tokens = 0, maxWaitMs = 60_000, expireMs = 60_000) => store.take(key, { tokens, maxWaitMs, expireMs });
  const taken = async (tokens = 0): Promise<Extract<UpstreamLimitTake, { kind: 'taken' }>> => {
    const place = await take(tokens);
    if (place.kind !== 'taken') throw new Error(`expected a place, got ${JSON.stringify(place)}`);
    return place;
  };

  beforeAll(async () => {
    redis = createRedis(redisUrl, 'producer', createLogger('test', 'silent'));
    await waitUntilReady(redis);
    store = new RedisUpstreamLimits(redis, keys);
  });
  beforeEach(() => {
    key = `model-${randomBytes(4).toString('hex')}`;
  });
  afterAll(async () => {
    const names = await redis.keys(`${prefix}:*`);
    if (names.length > 0) await redis.del(...names);
    await redis.quit();
  });

  it('knows no limit until an answer reports one: calls go unpaced', async () => {
    expect(await take()).toEqual({ kind: 'unknown' });
  });

  it("starts from an unpaced call's answer, less the answering process's other unpaced calls, then lines calls up a refill apart", async () => {
    const answeredAt = performance.now();
    await store.answer(key, answer(0, { requests: requests(5), unseenInFlight: { requests: 2, tokens: 0 } }));
    // 5 left, 2 of them already spoken for: three go at once, then one per 100 ms, counted from the answer.
    // Each wait is a refill less the time that passed since (a slow machine takes longer between takes).
    const places = [];
    const sentAt: number[] = [];
    const takenAt: number[] = [];
    for (let k = 0; k < 6; k++) {
      sentAt.push(performance.now());
      places.push(await taken());
      takenAt.push(performance.now());
    }
    expect(places.slice(0, 3).map((place) => place.waitMs)).toEqual([0, 0, 0]);
    const later = places.slice(3).map((place) => place.waitMs);
    const slack = 2; // Redis's clock against ours, in whole milliseconds
    expect(later[0]).toBeGreaterThanOrEqual(100 - (takenAt[3]! - answeredAt) - slack);
    expect(later[0]).toBeLessThanOrEqual(100);
    expect(later[1]! - later[0]!).toBeGreaterThanOrEqual(100 - (takenAt[4]! - sentAt[3]!) - slack);
    expect(later[1]! - later[0]!).toBeLessThanOrEqual(100);
    expect(later[2]! - later[1]!).toBeGreaterThanOrEqual(100 - (takenAt[5]! - sentAt[4]!) - slack);
    expect(places[0]!.limit).toBe('requests');
    expect(new Set(places.map((place) => place.seq)).size).toBe(6);
  });

  it("lets another unpaced call's answer lower the level, never raise it (it cannot be ordered against the first)", async () => {
    await store.answer(key, answer(0, { requests: requests(2) }));
    await store.answer(key, answer(0, { requests: requests(1) }));
    await store.answer(key, answer(0, { requests: requests(9) }));
    expect((await taken()).waitMs).toBe(0);
    expect((await taken()).waitMs).toBeGreaterThan(50);
  });

  it("lets a later unseen call of the same process reset the level, up as well (the cold start of one process)", async () => {
    await store.answer(key, answer(0, { requests: requests(1), origin: 'process-a', ticket: 5 }));
    await store.answer(key, answer(0, { requests: requests(9), origin: 'process-b', ticket: 9 })); // another process: cannot raise
    await store.answer(key, answer(0, { requests: requests(9), origin: 'process-a', ticket: 3 })); // sent before the basis: cannot raise
    expect((await taken()).waitMs).toBe(0);
    expect((await taken()).waitMs).toBeGreaterThan(50);
    key = `${key}-b`;
    await store.answer(key, answer(0, { requests: requests(1), origin: 'process-a', ticket: 5 }));
    await store.answer(key, answer(0, { requests: requests(3), origin: 'process-a', ticket: 6 }));
    expect((await taken()).waitMs).toBe(0);
    expect((await taken()).waitMs).toBe(0);
    expect((await taken()).waitMs).toBe(0);
    expect((await taken()).waitMs).toBeGreaterThan(50);
  });

  it('refuses a place due later than the call may wait, and takes nothing for it', async () => {
    await store.answer(key, answer(0, { requests: requests(0) }));
    const refused = await take(0, 50);
    expect(refused).toMatchObject({ kind: 'too-long', limit: 'requests' });
    expect((refused as { waitMs: number }).waitMs).toBeGreaterThan(50);
    // Nothing was taken: the next call's place is as far off as the refused one's, not a refill later.
    expect((await taken()).waitMs).toBeLessThanOrEqual((refused as { waitMs: number }).waitMs);
  });

  it("resets to the newest call's reading, less every call still in flight; an older call's answer gives back only what was counted twice", async () => {
    await store.answer(key, answer(0, { requests: requests(10) }));
    const [first, second, third] = [await taken(), await taken(), await taken()];
    // The newest answered first: 7 remained when it was admitted; the other two are in flight.
    await store.answer(key, answer(third.seq, { requests: requests(7) }));
    expect((await taken()).waitMs).toBe(0); // 7 − 2 in flight = 5, this takes one: 4 left
    // The first was admitted before the third (its answer shows more remaining): counted twice, given back.
    await store.answer(key, answer(first.seq, { requests: requests(9) }));
    // The second was admitted after the third (less remaining): rightly counted, nothing given back.
    await store.answer(key, answer(second.seq, { requests: requests(6) }));
    const waits = [];
    for (let k = 0; k < 6; k++) waits.push((await taken()).waitMs);
    // 5 left (4 + the one given back): five at once, the sixth a refill later.
    expect(waits.slice(0, 5)).toEqual([0, 0, 0, 0, 0]);
    expect(waits[5]).toBeGreaterThan(50);
  });

  it('paces tokens beside requests: a call waits for the tokens it needs, and says which limit held it', async () => {
    await store.answer(key, answer(0, { requests: requests(10), tokens: { limit: 1000, remaining: 1000, perMs: 0.1 } }));
    expect(await taken(600)).toMatchObject({ waitMs: 0, limit: 'requests' });
    const held = await taken(600);
    // 400 left, 600 needed at 100 a second: 2 s (less the refill of the milliseconds in between).
    expect(held.limit).toBe('tokens');
    expect(held.waitMs).toBeGreaterThan(1900);
    expect(held.waitMs).toBeLessThanOrEqual(2000);
  });

  it('gives back the place of a call that never went, and stops counting one that failed without an answer', async () => {
    await store.answer(key, answer(0, { requests: requests(2) }));
    const [sent, unsent] = [await taken(), await taken()];
    await store.answer(key, { ...answer(unsent.seq), unsent: true });
    // The unsent call's place is back: one more goes at once.
    expect((await taken()).waitMs).toBe(0);
    const failed = await taken(); // due a refill later
    expect(failed.waitMs).toBeGreaterThan(50);
    await store.answer(key, answer(failed.seq)); // no reading: it no longer counts in flight
    // The sent call's answer: 2 remained. In flight now: only the third call (the failed one is not), so 1 is left.
    await store.answer(key, answer(sent.seq, { requests: requests(2) }));
    expect((await taken()).waitMs).toBe(0);
    expect((await taken()).waitMs).toBeGreaterThan(50);
  });

  it("gives back an unseen call that was refused after its process counted it in flight, unless its reading reset the level", async () => {
    // 3 remained at the first answer, and the answering process had 3 other unpaced calls in flight: 0 left.
    await store.answer(key, answer(0, { requests: requests(3), unseenInFlight: { requests: 3, tokens: 0 } }));
    // One of them was refused with 3 remaining (a reading that would raise the level: ignored), counted for nothing: given back.
    const mirror = await store.answer(key, answer(0, { refused: true, requests: requests(3), unseenInFlight: { requests: 2, tokens: 0 }, giveBack: { requests: 1, tokens: 0 } }));
    expect(mirror.requests!.level).toBeGreaterThanOrEqual(1);
    expect(mirror.requests!.level).toBeLessThan(1.5);
    expect(mirror.tokens).toBeUndefined();
    expect((await taken()).waitMs).toBe(0);
    expect((await taken()).waitMs).toBeGreaterThan(50);
  });

  it('gives back such a call admitted before the basis (more remaining), not one admitted after it', async () => {
    await store.answer(key, answer(0, { requests: requests(3), unseenInFlight: { requests: 3, tokens: 0 } }));
    // Admitted after the basis call (2 < 3 remaining): it was rightly counted.
    await store.answer(key, answer(0, { requests: requests(2), unseenInFlight: { requests: 2, tokens: 0 }, giveBack: { requests: 1, tokens: 0 } }));
    expect((await taken()).waitMs).toBeGreaterThan(50);
    key = `${key}-b`;
    await store.answer(key, answer(0, { requests: requests(3), unseenInFlight: { requests: 3, tokens: 0 } }));
    // Admitted before it (4 remained then): counted for nothing, given back.
    await store.answer(key, answer(0, { requests: requests(4), unseenInFlight: { requests: 2, tokens: 0 }, giveBack: { requests: 1, tokens: 0 } }));
    expect((await taken()).waitMs).toBe(0);
  });

  it("reports each call's place in line and where the limits stand, so a waiting call can be re-timed", async () => {
    await store.answer(key, answer(0, { requests: requests(1), tokens: { limit: 1000, remaining: 1000, perMs: 0.1 } }));
    const first = await taken(100);
    const second = await taken(100);
    expect(second.takenThrough.requests! - first.takenThrough.requests!).toBe(1);
    expect(second.takenThrough.tokens! - first.takenThrough.tokens!).toBe(100);
    expect(second.tokenSlack).toBe(0);
    // The first call's answer: the upstream had more than the mirror thought (5 remained).
    const mirror = await store.answer(key, answer(first.seq, { requests: requests(5), tokens: { limit: 1000, remaining: 900, perMs: 0.1 } }));
    // The second is still in flight (placed): 5 − 1 = 4 left; as if only calls up to the second had taken, 4 too.
    const levelUpToSecond = mirror.requests!.level + mirror.requests!.total - second.takenThrough.requests!;
    expect(levelUpToSecond).toBeGreaterThanOrEqual(4);
    expect(levelUpToSecond).toBeLessThan(4.5);
    expect(mirror.tokens!.level).toBeGreaterThanOrEqual(800);
    // A call bigger than the whole token limit may go short of its tokens by the difference.
    expect((await taken(1500)).tokenSlack).toBe(-500);
  });

  it('stops counting a call whose answer never came once its deadline passes (its process died)', async () => {
    await store.answer(key, answer(0, { requests: requests(10) }));
    const orphan = await store.take(key, { tokens: 0, maxWaitMs: 60_000, expireMs: 50 });
    expect(orphan.kind).toBe('taken');
    const live = await taken();
    await new Promise((resolve) => setTimeout(resolve, 80));
    // The live call's answer: 1 remained. Counting the orphan as still in flight would leave 0 (a wait).
    await store.answer(key, answer(live.seq, { requests: requests(1) }));
    expect((await taken()).waitMs).toBe(0);
    expect((await taken()).waitMs).toBeGreaterThan(50);
  });

  it('keeps one mirror per model key, and drops it after its last call (TTL)', async () => {
    await store.answer(key, answer(0, { requests: requests(0) }));
    expect((await taken()).waitMs).toBeGreaterThan(50);
    expect(await store.take(`${key}-other`, { tokens: 0, maxWaitMs: 1000, expireMs: 1000 })).toEqual({ kind: 'unknown' });
    const { state } = keys.upstreamLimits(key);
    const ttl = await redis.pttl(state);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(10 * 60_000);
  });
});
