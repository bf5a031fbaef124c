import { randomBytes } from 'node:crypto';
import type { UpstreamHold } from '@ic/schemas';
import { createLogger } from '@ic/telemetry';
import { createBullmqBackend } from './bullmq';
import { RedisKeys } from './keys';
import { createInProcessBackend } from './memory';
import { createRedis, waitUntilReady } from './redis';
import type { QueueBackend } from './types';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const silent = createLogger('test', 'silent');
const hold: UpstreamHold = { origin: 'adapter-1', upstream: '0123456789abcdef', model: 'gpt-4o', ms: 1500 };

/** The next hold `backend` hears (rejects after 2 s). */
const nextHold = (backend: QueueBackend) =>
  new Promise<UpstreamHold>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no hold heard within 2 s')), 2000);
    const stop = backend.signals.onUpstreamHold((heard) => {
      clearTimeout(timer);
      stop();
      resolve(heard);
    });
  });

describe('upstream holds between processes (Redis pub/sub)', () => {
  const prefix = `ictest${randomBytes(4).toString('hex')}`;
  let first: QueueBackend;
  let second: QueueBackend;

  beforeAll(async () => {
    // Two backends, each with its own connections: two worker processes as far as Redis can tell.
    [first, second] = await Promise.all([createBullmqBackend({ url: redisUrl, prefix, logger: silent }), createBullmqBackend({ url: redisUrl, prefix, logger: silent })]);
  });
  afterAll(async () => {
    await Promise.all([first.close(), second.close()]);
  });

  it('delivers a hold one process publishes to every process of the deployment', async () => {
    const heard = Promise.all([nextHold(first), nextHold(second)]);
    await first.signals.publishUpstreamHold(hold);
    expect(await heard).toEqual([hold, hold]);
    const heardNull = nextHold(second);
    await first.signals.publishUpstreamHold({ ...hold, model: null });
    expect(await heardNull).toEqual({ ...hold, model: null });
  });

  it('drops what does not parse as a hold, and still hears the next one', async () => {
    const redis = createRedis(redisUrl, 'producer', silent);
    await waitUntilReady(redis);
    const heard: UpstreamHold[] = [];
    const stop = second.signals.onUpstreamHold((h) => heard.push(h));
    try {
      const channel = new RedisKeys(prefix).upstreamHoldChannel();
      for (const junk of ['not json', '{}', JSON.stringify({ ...hold, ms: -5 }), JSON.stringify({ ...hold, model: '' }), JSON.stringify({ ...hold, origin: 'x'.repeat(100) })]) {
        await redis.publish(channel, junk);
      }
      const next = nextHold(second);
      await first.signals.publishUpstreamHold(hold);
      expect(await next).toEqual(hold);
      expect(heard).toEqual([hold]);
    } finally {
      stop();
      await redis.quit();
    }
  });

  it('refuses to publish a malformed hold', async () => {
    await expect(first.signals.publishUpstreamHold({ ...hold, ms: 0 })).rejects.toThrow();
  });

  it('keeps deployments apart: another REDIS_PREFIX hears nothing', async () => {
    const other = await createBullmqBackend({ url: redisUrl, prefix: `${prefix}other`, logger: silent });
    try {
      const heardByOther: UpstreamHold[] = [];
      other.signals.onUpstreamHold((h) => heardByOther.push(h));
      const heard = nextHold(second);
      await first.signals.publishUpstreamHold(hold);
      await heard;
      await other.ping(); // a round trip after the publish: a delivery to `other` would have come by now
      expect(heardByOther).toEqual([]);
    } finally {
      await other.close();
    }
  });
});

describe('upstream holds in the in-process backend', () => {
  it('reaches every listener of the process', async () => {
    const backend = createInProcessBackend(silent);
    const heard = nextHold(backend);
    await backend.signals.publishUpstreamHold(hold);
    expect(await heard).toEqual(hold);
    await backend.close();
  });
});
