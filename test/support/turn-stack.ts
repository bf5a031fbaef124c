import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI, { type ClientOptions } from 'openai';
import { consoleRouter, gatewayRouter } from '@ic/api-gateway';
import { Authenticator } from '@ic/auth';
import { createBaseApp, createHttpServer, finishApp, RateLimits } from '@ic/http';
import { createModelAdapter, type ModelAdapter } from '@ic/model';
import { createBullmqBackend, createInProcessBackend, createRedis, type QueueBackend, type WorkerHandle } from '@ic/queue';
import { ResponsesRuntime } from '@ic/responses';
import { createTitleHandler, TITLE_QUEUE } from '@ic/titler';
import { createLogger } from '@ic/telemetry';
import { createTestDatabase, type TestDatabase } from './db';
import { startFakeUpstream, type FakeUpstream, type FakeUpstreamOptions } from './fake-upstream';
import { seedTenant, type SeededTenant } from './fixtures';

export interface TurnStackOptions {
  upstream?: FakeUpstreamOptions;
  /** Run turn workers in this process (default). False: the test starts its own (e.g. as child processes). */
  inProcessWorker?: boolean;
  /** The embedded default's in-process queue instead of BullMQ on Redis. */
  inProcessQueue?: boolean;
  /** BullMQ on this Redis Cluster (seed nodes `host:port`) instead of the shared Redis. */
  redisClusterNodes?: string[];
  /** Use this model instead of the fake upstream. */
  model?: ModelAdapter;
  /** Point the OpenAI-compatible adapter somewhere other than the fake upstream (e.g. a closed port). */
  modelBaseUrl?: string;
  lockDurationMs?: number;
  keepAliveMs?: number;
  /** STREAM_HEAD_HOLD_MS (the relay's default when absent). */
  streamHeadHoldMs?: number;
  workerConcurrency?: number;
  /** false: every turn goes through the queue (a role `api` process beside workers); by default the newest worker also runs the turns this stack accepts. */
  eagerTurns?: boolean;
  /** Per-token request and per-smith turn limits (Redis-backed, under the stack's prefix); none by default. */
  rateLimits?: { requestsPerMinute: number; turnsPerMinute: number };
  /** Context budget for truncation: "auto" (estimated tokens). */
  contextTokens?: number;
  /** MODEL_BACKOFF_BUDGET_MS (the worker's default when absent). */
  modelBackoffBudgetMs?: number;
  /** Token lookup cache; 0 (default) makes every request read the token row, as revocation tests need. */
  tokenCacheTtlMs?: number;
  /** Serve the built console at /console, on the API's origin (as the gateway and `npm start` do). */
  console?: boolean;
}

export interface TurnStack {
  /** `http://127.0.0.1:PORT/v1` serving both the Responses and the Conversations API. */
  baseURL: string;
  /** `http://127.0.0.1:PORT` (the console is at `${origin}/console` with the `console` option). */
  origin: string;
  db: TestDatabase;
  seeded: SeededTenant;
  upstream: FakeUpstream;
  backend: QueueBackend;
  runtime: ResponsesRuntime;
  redisUrl: string;
  /** BullMQ/Redis key prefix private to this stack. */
  prefix: string;
  client(token?: string, options?: Omit<ClientOptions, 'apiKey' | 'baseURL'>): OpenAI;
  startWorker(): WorkerHandle;
  close(): Promise<void>;
}

/**
 * The turn path as deployed, in one test process: Postgres (a fresh database), BullMQ on the real
 * Redis under a private prefix, the responses API + gateway on one port, turn and title workers, and
 * a fake OpenAI-compatible upstream that is a real HTTP server.
 */
