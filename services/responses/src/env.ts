import { z } from 'zod';
import { getHeapStatistics } from 'node:v8';
import { boolEnv, databaseEnv, httpEnv, intEnv, logEnv, modelEnv, parseEnv, redisEnv, requireModelUpstream, shutdownEnv } from '@ic/config';

/**
 * Heap one in-flight streaming turn is budgeted: `npm run bench -- slow-turns` measures about 65–145 KB
 * of heap (80–200 KB of RSS) per turn with 400–1,000 ten-second turns in flight in one process; the
 * rest is margin for longer histories and answers.
 */
export const HEAP_PER_INFLIGHT_TURN_BYTES = 256 * 1024;
/**
 * RUN_EVENTS_FINISHED_TTL_SECONDS' default, also RunLifecycle's when none is given (the single-process
 * stack, tests): a log kept for the in-flight expiry instead (600 s) made Redis the first shared limit.
 */
export const FINISHED_EVENTS_TTL_SECONDS = 60;
/**
 * STREAM_HEAD_HOLD_MS' default, also the relay's when none is given. Below what a person notices, and
 * long enough for the claim (a few ms after the accept) and an instant model's first token to join it.
 */
export const DEFAULT_STREAM_HEAD_HOLD_MS = 25;
const MIN_WORKER_CONCURRENCY = 8;
const MAX_WORKER_CONCURRENCY = 10000;

/**
 * The default WORKER_CONCURRENCY: as many turns as fit in half of V8's heap limit (the other half is
 * left for garbage-collection headroom, history caches and bursts), within 8–10,000. Node sizes its
 * heap from the container's memory limit (a quarter to a half of it), so the pod's memory limit sets
 * this: 384–768 turns under a 768 MiB limit, 8,288 with the 4 GiB heap of a large machine.
 */
export function derivedWorkerConcurrency(heapLimitBytes: number = getHeapStatistics().heap_size_limit): number {
  const fit = Math.floor(heapLimitBytes / 2 / HEAP_PER_INFLIGHT_TURN_BYTES);
  return Math.min(MAX_WORKER_CONCURRENCY, Math.max(MIN_WORKER_CONCURRENCY, fit));
}

/** WORKER_CONCURRENCY: 0 or unset derives it from the heap (derivedWorkerConcurrency); shared with the embedded stack. */
export const workerConcurrencyEnv = () => intEnv(0, 0, MAX_WORKER_CONCURRENCY).transform((value) => (value === 0 ? derivedWorkerConcurrency() : value));

export const DEFAULT_WORKER_LOCK_DURATION_MS = 30000;

export const ResponsesEnv = z.object({
  ...databaseEnv,
  ...httpEnv,
  ...logEnv,
  ...redisEnv,
  ...modelEnv,
  ...shutdownEnv,
  /** `api` serves /v1/responses, `worker` executes turns, `all` does both in one process. */
  RESPONSES_ROLE: z.enum(['api', 'worker', 'all']).default('all'),
  /**
   * Turns one worker process executes at once; 0 (the default) derives it from the heap
   * (`derivedWorkerConcurrency`). A turn mostly waits on the model (seconds to minutes) and holds no
   * Postgres connection meanwhile (each of its statements borrows one briefly), so this is bounded by
   * memory, not CPU. Lower it for CPU-bound local models.
   */
  WORKER_CONCURRENCY: workerConcurrencyEnv(),
  /** Port for /healthz and /readyz when the process runs only the worker role. */
  HEALTH_PORT: intEnv(8081, 0, 65535),
  /**
   * How long a worker's lock on a turn lasts; a crashed worker's turn is picked up again after about
   * this long. Also the lease of a turn run by its accepting process (EAGER_TURNS).
   */
  WORKER_LOCK_DURATION_MS: intEnv(DEFAULT_WORKER_LOCK_DURATION_MS, 1000),
  /**
   * Role `all`: a head turn this process accepts while its worker has room is claimed in the accept
   * statement and run here at once, instead of a round trip through the queue (`eager-turns.ts`).
   */
  EAGER_TURNS: boolEnv(true),
  /** Transcript items each worker keeps in memory (across conversations) to replay history without re-reading it. */
  HISTORY_CACHE_ITEMS: intEnv(100000, 0),
  /** How often unfinished runs are checked for a lost job, and how old they must be. */
  SWEEP_INTERVAL_MS: intEnv(5000, 100),
  SWEEP_MIN_AGE_MS: intEnv(10000, 0),
  /**
   * A run in progress for longer than this counts in the ic_runs_stuck gauge. Healthy turns end well
   * before: MODEL_TIMEOUT_MS bounds an upstream's silence, and a dead worker's turn is re-delivered
   * after WORKER_LOCK_DURATION_MS.
   */
  RUN_STUCK_AFTER_MS: intEnv(900000, 1000),
  /**
   * An unfinished run's event log expires this long after its last append (set from its first write,
   * refreshed by each one), so a log nobody finishes still goes. Must outlast the quietest stretch of
   * a live turn (queue wait, model silence up to MODEL_TIMEOUT_MS).
   */
  RUN_EVENTS_TTL_SECONDS: intEnv(600, 1),
  /**
   * A finished run's log expires this long after the append that closes it (at most
   * RUN_EVENTS_TTL_SECONDS): long enough for a dropped stream to reconnect and resume exactly; later
   * replays are rebuilt from Postgres. Redis holds turns/s × this × a log's size (≈ 9 KB plus about
   * five times the answer's text), so this, not the in-flight expiry, sizes Redis.
   */
  RUN_EVENTS_FINISHED_TTL_SECONDS: intEnv(FINISHED_EVENTS_TTL_SECONDS, 1),
  /** SSE comment keep-alive interval while a stream is quiet. */
  STREAM_KEEPALIVE_MS: intEnv(15000, 100),
  /**
   * How long a stream's head (response.created, queued, in_progress) may wait for the events after it,
   * to leave in the same socket write. It never delays an output event; 0 writes each batch at once.
   */
  STREAM_HEAD_HOLD_MS: intEnv(DEFAULT_STREAM_HEAD_HOLD_MS, 0),
  /**
   * Longest a non-streaming request waits for its turn before answering with the run as it stands
   * (status in_progress; poll or stream it). Under the openai client's 10-minute timeout, so the client
   * gets an answer rather than timing out and retrying.
   */
  SYNC_WAIT_MS: intEnv(570000, 1000),
  /** A retried POST (X-Stainless-Retry-Count ≥ 1) with the same body within this window returns the original run. */
  RETRY_DEDUP_WINDOW_MS: intEnv(660000, 0),
});
export type ResponsesEnv = z.infer<typeof ResponsesEnv>;

export function loadResponsesEnv(source: NodeJS.ProcessEnv = process.env): ResponsesEnv {
  const env = parseEnv(ResponsesEnv, source);
  requireModelUpstream(env);
  return env;
}

/**
 * service.name of each role, so traces and metrics tell the API from the workers. Read before the env
 * is parsed: telemetry starts before anything else is loaded.
 */
export function serviceNameForRole(role: string | undefined): string {
  if (role === 'api') return 'ic-responses-api';
  if (role === 'worker') return 'ic-responses-worker';
  return 'ic-responses';
}
