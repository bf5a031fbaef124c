import {
  type Attributes,
  type AttributeValue,
  type Context,
  type Exception,
  type HrTime,
  isSpanContextValid,
  type Link,
  type Span,
  type SpanContext,
  SpanKind,
  type SpanStatus,
  SpanStatusCode,
  type TimeInput,
  trace,
  TraceFlags,
  type Tracer,
} from '@opentelemetry/api';
import { randomBytes } from 'node:crypto';
import { hrTime, isTracingSuppressed, millisToHrTime, timeInputToHrTime } from '@opentelemetry/core';
import type { IdGenerator, ReadableSpan, Sampler, SpanProcessor, TimedEvent } from '@opentelemetry/sdk-trace-base';
import type { Resource } from '@opentelemetry/resources';
import { joinLocalTrace, localTraceOf, type LocalTrace } from './tail-keep';

/**
 * A trace starts where work arrives: an incoming request (SERVER), a job taken from a queue (CONSUMER)
 * or one put on it (PRODUCER, e.g. a sweeper re-enqueue). Root spans of any other kind come from
 * timers and probes — BullMQ's poll for the next job and stalled-job check, slonik's and pg's spans
 * for the readiness query or the sweeper's scan — and would send a trace every few seconds from an
 * idle pod.
 */
export const TRACE_STARTING_KINDS = new Set([SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.PRODUCER]);

const RECORD_AND_SAMPLED = 2; // SamplingDecision, without loading the SDK

const HEX_POOL_BYTES = 4096;
const ZERO_SPAN_ID = '0000000000000000';
const ZERO_TRACE_ID = '00000000000000000000000000000000';

/**
 * Random trace and span ids cut from a hex string of 4 KiB of CSPRNG bytes. The SDK's generator
 * (Math.random into a buffer, then a native hex conversion per id) cost ~110 ns an id, and a turn
 * takes about twenty; a slice of a pooled string costs a fifth of that.
 */
export class PooledRandomIds implements IdGenerator {
  private pool = '';
  private offset = 0;

  private take(characters: number): string {
    if (this.offset + characters > this.pool.length) {
      this.pool = randomBytes(HEX_POOL_BYTES).toString('hex');
      this.offset = 0;
    }
    this.offset += characters;
    return this.pool.slice(this.offset - characters, this.offset);
  }

  generateTraceId(): string {
    let id = this.take(32);
    while (id === ZERO_TRACE_ID) id = this.take(32); // invalid in W3C trace context
    return id;
  }

  generateSpanId(): string {
    let id = this.take(16);
    while (id === ZERO_SPAN_ID) id = this.take(16);
    return id;
  }
}

interface LazyRecording {
  /** The `ic_tail` ratio: which new traces are exported whatever happens in them. */
  ratio: Sampler;
  ids: IdGenerator;
  /** Where an ended span goes: the TailKeepSpanProcessor, which holds it until its local root ends. */
  tail: SpanProcessor;
  resource: Resource;
}

let recording: LazyRecording | undefined;

/** Turned on by startTelemetry with the `ic_tail` sampler; until then startLeanSpan is the tracer's startSpan. */
export function enableLazySpans(config: LazyRecording | undefined): void {
  recording = config;
}

/**
 * A span's attributes, or a function that gives them: deferred attributes are worked out only if the
 * span is exported (its trace sampled or kept), so the nine in ten spans that are dropped never build
 * them. The function must read only what does not change while the span lasts (it may run at its end).
 */
export type SpanAttributes = Attributes | (() => Attributes);

const NO_ATTRIBUTES: Attributes = Object.freeze({}) as Attributes;

/** The SDK's span (another sampler, or a span outside ic_tail's lazy path); deferred attributes only if it records. */
function sdkSpan(tracer: Tracer, name: string, kind: SpanKind, parent: Context, attributes: SpanAttributes | undefined): Span {
  if (typeof attributes !== 'function') return tracer.startSpan(name, { kind, attributes }, parent);
  const span = tracer.startSpan(name, { kind }, parent);
  if (span.isRecording()) span.setAttributes(attributes());
  return span;
}

