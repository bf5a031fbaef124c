import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Histogram, type Span } from '@opentelemetry/api';
import { createDurationHistogram, HTTP_DURATION_BUCKETS_SECONDS } from './duration-histogram';
import { startLeanSpan } from './lazy-span';

/** Requests that are never traced: probes and scrapes arrive every few seconds and say nothing about users. */
export const UNTRACED_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);

let serverSpansEnabled = false;
let durationHistogram: Histogram | undefined;

/**
 * Turned on by startTelemetry (unless OTEL_NODE_DISABLED_INSTRUMENTATIONS names `http`): until then
 * traceHttpServer's wrapper only passes requests through, so tests and the embedded stack without
 * OTEL_* variables pay one branch per request.
 */
export function enableHttpServerTelemetry(enabled: boolean, withMetrics = false): void {
  serverSpansEnabled = enabled;
  durationHistogram = createDurationHistogram(enabled, withMetrics, 'http.server.request.duration', 'Duration of HTTP server requests.', HTTP_DURATION_BUCKETS_SECONDS);
}

const TRACER_NAME = 'ingram-conversations-http';
const tracer = trace.getTracer(TRACER_NAME);

export interface HttpServerTelemetryOptions {
  /** The matched route template (`/v1/conversations/:conversation_id`), read once the reply is finished. */
  routeOf?: (req: IncomingMessage) => string | undefined;
}

/**
 * One SERVER span and one http.server.request.duration record per incoming request, with the stable
 * HTTP semantic-convention attributes, in place of @opentelemetry/instrumentation-http and -express.
 * Those two cost more CPU than a cached conversation GET itself (instrumentation-http's fixed work
 * even when nothing is sampled; a span per express middleware layer). The W3C `traceparent` of the
 * caller is honoured (the globally registered propagator), the request's handlers run in the span's
 * context (database and Redis spans, queue producers and the model call are its children), and
 * 5xx replies mark the span as an error. Probes and scrapes (UNTRACED_PATHS) are left out of both.
 */
export function traceHttpServer(listener: RequestListener, options: HttpServerTelemetryOptions = {}): RequestListener {
  return (req, res) => {
    if (!serverSpansEnabled) return listener(req, res);
    const url = req.url ?? '/';
    const queryAt = url.indexOf('?');
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    if (UNTRACED_PATHS.has(path)) return listener(req, res);

    const startedAt = performance.now();
    const method = KNOWN_METHODS.has(req.method ?? '') ? req.method! : '_OTHER';
    const parent = req.headers.traceparent === undefined ? ROOT_CONTEXT : propagation.extract(ROOT_CONTEXT, req.headers);
    // The peer's address is read now: the socket may be gone by the time a kept span is exported (the
    // rest is read then, if ever: nine in ten spans are dropped unread).
    const { remoteAddress, remotePort } = req.socket;
    const span = startLeanSpan(tracer, TRACER_NAME, method, SpanKind.SERVER, parent, () =>
      requestAttributes(req, method, path, queryAt === -1 ? undefined : url.slice(queryAt + 1), remoteAddress, remotePort),
    );

    // 'close' comes once per response, after 'finish' when the reply was sent whole and also when the
    // client went away first (the span then ends without a status code): one listener covers both.
    // `on`, not `once`: it fires once anyway, and `once` wraps it and removes it again per request.
    res.on('close', () => finishRequest(req, res, span, method, startedAt, options.routeOf));
    context.with(trace.setSpan(parent, span), () => listener(req, res));
  };
}

function requestAttributes(req: IncomingMessage, method: string, path: string, query: string | undefined, peerAddress: string | undefined, peerPort: number | undefined): Attributes {
  const attributes: Attributes = {
    'http.request.method': method,
    'url.scheme': 'http',
    'url.path': path,
    'network.protocol.version': req.httpVersion,
    'network.peer.address': peerAddress,
    'network.peer.port': peerPort,
  };
  if (method === '_OTHER') attributes['http.request.method_original'] = req.method;
  if (query) attributes['url.query'] = query;
  const host = req.headers.host;
  if (host) {
    const portAt = host.lastIndexOf(':');
    const hasPort = portAt > host.lastIndexOf(']');
    attributes['server.address'] = hasPort ? host.slice(0, portAt) : host;
    if (hasPort) attributes['server.port'] = Number(host.slice(portAt + 1));
  }
  // The first address of X-Forwarded-For is the caller behind the ingress; otherwise the peer itself.
  const forwarded = req.headers['x-forwarded-for'];
  const forwardedFirst = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim();
  attributes['client.address'] = forwardedFirst || peerAddress;
  const userAgent = req.headers['user-agent'];
  if (userAgent) attributes['user_agent.original'] = userAgent;
  return attributes;
}

function finishRequest(req: IncomingMessage, res: ServerResponse, span: Span, method: string, startedAt: number, routeOf: HttpServerTelemetryOptions['routeOf']): void {
  const recording = span.isRecording();
  if (!recording && !durationHistogram) {
    span.end();
    return;
  }
  const route = routeOf?.(req);
  const completed = res.writableFinished;
  const statusCode = completed || res.headersSent ? res.statusCode : undefined;
  const errorType = !completed ? 'aborted' : res.statusCode >= 500 ? String(res.statusCode) : undefined;
  if (recording) {
    // Written one by one, not as the metric's attribute object: most requests have no histogram.
    if (route) {
      span.setAttribute('http.route', route);
      span.updateName(`${method} ${route}`);
    }
    if (statusCode !== undefined) span.setAttribute('http.response.status_code', statusCode);
    if (errorType !== undefined) {
      span.setAttribute('error.type', errorType);
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
  }
  span.end();
  if (!durationHistogram) return;
  const metricAttributes: Attributes = { 'http.request.method': method, 'url.scheme': 'http', 'network.protocol.version': req.httpVersion };
  if (route) metricAttributes['http.route'] = route;
  if (statusCode !== undefined) metricAttributes['http.response.status_code'] = statusCode;
  if (errorType !== undefined) metricAttributes['error.type'] = errorType;
  durationHistogram.record((performance.now() - startedAt) / 1000, metricAttributes);
}
