/* eslint-disable @typescript-eslint/no-require-imports -- the SDK is loaded lazily so libraries and tests never pay for it */
import { type Attributes, type Context, INVALID_SPAN_CONTEXT, type Link, type Span, SpanKind, trace, type Tracer } from '@opentelemetry/api';
import type { Sampler, SamplingResult, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { enableHttpServerTelemetry } from './http-server';
import { enableHttpClientTelemetry } from './http-client';
import { enableDbClientTelemetry } from './db-client';
import { enableRedisClientTelemetry } from './redis-client';
import { RecordAllSampler, TailKeepSpanProcessor } from './tail-keep';
import { enableLazySpans, PooledRandomIds, TRACE_STARTING_KINDS } from './lazy-span';

export interface TelemetryHandle {
  shutdown(): Promise<void>;
}

/** Bucket boundaries (seconds) for turn latencies: queue waits, first tokens and whole LLM turns. */
export const TURN_LATENCY_BUCKETS_SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120];
/** Bucket boundaries (seconds) for one Postgres query or Redis command. */
export const STORE_LATENCY_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** The sampler used when OTEL_TRACES_SAMPLER is unset (see RecordAllSampler), and its default ratio. */
export const DEFAULT_SAMPLER = 'ic_tail';
const DEFAULT_TAIL_RATIO = 0.1;

/**
 * The sampler the standard variables ask for (OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, the spec's
 * values; a missing or out-of-range argument means ratio 1), plus `ic_tail`, the default: every span
 * recorded, OTEL_TRACES_SAMPLER_ARG (default 0.1) of traces exported by trace id, and every trace with
 * an error or slower than TRACE_SLOW_MS exported whole (TailKeepSpanProcessor).
 */
export function samplerFromEnv(env: NodeJS.ProcessEnv = process.env): Sampler {
  const { AlwaysOffSampler, AlwaysOnSampler, ParentBasedSampler, TraceIdRatioBasedSampler } =
    require('@opentelemetry/sdk-trace-base') as typeof import('@opentelemetry/sdk-trace-base');
  const name = samplerName(env);
  const argument = Number(env.OTEL_TRACES_SAMPLER_ARG);
  const given = env.OTEL_TRACES_SAMPLER_ARG !== undefined && env.OTEL_TRACES_SAMPLER_ARG.trim() !== '' && argument >= 0 && argument <= 1;
  const ratio = given ? argument : 1;
  switch (name) {
    case 'ic_tail':
      return new RecordAllSampler(new TraceIdRatioBasedSampler(given ? argument : DEFAULT_TAIL_RATIO));
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio);
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    default:
      throw new Error(
        `OTEL_TRACES_SAMPLER=${name} is not supported; use ic_tail, always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio.`,
      );
  }
}

const samplerName = (env: NodeJS.ProcessEnv) => (env.OTEL_TRACES_SAMPLER ?? '').trim().toLowerCase() || DEFAULT_SAMPLER;

/** TRACE_SLOW_MS: with `ic_tail`, a trace whose local root takes this long or longer is exported whole (default 1000). */
export function traceSlowMsFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.TRACE_SLOW_MS?.trim();
  if (!raw) return 1000;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) throw new Error(`TRACE_SLOW_MS=${raw} is not a number of milliseconds ≥ 0.`);
  return value;
}

/** Drops root spans of routine background work (see TRACE_STARTING_KINDS), then defers to the configured sampler. */
export class RoutineSpanFilter implements Sampler {
  constructor(private readonly inner: Sampler) {}

  shouldSample(context: Context, traceId: string, spanName: string, spanKind: SpanKind, attributes: Attributes, links: Link[]): SamplingResult {
    if (!trace.getSpanContext(context) && !TRACE_STARTING_KINDS.has(spanKind)) return { decision: 0 /* SamplingDecision.NOT_RECORD */ };
    return this.inner.shouldSample(context, traceId, spanName, spanKind, attributes, links);
  }

  toString(): string {
    return `RoutineSpanFilter{${this.inner.toString()}}`;
  }
}

/**
 * Libraries whose own spans are not recorded. slonik wraps every query in five or six spans of its own
 * (connection, pool acquire, executeQuery, one per interceptor hook) around the statement span (db-client.ts), which has the
 * statement, its timing and its errors: six times the spans of a query for no more insight.
 */
const SILENCED_TRACERS = new Set(['slonik.interceptors', 'pg-slonik-connection-pool']);

