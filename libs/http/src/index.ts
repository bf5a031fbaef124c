import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import cors from 'cors';
import express, { type ErrorRequestHandler, type Express, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { z } from 'zod';
import { ConnectionError, SchemaValidationError } from 'slonik';
import { API_VERSIONS, AppError, badRequest, CURRENT_API_VERSION } from '@ic/schemas';
import { SMITH_HEADER, type Authenticator, type Principal, type Scope, requireScope } from '@ic/auth';
import type { SmithRow } from '@ic/schemas';
import type { Logger } from '@ic/telemetry';
import type { RateLimits } from './rate-limit';

export { RateLimits, type RateLimitOptions } from './rate-limit';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Locals {
      requestId: string;
      principal?: Principal;
      apiVersion: string;
    }
  }
}

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
      next(badRequest(`Unknown IC-Api-Version '${requested}'. Supported: ${API_VERSIONS.join(', ')}.`, 'IC-Api-Version', 'unsupported_api_version'));
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

/** The verified caller; routes behind `authenticate` always have one. */
export function principalOf(res: Response): Principal {
  const principal = res.locals.principal;
  if (!principal) throw new Error('principalOf called on an unauthenticated route');
  return principal;
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
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  if (issue.code === z.ZodIssueCode.unrecognized_keys) {
    const key = issue.keys[0]!;
    const param = [paramPrefix, ...issue.path, key].filter((part) => part !== undefined && part !== '').join('.');
    throw badRequest(`Unknown parameter: '${param}'.`, param, 'unknown_parameter');
  }
  const param = formatParam([...(paramPrefix ? [paramPrefix] : []), ...issue.path]);
  const expected = issue.code === z.ZodIssueCode.invalid_type ? ` (expected ${issue.expected}, got ${issue.received})` : '';
  const message = issue.code === z.ZodIssueCode.invalid_type && issue.received === 'undefined' ? `Missing required parameter: '${param}'.` : `Invalid '${param || 'body'}': ${issue.message}${expected}.`;
  throw badRequest(message.replace(/\.\.$/, '.'), param || null, issue.code === z.ZodIssueCode.invalid_type && issue.received === 'undefined' ? 'missing_required_parameter' : 'invalid_value');
}

function formatParam(path: ReadonlyArray<string | number>): string {
  return path.reduce<string>((out, part) => (typeof part === 'number' ? `${out}[${part}]` : out ? `${out}.${part}` : part), '');
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
          return next(
            new AppError(415, 'invalid_request_error', 'Send the request body as JSON with Content-Type: application/json.', null, 'unsupported_media_type'),
          );
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
    exposedHeaders: ['x-request-id', 'IC-Api-Version', 'Retry-After', 'x-ratelimit-limit-requests', 'x-ratelimit-remaining-requests', 'x-ratelimit-reset-requests', 'x-ratelimit-limit-turns', 'x-ratelimit-remaining-turns', 'x-ratelimit-reset-turns'],
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
  app.use('/v1', inSequence([apiVersion(), authenticate(options.authenticator), ...limit, jsonBody(options.bodyLimit)]));
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
  app.use((req, _res, next) => next(new AppError(404, 'not_found_error', `Unknown route: ${req.method} ${req.path}`, null, 'unknown_route')));
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
    if (appError.status >= 500) {
      logger.error({ err: error, requestId: res.locals.requestId, method: req.method, path: req.path }, 'request failed');
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
      return badRequest('We could not parse the JSON body of your request. Check that it is valid JSON.', null, 'invalid_json');
    case 'entity.too.large':
      return new AppError(413, 'invalid_request_error', 'The request body is too large.', null, 'request_too_large');
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return new AppError(415, 'invalid_request_error', 'Unsupported body encoding; send UTF-8 JSON.', null, 'unsupported_encoding');
    case 'request.aborted':
      return badRequest('The request was aborted by the client.', null, 'request_aborted');
    default:
      break;
  }
  if (error instanceof ConnectionError) {
    return new AppError(503, 'service_unavailable', 'The database is unavailable; try again shortly.', null, 'service_unavailable', { 'retry-after': '1' });
  }
  if (error instanceof SchemaValidationError) {
    return new AppError(500, 'server_error', 'The server failed to read stored data.', null, 'server_error');
  }
  const status = httpError?.status ?? httpError?.statusCode;
  // The router throws a URIError (status 400, but no `expose`) for a path parameter that is not valid percent-encoding.
  if (error instanceof URIError && status === 400) {
    return badRequest('The request path is not valid percent-encoding.', null, 'invalid_path');
  }
  if (typeof status === 'number' && status >= 400 && status < 500 && httpError.expose) {
    return new AppError(status, 'invalid_request_error', (error as Error).message, null, 'invalid_request');
  }
  return new AppError(500, 'server_error', 'The server had an error while processing your request.', null, 'server_error');
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
