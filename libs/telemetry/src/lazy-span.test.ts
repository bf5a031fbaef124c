import { isValidSpanId, isValidTraceId, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Context } from '@opentelemetry/api';
import { suppressTracing } from '@opentelemetry/core';
import { defaultResource } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { leanSpanStarter } from './index';
import { enableLazySpans, PooledRandomIds, startLeanSpan } from './lazy-span';
import { RoutineSpanFilter, samplerFromEnv } from './sdk';
import { RecordAllSampler, TailKeepSpanProcessor } from './tail-keep';

/** The ic_tail pipeline as startTelemetry builds it, with an in-memory exporter. */
function icTail(ratio: number, slowMs = 1000) {
  const exporter = new InMemorySpanExporter();
  const sampler = samplerFromEnv({ OTEL_TRACES_SAMPLER_ARG: String(ratio) });
  if (!(sampler instanceof RecordAllSampler)) throw new Error('ic_tail expected');
  const tail = new TailKeepSpanProcessor(new SimpleSpanProcessor(exporter), slowMs);
  const ids = new PooledRandomIds();
  const resource = defaultResource();
  const provider = new BasicTracerProvider({ resource, sampler: new RoutineSpanFilter(sampler), idGenerator: ids, spanProcessors: [tail] });
  enableLazySpans({ ratio: sampler.ratioSampler, ids, tail, resource });
  const tracer = provider.getTracer('lean');
  const lean = (name: string, kind: SpanKind, parent: Context = ROOT_CONTEXT) => startLeanSpan(tracer, 'lean', name, kind, parent, { 'db.system.name': 'postgresql' });
  // A library's span (ioredis, BullMQ): the SDK's own.
  const library = (name: string, parent: Context) => provider.getTracer('library').startSpan(name, { kind: SpanKind.CLIENT }, parent);
  return { provider, exporter, lean, library, exported: () => exporter.getFinishedSpans() };
}

afterEach(() => enableLazySpans(undefined));

const inSpan = (span: ReturnType<ReturnType<typeof icTail>['lean']>) => trace.setSpan(ROOT_CONTEXT, span);

describe('PooledRandomIds', () => {
  it('gives valid, distinct W3C ids across refills of its pool', () => {
    const ids = new PooledRandomIds();
    const spanIds = Array.from({ length: 2000 }, () => ids.generateSpanId()); // 16 KB: four pools
    const traceIds = Array.from({ length: 2000 }, () => ids.generateTraceId());
    expect(new Set([...spanIds, ...traceIds]).size).toBe(4000);
    for (const id of spanIds) expect(id).toMatch(/^[0-9a-f]{16}$/);
    for (const id of traceIds) expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(spanIds.every((id) => isValidSpanId(id)) && traceIds.every((id) => isValidTraceId(id))).toBe(true);
  });
});