/**
 * A span of our own instrumentation (a request's server span, a statement, the model call). Under
 * `ic_tail` it is a LazySpan, a plain object that the SDK's span machinery (attribute checks, span
 * limits, the span's own metrics, a processor chain) never sees. A span of a trace that is not sampled
 * (nine in ten) is usually dropped when its local root ends, and turned into an exported span only if
 * its trace is kept (an error or a slow root, TailKeepSpanProcessor); a span of a sampled trace goes to
 * the exporter when it ends, as the SDK's span would. Other samplers, suppressed tracing and spans the
 * SDK would not record (a root that does not start a trace) take the tracer's own path. Library spans
 * (ioredis, BullMQ) under a LazySpan are the SDK's, children of it, sampled or recorded and held in the
 * same local trace as it is, so an exported trace is whole.
 */
export function startLeanSpan(tracer: Tracer, scope: string, name: string, kind: SpanKind, parent: Context, attributes?: SpanAttributes): Span {
  const lazy = recording;
  if (!lazy || isTracingSuppressed(parent)) return sdkSpan(tracer, name, kind, parent, attributes);
  const parentSpan = trace.getSpan(parent);
  // A LazySpan parent (the common case: a request's statements): its trace, sampled or held locally.
  if (parentSpan instanceof LazySpan && !parentSpan.ended) {
    const parentContext = parentSpan.spanContext();
    return new LazySpan(lazy, scope, name, kind, parentContext.traceId, parentContext.traceFlags, parentContext, localTraceOf(parentSpan), attributes);
  }
  const parentContext = parentSpan?.spanContext();
  if (parentSpan && parentContext && isSpanContextValid(parentContext)) {
    if (parentContext.traceFlags & TraceFlags.SAMPLED) return new LazySpan(lazy, scope, name, kind, parentContext.traceId, TraceFlags.SAMPLED, parentContext, undefined, attributes);
    if (parentContext.isRemote) return new LazySpan(lazy, scope, name, kind, parentContext.traceId, TraceFlags.NONE, parentContext, undefined, attributes);
    const localTrace = parentSpan.isRecording() ? localTraceOf(parentSpan) : undefined;
    if (!localTrace) return sdkSpan(tracer, name, kind, parent, attributes);
    return new LazySpan(lazy, scope, name, kind, parentContext.traceId, TraceFlags.NONE, parentContext, localTrace, attributes);
  }
  if (!TRACE_STARTING_KINDS.has(kind)) return sdkSpan(tracer, name, kind, parent, attributes);
  const traceId = lazy.ids.generateTraceId();
  // The ratio sampler decides by trace id alone: deferred attributes are not worked out for it.
  const sampled = lazy.ratio.shouldSample(parent, traceId, name, kind, typeof attributes === 'object' ? attributes : NO_ATTRIBUTES, []).decision === RECORD_AND_SAMPLED;
  return new LazySpan(lazy, scope, name, kind, traceId, sampled ? TraceFlags.SAMPLED : TraceFlags.NONE, undefined, undefined, attributes);
}

// Shared until a span has its own: most spans never get an event, a link or a status.
const NO_EVENTS: TimedEvent[] = Object.freeze([]) as unknown as TimedEvent[];
const NO_LINKS: Link[] = Object.freeze([]) as unknown as Link[];
const UNSET_STATUS: SpanStatus = Object.freeze({ code: SpanStatusCode.UNSET });
const scopes = new Map<string, { name: string }>();
const scopeNamed = (name: string) => scopes.get(name) ?? scopes.set(name, Object.freeze({ name })).get(name)!;

/**
 * A recorded span that is both the API's Span (what instrumentation writes to) and the SDK's
 * ReadableSpan (what processors and exporters read), kept as plain fields: times are performance.now()
 * readings turned into epoch HrTimes only when read, which happens only if the span is exported.
 * Attributes are stored as given, without the SDK's checks: our instrumentation writes primitives.
 * They may be given as a function (SpanAttributes), worked out only when an exporter reads them.
 * A sampled one (its trace was chosen by the ratio, or by the caller) skips the tail processor's holding
 * and goes to the exporter when it ends.
 */
class LazySpan implements Span, ReadableSpan {
  events: TimedEvent[] = NO_EVENTS;
  links: Link[] = NO_LINKS;
  status: SpanStatus = UNSET_STATUS;
  ended = false;
  readonly droppedAttributesCount = 0;
  readonly droppedEventsCount = 0;
  readonly droppedLinksCount = 0;
  readonly instrumentationScope: { name: string };
  readonly resource: Resource;
  private readonly context: SpanContext;
  private readonly startedAt = performance.now();
  private endedAt = 0;
  /** Attributes set so far; those of `deferred` go under them when first read. */
  private stored: Attributes | undefined;
  private deferred: (() => Attributes) | undefined;

