/** Plain-fetch access to a running service, for what the openai client cannot express (our extensions, raw bodies). */
export interface HttpReply {
  status: number;
  headers: Headers;
  /** The parsed JSON body, or undefined when the body is not JSON. */
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  text: string;
}

export interface HttpRequest {
  /** Sent as `Authorization: Bearer …` unless undefined. */
  token?: string;
  /** JSON-encoded with `Content-Type: application/json`. */
  body?: unknown;
  /** Sent as is (with `Content-Type: application/json` unless a content-type header is given). */
  raw?: string | Buffer;
  headers?: Record<string, string>;
}

export async function httpRequest(origin: string, method: string, path: string, request: HttpRequest = {}): Promise<HttpReply> {
  const headers: Record<string, string> = {};
  if (request.token !== undefined) headers.authorization = `Bearer ${request.token}`;
  let body: string | Buffer | undefined;
  if (request.raw !== undefined) {
    body = request.raw;
    headers['content-type'] = 'application/json';
  } else if (request.body !== undefined) {
    body = JSON.stringify(request.body);
    headers['content-type'] = 'application/json';
  }
  Object.assign(headers, request.headers);
  const response = await fetch(`${origin}${path}`, { method, headers, body: typeof body === 'string' || body === undefined ? body : new Uint8Array(body) });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, json, text };
}

/**
 * Asserts OpenAI's error envelope: exactly `{error:{message,type,param,code}}` with a non-empty message,
 * served as JSON with an x-request-id.
 */
export function expectError(reply: HttpReply, status: number, expected: { code?: string | null; param?: string | null; type?: string } = {}): void {
  const summary = `${reply.status} ${reply.text.slice(0, 300)}`;
  expect({ status: reply.status, summary }).toEqual({ status, summary });
  expect(reply.headers.get('content-type')).toMatch(/^application\/json/);
  expect(reply.headers.get('x-request-id')).toMatch(/^\S+$/);
  expect(Object.keys(reply.json ?? {})).toEqual(['error']);
  const error = reply.json.error;
  expect(Object.keys(error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(typeof error.message).toBe('string');
  expect(error.message.length).toBeGreaterThan(0);
  expect(typeof error.type).toBe('string');
  if (expected.code !== undefined) expect(error.code).toBe(expected.code);
  if (expected.param !== undefined) expect(error.param).toBe(expected.param);
  if (expected.type !== undefined) expect(error.type).toBe(expected.type);
}
