/**
 * The one error type the services throw on purpose. The HTTP layer renders it in OpenAI's envelope
 * `{error:{message,type,param,code}}`; anything else becomes a logged 500.
 */
export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'conflict_error'
  | 'rate_limit_error'
  | 'server_error'
  | 'service_unavailable';

export class AppError extends Error {
  override name = 'AppError';
  constructor(
    readonly status: number,
    readonly type: ErrorType,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers, e.g. `retry-after`. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  toEnvelope() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

interface CatalogEntry<A> {
  status: number;
  type: ErrorType;
  message: (args: A) => string;
  /** The `param` the error names when the call site does not say. */
  param?: string | ((args: A) => string | null);
  headers?: Record<string, string>;
}

const entry = <A = void>(status: number, type: ErrorType, message: (args: A) => string, extra: Omit<CatalogEntry<A>, 'status' | 'type' | 'message'> = {}): CatalogEntry<A> => ({
  status,
  type,
  message,
  ...extra,
});

const RETRY_SHORTLY = { 'retry-after': '1' };

/**
 * Every error code the API answers with: its status, type and message template. Throw them with
 * `apiError(code, args)`; nothing else builds an AppError (the lint config enforces it), so a code
 * means one thing everywhere and this table is the list a client can program against.
 */
export const ERROR_CATALOG = {
  // Request shape (HTTP layer, zod contracts)
  invalid_request: entry<{ message: string }>(400, 'invalid_request_error', (a) => a.message),
  invalid_value: entry<{ param: string; reason: string }>(400, 'invalid_request_error', (a) => `Invalid '${a.param}': ${a.reason}`.replace(/\.?$/, '.'), { param: (a) => a.param }),
  unknown_parameter: entry<{ param: string }>(400, 'invalid_request_error', (a) => `Unknown parameter: '${a.param}'.`, { param: (a) => a.param }),
  missing_required_parameter: entry<{ param: string }>(400, 'invalid_request_error', (a) => `Missing required parameter: '${a.param}'.`, { param: (a) => a.param }),
  unsupported_parameter: entry<{ param: string; why: string }>(400, 'invalid_request_error', (a) => a.why, { param: (a) => a.param }),
  invalid_characters: entry<{ param: string }>(400, 'invalid_request_error', (a) => `Invalid '${a.param}': text must not contain NUL characters (U+0000) or unpaired UTF-16 surrogates.`, { param: (a) => a.param }),
  nesting_too_deep: entry<{ param: string; maxDepth: number }>(400, 'invalid_request_error', (a) => `Invalid '${a.param}': values may nest at most ${a.maxDepth} levels deep.`, { param: (a) => a.param }),
  invalid_json: entry(400, 'invalid_request_error', () => 'We could not parse the JSON body of your request. Check that it is valid JSON.'),
  request_too_large: entry(413, 'invalid_request_error', () => 'The request body is too large.'),
  unsupported_media_type: entry(415, 'invalid_request_error', () => 'Send the request body as JSON with Content-Type: application/json.'),
  unsupported_encoding: entry(415, 'invalid_request_error', () => 'Unsupported body encoding; send UTF-8 JSON.'),
  request_aborted: entry(400, 'invalid_request_error', () => 'The request was aborted by the client.'),
  invalid_path: entry(400, 'invalid_request_error', () => 'The request path is not valid percent-encoding.'),
  headers_too_large: entry(431, 'invalid_request_error', () => 'The request headers (or the URL) are too large.'),
  malformed_request: entry(400, 'invalid_request_error', () => 'The HTTP request is malformed.'),
  request_timeout: entry(408, 'invalid_request_error', () => 'The request was not received in time.'),
  unknown_route: entry<{ method: string; path: string }>(404, 'not_found_error', (a) => `Unknown route: ${a.method} ${a.path}`),
  console_not_built: entry(404, 'not_found_error', () => 'The console is not built: run `npm run build:console` (npm start, npm test and the image build run it).'),
  unsupported_api_version: entry<{ requested: string; supported: readonly string[] }>(
    400,
    'invalid_request_error',
    (a) => `Unknown IC-Api-Version '${a.requested}'. Supported: ${a.supported.join(', ')}.`,
    { param: 'IC-Api-Version' },
  ),

  // Authentication and authorisation
  missing_api_key: entry(401, 'authentication_error', () => 'Missing bearer token: send it as "Authorization: Bearer <token>".'),
  invalid_api_key: entry<{ malformed?: boolean }>(401, 'authentication_error', (a) => (a.malformed ? 'Malformed Authorization header: expected "Bearer <token>".' : 'Invalid token.')),
  token_revoked: entry(401, 'authentication_error', () => 'This token has been revoked.'),
  token_expired: entry(401, 'authentication_error', () => 'This token has expired.'),
  insufficient_scope: entry<{ scope: string }>(403, 'permission_error', (a) => `This token lacks the '${a.scope}' scope required for this request.`),
  smith_mismatch: entry(403, 'permission_error', () => 'A smith token acts only on its own smith; drop the IC-Smith-Id header or send its own id.'),
  missing_smith_id: entry(400, 'invalid_request_error', () => 'A tenant-admin token must name the smith it acts for in the IC-Smith-Id header.', { param: 'IC-Smith-Id' }),
  invalid_smith_id: entry<{ requested: string }>(400, 'invalid_request_error', (a) => `IC-Smith-Id '${a.requested}' is not a smith id (smt_…).`, { param: 'IC-Smith-Id' }),
  rate_limit_exceeded: entry<{ limit: number; per: 'turns per minute for this smith' | 'requests per minute for this token'; retryAfterSeconds: number }>(
    429,
    'rate_limit_error',
    (a) => `Rate limit reached: at most ${a.limit} ${a.per}. Try again in ${a.retryAfterSeconds} s.`,
  ),

  // Resources
  not_found: entry<{ resource: string; id: string; within?: string }>(404, 'not_found_error', (a) => `${a.resource} with id '${a.id}' not found${a.within ? ` in ${a.within}` : ''}.`),
  invalid_cursor: entry<{ otherListing?: boolean }>(
    400,
    'invalid_request_error',
    (a) =>
      a.otherListing
        ? 'This cursor belongs to a listing with a different sort_by, order, metadata filter or q; repeat the original query.'
        : 'The cursor is invalid or has expired; start again without it.',
    { param: 'cursor' },
  ),
  invalid_after: entry<{ after: string; kind: 'item' | 'input item'; within: string }>(400, 'invalid_request_error', (a) => `No ${a.kind} '${a.after}' in ${a.within}.`, { param: 'after' }),
  metadata_too_large: entry<{ max: number; count: number }>(400, 'invalid_request_error', (a) => `metadata may hold at most ${a.max} pairs; this update would leave ${a.count}.`, { param: 'metadata' }),
  items_read_only: entry(
    405,
    'invalid_request_error',
    () => 'Conversation items are read-only: they accrue from the runs you drive with POST /v1/responses and the conversation parameter.',
    { headers: { allow: 'GET' } },
  ),

  // Turns
  conversation_locked: entry(400, 'invalid_request_error', () => 'Another process is currently operating on this conversation. Please retry in a few seconds.', { param: 'conversation' }),
  previous_response_not_found: entry<{ id: string }>(400, 'invalid_request_error', (a) => `Previous response with id '${a.id}' not found.`, { param: 'previous_response_id' }),
  previous_response_in_progress: entry<{ id: string; status: string }>(400, 'invalid_request_error', (a) => `Previous response '${a.id}' is still ${a.status}; wait for it to finish.`, { param: 'previous_response_id' }),
  idempotency_key_reused: entry(
    422,
    'invalid_request_error',
    () => 'This Idempotency-Key was already used with a different request body. Use a new key for a new request.',
    { param: 'Idempotency-Key' },
  ),
  item_not_found: entry<{ id: string }>(400, 'invalid_request_error', (a) => `Item with id '${a.id}' not found.`),
  response_not_cancellable: entry<{ status: string }>(400, 'invalid_request_error', (a) => `Cannot cancel a response that is already ${a.status}.`, { param: 'response_id' }),
  response_in_progress: entry<{ id: string; status: string }>(400, 'invalid_request_error', (a) => `Response '${a.id}' is still ${a.status}; cancel it before deleting it.`, { param: 'response_id' }),
  queue_unavailable: entry(503, 'service_unavailable', () => 'Turns cannot be queued right now; nothing was saved. Retry shortly.', { headers: RETRY_SHORTLY }),

  // The server's side
  service_unavailable: entry(503, 'service_unavailable', () => 'The database is unavailable; try again shortly.', { headers: RETRY_SHORTLY }),
  server_error: entry<{ storedData?: boolean }>(500, 'server_error', (a) =>
    a.storedData ? 'The server failed to read stored data.' : 'The server had an error while processing your request.',
  ),
} as const;

export type ErrorCode = keyof typeof ERROR_CATALOG;
type ArgsOf<C extends ErrorCode> = (typeof ERROR_CATALOG)[C] extends CatalogEntry<infer A> ? A : never;

export interface ApiErrorOverrides {
  /** Names the offending parameter when the catalog's default does not fit. */
  param?: string | null;
  /** Extra response headers (merged over the catalog's). */
  headers?: Record<string, string>;
}

/** The AppError for a catalogued code: `throw apiError('conversation_locked')`, `apiError('not_found', { resource: 'Conversation', id })`. */
export function apiError<C extends ErrorCode>(code: C, ...rest: ArgsOf<C> extends void ? [args?: undefined, overrides?: ApiErrorOverrides] : [args: ArgsOf<C>, overrides?: ApiErrorOverrides]): AppError {
  const [args, overrides = {}] = rest;
  const catalogued = ERROR_CATALOG[code] as CatalogEntry<ArgsOf<C>>;
  const defaultParam = typeof catalogued.param === 'function' ? catalogued.param(args as ArgsOf<C>) : (catalogued.param ?? null);
  return new AppError(
    catalogued.status,
    catalogued.type,
    catalogued.message(args as ArgsOf<C>),
    overrides.param !== undefined ? overrides.param : defaultParam,
    code,
    { ...catalogued.headers, ...overrides.headers },
  );
}

/**
 * A synchronous turn that failed, answered in OpenAI's error envelope with the run's own error code and
 * message (the one error whose code comes from the run, not from this catalog), so every client surfaces
 * the message: the AI SDK cannot parse a failed Response body and the Agents SDK drops its message. 400,
 * because it is the one status that neither the `openai` client (5xx, 408, 409, 429), the AI SDK (the
 * same) nor LangChain (anything but 400–407, 409, 413) retries by itself: a retry would run the turn
 * again. The run stays readable by its id, named in `IC-Response-Id`.
 */
export function failedTurnError(responseId: string, runError: { code: string; message: string } | null | undefined): AppError {
  const error = runError ?? { code: 'server_error', message: 'The turn failed.' };
  const type: ErrorType = error.code === 'invalid_prompt' || error.code === 'model_not_found' ? 'invalid_request_error' : 'server_error';
  return new AppError(400, type, error.message, null, error.code, { 'ic-response-id': responseId });
}