/**
 * A tracer whose spans are neither recorded nor made active: work inside them stays in the caller's
 * span, so the statement span of a slonik query is a child of the request or job that ran it. Every
 * span is the same invalid one: slonik only sets attributes on its spans and ends them, and a query
 * opens about six, so looking up the caller's context for each (as the API's no-op tracer does) cost
 * a fast GET several microseconds.
 */
class PassThroughTracer implements Tracer {
  private readonly span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

  startSpan(): Span {
    return this.span;
  }

  startActiveSpan<F extends (span: Span) => unknown>(_name: string, a: unknown, b?: unknown, c?: unknown): ReturnType<F> {
    const work = (typeof c === 'function' ? c : typeof b === 'function' ? b : a) as F;
    return work(this.span) as ReturnType<F>;
  }
}

/** What OTEL_NODE_ENABLED_INSTRUMENTATIONS / OTEL_NODE_DISABLED_INSTRUMENTATIONS name (as in auto-instrumentations-node). */
export const INSTRUMENTATION_NAMES = ['http', 'pg', 'ioredis', 'undici', 'runtime-node'] as const;
export type InstrumentationName = (typeof INSTRUMENTATION_NAMES)[number];

/**
 * Whether an instrumentation is on: all are by default; OTEL_NODE_ENABLED_INSTRUMENTATIONS (comma-separated
 * names) keeps only those, then OTEL_NODE_DISABLED_INSTRUMENTATIONS removes some. `http` is the server
 * span and request-duration metric of http-server.ts.
 */
export function instrumentationEnabled(name: InstrumentationName, env: NodeJS.ProcessEnv = process.env): boolean {
  const list = (value: string | undefined) => (value ?? '').split(',').map((entry) => entry.trim()).filter(Boolean);
  const only = list(env.OTEL_NODE_ENABLED_INSTRUMENTATIONS);
  if (only.length > 0 && !only.includes(name)) return false;
  return !list(env.OTEL_NODE_DISABLED_INSTRUMENTATIONS).includes(name);
}

let started = false;

/**
 * Whether startTelemetry started the SDK (traces, metrics or both) in this process. Libraries whose
 * telemetry hooks cost something even when nothing records (BullMQ's) are given none otherwise.
 */
export function telemetryStarted(): boolean {
  return started;
}

/**
 * Starts tracing and metrics when configured: OTEL_EXPORTER_OTLP_ENDPOINT (or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) sends traces over OTLP/HTTP, OTEL_PROMETHEUS_PORT serves
 * /metrics. Without either it does nothing. Call it before loading undici so its instrumentation
 * can patch it.
 *
 * Built from the SDK's parts rather than @opentelemetry/sdk-node, which pulls in every exporter
 * (gRPC, protobuf, Zipkin, logs) — most of the image's node_modules. Only the instrumentations this
 * code uses are installed: undici (any fetch) and runtime-node (event loop and heap metrics);
 * incoming requests get the lean server span of http-server.ts (probes and scrapes skipped), the
 * model call the client span of http-client.ts, and each Postgres statement and Redis command the
 * client span of db-client.ts and redis-client.ts (only inside a traced operation). The name `ioredis`
 * in OTEL_NODE_*_INSTRUMENTATIONS turns the Redis spans off, as it did the instrumentation they replace.
 */