describe('ic_tail records our own spans of unsampled traces lazily', () => {
  it('drops a fast trace without errors, with its library spans, having recorded it all', () => {
    const { lean, library, exported } = icTail(0);
    const root = lean('GET', SpanKind.SERVER);
    const statement = lean('conversations.get', SpanKind.CLIENT, inSpan(root));
    const command = library('evalsha', inSpan(root));
    expect([root, statement, command].map((span) => span.isRecording())).toEqual([true, true, true]);
    expect(root.spanContext().traceFlags).toBe(TraceFlags.NONE);
    statement.end();
    command.end();
    root.end();
    expect(exported()).toEqual([]);
    expect(root.isRecording()).toBe(false);
  });

  it('exports a failing trace whole: lazy and library spans, with their parents, times and attributes', () => {
    const { lean, library, exported } = icTail(0);
    const before = Date.now();
    const root = lean('POST', SpanKind.SERVER);
    const statement = lean('runs.accept', SpanKind.CLIENT, inSpan(root));
    const command = library('evalsha', inSpan(root));
    command.end();
    statement.setAttribute('error.type', '23505');
    statement.setStatus({ code: SpanStatusCode.ERROR, message: 'duplicate key' });
    statement.recordException(new Error('duplicate key'));
    statement.end();
    root.updateName('POST /v1/responses');
    root.end();
    const spans = exported();
    expect(spans.map((span) => span.name)).toEqual(['evalsha', 'runs.accept', 'POST /v1/responses']);
    const [exportedCommand, exportedStatement, exportedRoot] = spans;
    const rootIds = root.spanContext();
    for (const span of spans) {
      expect(span.spanContext().traceId).toBe(rootIds.traceId);
      expect(span.spanContext().traceFlags & TraceFlags.SAMPLED).toBe(TraceFlags.SAMPLED);
    }
    expect(exportedStatement!.parentSpanContext?.spanId).toBe(rootIds.spanId);
    expect(exportedCommand!.parentSpanContext?.spanId).toBe(rootIds.spanId);
    expect(exportedRoot!.parentSpanContext).toBeUndefined();
    expect(exportedStatement!.status).toEqual({ code: SpanStatusCode.ERROR, message: 'duplicate key' });
    expect(exportedStatement!.attributes).toEqual({ 'db.system.name': 'postgresql', 'error.type': '23505' });
    expect(exportedStatement!.events[0]?.attributes?.['exception.message']).toBe('duplicate key');
    expect(exportedStatement!.instrumentationScope.name).toBe('lean');
    const startMs = exportedRoot!.startTime[0] * 1e3 + exportedRoot!.startTime[1] / 1e6;
    const endMs = exportedRoot!.endTime[0] * 1e3 + exportedRoot!.endTime[1] / 1e6;
    expect(startMs).toBeGreaterThanOrEqual(before - 5);
    expect(endMs).toBeGreaterThanOrEqual(startMs);
    expect(endMs).toBeLessThanOrEqual(Date.now() + 5);
    expect(exportedRoot!.duration[0] * 1e3 + exportedRoot!.duration[1] / 1e6).toBeCloseTo(endMs - startMs, 0);
  });

  it('works out deferred attributes only for a span that is exported, under those set later', () => {
    const { provider, exported } = icTail(0);
    const tracer = provider.getTracer('lean');
    const described: string[] = [];
    const deferred = (name: string, extra: Record<string, string> = {}) => () => {
      described.push(name);
      return { 'db.query.summary': name, 'server.address': undefined, 'error.type': 'overwritten', ...extra };
    };
    const dropped = startLeanSpan(tracer, 'lean', 'GET', SpanKind.SERVER, ROOT_CONTEXT, deferred('dropped'));
    startLeanSpan(tracer, 'lean', 'conversations.get', SpanKind.CLIENT, inSpan(dropped), deferred('dropped child')).end();
    dropped.end();
    expect(exported()).toEqual([]);
    expect(described).toEqual([]);

    const kept = startLeanSpan(tracer, 'lean', 'POST', SpanKind.SERVER, ROOT_CONTEXT, deferred('kept'));
    const failing = startLeanSpan(tracer, 'lean', 'runs.accept', SpanKind.CLIENT, inSpan(kept), deferred('kept child'));
    failing.setAttribute('error.type', '23505');
    failing.setStatus({ code: SpanStatusCode.ERROR });
    failing.end();
    expect(described).toEqual([]);
    kept.end();
    // Read at the keep decision, while what they describe is still there; not again on export.
    expect(described).toEqual(['kept child', 'kept']);
    const [statement, root] = exported();
    expect(statement!.attributes).toEqual({ 'db.query.summary': 'kept child', 'error.type': '23505' });
    expect(root!.attributes).toEqual({ 'db.query.summary': 'kept', 'error.type': 'overwritten' });
    expect(described).toEqual(['kept child', 'kept']);

    const sampled = icTail(1);
    const read: string[] = [];
    const span = startLeanSpan(sampled.provider.getTracer('lean'), 'lean', 'GET', SpanKind.SERVER, ROOT_CONTEXT, () => (read.push('sampled'), { 'url.path': '/v1/conversations' }));
    expect(read).toEqual([]);
    span.end();
    expect(read).toEqual(['sampled']);
    expect(sampled.exported()[0]!.attributes).toEqual({ 'url.path': '/v1/conversations' });
  });

  it('exports a slow trace, and a span that fails after its trace was dropped', () => {
    const slow = icTail(0, 0);
    const root = slow.lean('GET', SpanKind.SERVER);
    root.end();
    expect(slow.exported().map((span) => span.name)).toEqual(['GET']);

    const late = icTail(0);
    const dropped = late.lean('POST', SpanKind.SERVER);
    const model = late.lean('POST', SpanKind.CLIENT, inSpan(dropped));
    dropped.end();
    model.setStatus({ code: SpanStatusCode.ERROR });
    model.end();
    expect(late.exported().map((span) => [span.name, span.kind])).toEqual([['POST', SpanKind.CLIENT]]);
  });

  it('keeps the ratio: a root is sampled by the trace id the ratio saw', () => {
    const { lean, exported } = icTail(0.5);
    for (let k = 0; k < 400; k++) lean('GET', SpanKind.SERVER).end();
    // Deciding twice (ours, then the SDK's on a fresh id) would keep about a quarter.
    expect(exported().length).toBeGreaterThan(150);
    expect(exported().length).toBeLessThan(250);
  });

  it('exports a sampled trace as its spans end, lazy ones and library ones, under their parents', () => {
    const { lean, library, exported } = icTail(1);
    const root = lean('GET', SpanKind.SERVER);
    const statement = lean('conversations.get', SpanKind.CLIENT, inSpan(root));
    const command = library('evalsha', inSpan(statement));
    // Our spans stay plain objects in a sampled trace too; the library's is the SDK's.
    expect(statement.constructor).toBe(root.constructor);
    expect(command.constructor).not.toBe(root.constructor);
    command.end();
    statement.setAttribute('db.query.summary', 'conversations.get');
    statement.end();
    // Exported at its end, not held until the root ends.
    expect(exported().map((span) => span.name)).toEqual(['evalsha', 'conversations.get']);
    root.end();
    const spans = exported();
    expect(spans.map((span) => span.name)).toEqual(['evalsha', 'conversations.get', 'GET']);
    const rootIds = root.spanContext();
    for (const span of spans) {
      expect(span.spanContext().traceId).toBe(rootIds.traceId);
      expect(span.spanContext().traceFlags & TraceFlags.SAMPLED).toBe(TraceFlags.SAMPLED);
    }
    expect(spans[0]!.parentSpanContext?.spanId).toBe(statement.spanContext().spanId);
    expect(spans[1]!.parentSpanContext?.spanId).toBe(rootIds.spanId);
    expect(spans[1]!.attributes).toEqual({ 'db.system.name': 'postgresql', 'db.query.summary': 'conversations.get' });
    expect(spans[2]!.parentSpanContext).toBeUndefined();

    // A caller's sampled trace is continued the same way.
    const remote = trace.setSpanContext(ROOT_CONTEXT, { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.SAMPLED, isRemote: true });
    const continued = icTail(0);
    continued.lean('POST', SpanKind.SERVER, remote).end();
    expect(continued.exported().map((span) => [span.spanContext().traceId, span.parentSpanContext?.spanId, span.spanContext().traceFlags])).toEqual([
      ['0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331', TraceFlags.SAMPLED],
    ]);
  });

  it("continues a caller's unsampled trace as a local root, and leaves suppressed and routine roots to the SDK", () => {
    const { lean, exported } = icTail(0);
    const remote = trace.setSpanContext(ROOT_CONTEXT, { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.NONE, isRemote: true });
    const root = lean('GET', SpanKind.SERVER, remote);
    root.setStatus({ code: SpanStatusCode.ERROR });
    root.end();
    expect(exported().map((span) => [span.spanContext().traceId, span.parentSpanContext?.spanId])).toEqual([['0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331']]);

    expect(lean('GET', SpanKind.SERVER, suppressTracing(ROOT_CONTEXT)).isRecording()).toBe(false);
    expect(lean('SELECT', SpanKind.CLIENT).isRecording()).toBe(false); // a readiness query from a timer
  });
});

