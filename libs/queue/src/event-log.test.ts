import { randomBytes } from 'node:crypto';
import { createLogger } from '@ic/telemetry';
import { createBullmqBackend } from './bullmq';
import { createRedis } from './redis';
import { MemoryEventLog } from './memory';
import type { QueueBackend, RunEventLog, StreamEvent } from './types';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const events = (first: number, count: number, type = 'response.output_text.delta'): StreamEvent[] =>
  Array.from({ length: count }, (_, index) => ({ type, sequence_number: first + index, delta: `d${first + index}` }));
const asAttempt = (attempt: number, closes = false) => ({ authority: { attempt }, closes, ttlSeconds: 60 });

describe.each(['redis', 'in-process'] as const)('RunEventLog append rules (%s)', (kind) => {
  let log: RunEventLog;
  let backend: QueueBackend | null = null;
  const prefix = `ictest${randomBytes(4).toString('hex')}`;
  const runId = () => `run_${randomBytes(8).toString('hex')}`;

  beforeAll(async () => {
    if (kind === 'in-process') log = new MemoryEventLog();
    else {
      backend = await createBullmqBackend({ redisUrl, prefix, logger: createLogger('test', 'silent') });
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
    expect(await log.beginAttempt(id, 1, 60)).toEqual({ ok: true, lastSequence: -1, lastType: null });
    expect(await log.append(id, events(0, 2, 'response.in_progress'), asAttempt(1))).toMatchObject({ ok: true });
    expect(await log.beginAttempt(id, 2, 60)).toEqual({ ok: true, lastSequence: 1, lastType: 'response.in_progress' });
    expect(await log.append(id, events(2, 1), asAttempt(1))).toEqual({ ok: false, reason: 'stale', lastSequence: 1 });
    expect(await log.beginAttempt(id, 1, 60)).toMatchObject({ ok: false, reason: 'stale' });
    expect(await log.append(id, events(2, 1), asAttempt(2))).toMatchObject({ ok: true, lastSequence: 2 });
    expect(await log.lastSequence(id)).toBe(2);
  });

  it('closes with the terminal batch: nothing is appended after it, by any writer', async () => {
    const id = runId();
    await log.beginAttempt(id, 1, 60);
    expect(await log.append(id, events(0, 2), asAttempt(1, true))).toMatchObject({ ok: true });
    expect(await log.append(id, events(2, 1), asAttempt(1))).toEqual({ ok: false, reason: 'closed', lastSequence: 1 });
    expect(await log.append(id, events(2, 1), { authority: { finished: true }, closes: true, ttlSeconds: 60 })).toMatchObject({ ok: false, reason: 'closed' });
    expect(await log.beginAttempt(id, 2, 60)).toMatchObject({ ok: false, reason: 'closed' });
  });

  if (kind === 'redis') {
    it('sets the expiry of the log (and of its fence) from the first write', async () => {
      const id = runId();
      await log.append(id, events(0, 1), { authority: { attempt: 0 }, closes: false, ttlSeconds: 77 });
      const redis = createRedis(redisUrl, 'worker', createLogger('test', 'silent'));
      try {
        expect(await redis.ttl(`${prefix}:run:${id}:events`)).toBeGreaterThan(70);
        expect(await redis.ttl(`${prefix}:run:${id}:log`)).toBeGreaterThan(70);
      } finally {
        await redis.quit();
      }
    });
  }
});