export function startTelemetry(serviceName: string, env: NodeJS.ProcessEnv = process.env): TelemetryHandle {
  const tracesEndpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const prometheusPort = env.OTEL_PROMETHEUS_PORT;
  if (!tracesEndpoint && !prometheusPort) return { shutdown: async () => undefined };
  started = true;

  const { AlwaysOffSampler, NodeTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-node') as typeof import('@opentelemetry/sdk-trace-node');
  const { MeterProvider } = require('@opentelemetry/sdk-metrics') as typeof import('@opentelemetry/sdk-metrics');
  const { defaultResource, detectResources, envDetector, hostDetector, processDetector, resourceFromAttributes } =
    require('@opentelemetry/resources') as typeof import('@opentelemetry/resources');
  const { registerInstrumentations } = require('@opentelemetry/instrumentation') as typeof import('@opentelemetry/instrumentation');
  const { UndiciInstrumentation } = require('@opentelemetry/instrumentation-undici') as typeof import('@opentelemetry/instrumentation-undici');
  const { RuntimeNodeInstrumentation } = require('@opentelemetry/instrumentation-runtime-node') as typeof import('@opentelemetry/instrumentation-runtime-node');

  // OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (env detector) win over the role's default name.
  const resource = defaultResource()
    .merge(detectResources({ detectors: [hostDetector, processDetector] }))
    .merge(resourceFromAttributes({ 'service.name': serviceName, 'service.version': env.SERVICE_VERSION ?? '0.1.0' }))
    .merge(detectResources({ detectors: [envDetector] }));

  // Registered even without a trace endpoint, so the API's context and propagator are the SDK's; spans
  // are then never sampled, so they cost next to nothing.
  class LibraryFilteringTracerProvider extends NodeTracerProvider {
    private readonly passThrough = new PassThroughTracer();
    override getTracer(name: string, version?: string, options?: { schemaUrl?: string }): Tracer {
      return SILENCED_TRACERS.has(name) ? this.passThrough : super.getTracer(name, version, options);
    }
  }
  let tracerProvider: InstanceType<typeof NodeTracerProvider>;
  if (tracesEndpoint) {
    const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http');
    const exporting = new BatchSpanProcessor(new OTLPTraceExporter());
    const sampler = samplerFromEnv(env);
    const ids = new PooledRandomIds();
    let processor: SpanProcessor = exporting;
    if (sampler instanceof RecordAllSampler) {
      const tail = new TailKeepSpanProcessor(exporting, traceSlowMsFromEnv(env));
      processor = tail;
      // ic_tail: our own spans are recorded as LazySpans (lazy-span.ts), sampled or not.
      enableLazySpans({ ratio: sampler.ratioSampler, ids, tail, resource });
    }
    tracerProvider = new LibraryFilteringTracerProvider({ resource, sampler: new RoutineSpanFilter(sampler), idGenerator: ids, spanProcessors: [processor] });
  } else {
    tracerProvider = new NodeTracerProvider({ resource, sampler: new AlwaysOffSampler() });
  }
  tracerProvider.register();

  let meterProvider: InstanceType<typeof MeterProvider> | undefined;
  if (prometheusPort) {
    const { PrometheusExporter } = require('@opentelemetry/exporter-prometheus') as typeof import('@opentelemetry/exporter-prometheus');
    meterProvider = new MeterProvider({
      resource,
      readers: [new PrometheusExporter({ port: Number(prometheusPort), host: '0.0.0.0' })],
      views: [
        // Prometheus names carry their unit; the OTel exporter (0.22x) does not add it.
        { instrumentName: 'http.server.request.duration', name: 'http.server.request.duration_seconds' },
        { instrumentName: 'http.client.request.duration', name: 'http.client.request.duration_seconds' },
        { instrumentName: 'db.client.operation.duration', name: 'db.client.operation.duration_seconds' },
      ],
    });
    const { metrics } = require('@opentelemetry/api') as typeof import('@opentelemetry/api');
    metrics.setGlobalMeterProvider(meterProvider);
  }

  const enabled = (name: InstrumentationName) => instrumentationEnabled(name, env);
  // Our spans' duration histograms only when a meter provider exports them (duration-histogram.ts).
  const withMetrics = meterProvider !== undefined;
  // Incoming requests: libs/telemetry's own lean server span (http-server.ts), not instrumentation-http
  // and -express (see traceHttpServer for why).
  enableHttpServerTelemetry(enabled('http'), withMetrics);
  // Outgoing calls (the model upstream, over node:http): libs/telemetry's own client span (http-client.ts).
  enableHttpClientTelemetry(enabled('http'), withMetrics);
  // Postgres statements: libs/telemetry's own client span (db-client.ts, from libs/db's pg hook), only
  // inside a request or a job; no span per pool checkout (a wait for a connection shows as the gap before it).
  enableDbClientTelemetry(enabled('pg'), withMetrics);
  // Redis commands: libs/telemetry's own client span (redis-client.ts, from libs/queue's command hook),
  // only inside a request or a job, never from timers on their own (BullMQ's pollers).
  enableRedisClientTelemetry(enabled('ioredis'));
  registerInstrumentations({
    tracerProvider,
    meterProvider,
    instrumentations: [
      enabled('undici') && new UndiciInstrumentation({ requireParentforSpans: true }),
      enabled('runtime-node') && new RuntimeNodeInstrumentation(),
    ].filter((instrumentation) => instrumentation !== false),
  });

  return {
    shutdown: async () => {
      enableLazySpans(undefined);
      await Promise.allSettled([tracerProvider.shutdown(), meterProvider?.shutdown()]);
    },
  };
}
