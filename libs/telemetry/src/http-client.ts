import { context, propagation, SpanKind, SpanStatusCode, trace, type Attributes, type Histogram, type Span } from '@opentelemetry/api';
import { createDurationHistogram, HTTP_DURATION_BUCKETS_SECONDS } from './duration-histogram';
import { startLeanSpan } from './lazy-span';

let clientSpansEnabled = false;
let durationHistogram: Histogram | undefined;

/** Turned on by startTelemetry with the `http` instrumentation; until then traceHttpClient costs one branch. */
export function enableHttpClientTelemetry(enabled: boolean, withMetrics = false): void {
  clientSpansEnabled = enabled;
  durationHistogram = createDurationHistogram(enabled, withMetrics, 'http.client.request.duration', 'Duration of HTTP client requests.', HTTP_DURATION_BUCKETS_SECONDS);
}

const TRACER_NAME = 'ingram-conversations-http';
const tracer = trace.getTracer(TRACER_NAME);

export interface HttpClientCall {
  /** Headers to send with the request: the W3C trace context of the call's span. */
  headers: Record<string, string>;
  /** The response's status arrived. */
  answered(statusCode: number): void;
  /** The call is over (body read, failed or abandoned); `error` says how it failed, if it did. */
  end(error?: { type: string; message: string }): void;
}

const NOT_TRACED: HttpClientCall = { headers: {}, answered: () => undefined, end: () => undefined };

/**
 * One CLIENT span and one http.client.request.duration record per outgoing call (the model upstream),
 * with the stable HTTP semantic-convention attributes, as instrumentation-undici gave them while the
 * call went through fetch. The span is a child of the active one (the turn), its context travels in
 * `traceparent`, and it lasts until the body is read: for a streamed answer, the whole stream.
 */
export function traceHttpClient(method: string, url: URL): HttpClientCall {
  if (!clientSpansEnabled) return NOT_TRACED;
  const startedAt = performance.now();
  const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
  const metricAttributes: Attributes = { 'http.request.method': method, 'server.address': url.hostname, 'server.port': port };
  const span: Span = startLeanSpan(tracer, TRACER_NAME, method, SpanKind.CLIENT, context.active());
  if (span.isRecording()) span.setAttributes({ ...metricAttributes, 'url.full': `${url.origin}${url.pathname}` });
  const headers: Record<string, string> = {};
  propagation.inject(trace.setSpan(context.active(), span), headers);
  let ended = false;
  return {
    headers,
    answered(statusCode) {
      metricAttributes['http.response.status_code'] = statusCode;
      if (statusCode >= 400) metricAttributes['error.type'] = String(statusCode);
    },
    end(error) {
      if (ended) return;
      ended = true;
      if (error && metricAttributes['error.type'] === undefined) metricAttributes['error.type'] = error.type;
      if (span.isRecording()) {
        span.setAttributes(metricAttributes);
        if (metricAttributes['error.type'] !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error?.message });
      }
      span.end();
      durationHistogram?.record((performance.now() - startedAt) / 1000, metricAttributes);
    },
  };
}
