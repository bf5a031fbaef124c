import { randomBytes } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { apiError, type ErrorCode } from '@ic/schemas';
import { traceHttpServer } from '@ic/telemetry';

export interface HttpServerTimeouts {
  /**
   * How long an idle keep-alive connection stays open. Longer than the idle timeout of the proxy in
   * front (ALB and nginx: 60 s), so the proxy, not us, closes idle connections: otherwise it may reuse
   * one we are closing and answer its client with a 502.
   */
  keepAliveTimeoutMs: number;
  /** Time allowed to receive a request's headers; kept above keepAliveTimeoutMs (a Node requirement behind proxies). */
  headersTimeoutMs: number;
  /**
   * Time allowed to receive a whole request (0: none). It ends once the request is read, so it never
   * cuts a long SSE reply.
   */
  requestTimeoutMs: number;
}

export const DEFAULT_HTTP_TIMEOUTS: HttpServerTimeouts = { keepAliveTimeoutMs: 65000, headersTimeoutMs: 66000, requestTimeoutMs: 300000 };

/**
 * The HTTP server every service listens with: proxy-friendly timeouts, and errors raised by Node's
 * own HTTP parser (headers or URL over the limit, malformed requests, slow clients) answered in
 * OpenAI's envelope like every other error, instead of Node's empty bodies.
 */
export function createHttpServer(handler: RequestListener, timeouts: Partial<HttpServerTimeouts> = {}): Server {
  const keepAliveTimeout = timeouts.keepAliveTimeoutMs ?? DEFAULT_HTTP_TIMEOUTS.keepAliveTimeoutMs;
  const headersTimeout = Math.max(timeouts.headersTimeoutMs ?? DEFAULT_HTTP_TIMEOUTS.headersTimeoutMs, keepAliveTimeout + 1000);
  const requestedRequestTimeout = timeouts.requestTimeoutMs ?? DEFAULT_HTTP_TIMEOUTS.requestTimeoutMs;
  // Node refuses a request timeout shorter than the headers timeout.
  const requestTimeout = requestedRequestTimeout === 0 ? 0 : Math.max(requestedRequestTimeout, headersTimeout);
  const server = createServer({ keepAliveTimeout, headersTimeout, requestTimeout }, traceHttpServer(handler, { routeOf: expressRoute }));
  server.on('clientError', answerClientError);
  return server;
}

/** The route template express matched (`/v1/conversations/:conversation_id`), for spans and the duration metric. */
function expressRoute(req: IncomingMessage): string | undefined {
  const { route, baseUrl } = req as IncomingMessage & { route?: { path?: unknown }; baseUrl?: string };
  return typeof route?.path === 'string' ? `${baseUrl ?? ''}${route.path}` : undefined;
}

function clientErrorCode(error: NodeJS.ErrnoException): ErrorCode {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return 'headers_too_large';
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'HPE_HEADERS_TIMEOUT':
      return 'request_timeout';
    default:
      return 'malformed_request';
  }
}

function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  // Nothing to answer on a connection the client already dropped, or one a reply has started on.
  if (error.code === 'ECONNRESET' || !socket.writable || (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
    socket.destroy();
    return;
  }
  const appError = apiError(clientErrorCode(error) as 'malformed_request');
  const body = JSON.stringify(appError.toEnvelope());
  socket.end(
    `HTTP/1.1 ${appError.status} ${STATUS_CODES[appError.status] ?? 'Error'}\r\n` +
      'content-type: application/json; charset=utf-8\r\n' +
      `content-length: ${Buffer.byteLength(body)}\r\n` +
      `x-request-id: req_${randomBytes(12).toString('hex')}\r\n` +
      'connection: close\r\n\r\n' +
      body,
  );
}
