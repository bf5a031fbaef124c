/**
 * Starts the processes under test as children (see children.ts), each on a fresh database:
 * the single-process stack as `npm start` runs it (with REDIS_URL for BullMQ, without for the
 * in-process queue), the api-gateway as deployed, and the bare Express + pg baseline.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createTestDatabase, deleteRedisKeys, freePort, spawnService, type TestDatabase } from '@ic/test-support';
import { SCRIPTS, startChild, waitUntilReady, type BenchChild } from './children';
import { isUpstreamReady, type UpstreamReady } from './harness';

/** Limits the benchmarks never want to hit: the limiter still runs on every request, it just never refuses. */
const NO_LIMITS = { RATE_LIMIT_REQUESTS_PER_MINUTE: '1000000000', RATE_LIMIT_TURNS_PER_MINUTE: '1000000000' };
/** Telemetry is on only where a benchmark asks for it. */
const NO_TELEMETRY = { OTEL_EXPORTER_OTLP_ENDPOINT: undefined, OTEL_PROMETHEUS_PORT: undefined };

export type QueueKind = 'bullmq' | 'inprocess';

export interface BenchStack {
  name: string;
  /** `http://127.0.0.1:PORT/v1` */
  baseURL: string;
  smithToken: string;
  db: TestDatabase;
  child: BenchChild;
  /** Where the stack keeps its queue and event logs (BullMQ stacks only). */
  redis?: { url: string; prefix: string };
  close(): Promise<void>;
}

export interface StackOptions {
  name: string;
  queue: QueueKind;
  modelBaseUrl: string;
  /** OTLP/HTTP endpoint: full tracing with the service's own sampler settings; none means the SDK stays off. */
  otlpEndpoint?: string;
  profileDir?: string;
  env?: Record<string, string | undefined>;
  /** Another build's stack.js (e.g. of the commit before a change), for a before/after comparison. */
  script?: string;
}

