import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import cors from 'cors';
import express, { type ErrorRequestHandler, type Express, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { z } from 'zod';
import { BackendTerminatedError, BackendTerminatedUnexpectedlyError, ConnectionError, SchemaValidationError, StatementTimeoutError } from 'slonik';
import { API_VERSIONS, apiError, AppError, CURRENT_API_VERSION, findHostileValue, formatJsonPath, MAX_JSON_DEPTH, type HostileValue } from '@ic/schemas';
import { SMITH_HEADER, type Authenticator, type Principal, type Scope, requireScope } from '@ic/auth';
import type { SmithRow } from '@ic/schemas';
import { recordExceptionOnActiveSpan, type Logger } from '@ic/telemetry';
import { principalOf } from './principal';
import type { RateLimits } from './rate-limit';

export { RateLimits, type RateLimitOptions } from './rate-limit';
export { principalOf } from './principal';
export { createHttpServer, DEFAULT_HTTP_TIMEOUTS, type HttpServerTimeouts } from './server';

export const API_VERSION_HEADER = 'ic-api-version';
const REQUEST_ID_SHAPE = /^[A-Za-z0-9._:-]{1,128}$/;

/** 12 random bytes as hex, drawn from a pooled buffer: one CSPRNG call per 340 ids instead of one per request. */
const ID_BYTES = 12;
let idPool = Buffer.alloc(0);
let idPoolOffset = 0;
function randomRequestHex(): string {
  if (idPoolOffset + ID_BYTES > idPool.length) {
    idPool = randomBytes(ID_BYTES * 340);
    idPoolOffset = 0;
  }
  idPoolOffset += ID_BYTES;
  return idPool.toString('hex', idPoolOffset - ID_BYTES, idPoolOffset);
}

/** Echoes a sane incoming x-request-id or mints one; every reply carries it. */
export function requestId(): RequestHandler {
  return (req, res, next) => {
    const incoming = req.headers['x-request-id'];
    const id = typeof incoming === 'string' && REQUEST_ID_SHAPE.test(incoming) ? incoming : `req_${randomRequestHex()}`;
    res.locals.requestId = id;
    res.setHeader('x-request-id', id);
    next();
  };
}

/** IC-Api-Version: absent means the current version (the openai client sends none); unknown is a 400. */
export function apiVersion(): RequestHandler {
  return (req, res, next) => {
    const requested = req.header(API_VERSION_HEADER)?.trim();
    if (requested && !(API_VERSIONS as readonly string[]).includes(requested)) {
      next(apiError('unsupported_api_version', { requested, supported: API_VERSIONS }));
      return;
    }
    res.locals.apiVersion = requested || CURRENT_API_VERSION;
    res.setHeader('IC-Api-Version', res.locals.apiVersion);
    next();
  };
}

export function authenticate(authenticator: Authenticator): RequestHandler {
  return (req, res, next) => {
    authenticator.verify(req.header('authorization')).then(
      (principal) => {
        res.locals.principal = principal;
        next();
      },
      (error: unknown) => next(error),
    );
  };
}

/** Scope check, then the smith this request acts for. */
export async function authorize(authenticator: Authenticator, req: Request, res: Response, scope: Scope): Promise<{ principal: Principal; smith: SmithRow }> {
  const principal = principalOf(res);
  requireScope(principal, scope);
  const smith = await authenticator.actingSmith(principal, req.header(SMITH_HEADER));
  return { principal, smith };
}

/** Turns a zod failure into the 400 the caller can act on: the offending parameter and why. */
export function parseOrThrow<S extends z.ZodTypeAny>(schema: S, value: unknown, paramPrefix?: string): z.infer<S> {
  // NUL characters and over-deep values were already refused for the whole query and body by
  // refuseHostileInput (mounted before every /v1 router), so the value is not walked a second time here.
  const prefix = paramPrefix ? [paramPrefix] : [];
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  if (issue.code === z.ZodIssueCode.unrecognized_keys) {
    const key = issue.keys[0]!;
    const param = [paramPrefix, ...issue.path, key].filter((part) => part !== undefined && part !== '').join('.');
    throw apiError('unknown_parameter', { param });
  }
  const param = formatJsonPath([...prefix, ...issue.path]);
  if (issue.code === z.ZodIssueCode.invalid_type && issue.received === 'undefined') throw apiError('missing_required_parameter', { param });
  const expected = issue.code === z.ZodIssueCode.invalid_type ? ` (expected ${issue.expected}, got ${issue.received})` : '';
  throw apiError('invalid_value', { param: param || 'body', reason: `${issue.message}${expected}` }, { param: param || null });
}

/** The 400 for a NUL character or an over-deep value at `hostile.path`. */
function hostileValueError(hostile: HostileValue): AppError {
  const param = formatJsonPath(hostile.path) || null;
  return hostile.problem === 'unstorable_text'
    ? apiError('invalid_characters', { param: param ?? 'body' }, { param })
    : apiError('nesting_too_deep', { param: param ?? 'body', maxDepth: MAX_JSON_DEPTH }, { param });
}

/**
 * Refuses NUL characters and over-deep JSON anywhere in the path, query or body before any route
 * runs, so no handler (or database) ever sees them, whatever its schema.
 */
export function refuseHostileInput(): RequestHandler {
  return (req, _res, next) => {
    if (/%00/.test(req.path)) return next(apiError('invalid_characters', { param: 'path' }, { param: null }));
    const inQuery = findHostileValue(req.query);
    if (inQuery) return next(hostileValueError(inQuery));
    const inBody = findHostileValue(req.body);
    if (inBody) return next(hostileValueError(inBody));
    next();
  };
}

/**
 * Parses a JSON body (an absent body reads as `{}`). A non-empty body that is not declared as JSON is a
 * 415 rather than silently ignored, so a title sent as text/plain is not dropped without a word.
 */
export function jsonBody(limit: string): RequestHandler {
  const parse = express.json({ limit, strict: true, type: ['application/json', 'application/*+json'] });
  return (req, res, next) => {
    parse(req, res, (error?: unknown) => {
      if (error) return next(error);
      if (req.body === undefined) {
        const hasContent = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
        if (hasContent) {
          return next(apiError('unsupported_media_type'));
        }
        req.body = {};
      }
      next();
    });
  };
}

export interface BaseAppOptions {
  logger: Logger;
  corsOrigins: readonly string[];
  bodyLimit: string;
}

/** CORS for browsers: smith tokens are browser-safe, so preflights for our methods and headers succeed. */
export function corsPolicy(origins: readonly string[]): RequestHandler {
  return cors({
    origin: origins.includes('*') ? true : [...origins],
    methods: ['GET', 'POST', 'DELETE', 'OPTIONS'],
    allowedHeaders: ['Authorization', 'Content-Type', 'IC-Api-Version', 'IC-Smith-Id', 'Idempotency-Key', 'IC-Conversation-Busy', 'X-Request-Id', 'X-Stainless-Retry-Count', 'OpenAI-Organization', 'OpenAI-Project', 'User-Agent', 'X-Stainless-Lang', 'X-Stainless-Package-Version', 'X-Stainless-OS', 'X-Stainless-Arch', 'X-Stainless-Runtime', 'X-Stainless-Runtime-Version', 'X-Stainless-Timeout', 'X-Stainless-Helper-Method'],
    exposedHeaders: ['x-request-id', 'IC-Api-Version', 'IC-Response-Id', 'Retry-After', 'x-ratelimit-limit-requests', 'x-ratelimit-remaining-requests', 'x-ratelimit-reset-requests', 'x-ratelimit-limit-turns', 'x-ratelimit-remaining-turns', 'x-ratelimit-reset-turns'],
    maxAge: 600,
  });
}

/** The middleware every HTTP service shares, in order: request id, CORS, health, then /v1 version, auth, rate limit, body. */
export function createBaseApp(options: BaseAppOptions & { authenticator: Authenticator; ready: () => Promise<void>; rateLimits?: RateLimits }): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('trust proxy', true);
  app.use(requestId());
  app.use(corsPolicy(options.corsOrigins));
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', (_req, res, next) => {
    options.ready().then(() => res.json({ status: 'ready' }), next);
  });
  // The version check comes first so even a 401 carries the IC-Api-Version header.
  const limit: RequestHandler[] = options.rateLimits ? [options.rateLimits.perToken()] : [];
  app.use('/v1', inSequence([apiVersion(), authenticate(options.authenticator), ...limit, jsonBody(options.bodyLimit), refuseHostileInput()]));
  return app;
}

