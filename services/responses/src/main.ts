import { ShutdownRegistry, createLogger, runMain, shutdownDeadlineMs, startTelemetry, turnMetrics } from '@ic/telemetry';
import { serviceNameForRole } from './env';
const telemetry = startTelemetry(serviceNameForRole(process.env.RESPONSES_ROLE));

import { getHeapStatistics } from 'node:v8';
import { Authenticator } from '@ic/auth';
import { createDbPool, sql } from '@ic/db';
import { httpTimeouts } from '@ic/config';
import { closeHttpServer, createBaseApp, createHttpServer, finishApp, RateLimits, startHealthServer } from '@ic/http';
import { createModelAdapter, describeModelAdapter, resolveUpstreamModel } from '@ic/model';
import { createQueueBackend, createRedis } from '@ic/queue';
import { loadResponsesEnv } from './env';
import { observeQueueGauges, observeWorkerGauges } from './gauges';
import { ResponsesRuntime } from './runtime';

/** Kept back from the worker's drain for closing Redis, Postgres and telemetry afterwards. */
const WORKER_DRAIN_RESERVE_MS = 3000;

async function main(): Promise<void> {
  const env = loadResponsesEnv();
  const logger = createLogger(`responses-${env.RESPONSES_ROLE}`, env.LOG_LEVEL);
  if (!env.REDIS_URL && env.REDIS_CLUSTER_NODES.length === 0) {
    throw new Error('REDIS_URL (or REDIS_CLUSTER_NODES) is required: the responses service shares its queue with other processes. (The embedded single-process stack is `npm start`.)');
  }
  // Draining running turns takes most of the pod's grace period (the chart passes it in).
  const shutdown = new ShutdownRegistry(logger, shutdownDeadlineMs(env.SHUTDOWN_GRACE_PERIOD_MS));
  turnMetrics(); // created now, so the zero-valued counters are in the first scrape
  const modelConfig = { adapter: env.MODEL_ADAPTER, baseUrl: env.MODEL_BASE_URL, apiKey: env.MODEL_API_KEY, timeoutMs: env.MODEL_TIMEOUT_MS, devTokenDelayMs: env.DEV_MODEL_TOKEN_DELAY_MS, rateLimitPacing: env.MODEL_RATE_LIMIT_PACING };
  logger.info({ role: env.RESPONSES_ROLE, ...describeModelAdapter(modelConfig) }, 'model adapter');
  const pool = await createDbPool(env.DATABASE_URL, { maximumPoolSize: env.DATABASE_POOL_SIZE, preparedStatements: env.DATABASE_PREPARED_STATEMENTS });
  const backend = await createQueueBackend({ redisUrl: env.REDIS_URL, clusterNodes: env.REDIS_CLUSTER_NODES, prefix: env.REDIS_PREFIX, logger, lockDurationMs: env.WORKER_LOCK_DURATION_MS });
  const authenticator = new Authenticator(pool, env.TOKEN_CACHE_TTL_MS);
  const rateLimitRedis = createRedis({ url: env.REDIS_URL, clusterNodes: env.REDIS_CLUSTER_NODES }, 'producer', logger);
  const rateLimits = new RateLimits({
    requestsPerMinute: env.RATE_LIMIT_REQUESTS_PER_MINUTE,
    turnsPerMinute: env.RATE_LIMIT_TURNS_PER_MINUTE,
    redis: rateLimitRedis,
    keyPrefix: env.REDIS_PREFIX,
    logger,
  });
  const runtime = new ResponsesRuntime({
    pool,
    backend,
    authenticator,
    logger,
    // Every process calling the upstream shares its back-off holds (a 429 met by one worker holds them all).
    model: createModelAdapter(modelConfig, { peers: backend.signals, sharedLimits: backend.upstreamLimits }),
    resolveModel: (name) => resolveUpstreamModel(name, env.MODEL_MAP),
    eventsTtlSeconds: env.RUN_EVENTS_TTL_SECONDS,
    finishedEventsTtlSeconds: env.RUN_EVENTS_FINISHED_TTL_SECONDS,
    keepAliveMs: env.STREAM_KEEPALIVE_MS,
    streamHeadHoldMs: env.STREAM_HEAD_HOLD_MS,
    syncWaitMs: env.SYNC_WAIT_MS,
    contextTokens: env.MODEL_CONTEXT_TOKENS,
    modelBackoffBudgetMs: env.MODEL_BACKOFF_BUDGET_MS,
    rateLimits,
    historyCacheItems: env.HISTORY_CACHE_ITEMS,
    retryDedupWindowMs: env.RETRY_DEDUP_WINDOW_MS,
  });
  const ready = async () => {
    await pool.query(sql.unsafe`SELECT 1`);
    await backend.ping();
  };

  if (env.RESPONSES_ROLE === 'api' || env.RESPONSES_ROLE === 'all') {
    const app = createBaseApp({ logger, corsOrigins: env.CORS_ORIGINS, bodyLimit: env.BODY_LIMIT, authenticator, ready, rateLimits });
    app.use(runtime.router());
    finishApp(app, logger);
    const server = createHttpServer(app, httpTimeouts(env)).listen(env.PORT, env.HOST, () => logger.info({ port: env.PORT }, 'responses api listening'));
    runtime.scheduler.startSweeper(env.SWEEP_INTERVAL_MS, env.SWEEP_MIN_AGE_MS);
    observeQueueGauges({ pool, backend, stuckAfterMs: env.RUN_STUCK_AFTER_MS, logger });
    shutdown.register('http', () => closeHttpServer(server, () => runtime.closeStreams()));
    shutdown.register('sweeper', async () => runtime.scheduler.stopSweeper());
  }
  if (env.RESPONSES_ROLE === 'worker' || env.RESPONSES_ROLE === 'all') {
    await ready();
    // Only a process that accepts turns can run them eagerly.
    const eagerLeaseMs = env.RESPONSES_ROLE === 'all' && env.EAGER_TURNS ? env.WORKER_LOCK_DURATION_MS : undefined;
    const worker = runtime.startWorker(env.WORKER_CONCURRENCY, { eagerLeaseMs });
    observeWorkerGauges({ inFlight: worker.inFlight, concurrency: env.WORKER_CONCURRENCY });
    // With WORKER_CONCURRENCY unset the concurrency comes from the heap limit: log both.
    logger.info({ concurrency: env.WORKER_CONCURRENCY, heapLimitMb: Math.round(getHeapStatistics().heap_size_limit / 1048576), drainMs: shutdown.deadlineMs - WORKER_DRAIN_RESERVE_MS }, 'turn worker started');
    // Running turns finish within the grace period; what is still running then is re-delivered to
    // another worker once its lock lapses.
    shutdown.register('worker', () => worker.close(), { leaveMs: WORKER_DRAIN_RESERVE_MS });
    if (env.RESPONSES_ROLE === 'worker') {
      const health = startHealthServer(env.HEALTH_PORT, ready);
      shutdown.register('health', () => health.close());
    }
  }
  shutdown.register('redis', async () => {
    await backend.close();
    await rateLimitRedis.quit();
  });
  shutdown.register('postgres', () => pool.end());
  shutdown.register('telemetry', () => telemetry.shutdown());
  shutdown.listen();
}

runMain(main);
