import OpenAI from 'openai';
import { sql } from '@ic/db';
import { createRedis, RedisKeys } from '@ic/queue';
import { MAX_RUN_ATTEMPTS } from '@ic/responses';
import { createLogger } from '@ic/telemetry';
import { z } from 'zod';
import { eventually, freePort, spawnService, startTurnStack, type ServiceProcess, type TurnStack } from '@ic/test-support';

const LOCK_MS = 1500;

/**
 * A real responses process (compiled), on the stack's database, Redis prefix and upstream: a worker, or
 * with `apiPort` a role `all` process that also serves the API there (and runs the turns it accepts).
 */
function spawnWorker(stack: TurnStack, apiPort?: number): ServiceProcess {
  return spawnService('responses', {
    ...(apiPort === undefined ? { RESPONSES_ROLE: 'worker', HEALTH_PORT: '0' } : { RESPONSES_ROLE: 'all', PORT: String(apiPort) }),
    DATABASE_URL: stack.db.url,
    REDIS_URL: stack.redisUrl,
    REDIS_PREFIX: stack.prefix,
    MODEL_BASE_URL: stack.upstream.baseURL,
    MODEL_API_KEY: 'test-upstream-key',
    WORKER_LOCK_DURATION_MS: String(LOCK_MS),
    WORKER_CONCURRENCY: '2',
  });
}