/**
 * Several middleware as one router layer: the same order and error semantics as listing them in
 * `app.use`, without the router matching and re-mounting the path once per middleware on every request.
 */
export function inSequence(handlers: readonly RequestHandler[]): RequestHandler {
  return (req, res, next) => {
    let index = 0;
    const step = (error?: unknown): void => {
      if (error !== undefined && error !== null) return next(error);
      const handler = handlers[index++];
      if (!handler) return next();
      try {
        // As express does for a handler that returns a promise: a rejection goes to the error handler.
        const returned: unknown = handler(req, res, step);
        if (returned instanceof Promise) returned.catch((rejection: unknown) => next(rejection ?? new Error('Rejected promise')));
      } catch (thrown) {
        next(thrown);
      }
    };
    step();
  };
}

/** Unknown routes and the single error-to-HTTP mapping; mount after every router. */
export function finishApp(app: Express, logger: Logger): void {
  app.use((req, _res, next) => next(apiError('unknown_route', { method: req.method, path: req.path })));
  app.use(errorHandler(logger));
}

interface HttpError {
  type?: string;
  status?: number;
  statusCode?: number;
  expose?: boolean;
}

/** Maps every error to OpenAI's envelope. Known client errors keep their status; anything else is a logged 500. */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const appError = toAppError(error);
    if (appError.status === 503) {
      // Expected during an outage, once per request: one line each, not a stack.
      logger.warn({ err: { message: (error as Error)?.message, code: sqlStateOf(error) }, requestId: res.locals.requestId, method: req.method, path: req.path }, 'request refused: dependency unavailable');
    } else if (appError.status >= 500) {
      logger.error({ err: error, requestId: res.locals.requestId, method: req.method, path: req.path }, 'request failed');
      // The request's server span (its status is set from the reply's 5xx when it ends).
      recordExceptionOnActiveSpan(error);
    }
    if (res.headersSent) {
      res.end();
      return;
    }
    for (const [name, value] of Object.entries(appError.headers)) res.setHeader(name, value);
    res.status(appError.status).json(appError.toEnvelope());
  };
}

