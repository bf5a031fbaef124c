import { context, SpanKind, SpanStatusCode, trace, type Attributes, type Histogram } from '@opentelemetry/api';
import { createDurationHistogram } from './duration-histogram';
import { startLeanSpan } from './lazy-span';

/** The buckets semantic conventions advise for db.client.operation.duration, seconds. */
const DB_DURATION_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10];

let dbSpansEnabled = false;
let durationHistogram: Histogram | undefined;

/** Turned on by startTelemetry with the `pg` instrumentation; until then traceDbStatement costs one branch. */
export function enableDbClientTelemetry(enabled: boolean, withMetrics = false): void {
  dbSpansEnabled = enabled;
  durationHistogram = createDurationHistogram(enabled, withMetrics, 'db.client.operation.duration', 'Duration of database client operations.', DB_DURATION_BUCKETS_SECONDS);
}

const TRACER_NAME = 'ingram-conversations-db';
const tracer = trace.getTracer(TRACER_NAME);

export interface DbStatementCall {
  /** The statement is over; `error` when it failed. */
  end(error?: unknown): void;
}

export interface DbTarget {
  database?: string;
  host?: string;
  port?: number;
}

const NOT_TRACED: DbStatementCall = { end: () => undefined };
const OPERATION = /^\s*(?:\/\*.*?\*\/\s*)?([A-Za-z]+)/s;

/**
 * One CLIENT span and one db.client.operation.duration record per Postgres statement, with the
 * stable database semantic-convention attributes (plus `db.system`, which instrumentation-pg gave
 * and queries may still use). Written by our own pg hook (libs/db prepared.ts) instead of
 * instrumentation-pg, which cost more than the span itself. Like it did, a statement is traced only
 * inside a traced operation (a request or a job), never from a timer on its own. `summary` names the
 * span: the statement's `prepared:` label (`runs.accept`), else its first keyword.
 */
export function traceDbStatement(text: string, summary: string | undefined, target: DbTarget): DbStatementCall {
  if (!dbSpansEnabled) return NOT_TRACED;
  const active = context.active();
  const parentRecording = trace.getSpan(active)?.isRecording() === true;
  if (!parentRecording && !durationHistogram) return NOT_TRACED;
  const startedAt = performance.now();
  // A marked statement is named by its label; the first keyword is read only when something needs it.
  const span = parentRecording
    ? startLeanSpan(tracer, TRACER_NAME, summary ?? operationOf(text) ?? 'postgresql', SpanKind.CLIENT, active, () => statementAttributes(text, summary, target))
    : undefined;
  let ended = false;
  return {
    end(error) {
      if (ended) return;
      ended = true;
      if (span) {
        if (error !== undefined) {
          span.setAttribute('error.type', errorType(error));
          span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
        }
        span.end();
      }
      if (!durationHistogram) return;
      const operation = operationOf(text);
      const metricAttributes: Attributes = { 'db.system.name': 'postgresql' };
      if (operation) metricAttributes['db.operation.name'] = operation;
      if (target.database) metricAttributes['db.namespace'] = target.database;
      if (error !== undefined) metricAttributes['error.type'] = errorType(error);
      durationHistogram.record((performance.now() - startedAt) / 1000, metricAttributes);
    },
  };
}

const operationOf = (text: string) => OPERATION.exec(text)?.[1]?.toUpperCase();

/** The span's attributes (undefined values are left out by the span), worked out only if it is exported. */
function statementAttributes(text: string, summary: string | undefined, target: DbTarget): Attributes {
  const operation = operationOf(text);
  return {
    'db.system.name': 'postgresql',
    'db.operation.name': operation,
    'db.namespace': target.database,
    'db.system': 'postgresql',
    'db.query.text': text,
    'db.query.summary': summary,
    'server.address': target.host,
    'server.port': target.port,
  };
}

/** The SQLSTATE when Postgres answered with an error, else the error's class. */
function errorType(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.length > 0) return code;
  return error instanceof Error ? error.name : 'error';
}
