import { BullMQOtel, BullMQOTelSpan } from 'bullmq-otel';
import type { Telemetry } from 'bullmq';
import { leanSpanStarter, telemetryStarted } from '@ic/telemetry';

const SCOPE = 'ingram-conversations';

/**
 * BullMQ's telemetry: bullmq-otel carries the trace context from the producer's span to the worker's
 * (PRODUCER/CONSUMER spans) in each job's metadata and records job metrics, but its spans start as our
 * own do (leanSpanStarter): under the default `ic_tail` sampler, the three queue spans a turn makes
 * (add, process, complete) are plain objects unless their trace is kept, like the statements and Redis
 * commands around them. A kept trace still holds them all. None when this process started no
 * telemetry (no OTLP endpoint, no Prometheus port): BullMQ then skips its wrappers (a context switch
 * and a no-op span around each queue call).
 */
export function bullmqTelemetry(): Telemetry | undefined {
  if (!telemetryStarted()) return undefined;
  const otel = new BullMQOtel({ tracerName: SCOPE, meterName: SCOPE, enableMetrics: true });
  const startSpan = leanSpanStarter(SCOPE);
  return {
    contextManager: otel.contextManager,
    meter: otel.meter,
    tracer: {
      // BullMQ's SpanKind has OpenTelemetry's values.
      startSpan: (name, options, parent) => new BullMQOTelSpan(startSpan(name, options?.kind ?? 0, parent)),
    },
  };
}
