import { z } from 'zod';
import { databaseEnv, httpEnv, intEnv, logEnv, modelEnv, parseEnv, redisEnv } from '@ic/config';

export const ResponsesEnv = z.object({
  ...databaseEnv,
  ...httpEnv,
  ...logEnv,
  ...redisEnv,
  ...modelEnv,
  /** `api` serves /v1/responses, `worker` executes turns, `all` does both in one process. */
  RESPONSES_ROLE: z.enum(['api', 'worker', 'all']).default('all'),
  /** Turns one worker process executes at once. */
  WORKER_CONCURRENCY: intEnv(8, 1, 512),
  /** Port for /healthz and /readyz when the process runs only the worker role. */
  HEALTH_PORT: intEnv(8081, 0, 65535),
  /** How long a worker's lock on a turn lasts; a crashed worker's turn is picked up again after about this long. */
  WORKER_LOCK_DURATION_MS: intEnv(30000, 1000),
  /** Transcript items each worker keeps in memory (across conversations) to replay history without re-reading it. */
  HISTORY_CACHE_ITEMS: intEnv(100000, 0),
  /** How often unfinished runs are checked for a lost job, and how old they must be. */
  SWEEP_INTERVAL_MS: intEnv(5000, 100),
  SWEEP_MIN_AGE_MS: intEnv(10000, 0),
  /**
   * Every run's event log expires this long after its last append (set from its first write, refreshed
   * by each one), so a finished run's log stays this long for exact resumes and a log nobody finishes
   * still goes; afterwards a replay is rebuilt from Postgres. Redis memory grows with turns/s × this ×
   * ~20 KB, so keep it short.
   */
  RUN_EVENTS_TTL_SECONDS: intEnv(600, 1),
  /** SSE comment keep-alive interval while a stream is quiet. */
  STREAM_KEEPALIVE_MS: intEnv(15000, 100),
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

export const loadResponsesEnv = (source: NodeJS.ProcessEnv = process.env): ResponsesEnv => parseEnv(ResponsesEnv, source);