/** deploy/dist/stack.js (the whole system in one process) with DATABASE_URL, optionally REDIS_URL, and MODEL_BASE_URL. */
export async function startBenchStack(options: StackOptions): Promise<BenchStack> {
  // Another build runs on the schema its own migrations make, not this checkout's.
  const db = await createTestDatabase(options.script ? { migrationsDir: path.join(comparedRoot(options.script), 'libs/db/migrations') } : {});
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'ic-bench-stack-'));
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const prefix = `icbench${randomBytes(4).toString('hex')}`;
  const child = startChild({
    name: options.name,
    script: options.script ?? SCRIPTS.stack,
    profileDir: options.profileDir,
    env: {
      ...NO_TELEMETRY,
      ...NO_LIMITS,
      DATABASE_URL: db.url,
      REDIS_URL: options.queue === 'bullmq' ? redisUrl : undefined,
      REDIS_PREFIX: prefix,
      MODEL_BASE_URL: options.modelBaseUrl,
      MODEL_API_KEY: 'bench',
      PORT: String(port),
      HOST: '127.0.0.1',
      STACK_DATA_DIR: dataDir,
      PRINT_TOKENS: 'false',
      OTEL_EXPORTER_OTLP_ENDPOINT: options.otlpEndpoint,
      ...options.env,
    },
  });
  try {
    await waitUntilReady(child, `http://127.0.0.1:${port}/readyz`);
  } catch (error) {
    await child.stop();
    await db.drop();
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  }
  const state = JSON.parse(readFileSync(path.join(dataDir, 'dev-stack.json'), 'utf8')) as { smithToken: string };
  return {
    name: options.name,
    baseURL: `http://127.0.0.1:${port}/v1`,
    smithToken: state.smithToken,
    db,
    child,
    ...(options.queue === 'bullmq' ? { redis: { url: redisUrl, prefix } } : {}),
    close: async () => {
      await child.stop();
      if (options.queue === 'bullmq') await deleteRedisKeys(redisUrl, prefix);
      await db.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * `count` turn worker processes (services/responses in the worker role) beside a BullMQ stack, on its
 * database and queue: the deployed shape of several worker pods. `root` names another checkout whose
 * build they run (the compared stack's), this one's by default.
 */
export async function startBenchWorkers(stack: BenchStack, count: number, options: { modelBaseUrl: string; root?: string }): Promise<{ close(): Promise<void> }> {
  if (!stack.redis) throw new Error(`${stack.name} has no Redis queue for worker processes to share`);
  const env = {
    DATABASE_URL: stack.db.url,
    REDIS_URL: stack.redis.url,
    REDIS_PREFIX: stack.redis.prefix,
    RESPONSES_ROLE: 'worker',
    MODEL_BASE_URL: options.modelBaseUrl,
    MODEL_API_KEY: 'bench',
    HEALTH_PORT: '0',
    LOG_LEVEL: 'info', // 'turn worker started' says it is taking turns
  };
  const workers = Array.from({ length: count }, () => spawnService('responses', env, { root: options.root }));
  const close = async () => void (await Promise.all(workers.map((worker) => worker.stop())));
  try {
    await Promise.all(workers.map((worker) => worker.waitForLog('turn worker started', 60000)));
  } catch (error) {
    await close();
    throw error;
  }
  return { close };
}

/** The checkout a BENCH_COMPARE_STACK script belongs to (its deploy/dist/stack.js is two levels down). */
export const comparedRoot = (stackScript: string): string => path.resolve(path.dirname(stackScript), '../..');

export interface BenchServer {
  name: string;
  origin: string;
  child: BenchChild;
  close(): Promise<void>;
}

/** services/api-gateway/dist/main.js, configured by env as in production (defaults for everything else). */
export async function startBenchGateway(options: {
  name: string;
  databaseUrl: string;
  otlpEndpoint?: string;
  profileDir?: string;
  env?: Record<string, string | undefined>;
  /** Another build's main.js (e.g. of the commit before a change), for a before/after comparison. */
  script?: string;
}): Promise<BenchServer> {
  const port = await freePort();
  const child = startChild({
    name: options.name,
    script: options.script ?? SCRIPTS.gateway,
    profileDir: options.profileDir,
    env: { ...NO_TELEMETRY, ...NO_LIMITS, DATABASE_URL: options.databaseUrl, PORT: String(port), HOST: '127.0.0.1', OTEL_EXPORTER_OTLP_ENDPOINT: options.otlpEndpoint, ...options.env },
  });
  return readyServer(options.name, child, `http://127.0.0.1:${port}`, '/readyz');
}

/** test/bench/servers/baseline.ts: bare Express + pg on the same database. */
export async function startBaseline(options: { name: string; databaseUrl: string; profileDir?: string }): Promise<BenchServer> {
  const port = await freePort();
  const child = startChild({ name: options.name, script: SCRIPTS.baseline, profileDir: options.profileDir, env: { ...NO_TELEMETRY, DATABASE_URL: options.databaseUrl, PORT: String(port) } });
  return readyServer(options.name, child, `http://127.0.0.1:${port}`, '/healthz');
}

async function readyServer(name: string, child: BenchChild, origin: string, probePath: string): Promise<BenchServer> {
  try {
    await waitUntilReady(child, `${origin}${probePath}`);
  } catch (error) {
    await child.stop();
    throw error;
  }
  return { name, origin, child, close: () => child.stop() };
}

export interface BenchUpstream extends UpstreamReady {
  child: BenchChild;
  /** How many OTLP export requests the sink has received. */
  sinkExports(): Promise<number>;
  close(): Promise<void>;
}

/** servers/upstream.ts: the fake Chat Completions upstreams and the OTLP sink, in a process of their own. */
export async function startBenchUpstream(): Promise<BenchUpstream> {
  const child = startChild({ name: 'upstream', script: SCRIPTS.upstream, env: NO_TELEMETRY });
  const ready = await child.message(isUpstreamReady);
  return {
    ...ready,
    child,
    sinkExports: () => {
      const answer = child.message((message): message is { sink: 'count'; exports: number } => (message as { sink?: string })?.sink === 'count', 5000);
      child.process.send({ sink: 'count' });
      return answer.then((message) => message.exports);
    },
    close: () => child.stop(),
  };
}

/**
 * The single-process stack once per queue kind, on the same upstream, started side by side into
 * `stacks` (so the caller's `finally` closes whichever started, even if the other failed).
 */
export async function startStackPerQueue(stacks: Partial<Record<StackKind, BenchStack>>, modelBaseUrl: string, profileDir?: string, otlpEndpoint?: string): Promise<void> {
  const compared = comparedStackScript();
  await Promise.all(
    [...(['bullmq', 'inprocess'] as const), ...(compared ? (['compared'] as const) : [])].map(async (kind) => {
      const queue = kind === 'compared' ? 'bullmq' : kind;
      stacks[kind] = await startBenchStack({
        name: `stack-${kind}`,
        queue,
        modelBaseUrl,
        profileDir,
        otlpEndpoint,
        script: kind === 'compared' ? compared : undefined,
        env: kind === 'compared' ? comparedStackEnv() : undefined,
      });
    }),
  );
}

/**
 * BENCH_COMPARE_STACK=/path/to/other/deploy/dist/stack.js: another build of the stack (e.g. the commit
 * before a change), run with BullMQ in the same alternation as ours and reported as `compared`.
 */
export const comparedStackScript = (): string | undefined => process.env.BENCH_COMPARE_STACK || undefined;

/**
 * BENCH_COMPARE_ENV="NAME=value NAME2=value2": settings for the compared stack only, so the compared
 * slot can be this very build with one setting changed (e.g. `EAGER_TURNS=false`).
 */
export function comparedStackEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of (process.env.BENCH_COMPARE_ENV ?? '').split(/\s+/).filter(Boolean)) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new Error(`BENCH_COMPARE_ENV: '${pair}' is not NAME=value`);
    env[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return env;
}

/**
 * BENCH_TRACED=1: the turn benchmarks run every stack (the compared one too) with full tracing on, the
 * default sampler, exporting to the upstream process's dummy OTLP sink — what tracing costs a turn,
 * before and after a change, side by side in one run (the `otel` suite compares modes of one build).
 */
export const tracedStacks = (): boolean => process.env.BENCH_TRACED === '1';

/** The stacks a turn benchmark alternates: ours on each queue, and the compared build when one is named. */
export type StackKind = QueueKind | 'compared';
export const stackKinds = (): StackKind[] => (comparedStackScript() ? ['bullmq', 'inprocess', 'compared'] : ['bullmq', 'inprocess']);