export function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  const httpError = error as HttpError;
  switch (httpError?.type) {
    case 'entity.parse.failed':
      return apiError('invalid_json');
    case 'entity.too.large':
      return apiError('request_too_large');
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return apiError('unsupported_encoding');
    case 'request.aborted':
      return apiError('request_aborted');
    default:
      break;
  }
  if (isDependencyUnavailable(error)) return apiError('service_unavailable');
  const sqlState = sqlStateOf(error);
  // Text PostgreSQL cannot store (U+0000, invalid UTF-8) that got past the input checks is still the client's.
  if (sqlState === '22P05' || sqlState === '22021') return apiError('invalid_characters', { param: 'body' }, { param: null });
  if (error instanceof SchemaValidationError) return apiError('server_error', { storedData: true });
  const status = httpError?.status ?? httpError?.statusCode;
  // The router throws a URIError (status 400, but no `expose`) for a path parameter that is not valid percent-encoding.
  if (error instanceof URIError && status === 400) return apiError('invalid_path');
  if (typeof status === 'number' && status >= 400 && status < 500 && httpError.expose) {
    // express's own client errors (body-parser's, with `expose`) in our envelope.
    if (status === 413) return apiError('request_too_large');
    if (status === 415) return apiError('unsupported_media_type');
    return apiError('invalid_request', { message: (error as Error).message });
  }
  return apiError('server_error', {});
}

/** The SQLSTATE of a PostgreSQL error, also when slonik wraps it (`cause`). */
export function sqlStateOf(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current && typeof current === 'object'; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Socket-level failures reaching PostgreSQL or Redis. */
const UNREACHABLE_ERRNO = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);
/** pg-pool and ioredis say so only in their messages. */
const UNREACHABLE_MESSAGE = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Connection is closed\.|Reached the max retries per request limit)/;

/**
 * Whether the error means a dependency is out of reach rather than that the request is wrong: a 503
 * the client may retry. PostgreSQL classes: 08 (connection exception), 53300 (too many connections),
 * 57P01–57P03 (admin/crash shutdown, cannot connect now); slonik's connection and timeout errors;
 * refused or reset sockets.
 */
export function isDependencyUnavailable(error: unknown): boolean {
  if (
    error instanceof ConnectionError ||
    error instanceof BackendTerminatedError ||
    error instanceof BackendTerminatedUnexpectedlyError ||
    error instanceof StatementTimeoutError
  ) {
    return true;
  }
  const sqlState = sqlStateOf(error);
  if (sqlState && (sqlState.startsWith('08') || sqlState === '53300' || /^57P0[123]$/.test(sqlState))) return true;
  let current: unknown = error;
  // Duck-typed: errors from Node's own sockets need not share this realm's Error (jest, vm).
  for (let depth = 0; depth < 5 && current && typeof current === 'object'; depth++) {
    const { code, message, cause } = current as { code?: unknown; message?: unknown; cause?: unknown };
    if (typeof code === 'string' && UNREACHABLE_ERRNO.has(code)) return true;
    if (typeof message === 'string' && UNREACHABLE_MESSAGE.test(message)) return true;
    current = cause;
  }
  return false;
}

/**
 * /healthz (process alive) and /readyz (dependencies reachable) for processes that serve no API, such
 * as queue workers, so Kubernetes probes treat every component alike.
 */
export function startHealthServer(port: number, ready: () => Promise<void>): { close(): Promise<void> } {
  const server = createServer((req, res) => {
    const check = req.url === '/readyz' ? ready() : Promise.resolve();
    check.then(
      () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}'),
      () => res.writeHead(503, { 'content-type': 'application/json' }).end('{"status":"unavailable"}'),
    );
  }).listen(port);
  return { close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/**
 * Stops accepting connections and resolves once the open ones are done. `endLongRequests` runs right
 * after, so long-lived replies (SSE relays) can end instead of holding the shutdown until its deadline.
 */
export function closeHttpServer(server: Server, endLongRequests: () => void = () => undefined): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  endLongRequests();
  server.closeIdleConnections();
  return closed;
}
