/**
 * A worker's concurrency is not bounded by its Postgres pool: a turn borrows a connection only for its
 * claim and its stamp, never while the model runs. With a pool of one connection, two turns must both
 * reach the model at once; a turn that held its connection through the model call would keep the
 * other's claim waiting for good, and this test would time out.
 */
import { Authenticator } from '@ic/auth';
import { createDbPool, type DatabasePool } from '@ic/db';
import { createModelAdapter } from '@ic/model';
import type { WorkerHandle } from '@ic/queue';
import { ResponsesRuntime } from '@ic/responses';
import { createLogger } from '@ic/telemetry';
import { startTurnStack, type TurnStack } from '@ic/test-support';

describe('worker Postgres pool', () => {
  let stack: TurnStack;
  let workerPool: DatabasePool;
  let worker: WorkerHandle;

  beforeAll(async () => {
    stack = await startTurnStack({ inProcessWorker: false });
    workerPool = await createDbPool(stack.db.url, { maximumPoolSize: 1 });
    const runtime = new ResponsesRuntime({
      pool: workerPool,
      backend: stack.backend,
      authenticator: new Authenticator(workerPool, 0),
      logger: createLogger('test', 'silent'),
      model: createModelAdapter({ adapter: 'openai-compatible', baseUrl: stack.upstream.baseURL, apiKey: 'test-upstream-key', timeoutMs: 60000, devTokenDelayMs: 0 }),
      resolveModel: (name) => name,
      eventsTtlSeconds: 120,
      keepAliveMs: 1000,
      syncWaitMs: 30000,
      retryDedupWindowMs: 60000,
      contextTokens: 128000,
    });
    worker = runtime.startWorker(4);
  });

  afterAll(async () => {
    await worker?.close();
    await workerPool?.end();
    await stack?.close();
  });

  it('runs more turns at once than it has connections: none holds one while the model answers', async () => {
    const client = stack.client();
    stack.upstream.hangNext();
    stack.upstream.hangNext();
    const first = await client.conversations.create();
    const second = await client.conversations.create();
    const runs = [
      await client.responses.create({ model: '', conversation: first.id, input: 'one', background: true }),
      await client.responses.create({ model: '', conversation: second.id, input: 'two', background: true }),
    ];
    // Both model calls are open at the same time on a one-connection pool.
    await stack.upstream.waitForRequests(2);
    for (const run of runs) expect((await client.responses.retrieve(run.id)).status).toBe('in_progress');

    // Both stamps go through the one connection too.
    for (const run of runs) expect((await client.responses.cancel(run.id)).status).toBe('cancelled');
    await stack.upstream.waitForAborts(2);
  });
});