describe('leanSpanStarter: a library adapted to start its spans as ours (BullMQ)', () => {
  afterEach(() => trace.disable());

  it("records a queue's spans of an unsampled trace lazily: dropped when fast, exported under their parents when kept", () => {
    const { provider, lean, library, exported } = icTail(0);
    trace.setGlobalTracerProvider(provider);
    const start = leanSpanStarter('queue');
    // The producer: a request, and the job's PRODUCER span under it. Fast and fine: nothing is exported.
    const request = lean('POST', SpanKind.SERVER);
    const add = start('add turns', SpanKind.PRODUCER, inSpan(request));
    const sdkSpan = library('evalsha', inSpan(request));
    expect(add.constructor).toBe(request.constructor);
    expect(add.constructor).not.toBe(sdkSpan.constructor);
    sdkSpan.end();
    add.end();
    request.end();
    expect(exported()).toEqual([]);
    // The worker: the job's metadata carries the producer's context, remote here; a failing job is kept whole.
    const fromJob = trace.setSpanContext(ROOT_CONTEXT, { ...add.spanContext(), isRemote: true });
    const processJob = start('process turns', SpanKind.CONSUMER, fromJob);
    const execute = start('turn.execute', SpanKind.INTERNAL, inSpan(processJob));
    expect([processJob.constructor, execute.constructor]).toEqual([request.constructor, request.constructor]);
    execute.setStatus({ code: SpanStatusCode.ERROR });
    execute.end();
    processJob.end();
    const traceId = request.spanContext().traceId;
    expect(exported().map((span) => [span.name, span.kind, span.spanContext().traceId, span.parentSpanContext?.spanId, span.instrumentationScope.name])).toEqual([
      ['turn.execute', SpanKind.INTERNAL, traceId, processJob.spanContext().spanId, 'queue'],
      ['process turns', SpanKind.CONSUMER, traceId, add.spanContext().spanId, 'queue'],
    ]);
  });
});