describe('fault tolerance of the turn path', () => {
  let stack: TurnStack;
  const children: ServiceProcess[] = [];

  beforeAll(async () => {
    stack = await startTurnStack({ inProcessWorker: false, lockDurationMs: LOCK_MS, upstream: { reply: 'w1 w2 w3 w4 w5 w6 w7 w8 w9 w10', tokenDelayMs: 150 } });
  });
  afterAll(async () => {
    for (const child of children) child.signal('SIGKILL');
    await stack.close();
  });

  it('completes a turn exactly once when its worker process is killed mid-turn', async () => {
    const client = stack.client();
    const conversation = await client.conversations.create();
    const first = spawnWorker(stack);
    children.push(first);
    const started = await client.responses.create({ model: '', conversation: conversation.id, input: 'survive this', background: true });

    // Kill -9 once the model is mid-answer: deltas have been published but the turn is not stamped.
    await eventually(async () => {
      const events = await stack.backend.events.read(started.id, -1, 0);
      return events.some((event) => event.type === 'response.output_text.delta') ? true : undefined;
    }, 15000, 'the first worker to stream deltas');
    expect((await first.kill()).signal).toBe('SIGKILL');
    expect((await client.responses.retrieve(started.id)).status).toBe('in_progress');

    const second = spawnWorker(stack);
    children.push(second);
    const done = await eventually(async () => {
      const response = await client.responses.retrieve(started.id);
      return response.status === 'completed' ? response : undefined;
    }, 30000, 'the turn to complete on the second worker');

    expect(done.output_text).toBe('w1 w2 w3 w4 w5 w6 w7 w8 w9 w10');
    expect(stack.upstream.requests).toHaveLength(2); // the model call is repeated, the transcript is not
    const items = (await client.conversations.items.list(conversation.id)).data;
    expect(items.map((item) => item.id)).toEqual([`${started.id}.i0`, `${started.id}.o`]);
    const attempts = await stack.db.pool.oneFirst(sql.type(z.object({ attempt: z.number() }))`SELECT attempt FROM runs WHERE id = ${started.id}`);
    expect(attempts).toBe(2);
    const finalEvents = await stack.backend.events.read(started.id, -1, 0);
    expect(finalEvents.at(-1)?.type).toBe('response.completed');

    // SIGTERM drains and exits with 128 + 15.
    expect((await second.stop()).code).toBe(143);
  });

  it('completes a turn exactly once when the process that accepted it and ran it itself is killed mid-turn', async () => {
    stack.upstream.set({ reply: 'w1 w2 w3 w4 w5 w6 w7 w8 w9 w10', tokenDelayMs: 150 });
    // A role `all` process: it claims the head turns it accepts and runs them without the queue (EAGER_TURNS).
    const port = await freePort();
    const accepting = spawnWorker(stack, port);
    children.push(accepting);
    await eventually(async () => ((await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.ok ? true : undefined), 20000, 'the accepting process to be ready');
    const client = new OpenAI({ apiKey: stack.seeded.smithToken, baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0 });
    const conversation = await stack.client().conversations.create();
    const started = await client.responses.create({ model: '', conversation: conversation.id, input: 'survive this too', background: true });
    // Claimed by the accept itself: attempt 1 is already running when the POST answers.
    expect(started.status).toBe('in_progress');
    await eventually(async () => {
      const events = await stack.backend.events.read(started.id, -1, 0);
      return events.some((event) => event.type === 'response.output_text.delta') ? true : undefined;
    }, 15000, 'the accepting process to stream deltas');
    expect((await accepting.kill()).signal).toBe('SIGKILL');

    // Its lease job comes due after WORKER_LOCK_DURATION_MS, and a worker takes the run over as attempt 2.
    const worker = spawnWorker(stack);
    children.push(worker);
    const done = await eventually(async () => {
      const response = await stack.client().responses.retrieve(started.id);
      return response.status === 'completed' ? response : undefined;
    }, 30000, 'the turn to complete on the worker');
    expect(done.output_text).toBe('w1 w2 w3 w4 w5 w6 w7 w8 w9 w10');
    const items = (await stack.client().conversations.items.list(conversation.id)).data;
    expect(items.map((item) => item.id)).toEqual([`${started.id}.i0`, `${started.id}.o`]);
    const attempts = await stack.db.pool.oneFirst(sql.type(z.object({ attempt: z.number() }))`SELECT attempt FROM runs WHERE id = ${started.id}`);
    expect(attempts).toBe(2);
    expect((await stack.backend.events.read(started.id, -1, 0)).at(-1)?.type).toBe('response.completed');
    expect((await worker.stop()).code).toBe(143);
  });

  it('gives a client that keeps streaming through the crash the right final response', async () => {
    stack.upstream.set({ reply: 'w1 w2 w3 w4 w5 w6 w7 w8 w9 w10', tokenDelayMs: 150 });
    const client = stack.client();
    const conversation = await client.conversations.create();
    const first = spawnWorker(stack);
    children.push(first);
    const stream = client.responses.stream({ model: '', conversation: conversation.id, input: 'keep watching' });
    let killed = false;
    stream.on('response.output_text.delta', () => {
      if (!killed) {
        killed = true;
        first.signal('SIGKILL');
        children.push(spawnWorker(stack));
      }
    });
    const final = await stream.finalResponse();
    expect(killed).toBe(true);
    expect(final.status).toBe('completed');
    expect(final.output_text).toBe('w1 w2 w3 w4 w5 w6 w7 w8 w9 w10');
    expect(final.output).toHaveLength(1);
    const items = (await client.conversations.items.list(conversation.id)).data;
    expect(items.map((item) => item.id)).toEqual([`${final.id}.i0`, `${final.id}.o`]);
    await Promise.all(children.map((child) => (child.isRunning() ? child.stop() : child.exited)));
  });

  it('re-enqueues an accepted run whose job Redis lost, so it still runs', async () => {
    stack.upstream.set({ reply: 'recovered', tokenDelayMs: 0 });
    const client = stack.client();
    const conversation = await client.conversations.create();
    const accepted = await client.responses.create({ model: '', conversation: conversation.id, input: 'lost job', background: true });

    // Redis forgets the job (flush, failover without persistence…); Postgres still has the queued run.
    const redis = createRedis(stack.redisUrl, 'worker', createLogger('test', 'silent'));
    const jobKeys = await redis.keys(`${new RedisKeys(stack.prefix).queuePrefix('turns')}:turns:*`);
    expect(jobKeys.length).toBeGreaterThan(0);
    await redis.del(...jobKeys);
    await redis.quit();
    expect(await stack.backend.queue.isPending('turns', accepted.id)).toBe(false);

    const worker = stack.startWorker();
    expect(await stack.runtime.scheduler.sweepOnce(0)).toBe(1);
    const done = await eventually(async () => {
      const response = await client.responses.retrieve(accepted.id);
      return response.status === 'completed' ? response : undefined;
    }, 15000, 'the swept run to complete');
    expect(done.output_text).toBe('recovered');
    expect(await stack.runtime.scheduler.sweepOnce(0)).toBe(0);
    await worker.close();
  });
  it('fails a turn that keeps killing its workers instead of retrying it forever', async () => {
    const client = stack.client();
    const conversation = await client.conversations.create();
    const accepted = await client.responses.create({ model: '', conversation: conversation.id, input: 'poison', background: true });
    // As if MAX_RUN_ATTEMPTS workers had died on it already.
    await stack.db.pool.query(sql.unsafe`UPDATE runs SET status = 'in_progress', attempt = ${MAX_RUN_ATTEMPTS} WHERE id = ${accepted.id}`);
    const worker = stack.startWorker();
    const failed = await eventually(async () => {
      const response = await client.responses.retrieve(accepted.id);
      return response.status === 'failed' ? response : undefined;
    }, 15000, 'the run to fail');
    expect(failed.error).toEqual({ code: 'server_error', message: `The turn could not be completed after ${MAX_RUN_ATTEMPTS} attempts.` });
    expect((await client.conversations.items.list(conversation.id)).data).toEqual([]);
    // The conversation is not stuck behind it.
    stack.upstream.set({ reply: 'next one', tokenDelayMs: 0 });
    expect((await client.responses.create({ model: '', conversation: conversation.id, input: 'next' })).output_text).toBe('next one');
    await worker.close();
  });
});
