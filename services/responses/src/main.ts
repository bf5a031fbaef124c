import { ShutdownRegistry, createLogger, runMain, startTelemetry } from '@ic/telemetry';
const telemetry = startTelemetry('ic-responses');

import { Authenticator } from '@ic/auth';
import { createDbPool, sql } from '@ic/db';
import { httpTimeouts } from '@ic/config';
import { closeHttpServer, createBaseApp, createHttpServer, finishApp, RateLimits, startHealthServer } from '@ic/http';
import { createModelAdapter, resolveUpstreamModel } from '@ic/model';
import { createQueueBackend, createRedis } from '@ic/queue';
import { loadResponsesEnv } from './env';
import { ResponsesRuntime } from './runtime';

async function main(): Promise<void> {
  const env = loadResponsesEnv();
  const logger = createLogger(`responses-${env.RESPONSES_ROLE}`, env.LOG_LEVEL);
  if (!env.REDIS_URL) throw new Error('REDIS_URL is required: the responses service shares its queue with other processes. (The embedded single-process stack is `npm start`.)');
  const shutdown = new ShutdownRegistry(logger, 60000);
  const pool = await createDbPool(env.DATABASE_URL, { maximumPoolSize: env.DATABASE_POOL_SIZE });
  const backend = await createQueueBackend({ redisUrl: env.REDIS_URL, prefix: env.REDIS_PREFIX, logger, lockDurationMs: env.WORKER_LOCK_DURATION_MS });
  const authenticator = new Authenticator(pool, env.TOKEN_CACHE_TTL_MS);
  const rateLimitRedis = createRedis(env.REDIS_URL, 'producer', logger);
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
    model: createModelAdapter({ baseUrl: env.MODEL_BASE_URL, apiKey: env.MODEL_API_KEY, timeoutMs: env.MODEL_TIMEOUT_MS, devTokenDelayMs: env.DEV_MODEL_TOKEN_DELAY_MS }),
    resolveModel: (name) => resolveUpstreamModel(name, env.MODEL_MAP),
    eventsTtlSeconds: env.RUN_EVENTS_TTL_SECONDS,
    keepAliveMs: env.STREAM_KEEPALIVE_MS,
    syncWaitMs: env.SYNC_WAIT_MS,
    contextTokens: env.MODEL_CONTEXT_TOKENS,
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
    shutdown.register('http', () => closeHttpServer(server, () => runtime.closeStreams()));
    shutdown.register('sweeper', async () => runtime.scheduler.stopSweeper());
  }
  if (env.RESPONSES_ROLE === 'worker' || env.RESPONSES_ROLE === 'all') {
    await ready();
    const worker = runtime.startWorker(env.WORKER_CONCURRENCY);
    logger.info({ concurrency: env.WORKER_CONCURRENCY }, 'turn worker started');
    shutdown.register('worker', () => worker.close());
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
