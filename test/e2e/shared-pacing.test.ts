import { randomBytes } from 'node:crypto';
import { OpenAICompatibleAdapter, type ModelEvent, type ModelRequest } from '@ic/model';
import { createBullmqBackend, type QueueBackend } from '@ic/queue';
import { defaultRunParams } from '@ic/schemas';
import { createLogger } from '@ic/telemetry';
import { deleteRedisKeys, startFakeUpstream, userMessage, type FakeUpstream } from '@ic/test-support';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

function request(): ModelRequest {
  return { model: 'fake-model', instructions: null, items: [userMessage('hello')], params: defaultRunParams(), signal: new AbortController().signal };
}

/** How a model call ended: its finish reason, or the error code it failed with. */
async function outcome(adapter: OpenAICompatibleAdapter): Promise<string> {
  try {
    let last: ModelEvent | undefined;
    for await (const event of adapter.stream(request())) last = event;
    return last?.type === 'done' ? last.finishReason : 'no done event';
  } catch (error) {
    return (error as { code?: string }).code ?? String(error);
  }
}

/**
 * Two worker processes calling one upstream, as Redis sees them: each with its own queue backend (its
 * own connections) and its own adapter. With the backends' shared mirror they pace as one; pacing each
 * on its own, each spends what the other already took.
 */
describe('pacing shared between worker processes (Redis)', () => {
  const prefix = `ictest${randomBytes(4).toString('hex')}`;
  const logger = createLogger('test', 'silent');
  let upstream: FakeUpstream;
  let backends: QueueBackend[];

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    backends = await Promise.all([0, 1].map(() => createBullmqBackend({ url: redisUrl, prefix, logger })));
  });
  afterAll(async () => {
    await Promise.all(backends.map((backend) => backend.close()));
    await deleteRedisKeys(redisUrl, prefix);
    await upstream.close();
  });

  /** Each process learns the limit from one call of its own, then both send a burst of six at once. */
  async function burstThroughTwoProcesses(shared: boolean): Promise<string[]> {
    upstream.reset();
    // OpenAI's bucket: 3 requests, one more every 200 ms; every answer says what is left.
    upstream.set({ rateLimit: { requests: 3, windowMs: 600, style: 'bucket' } });
    const adapters = backends.map(
      (backend) => new OpenAICompatibleAdapter({ baseURL: upstream.baseURL, apiKey: 'k', timeoutMs: 5000, peers: backend.signals, sharedLimits: shared ? backend.upstreamLimits : undefined }),
    );
    try {
      for (const adapter of adapters) expect(await outcome(adapter)).toBe('stop'); // 1 left
      return await Promise.all(adapters.flatMap((adapter) => Array.from({ length: 6 }, () => outcome(adapter))));
    } finally {
      for (const adapter of adapters) adapter.close();
    }
  }

  it('paces two processes as one: once the limit is known, neither meets a 429', async () => {
    const outcomes = await burstThroughTwoProcesses(true);
    expect(outcomes).toEqual(Array(12).fill('stop'));
    expect(upstream.throttledCount).toBe(0);
    expect(upstream.requests).toHaveLength(14);
    // One was left after the first two calls; the other eleven came a refill (200 ms) apart at the least.
    const times = upstream.requestTimes;
    expect(times[13]! - times[2]!).toBeGreaterThanOrEqual(10 * 200 - 100);
  }, 30000);

  it('without the shared mirror, each process spends what the other took, and meets 429s', async () => {
    const outcomes = await burstThroughTwoProcesses(false);
    // The adapter does not retry (the turn processor does): a refused call fails here.
    expect(outcomes).toContain('rate_limit_exceeded');
    expect(upstream.throttledCount).toBe(outcomes.filter((outcome) => outcome === 'rate_limit_exceeded').length);
  }, 30000);
});
