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
    /** Extra response headers, e.g. `x-should-retry`. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  toEnvelope() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = 'invalid_request') =>
  new AppError(400, 'invalid_request_error', message, param, code);
export const unauthorized = (message: string, code = 'invalid_api_key') =>
  new AppError(401, 'authentication_error', message, null, code);
export const forbidden = (message: string, code = 'insufficient_scope') => new AppError(403, 'permission_error', message, null, code);
export const notFound = (message: string, param: string | null = null) =>
  new AppError(404, 'not_found_error', message, param, 'not_found');
export const unavailable = (message: string) =>
  new AppError(503, 'service_unavailable', message, null, 'service_unavailable');