export async function startTurnStack(options: TurnStackOptions = {}): Promise<TurnStack> {
  const logger = createLogger('test', 'silent');
  const db = await createTestDatabase();
  const seeded = await seedTenant(db.pool, { defaultModel: 'fake-default-model' });
  const upstream = await startFakeUpstream(options.upstream);
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const prefix = `ictest${randomBytes(4).toString('hex')}`;
  const backend = options.inProcessQueue
    ? createInProcessBackend(logger)
    : options.redisClusterNodes
      ? await createBullmqBackend({ clusterNodes: options.redisClusterNodes, prefix, logger, lockDurationMs: options.lockDurationMs ?? 5000 })
      : await createBullmqBackend({ url: redisUrl, prefix, logger, lockDurationMs: options.lockDurationMs ?? 5000 });
  const authenticator = new Authenticator(db.pool, options.tokenCacheTtlMs ?? 0);
  const rateLimitRedis = options.rateLimits ? createRedis(redisUrl, 'producer', logger) : undefined;
  const rateLimits = options.rateLimits ? new RateLimits({ ...options.rateLimits, redis: rateLimitRedis, keyPrefix: prefix, logger }) : undefined;
  const runtime = new ResponsesRuntime({
    pool: db.pool,
    backend,
    authenticator,
    logger,
    model:
      options.model ??
      createModelAdapter(
        { adapter: 'openai-compatible', baseUrl: options.modelBaseUrl ?? upstream.baseURL, apiKey: 'test-upstream-key', timeoutMs: 10000, devTokenDelayMs: 0 },
        { peers: backend.signals, sharedLimits: backend.upstreamLimits },
      ),
    resolveModel: (name) => name,
    eventsTtlSeconds: 120,
    keepAliveMs: options.keepAliveMs ?? 1000,
    streamHeadHoldMs: options.streamHeadHoldMs,
    syncWaitMs: 30000,
    retryDedupWindowMs: 60000,
    contextTokens: options.contextTokens ?? 128000,
    modelBackoffBudgetMs: options.modelBackoffBudgetMs,
    rateLimits,
  });
  const app = createBaseApp({ logger, corsOrigins: ['*'], bodyLimit: '1mb', authenticator, ready: async () => undefined, rateLimits });
  app.use(runtime.router());
  app.use(gatewayRouter({ pool: db.pool, authenticator, cursorSecret: 'turn-stack-cursor-secret' }));
  if (options.console) app.use(consoleRouter());
  finishApp(app, logger);
  const server: Server = await new Promise((resolve) => {
    const listening = createHttpServer(app).listen(0, '127.0.0.1', () => resolve(listening));
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const baseURL = `${origin}/v1`;
  const workers: WorkerHandle[] = [];
  const startWorker = () => {
    // The newest worker also runs the head turns this stack accepts (EagerTurns), as a role `all` process does.
    const eagerLeaseMs = options.eagerTurns === false ? undefined : (options.lockDurationMs ?? 5000);
    const worker = runtime.startWorker(options.workerConcurrency ?? 4, { eagerLeaseMs });
    workers.push(worker);
    return worker;
  };
  if (options.inProcessWorker !== false) startWorker();
  workers.push(backend.startWorker(TITLE_QUEUE, { 'titler.generate.v1': createTitleHandler({ pool: db.pool, logger, mode: 'message' }) }, { concurrency: 2 }));

  return {
    baseURL,
    origin,
    db,
    seeded,
    upstream,
    backend,
    runtime,
    redisUrl,
    prefix,
    startWorker,
    client: (token = seeded.smithToken, clientOptions = {}) => new OpenAI({ apiKey: token, baseURL, maxRetries: 0, ...clientOptions }),
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await Promise.all(workers.map((worker) => worker.close()));
      runtime.scheduler.stopSweeper();
      await backend.close();
      await rateLimitRedis?.quit();
      if (!options.inProcessQueue && !options.redisClusterNodes) await deleteRedisKeys(redisUrl, prefix);
      await upstream.close();
      await db.drop();
    },
  };
}

/** Removes every Redis key under `prefix` (a test stack's BullMQ queues and run streams). */
export async function deleteRedisKeys(redisUrl: string, prefix: string): Promise<void> {
  const redis = createRedis(redisUrl, 'worker', createLogger('test', 'silent'));
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    if (keys.length > 0) await redis.del(...keys);
    cursor = next;
  } while (cursor !== '0');
  await redis.quit();
}

/** Polls `probe` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(probe: () => Promise<T | undefined>, timeoutMs = 10000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
