import { z } from 'zod';

/** Thrown when the environment does not satisfy a service's schema; the message lists every problem. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Parses `source` (default `process.env`) against a service's env schema exactly once at boot.
 * Services export the result as their typed `env` and never read `process.env` elsewhere.
 */
export function parseEnv<T extends z.ZodTypeAny>(schema: T, source: NodeJS.ProcessEnv = process.env): z.infer<T> {
  const result = schema.safeParse(source);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => `  ${issue.path.join('.') || '(env)'}: ${issue.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  return result.data;
}

/** Accepts the usual spellings of a boolean env var ("1", "true", "yes", "on" and their negatives). */
export const boolEnv = (defaultValue: boolean) =>
  z
    .enum(['1', '0', 'true', 'false', 'yes', 'no', 'on', 'off', ''])
    .optional()
    .transform((value) => (value === undefined || value === '' ? defaultValue : ['1', 'true', 'yes', 'on'].includes(value)));

/** An integer env var with bounds and a default. */
export const intEnv = (defaultValue: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().int().min(min).max(max).default(defaultValue);

/** A comma-separated list env var. */
export const listEnv = (defaultValue: string[] = []) =>
  z
    .string()
    .optional()
    .transform((value) =>
      value === undefined ? defaultValue : value.split(',').map((part) => part.trim()).filter((part) => part.length > 0),
    );

const postgresUrl = z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL');
const redisUrl = z.string().regex(/^rediss?:\/\//, 'must be a redis:// URL');

/** Env shared by every process that talks to Postgres. */
export const databaseEnv = {
  DATABASE_URL: postgresUrl,
  /** Maximum connections this process opens to Postgres. */
  DATABASE_POOL_SIZE: intEnv(10, 1, 200),
  /**
   * Prepare the hot statements once per connection (libs/db prepared.ts). Turn off behind a pooler in
   * transaction mode that does not track protocol-level prepared statements (PgBouncer before 1.21, or
   * without max_prepared_statements).
   */
  DATABASE_PREPARED_STATEMENTS: boolEnv(true),
};

/** Env shared by every process that may use Redis (absent means the in-process queue). */
export const redisEnv = {
  REDIS_URL: redisUrl.optional(),
  /**
   * Redis Cluster: comma-separated seed nodes (`host:port,host:port`). When set, REDIS_URL still
   * supplies credentials and TLS (rediss://) but not the address.
   */
  REDIS_CLUSTER_NODES: listEnv([]).pipe(z.array(z.string().regex(/^[^\s:]+:\d{1,5}$/, 'must be host:port'))),
  /** Prefix for every BullMQ queue and Redis key this deployment owns; lets several stacks share one Redis. */
  REDIS_PREFIX: z.string().regex(/^[A-Za-z0-9_-]+$/).default('ic'),
};

/** Env for every long-running process: how long it may take to stop. */
export const shutdownEnv = {
  /**
   * The time between SIGTERM and SIGKILL (the pod's terminationGracePeriodSeconds, which the chart
   * passes in). Shutdown steps, including a worker's drain of running turns, must finish within it.
   */
  SHUTDOWN_GRACE_PERIOD_MS: intEnv(30000, 1000, 3600000),
};

export const logEnv = {
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  SERVICE_VERSION: z.string().default('0.1.0'),
};

/** Env for the HTTP services (api-gateway, responses). */
export const httpEnv = {
  PORT: intEnv(8080, 0, 65535),
  HOST: z.string().default('0.0.0.0'),
  /** Origins allowed to call the API from a browser; "*" allows any (smith tokens are browser-safe). */
  CORS_ORIGINS: listEnv(['*']),
  /** Largest accepted JSON body. */
  BODY_LIMIT: z.string().default('1mb'),
  /** Secret used to sign pagination cursors, so a tampered cursor is rejected rather than trusted. */
  CURSOR_SECRET: z.string().min(16).default('ic-dev-cursor-secret-change-me'),
  /** How long a verified token stays cached; bounds how quickly a revocation takes effect. */
  TOKEN_CACHE_TTL_MS: intEnv(5000, 0, 60000),
  /** Requests per minute one token may make (0: unlimited). Smith tokens live in browsers, so this caps a leaked one. */
  RATE_LIMIT_REQUESTS_PER_MINUTE: intEnv(6000, 0),
  /** Turns (POST /v1/responses) per minute one smith may start (0: unlimited). */
  RATE_LIMIT_TURNS_PER_MINUTE: intEnv(600, 0),
  /** Idle keep-alive connections stay open this long: above the idle timeout of the proxy in front (ALB, nginx: 60 s), so it never reuses a connection we are closing. */
  HTTP_KEEP_ALIVE_TIMEOUT_MS: intEnv(65000, 1000, 3600000),
  /** Time to receive a request's headers; raised to at least HTTP_KEEP_ALIVE_TIMEOUT_MS + 1 s. */
  HTTP_HEADERS_TIMEOUT_MS: intEnv(66000, 1000, 3600000),
  /** Time to receive a whole request body (0: none); it ends when the request is read, so SSE replies are never cut. */
  HTTP_REQUEST_TIMEOUT_MS: intEnv(300000, 0, 3600000),
};

/** The HTTP server timeouts from a service's parsed env. */
export const httpTimeouts = (env: { HTTP_KEEP_ALIVE_TIMEOUT_MS: number; HTTP_HEADERS_TIMEOUT_MS: number; HTTP_REQUEST_TIMEOUT_MS: number }) => ({
  keepAliveTimeoutMs: env.HTTP_KEEP_ALIVE_TIMEOUT_MS,
  headersTimeoutMs: env.HTTP_HEADERS_TIMEOUT_MS,
  requestTimeoutMs: env.HTTP_REQUEST_TIMEOUT_MS,
});

/** Env for the processes that can serve the console (the api-gateway and the embedded stack). */
export const consoleEnv = {
  /** Serve the browser console at /console (static files; it calls the public API like any app). */
  CONSOLE_ENABLED: boolEnv(true),
};

/** Env for the model adapter (responses workers and the titler's optional model titles). */
export const modelEnv = {
  /**
   * `openai-compatible`: call MODEL_BASE_URL. `development`: the built-in deterministic model, which
   * answers with canned text (for local stacks and tests only; never chosen implicitly).
   */
  MODEL_ADAPTER: z.enum(['openai-compatible', 'development']).default('openai-compatible'),
  /** Base URL of an OpenAI-compatible Chat Completions upstream (required by the openai-compatible adapter). */
  MODEL_BASE_URL: z.preprocess((value) => (value === '' ? undefined : value), z.string().url().optional()),
  MODEL_API_KEY: z.string().default('not-needed'),
  /** JSON object mapping public model names to upstream model names, e.g. {"fast":"llama3.1:8b"}. */
  MODEL_MAP: z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (!value) return {} as Record<string, string>;
      try {
        return z.record(z.string()).parse(JSON.parse(value));
      } catch {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be a JSON object of strings' });
        return z.NEVER;
      }
    }),
  /** Give up on an upstream call after this long without progress. */
  MODEL_TIMEOUT_MS: intEnv(120000, 100),
  /**
   * How long one turn attempt may spend waiting out the upstream's rate limit (429/503 naming a wait)
   * before such an answer counts as an ordinary failure (three more retries, then rate_limit_exceeded).
   * 0: every throttled answer is an ordinary failure.
   */
  MODEL_BACKOFF_BUDGET_MS: intEnv(120000, 0),
  /**
   * Pace model calls to the request and token limits the upstream reports on every answer (OpenAI's
   * x-ratelimit-*-requests and -tokens), instead of learning of them from 429s. Off for an upstream
   * whose headers do not describe the limits the calls meet (e.g. a balancer reporting one of several
   * deployments).
   */
  MODEL_RATE_LIMIT_PACING: boolEnv(true),
  /** Context window (tokens, estimated) that `truncation: "auto"` keeps a turn's history within. */
  MODEL_CONTEXT_TOKENS: intEnv(128000, 1000),
  /** Milliseconds the development model waits between streamed tokens. */
  DEV_MODEL_TOKEN_DELAY_MS: intEnv(15, 0, 5000),
};

/**
 * Refuses an openai-compatible adapter without an upstream. Called by the processes that call the
 * model, so a deployment that forgot MODEL_BASE_URL fails at boot instead of answering users with the
 * development model's canned text.
 */
export function requireModelUpstream(env: { MODEL_ADAPTER: 'openai-compatible' | 'development'; MODEL_BASE_URL?: string | undefined }): void {
  if (env.MODEL_ADAPTER === 'openai-compatible' && !env.MODEL_BASE_URL) {
    throw new ConfigError(
      'Invalid configuration:\n  MODEL_BASE_URL: required with MODEL_ADAPTER=openai-compatible (the default). Set it to an OpenAI-compatible upstream, e.g. http://127.0.0.1:11434/v1, or set MODEL_ADAPTER=development for the built-in development model.',
    );
  }
}
