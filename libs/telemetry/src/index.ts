import { metrics, trace, SpanStatusCode, type Attributes, type Span } from '@opentelemetry/api';
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

export const tracer = trace.getTracer('ingram-conversations');

/** Runs `work` inside a span, recording failures; the span name should be stable (no ids). */
export async function withSpan<T>(name: string, attributes: Attributes, work: (span: Span) => Promise<T>): Promise<T> {
  return tracer.startActiveSpan(name, { attributes }, async (span) => {
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
 * Metrics shared by the services; dashboards key on these names. Created on first use: a meter taken
 * before the SDK starts is a no-op for good (the API has no proxy meter, unlike tracers).
 */
function createTurnMetrics() {
  const meter = metrics.getMeter('ingram-conversations');
  return {
    accepted: meter.createCounter('ic_turns_accepted_total', { description: 'Turns accepted by the responses service' }),
    finished: meter.createCounter('ic_turns_finished_total', { description: 'Turns stamped, by final status' }),
    duration: meter.createHistogram('ic_turn_duration_seconds', { description: 'Worker pickup to stamp', unit: 's' }),
    queueWait: meter.createHistogram('ic_turn_queue_wait_seconds', { description: 'Acceptance to worker pickup', unit: 's' }),
    firstToken: meter.createHistogram('ic_turn_time_to_first_token_seconds', { description: 'Worker pickup to first model delta', unit: 's' }),
    staleAttempts: meter.createCounter('ic_turn_stale_attempts_total', { description: 'Turn attempts discarded because a newer attempt owned the run (lock lost: pause, stall, crash)' }),
    sweeperRequeued: meter.createCounter('ic_sweeper_requeued_total', { description: 'Unfinished runs the sweeper enqueued again because they had no live job' }),
    attemptsExhausted: meter.createCounter('ic_turn_attempts_exhausted_total', { description: 'Turns failed because they used up their attempts' }),
  };
}
let turnMetricsInstance: ReturnType<typeof createTurnMetrics> | undefined;
export const turnMetrics = (): ReturnType<typeof createTurnMetrics> => (turnMetricsInstance ??= createTurnMetrics());

export interface TelemetryHandle {
  shutdown(): Promise<void>;
}

/**
 * Starts the OpenTelemetry SDK when it is configured (OTEL_EXPORTER_OTLP_ENDPOINT for traces,
 * OTEL_PROMETHEUS_PORT for a /metrics endpoint). Call it before loading express, pg or ioredis so
 * auto-instrumentation can patch them. Without either variable it does nothing.
 */
export function startTelemetry(serviceName: string): TelemetryHandle {
  const otlpEndpoint = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const prometheusPort = process.env.OTEL_PROMETHEUS_PORT;
  if (!otlpEndpoint && !prometheusPort) return { shutdown: async () => undefined };
  /* eslint-disable @typescript-eslint/no-require-imports -- loaded lazily so libraries and tests never pay for the SDK */
  const { NodeSDK } = require('@opentelemetry/sdk-node') as typeof import('@opentelemetry/sdk-node');
  const { getNodeAutoInstrumentations } =
    require('@opentelemetry/auto-instrumentations-node') as typeof import('@opentelemetry/auto-instrumentations-node');
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http');
  const { PrometheusExporter } = require('@opentelemetry/exporter-prometheus') as typeof import('@opentelemetry/exporter-prometheus');
  const sdk = new NodeSDK({
    serviceName,
    traceExporter: otlpEndpoint ? new OTLPTraceExporter() : undefined,
    metricReader: prometheusPort ? new PrometheusExporter({ port: Number(prometheusPort), host: '0.0.0.0' }) : undefined,
    instrumentations: [getNodeAutoInstrumentations({ '@opentelemetry/instrumentation-fs': { enabled: false } })],
  });
  sdk.start();
  return { shutdown: () => sdk.shutdown() };
}

type ShutdownStep = { name: string; run: () => Promise<unknown> };

/**
 * One place that turns SIGTERM/SIGINT into an orderly stop: steps run in registration order
 * (stop intake first, then drain, then close pools), under a hard deadline; a second signal is ignored.
 */
export class ShutdownRegistry {
  private readonly steps: ShutdownStep[] = [];
  private stopping: Promise<void> | null = null;

  constructor(
    private readonly logger: Logger,
    private readonly deadlineMs = 25000,
  ) {}

  register(name: string, run: () => Promise<unknown>): void {
    this.steps.push({ name, run });
  }

  listen(): void {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => {
        void this.shutdown(signal).then(() => process.exit(128 + (signal === 'SIGTERM' ? 15 : 2)));
      });
    }
  }

  shutdown(reason: string): Promise<void> {
    if (this.stopping) return this.stopping;
    this.logger.info({ reason }, 'shutting down');
    const run = async () => {
      for (const step of this.steps) {
        const started = Date.now();
        try {
          await step.run();
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
    console.error(error);
    process.exit(1);
  });
}
