import { context, SpanKind, SpanStatusCode, trace, type Attributes } from '@opentelemetry/api';
import { startLeanSpan } from './lazy-span';

let redisSpansEnabled = false;

/** Turned on by startTelemetry with the `ioredis` instrumentation; until then traceRedisCommand costs one branch. */
export function enableRedisClientTelemetry(enabled: boolean): void {
  redisSpansEnabled = enabled;
}

const TRACER_NAME = 'ingram-conversations-redis';
const tracer = trace.getTracer(TRACER_NAME);

export interface RedisTarget {
  host?: string;
  port?: number;
}

export interface RedisCommandCall {
  /** The reply arrived, or the command failed (`error`). */
  end(error?: unknown): void;
}

const NOT_TRACED: RedisCommandCall = { end: () => undefined };

/**
 * One CLIENT span per Redis command sent inside a traced operation (a request or a job), named by the
 * command as instrumentation-ioredis named it, with the stable database semantic-convention attributes.
 * Written by libs/queue's command hook (redis-metrics.ts), which also records the command's latency,
 * in place of instrumentation-ioredis: a turn sends about fourteen commands, and through our own span
 * the ones of a trace that is not sampled are recorded lazily (lazy-span.ts). The arguments are left
 * out: they carry ids, and the event log's carry message text.
 */
export function traceRedisCommand(name: string, target: RedisTarget): RedisCommandCall {
  if (!redisSpansEnabled) return NOT_TRACED;
  const active = context.active();
  if (trace.getSpan(active)?.isRecording() !== true) return NOT_TRACED;
  const span = startLeanSpan(tracer, TRACER_NAME, name, SpanKind.CLIENT, active, () => commandAttributes(name, target));
  return {
    end(error) {
      if (error !== undefined) {
        span.setAttribute('error.type', error instanceof Error ? error.name : 'error');
        span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      }
      span.end();
    },
  };
}

/** Worked out only if the span is exported (lazy-span.ts SpanAttributes). */
function commandAttributes(name: string, target: RedisTarget): Attributes {
  return {
    'db.system.name': 'redis',
    'db.system': 'redis',
    'db.operation.name': name.toUpperCase(),
    'server.address': target.host,
    'server.port': target.port,
  };
}
