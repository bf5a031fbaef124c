import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Context } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { DEFAULT_SAMPLER, RoutineSpanFilter, samplerFromEnv, traceSlowMsFromEnv } from './sdk';
import { TailKeepSpanProcessor } from './tail-keep';

/** The SDK's own tracer with the ic_tail sampler and processor in front of an in-memory exporter. */
function tailTracer(env: NodeJS.ProcessEnv) {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    sampler: new RoutineSpanFilter(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'ic_tail', ...env })),
    spanProcessors: [new TailKeepSpanProcessor(new SimpleSpanProcessor(exporter), traceSlowMsFromEnv(env))],
  });
  const tracer = provider.getTracer('test');
  const exported = () => exporter.getFinishedSpans().map((span) => span.name);
  const child = (name: string, parent: Context) => tracer.startSpan(name, { kind: SpanKind.CLIENT }, parent);
  return { tracer, exported, child, exporter };
}

const remoteParent = (sampled: boolean) =>
  trace.setSpanContext(ROOT_CONTEXT, { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE, isRemote: true });

describe('ic_tail: every span recorded, a ratio of traces exported, plus every failing or slow one', () => {
  it('is the default sampler and reads TRACE_SLOW_MS', () => {
    expect(DEFAULT_SAMPLER).toBe('ic_tail');
    expect(samplerFromEnv({}).toString()).toBe('RecordAllSampler{TraceIdRatioBased{0.1}}');
    expect(samplerFromEnv({ OTEL_TRACES_SAMPLER_ARG: '0.5' }).toString()).toBe('RecordAllSampler{TraceIdRatioBased{0.5}}');
    expect(traceSlowMsFromEnv({})).toBe(1000);
    expect(traceSlowMsFromEnv({ TRACE_SLOW_MS: '250' })).toBe(250);
    expect(() => traceSlowMsFromEnv({ TRACE_SLOW_MS: 'soon' })).toThrow(/TRACE_SLOW_MS=soon/);
  });

  it('drops a fast trace without errors, but records it', () => {
    const { tracer, exported, child } = tailTracer({ OTEL_TRACES_SAMPLER_ARG: '0' });
    const root = tracer.startSpan('GET /v1/conversations/:conversation_id', { kind: SpanKind.SERVER });
    expect(root.isRecording()).toBe(true);
    const query = child('pg.query:SELECT', trace.setSpan(ROOT_CONTEXT, root));
    expect(query.isRecording()).toBe(true);
    query.end();
    root.end();
    expect(exported()).toEqual([]);
  });

  it('exports the whole local trace when any span in it failed, and spans that end after the decision', () => {
    const { tracer, exported, child, exporter } = tailTracer({ OTEL_TRACES_SAMPLER_ARG: '0' });
    const root = tracer.startSpan('POST /v1/conversations', { kind: SpanKind.SERVER });
    const inRoot = trace.setSpan(ROOT_CONTEXT, root);
    const fine = child('pg.query:SELECT', inRoot);
    fine.end();
    const failing = child('pg.query:INSERT', inRoot);
    failing.setStatus({ code: SpanStatusCode.ERROR });
    failing.end();
    const late = child('after the reply', inRoot);
    expect(exported()).toEqual([]);
    root.end();
    expect(exported()).toEqual(['pg.query:SELECT', 'pg.query:INSERT', 'POST /v1/conversations']);
    late.end();
    expect(exported()).toContain('after the reply');
    // Exported as sampled spans, with their own ids and parentage.
    const spans = exporter.getFinishedSpans();
    expect(spans.every((span) => span.spanContext().traceFlags === TraceFlags.SAMPLED)).toBe(true);
    expect(spans.find((span) => span.name === 'pg.query:INSERT')?.parentSpanContext?.spanId).toBe(root.spanContext().spanId);
    expect(spans.find((span) => span.name === 'POST /v1/conversations')?.spanContext().spanId).toBe(root.spanContext().spanId);
  });

  it('exports a trace whose local root took TRACE_SLOW_MS or longer', () => {
    const { tracer, exported } = tailTracer({ OTEL_TRACES_SAMPLER_ARG: '0', TRACE_SLOW_MS: '500' });
    const quick = tracer.startSpan('quick', { kind: SpanKind.SERVER, startTime: Date.now() - 100 });
    quick.end();
    const slow = tracer.startSpan('slow', { kind: SpanKind.SERVER, startTime: Date.now() - 600 });
    slow.end();
    expect(exported()).toEqual(['slow']);
  });

  it('exports by trace id at the ratio, and whatever a caller sampled; a caller that did not sample still gets failures kept', () => {
    const all = tailTracer({ OTEL_TRACES_SAMPLER_ARG: '1' });
    all.tracer.startSpan('any', { kind: SpanKind.SERVER }).end();
    expect(all.exported()).toEqual(['any']);

    const { tracer, exported } = tailTracer({ OTEL_TRACES_SAMPLER_ARG: '0' });
    tracer.startSpan('caller sampled', { kind: SpanKind.CONSUMER }, remoteParent(true)).end();
    tracer.startSpan('caller did not', { kind: SpanKind.CONSUMER }, remoteParent(false)).end();
    const failed = tracer.startSpan('caller did not, failed', { kind: SpanKind.CONSUMER }, remoteParent(false));
    failed.setStatus({ code: SpanStatusCode.ERROR });
    failed.end();
    expect(exported()).toEqual(['caller sampled', 'caller did not, failed']);
  });

  it('still records no root span of routine background work', () => {
    const { tracer } = tailTracer({ OTEL_TRACES_SAMPLER_ARG: '1' });
    expect(tracer.startSpan('sweep', { kind: SpanKind.INTERNAL }).isRecording()).toBe(false);
  });
});