  constructor(
    private readonly lazy: LazyRecording,
    scope: string,
    public name: string,
    readonly kind: SpanKind,
    traceId: string,
    traceFlags: TraceFlags,
    readonly parentSpanContext: SpanContext | undefined,
    localTrace: LocalTrace | undefined,
    attributes: SpanAttributes | undefined,
  ) {
    this.context = { traceId, spanId: lazy.ids.generateSpanId(), traceFlags };
    this.instrumentationScope = scopeNamed(scope);
    this.resource = lazy.resource;
    // A sampled span is exported as it ends, never held: it needs no local trace.
    if (!(traceFlags & TraceFlags.SAMPLED)) joinLocalTrace(this, localTrace);
    if (typeof attributes === 'function') this.deferred = attributes;
    else if (attributes) this.setAttributes(attributes);
  }

  /** What exporters read: the deferred attributes are worked out here, once, with those set later on top. */
  get attributes(): Attributes {
    const deferred = this.deferred;
    if (deferred) {
      this.deferred = undefined;
      const given = deferred();
      const merged: Attributes = {};
      for (const key in given) if (given[key] !== undefined && given[key] !== null) merged[key] = given[key];
      this.stored = this.stored ? Object.assign(merged, this.stored) : merged;
    }
    return (this.stored ??= {});
  }

  /** Milliseconds from start to end, without the HrTime `duration` builds (the tail processor's slow check). */
  get elapsedMs(): number {
    return this.endedAt - this.startedAt;
  }

  spanContext(): SpanContext {
    return this.context;
  }

  get startTime(): HrTime {
    return hrTime(this.startedAt);
  }

  get endTime(): HrTime {
    return hrTime(this.endedAt);
  }

  get duration(): HrTime {
    return millisToHrTime(this.endedAt - this.startedAt);
  }

  setAttribute(key: string, value: AttributeValue | undefined): this {
    if (!this.ended && value !== undefined && value !== null) (this.stored ??= {})[key] = value;
    return this;
  }

  setAttributes(attributes: Attributes): this {
    for (const key in attributes) this.setAttribute(key, attributes[key]);
    return this;
  }

  addEvent(name: string, attributesOrTime?: Attributes | TimeInput, time?: TimeInput): this {
    if (this.ended) return this;
    const timeGiven = attributesOrTime instanceof Date || typeof attributesOrTime === 'number' || Array.isArray(attributesOrTime);
    const attributes = timeGiven ? undefined : (attributesOrTime as Attributes | undefined);
    const at = timeGiven ? (attributesOrTime as TimeInput) : time;
    if (this.events === NO_EVENTS) this.events = [];
    this.events.push({ name, attributes, time: at === undefined ? hrTime() : timeInputToHrTime(at), droppedAttributesCount: 0 });
    return this;
  }

  addLink(link: Link): this {
    return this.addLinks([link]);
  }

  addLinks(links: Link[]): this {
    this.links = [...this.links, ...links];
    return this;
  }

  /** As the SDK: UNSET changes nothing, and OK is final. */
  setStatus(status: SpanStatus): this {
    if (this.ended || status.code === SpanStatusCode.UNSET || this.status.code === SpanStatusCode.OK) return this;
    this.status = status.code === SpanStatusCode.ERROR ? { code: status.code, message: status.message } : { code: status.code };
    return this;
  }

  updateName(name: string): this {
    if (!this.ended) this.name = name;
    return this;
  }

  /** Ends now: the span's end time is when this is called (an explicit end time is not supported). */
  end(): void {
    if (this.ended) return;
    this.endedAt = performance.now();
    // A sampled span goes to the exporter now: its deferred attributes are read while what they
    // describe (a request's socket, say) is still there. A held one is read if its trace is kept.
    if (this.context.traceFlags & TraceFlags.SAMPLED) void this.attributes;
    this.ended = true;
    this.lazy.tail.onEnd(this);
  }

  isRecording(): boolean {
    return !this.ended;
  }

  recordException(exception: Exception, time?: TimeInput): void {
    const attributes: Attributes = {};
    if (typeof exception === 'string') attributes['exception.message'] = exception;
    else {
      const { name, code, message, stack } = exception as { name?: string; code?: string | number; message?: string; stack?: string };
      if (name || code !== undefined) attributes['exception.type'] = name ?? String(code);
      if (message) attributes['exception.message'] = message;
      if (stack) attributes['exception.stacktrace'] = stack;
    }
    this.addEvent('exception', attributes, time);
  }
}
