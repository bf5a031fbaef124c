import { randomBytes } from 'node:crypto';
import type IORedis from 'ioredis';
import { createLogger } from '@ic/telemetry';
import { eventually } from '@ic/test-support';
import { createBullmqBackend } from './bullmq';
import { createRedis } from './redis';
import { RedisKeys } from './keys';
import { MemoryEventLog } from './memory';
import type { QueueBackend, RunEventLog, StreamEvent } from './types';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

const events = (first: number, count: number, type = 'response.output_text.delta'): StreamEvent[] =>
  Array.from({ length: count }, (_, index) => ({ type, sequence_number: first + index, delta: `d${first + index}` }));
const asAttempt = (attempt: number, closes = false) => ({ authority: { attempt }, closes, ttlSeconds: 60 });
// Payloads with text a Lua string would mangle if it were not passed through as it is.
const announcement = { response: { id: 'resp_1', object: 'response', status: 'in_progress', instructions: 'quote " backslash \\ newline \n unicode é 🙂 %d status', output: [] } };
const asCreated = { response: { ...announcement.response, status: 'queued' } };

describe.each(['redis', 'in-process'] as const)('RunEventLog append rules (%s)', (kind) => {
  let log: RunEventLog;
  let backend: QueueBackend | null = null;
  const prefix = `ictest${randomBytes(4).toString('hex')}`;
  const runId = () => `run_${randomBytes(8).toString('hex')}`;

  beforeAll(async () => {
    if (kind === 'in-process') log = new MemoryEventLog();
    else {
      backend = await createBullmqBackend({ url: redisUrl, prefix, logger: createLogger('test', 'silent') });
      log = backend.events;
    }
  });
  afterAll(async () => {
    if (!backend) return;
    await backend.close();
    const redis = createRedis(redisUrl, 'worker', createLogger('test', 'silent'));
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });

  it('takes only batches that continue the sequence exactly', async () => {
    const id = runId();
    expect(await log.append(id, events(1, 1), asAttempt(0))).toEqual({ ok: false, reason: 'gap', lastSequence: -1 });
    expect(await log.append(id, events(0, 3), asAttempt(0))).toEqual({ ok: true, lastSequence: 2 });
    expect(await log.append(id, events(2, 2), asAttempt(0))).toEqual({ ok: false, reason: 'gap', lastSequence: 2 });
    expect(await log.append(id, events(3, 2), asAttempt(0))).toEqual({ ok: true, lastSequence: 4 });
    expect((await log.read(id, 1, 0)).map((event) => event.sequence_number)).toEqual([2, 3, 4]);
  });

  it('fences appends by attempt: once attempt 2 began, attempt 1 writes nothing', async () => {
    const id = runId();
    expect(await log.beginAttempt(id, 1, 60, announcement)).toEqual({ ok: true, lastSequence: 1 });
    expect(await log.append(id, events(2, 1), asAttempt(1))).toMatchObject({ ok: true, lastSequence: 2 });
    expect(await log.beginAttempt(id, 2, 60, announcement)).toEqual({ ok: true, lastSequence: 3 });
    expect(await log.append(id, events(4, 1), asAttempt(1))).toEqual({ ok: false, reason: 'stale', lastSequence: 3 });
    expect(await log.beginAttempt(id, 1, 60, announcement)).toEqual({ ok: false, reason: 'stale', lastSequence: 3 });
    expect(await log.append(id, events(4, 1), asAttempt(2))).toMatchObject({ ok: true, lastSequence: 4 });
    expect((await log.read(id, -1, 0)).map((event) => event.type)).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_text.delta',
      'response.in_progress',
      'response.output_text.delta',
    ]);
  });

  it('announces an attempt where the log ends, as an append of the same events would have written them', async () => {
    const id = runId();
    const cursor = log.follow(id, -1, { fresh: true });
    await cursor.ready();
    // An empty log (the API's response.created has not landed): the attempt writes it too.
    expect(await log.beginAttempt(id, 1, 60, announcement)).toEqual({ ok: true, lastSequence: 1 });
    const announced = await cursor.next(5000);
    cursor.close();
    expect(announced.map((event) => [event.sequence_number, event.type])).toEqual([
      [0, 'response.created'],
      [1, 'response.in_progress'],
    ]);
    expect(announced.map((event) => event.json)).toEqual([
      JSON.stringify({ type: 'response.created', sequence_number: 0, ...asCreated }),
      JSON.stringify({ type: 'response.in_progress', sequence_number: 1, ...announcement }),
    ]);
    expect(await log.read(id, -1, 0)).toEqual(announced.map((event) => JSON.parse(event.json)));
    // A log that already ends with response.in_progress (an attempt that showed nothing): fenced, nothing added.
    expect(await log.beginAttempt(id, 2, 60, announcement)).toEqual({ ok: true, lastSequence: 1 });
    expect(await log.append(id, events(2, 1), asAttempt(1))).toMatchObject({ ok: false, reason: 'stale' });

    // The usual case: the API wrote response.created; the attempt adds response.in_progress after it.
    const usual = runId();
    await log.append(usual, [{ type: 'response.created', sequence_number: 0, ...asCreated }], asAttempt(0));
    expect(await log.beginAttempt(usual, 1, 60, announcement)).toEqual({ ok: true, lastSequence: 1 });
    expect((await log.read(usual, -1, 0)).map((event) => event.type)).toEqual(['response.created', 'response.in_progress']);
    // An announcement too big to travel in its wake-up: readers range-read it.
    const big = runId();
    const bigCursor = log.follow(big, -1, { fresh: true });
    await bigCursor.ready();
    expect(await log.beginAttempt(big, 1, 60, { response: { id: 'resp_2', instructions: 'x'.repeat(70_000) } })).toEqual({ ok: true, lastSequence: 1 });
    const bigRead = await bigCursor.next(5000);
    bigCursor.close();
    expect(bigRead.map((event) => [event.sequence_number, JSON.parse(event.json).response.instructions.length])).toEqual([
      [0, 70_000],
      [1, 70_000],
    ]);
    // A response without a status gets one, last.
    const bare = runId();
    expect(await log.beginAttempt(bare, 1, 60, { response: {} })).toEqual({ ok: true, lastSequence: 1 });
    expect(await log.read(bare, -1, 0)).toEqual([
      { type: 'response.created', sequence_number: 0, response: { status: 'queued' } },
      { type: 'response.in_progress', sequence_number: 1, response: { status: 'in_progress' } },
    ]);
  });

  it("begins an attempt with its first events: announcement and events numbered where the log ends, in one wake-up", async () => {
    // Text a Lua string would mangle if the script did not pass it through as it is.
    const firstOutput = [
      { type: 'response.output_item.added', sequence_number: 0, output_index: 0, item: { id: 'msg_1', text: announcement.response.instructions } },
      { type: 'response.output_text.delta', sequence_number: 1, item_id: 'msg_1', delta: 'quote " newline \n 🙂' },
    ];
    const numbered = (first: number) => firstOutput.map((event, index) => ({ ...event, sequence_number: first + index }));

    // The usual case: the API wrote response.created; the attempt adds response.in_progress and its output.
    const usual = runId();
    await log.append(usual, [{ type: 'response.created', sequence_number: 0, ...asCreated }], asAttempt(0));
    const cursor = log.follow(usual, 0, { fresh: true });
    await cursor.ready();
    expect(await log.beginAttempt(usual, 1, 60, { ...announcement, firstEvents: firstOutput })).toEqual({ ok: true, lastSequence: 3 });
    const woken = await cursor.next(5000);
    cursor.close();
    expect(woken.map((event) => event.json)).toEqual([JSON.stringify({ type: 'response.in_progress', sequence_number: 1, ...announcement }), ...numbered(2).map((event) => JSON.stringify(event))]);
    expect(await log.read(usual, 0, 0)).toEqual(woken.map((event) => JSON.parse(event.json)));
    // The attempt's own appends continue after them; an older attempt's are refused.
    expect(await log.append(usual, events(4, 1), asAttempt(1))).toMatchObject({ ok: true, lastSequence: 4 });
    expect(await log.append(usual, events(5, 1), asAttempt(0))).toMatchObject({ ok: false, reason: 'stale' });

    // An empty log gets response.created too; a later attempt's output follows its own in_progress.
    const empty = runId();
    expect(await log.beginAttempt(empty, 1, 60, { ...announcement, firstEvents: firstOutput })).toEqual({ ok: true, lastSequence: 3 });
    expect(await log.beginAttempt(empty, 2, 60, { ...announcement, firstEvents: firstOutput })).toEqual({ ok: true, lastSequence: 6 });
    expect((await log.read(empty, -1, 0)).map((event) => [event.sequence_number, event.type])).toEqual([
      [0, 'response.created'],
      [1, 'response.in_progress'],
      [2, 'response.output_item.added'],
      [3, 'response.output_text.delta'],
      [4, 'response.in_progress'],
      [5, 'response.output_item.added'],
      [6, 'response.output_text.delta'],
    ]);
    // Refused attempts write none of their events.
    expect(await log.beginAttempt(empty, 1, 60, { ...announcement, firstEvents: firstOutput })).toEqual({ ok: false, reason: 'stale', lastSequence: 6 });
    expect(await log.lastSequence(empty)).toBe(6);
  });

  it('closes with the terminal batch: nothing is appended after it, by any writer', async () => {
    const id = runId();
    await log.beginAttempt(id, 1, 60, announcement);
    expect(await log.append(id, events(2, 2), asAttempt(1, true))).toMatchObject({ ok: true });
    expect(await log.append(id, events(4, 1), asAttempt(1))).toEqual({ ok: false, reason: 'closed', lastSequence: 3 });
    expect(await log.append(id, events(4, 1), { authority: { finished: true }, closes: true, ttlSeconds: 60 })).toMatchObject({ ok: false, reason: 'closed' });
    expect(await log.beginAttempt(id, 2, 60, announcement)).toEqual({ ok: false, reason: 'closed', lastSequence: 3 });
    expect(await log.lastSequence(id)).toBe(3);
  });

  it('follows a log: every batch once, in order and contiguous, whether it was appended before or while the cursor waits', async () => {
    const id = runId();
    await log.append(id, events(0, 2), asAttempt(0));
    const cursor = log.follow(id, 0);
    const seen: number[] = [];
    const reading = (async () => {
      while (seen.at(-1) !== 9) for (const event of await cursor.next(5000)) seen.push(event.sequence_number);
    })();
    await cursor.ready();
    for (const first of [2, 3, 6]) await log.append(id, events(first, first === 3 ? 3 : first === 2 ? 1 : 4), asAttempt(0));
    await reading;
    expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const late = log.follow(id, 7);
    const caughtUp = await late.next(0);
    expect(caughtUp.map((event) => [event.sequence_number, JSON.parse(event.json).delta])).toEqual([[8, 'd8'], [9, 'd9']]);
    expect(caughtUp[0]!.type).toBe('response.output_text.delta');
    cursor.close();
    late.close();
  });

  it('ends a waiting cursor at once when it is closed, and answers nothing after', async () => {
    const id = runId();
    const cursor = log.follow(id, -1);
    await cursor.ready();
    const waiting = cursor.next(60000);
    cursor.close();
    expect(await waiting).toEqual([]);
    await log.append(id, events(0, 1), asAttempt(0));
    expect(await cursor.next(0)).toEqual([]);
  });

  if (kind === 'redis') {
    const rawRedis = () => createRedis(redisUrl, 'worker', createLogger('test', 'silent'));

    it('reads a batch too big to travel in its wake-up from the stream', async () => {
      const id = runId();
      const cursor = log.follow(id, -1, { fresh: true });
      await cursor.ready();
      const big = 'x'.repeat(70000);
      await log.append(id, [{ type: 'response.output_text.delta', sequence_number: 0, delta: big }], asAttempt(0));
      await log.append(id, events(1, 1), asAttempt(0));
      const seen = [...(await cursor.next(5000))];
      while (seen.length < 2) seen.push(...(await cursor.next(5000)));
      expect(seen.map((event) => event.sequence_number)).toEqual([0, 1]);
      expect(JSON.parse(seen[0]!.json).delta).toBe(big);
      cursor.close();
    });

    it('fills a gap between published batches (a wake-up lost) from the stream', async () => {
      const id = runId();
      const cursor = log.follow(id, -1, { fresh: true });
      await cursor.ready();
      await log.append(id, events(0, 1), asAttempt(0));
      expect((await cursor.next(5000)).map((event) => event.sequence_number)).toEqual([0]);
      // Sequence 1 reaches the stream without its PUBLISH, as if the message had been lost.
      const redis = rawRedis();
      try {
        await redis.xadd(new RedisKeys(prefix).runEvents(id), '0-2', 't', 'response.output_text.delta', 'e', JSON.stringify(events(1, 1)[0]));
      } finally {
        await redis.quit();
      }
      await log.append(id, events(2, 2), asAttempt(0));
      const seen: number[] = [];
      while (seen.length < 3) for (const event of await cursor.next(5000)) seen.push(event.sequence_number);
      expect(seen).toEqual([1, 2, 3]);
      cursor.close();
    });

    it('reads the stream after a quiet wait (a lost wake-up), but not after a short one expected to be quiet', async () => {
      const id = runId();
      const cursor = log.follow(id, -1, { fresh: true });
      await cursor.ready();
      // Sequence 0 reaches the stream without its PUBLISH, as if the message had been lost.
      const redis = rawRedis();
      try {
        await redis.xadd(new RedisKeys(prefix).runEvents(id), '0-1', 't', 'response.created', 'e', JSON.stringify(events(0, 1)[0]));
      } finally {
        await redis.quit();
      }
      expect(await cursor.next(50, undefined, { quietExpected: true })).toEqual([]);
      expect((await cursor.next(50)).map((event) => event.sequence_number)).toEqual([0]);
      cursor.close();
    });

    it('subscribes once per run for all of its readers in the process', async () => {
      const id = runId();
      const cursors = [log.follow(id, -1), log.follow(id, -1), log.follow(id, -1)];
      await Promise.all(cursors.map((cursor) => cursor.ready()));
      const redis = rawRedis();
      try {
        const [, subscribers] = (await redis.pubsub('NUMSUB', new RedisKeys(prefix).runAppendedChannel(id))) as [string, number];
        expect(subscribers).toBe(1);
        await log.append(id, events(0, 2), asAttempt(0));
        for (const cursor of cursors) expect((await cursor.next(5000)).map((event) => event.sequence_number)).toEqual([0, 1]);
      } finally {
        await redis.quit();
        for (const cursor of cursors) cursor.close();
      }
    });

    it('subscribes to the runs followed in the same moment with one SUBSCRIBE, and each reader gets its own run', async () => {
      // MONITOR sees every command the server runs; only this test's prefix counts (other suites share the server).
      const watcher = rawRedis() as IORedis;
      const monitor = await watcher.monitor();
      const subscribes: string[][] = [];
      const ourPrefix = `${prefix}:`;
      monitor.on('monitor', (_time: string, args: string[]) => {
        if (args[0]?.toLowerCase() === 'subscribe' && args.slice(1).some((channel) => channel.startsWith(ourPrefix))) subscribes.push(args.slice(1));
      });
      const ids = Array.from({ length: 20 }, () => runId());
      const cursors = ids.map((id) => log.follow(id, -1));
      try {
        await Promise.all(cursors.map((cursor) => cursor.ready()));
        await Promise.all(ids.map((id, index) => log.append(id, events(0, index + 1), asAttempt(0))));
        for (const [index, cursor] of cursors.entries()) {
          expect((await cursor.next(5000)).map((event) => event.sequence_number)).toEqual(Array.from({ length: index + 1 }, (_, k) => k));
        }
        // The monitor's feed comes on its own connection: wait for it rather than race it.
        await eventually(async () => (subscribes.length >= 1 ? true : undefined), 2000, 'the SUBSCRIBE in the monitor feed');
        expect(subscribes).toHaveLength(1);
        expect([...subscribes[0]!].sort()).toEqual(ids.map((id) => new RedisKeys(prefix).runAppendedChannel(id)).sort());
        // A run followed later gets a SUBSCRIBE of its own.
        const later = log.follow(runId(), -1);
        await later.ready();
        later.close();
        await eventually(async () => (subscribes.length >= 2 ? true : undefined), 2000, 'the later SUBSCRIBE in the monitor feed');
        expect(subscribes).toHaveLength(2);
        expect(subscribes[1]).toHaveLength(1);
      } finally {
        for (const cursor of cursors) cursor.close();
        monitor.disconnect();
        watcher.disconnect();
      }
    });

    it('sets the expiry of the log (and of its fence) from the first write', async () => {
      const id = runId();
      await log.append(id, events(0, 1), { authority: { attempt: 0 }, closes: false, ttlSeconds: 77 });
      const redis = createRedis(redisUrl, 'worker', createLogger('test', 'silent'));
      try {
        expect(await redis.ttl(new RedisKeys(prefix).runEvents(id))).toBeGreaterThan(70);
        expect(await redis.ttl(new RedisKeys(prefix).runLog(id))).toBeGreaterThan(70);
      } finally {
        await redis.quit();
      }
    });
  }
});
