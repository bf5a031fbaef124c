import { ROOT_CONTEXT, SpanKind, trace, TraceFlags } from '@opentelemetry/api';
import { createLogger, samplerFromEnv, ShutdownRegistry, shutdownDeadlineMs } from './index';
import { RoutineSpanFilter } from './sdk';
import { createDurationHistogram } from './duration-histogram';

const TRACE_ID = '0af7651916cd43dd8448eb211c80319c';
const decide = (sampler: ReturnType<typeof samplerFromEnv>, kind: SpanKind, parentSampled?: boolean) => {
  const context =
    parentSampled === undefined
      ? ROOT_CONTEXT
      : trace.setSpanContext(ROOT_CONTEXT, { traceId: TRACE_ID, spanId: 'b7ad6b7169203331', traceFlags: parentSampled ? TraceFlags.SAMPLED : TraceFlags.NONE, isRemote: true });
  return sampler.shouldSample(context, TRACE_ID, 'span', kind, {}, []).decision;
};
const RECORD_AND_SAMPLED = 2;
const NOT_RECORD = 0;

describe('samplerFromEnv (OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG)', () => {
  it('reads every standard value (unset is ic_tail: tail-keep.test.ts)', () => {
    expect(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_always_on' }).toString()).toBe('ParentBased{root=AlwaysOnSampler, remoteParentSampled=AlwaysOnSampler, remoteParentNotSampled=AlwaysOffSampler, localParentSampled=AlwaysOnSampler, localParentNotSampled=AlwaysOffSampler}');
    expect(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'always_off' }).toString()).toBe('AlwaysOffSampler');
    expect(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' }).toString()).toBe('TraceIdRatioBased{0.25}');
    expect(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.1' }).toString()).toMatch(/^ParentBased\{root=TraceIdRatioBased\{0.1\}/);
    // A missing or out-of-range argument means ratio 1, as the spec says.
    expect(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '7' }).toString()).toBe('TraceIdRatioBased{1}');
    expect(() => samplerFromEnv({ OTEL_TRACES_SAMPLER: 'sometimes' })).toThrow(/OTEL_TRACES_SAMPLER=sometimes is not supported/);
  });

  it('starts traces only where work arrives, and keeps following the parent', () => {
    const sampler = new RoutineSpanFilter(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_always_on' }));
    expect(decide(sampler, SpanKind.SERVER)).toBe(RECORD_AND_SAMPLED);
    expect(decide(sampler, SpanKind.CONSUMER)).toBe(RECORD_AND_SAMPLED);
    expect(decide(sampler, SpanKind.PRODUCER)).toBe(RECORD_AND_SAMPLED);
    expect(decide(sampler, SpanKind.INTERNAL)).toBe(NOT_RECORD); // a poll, a sweep, a readiness query
    expect(decide(sampler, SpanKind.CLIENT)).toBe(NOT_RECORD);
    expect(decide(sampler, SpanKind.INTERNAL, true)).toBe(RECORD_AND_SAMPLED);
    expect(decide(sampler, SpanKind.CLIENT, false)).toBe(NOT_RECORD);
  });
});

describe('shutdown within the grace period (SHUTDOWN_GRACE_PERIOD_MS)', () => {
  it('keeps a reserve for exiting before SIGKILL', () => {
    expect(shutdownDeadlineMs(30000)).toBe(27000);
    expect(shutdownDeadlineMs(120000)).toBe(115000);
    expect(shutdownDeadlineMs(1000)).toBe(900);
  });

  it('cuts a long step short so the later steps still run', async () => {
    const registry = new ShutdownRegistry(createLogger('test', 'silent'), 400);
    const ran: string[] = [];
    registry.register('drain', () => new Promise(() => undefined), { leaveMs: 200 });
    registry.register('close pools', async () => ran.push('close pools'));
    await registry.shutdown('test');
    // Without the cut, the overall deadline would end the shutdown before the pools were closed.
    expect(ran).toEqual(['close pools']);
  });
});

describe('duration histograms of our lean spans', () => {
  it('exist only when metrics are exported: without a meter provider nothing builds records', () => {
    const buckets = [0.1, 1];
    expect(createDurationHistogram(true, false, 'x.duration', 'x', buckets)).toBeUndefined();
    expect(createDurationHistogram(false, true, 'x.duration', 'x', buckets)).toBeUndefined();
    expect(createDurationHistogram(true, true, 'x.duration', 'x', buckets)).toBeDefined();
  });
});
