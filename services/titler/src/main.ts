import { ShutdownRegistry, createLogger, runMain, shutdownDeadlineMs, startTelemetry } from '@ic/telemetry';
const telemetry = startTelemetry('ic-titler');

import { startHealthServer } from '@ic/http';
import { createDbPool, sql } from '@ic/db';
import { createModelAdapter, describeModelAdapter, resolveUpstreamModel } from '@ic/model';
import { createQueueBackend } from '@ic/queue';
import { loadTitlerEnv } from './env';
import { createTitleHandler, TITLE_QUEUE } from './index';

async function main(): Promise<void> {
  const env = loadTitlerEnv();
  const logger = createLogger('titler', env.LOG_LEVEL);
  if (!env.REDIS_URL && env.REDIS_CLUSTER_NODES.length === 0) {
    throw new Error('REDIS_URL (or REDIS_CLUSTER_NODES) is required for the titler worker. (The embedded single-process stack is `npm start`.)');
  }
  const shutdown = new ShutdownRegistry(logger, shutdownDeadlineMs(env.SHUTDOWN_GRACE_PERIOD_MS));
  // The model is asked only in `model` mode; message titles need none.
  const modelConfig = env.TITLER_MODE === 'model' ? { adapter: env.MODEL_ADAPTER, baseUrl: env.MODEL_BASE_URL, apiKey: env.MODEL_API_KEY, timeoutMs: env.MODEL_TIMEOUT_MS, devTokenDelayMs: 0, rateLimitPacing: env.MODEL_RATE_LIMIT_PACING } : undefined;
  logger.info({ mode: env.TITLER_MODE, ...(modelConfig ? describeModelAdapter(modelConfig) : { modelAdapter: 'none' }) }, 'model adapter');
  const pool = await createDbPool(env.DATABASE_URL, { maximumPoolSize: env.DATABASE_POOL_SIZE, preparedStatements: env.DATABASE_PREPARED_STATEMENTS });
  const backend = await createQueueBackend({ redisUrl: env.REDIS_URL, clusterNodes: env.REDIS_CLUSTER_NODES, prefix: env.REDIS_PREFIX, logger });
  const ready = async () => {
    await pool.query(sql.unsafe`SELECT 1`);
    await backend.ping();
  };
  await ready();
  // The titler calls the same upstream as the turn workers: it hears their back-off holds and they hear its.
  const model = modelConfig ? createModelAdapter(modelConfig, { peers: backend.signals, sharedLimits: backend.upstreamLimits }) : undefined;
  const handler = createTitleHandler({
    pool,
    logger,
    mode: env.TITLER_MODE,
    model,
    titleModel: resolveUpstreamModel(env.TITLER_MODEL, env.MODEL_MAP),
  });
  const worker = backend.startWorker(TITLE_QUEUE, { 'titler.generate.v1': handler }, { concurrency: env.TITLER_CONCURRENCY });
  const health = startHealthServer(env.HEALTH_PORT, ready);
  logger.info({ mode: env.TITLER_MODE }, 'titler started');
  shutdown.register('worker', async () => {
    await worker.close();
    model?.close?.();
  });
  shutdown.register('health', () => health.close());
  shutdown.register('redis', () => backend.close());
  shutdown.register('postgres', () => pool.end());
  shutdown.register('telemetry', () => telemetry.shutdown());
  shutdown.listen();
}

runMain(main);
