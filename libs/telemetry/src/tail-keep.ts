import { type Attributes, type Context, type Link, type SpanKind, SpanStatusCode, TraceFlags, trace } from '@opentelemetry/api';
import type { ReadableSpan, Sampler, SamplingResult, Span, SpanProcessor } from '@opentelemetry/sdk-trace-base';

/** SamplingDecision from sdk-trace-base, without loading it (the SDK is loaded lazily, see sdk.ts). */
const RECORD = 1;
const RECORD_AND_SAMPLED = 2;

/**
 * `ic_tail`, the default sampler: every span is recorded; a trace is exported when its trace id falls
 * in `ratio` (TraceIdRatioBased, so every service agrees on it) or its caller sampled it, and
 * otherwise only if TailKeepSpanProcessor finds an error in it or it was slow. Recording costs a
 * span object and its attributes; exporting a span (serialising it to OTLP and sending it) costs
 * several times that, so exporting one trace in ten plus every interesting one keeps the overhead small
 * without a blind spot: no failing or slow request goes unseen.
 * A recorded-but-not-exported span carries the unsampled flag, so a downstream service (a worker
 * taking the job) records it the same way and keeps its own part on error or slowness.
 */
export class RecordAllSampler implements Sampler {
  constructor(readonly ratioSampler: Sampler) {}

  shouldSample(context: Context, traceId: string, spanName: string, spanKind: SpanKind, attributes: Attributes, links: Link[]): SamplingResult {
    const parent = trace.getSpanContext(context);
    if (parent) return { decision: parent.traceFlags & TraceFlags.SAMPLED ? RECORD_AND_SAMPLED : RECORD };
    return { decision: this.ratioSampler.shouldSample(context, traceId, spanName, spanKind, attributes, links).decision === RECORD_AND_SAMPLED ? RECORD_AND_SAMPLED : RECORD };
  }

  toString(): string {
    return `RecordAllSampler{${this.ratioSampler.toString()}}`;
  }
}

/** How many spans of one undecided local trace are held at most; beyond that its spans are not kept. */
const MAX_HELD_SPANS = 1000;

/**
 * The spans of one local trace (a local root span's in-process descendants) until the root ends.
 * A class, not an object literal, and its array made only when a descendant ends: V8 may pretenure the
 * objects of an allocation site whose objects survive young-generation collections, and a request's
 * trace state lives as long as the request. In a minimal traced server the literal's site was
 * pretenured in two runs of three (`--trace-pretenuring-statistics`), and those runs spent twice the
 * scavenge time and many more full collections; with the class, none of three did. On the real
 * gateway the difference was within the otel bench's noise.
 */
export class LocalTrace {
  held: ReadableSpan[] | undefined = undefined;
  failed = false;
  decision: 'pending' | 'kept' | 'dropped' = 'pending';
}

function asSampled(span: ReadableSpan): ReadableSpan {
  // Read on the span itself (a LazySpan works out deferred attributes on first read), not through the
  // wrapper below, and now, at the decision, while what they describe is still there.
  void span.attributes;
  const sampledContext = { ...span.spanContext(), traceFlags: span.spanContext().traceFlags | TraceFlags.SAMPLED };
  return Object.create(span, { spanContext: { value: () => sampledContext } }) as ReadableSpan;
}

/** A LazySpan's elapsedMs, else the SDK span's HrTime duration. */
function durationMs(span: ReadableSpan): number {
  const elapsed = (span as { elapsedMs?: unknown }).elapsedMs;
  return typeof elapsed === 'number' ? elapsed : span.duration[0] * 1e3 + span.duration[1] / 1e6;
}

/**
 * Where a recorded span keeps its local trace. A property on the span object rather than a WeakMap:
 * every recorded span of every request would be an ephemeron entry, which the garbage collector
 * handles in a slower pass (the WeakMap cost a fast GET about 2.5 µs per span and more in GC). The
 * property goes with the span, so an abandoned trace still leaves nothing behind.
 */
const LOCAL_TRACE = Symbol('ic.localTrace');
type WithLocalTrace = { [LOCAL_TRACE]?: LocalTrace };
export const localTraceOf = (span: object): LocalTrace | undefined => (span as WithLocalTrace)[LOCAL_TRACE];
/** Puts a span in a local trace: its parent's (a local parent), or a new one (a local root). */
export function joinLocalTrace(span: object, parentTrace: LocalTrace | undefined): void {
  (span as WithLocalTrace)[LOCAL_TRACE] = parentTrace ?? new LocalTrace();
}

/**
 * In front of the exporting processor: sampled spans pass straight through. Recorded-only spans are
 * held per local trace (a span whose parent is remote or absent, and its in-process descendants) until
 * that local root ends; the whole local trace is then exported if any of its spans has an error status
 * or the root took `slowMs` or longer, else dropped. Spans ending after the decision follow it (an
 * error span is exported even then). Our own spans (LazySpans, lazy-span.ts) are not the SDK's: those of
 * unsampled traces join their local trace when created, and all arrive here only through onEnd.
 */
export class TailKeepSpanProcessor implements SpanProcessor {
  constructor(
    private readonly exporting: SpanProcessor,
    private readonly slowMs: number,
  ) {}

  onStart(span: Span, parentContext: Context): void {
    if (span.spanContext().traceFlags & TraceFlags.SAMPLED) {
      this.exporting.onStart(span, parentContext);
      return;
    }
    const parent = trace.getSpan(parentContext);
    joinLocalTrace(span, parent && !parent.spanContext().isRemote ? localTraceOf(parent) : undefined);
  }

  onEnd(span: ReadableSpan): void {
    if (span.spanContext().traceFlags & TraceFlags.SAMPLED) {
      this.exporting.onEnd(span);
      return;
    }
    const local = localTraceOf(span);
    if (!local) return;
    const failed = span.status.code === SpanStatusCode.ERROR;
    if (local.decision !== 'pending') {
      if (local.decision === 'kept' || failed) this.exporting.onEnd(asSampled(span));
      return;
    }
    local.failed ||= failed;
    const isLocalRoot = !span.parentSpanContext || span.parentSpanContext.isRemote;
    if (!isLocalRoot) {
      const held = (local.held ??= []);
      if (held.length < MAX_HELD_SPANS) held.push(span);
      return;
    }
    if (local.failed || durationMs(span) >= this.slowMs) {
      local.decision = 'kept';
      for (const held of local.held ?? []) this.exporting.onEnd(asSampled(held));
      this.exporting.onEnd(asSampled(span));
    } else {
      local.decision = 'dropped';
    }
    local.held = undefined;
  }

  forceFlush(): Promise<void> {
    return this.exporting.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.exporting.shutdown();
  }
}
