/**
 * A real OpenAI-compatible Chat Completions server on 127.0.0.1, scriptable per test:
 * `POST /v1/chat/completions` (streaming SSE in the exact chunk format, or a plain completion) and `GET /v1/models`.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionCreateParams, ChatCompletionMessageParam } from 'openai/resources/chat/completions';

export interface FakeToolCall {
  name: string;
  arguments: string;
  /** Defaults to `call_fake_<n>`. */
  id?: string;
}
/** What the fake model answers: text, or tool calls (optionally preceded by text). */
export type FakeReply = string | { text?: string; toolCalls: FakeToolCall[] };

export interface FakeUpstreamOptions {
  /** Default: `Fake reply to N messages. Last: "<text of the last message>".` */
  reply?: FakeReply | ((request: ChatCompletionCreateParams) => FakeReply);
  /** Delay between streamed chunks. */
  tokenDelayMs?: number;
  /** Delay between the response headers and the first chunk. */
  firstTokenDelayMs?: number;
  /** Known model names: others get a 404 `model_not_found`. Default: every name is accepted. */
  models?: string[];
  /** Required bearer token: anything else gets a 401. Default: no check. */
  apiKey?: string;
  /** Leave usage out even when the client asks for it (like some local servers). */
  omitUsage?: boolean;
  /** Reported as usage.prompt_tokens_details.cached_tokens. */
  cachedTokens?: number;
  /**
   * A requests-per-window limit, one per model (OpenAI meters each model apart).
   * - `window` (default): a chat request that would be the `requests + 1`-th for its model within the
   *   last `windowMs` gets a 429 whose `retry-after-ms` says when the oldest of them leaves the window.
   * - `bucket`, OpenAI's own: `requests` of capacity, refilled evenly over `windowMs`. Every answer,
   *   admitted or refused, carries `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests` and
   *   `x-ratelimit-reset-requests` (the time until the bucket is full again); a 429 names its wait only
   *   through them. A refused request takes nothing from the bucket.
   *   With `tokens`, a second bucket of that many tokens, refilled evenly over the same window, as
   *   OpenAI's tokens-per-minute limit: a request is charged when admitted what OpenAI reserves for it,
   *   its prompt's characters ÷ 4 plus its `max_completion_tokens` (requestTokenCharge), and is admitted
   *   only if both buckets hold what it needs. Every answer then carries the `x-ratelimit-*-tokens`
   *   headers too.
   */
  rateLimit?: { requests: number; windowMs: number; style?: 'window' | 'bucket'; tokens?: number };
  /** How long an admitted request waits before its answer starts, status and headers included (a model's time to first token). */
  answerDelayMs?: number;
}

export interface FakeUpstream {
  /** `http://127.0.0.1:PORT/v1` */
  readonly baseURL: string;
  /** Every chat completions request body, in arrival order. */
  readonly requests: ChatCompletionCreateParams[];
  /** When each of `requests` arrived (Date.now()). */
  readonly requestTimes: number[];
  /** How many chat requests were answered 429 by `throttleFor` or `rateLimit`. */
  readonly throttledCount: number;
  /** When each of those 429s was answered (Date.now()), oldest first. */
  readonly throttledTimes: number[];
  /** How many responses the client abandoned (closed the connection) before they were finished. */
  readonly abortedCount: number;
  /**
   * Acts as a tripped rate limiter for the next `windowMs`: every chat request arriving in that window
   * gets a 429 naming the time left in `header` (`retry-after-ms`, whole seconds in `retry-after`, or
   * OpenAI's `x-ratelimit-reset-requests` with `x-ratelimit-remaining-requests: 0`). With `model`, only
   * requests for that model are refused, as OpenAI meters each model's quota apart.
   */
  throttleFor(windowMs: number, header?: ThrottleHeader, model?: string): void;
  /** Changes options for the following requests. */
  set(options: FakeUpstreamOptions): void;
  /** The next `count` chat requests get `status` with `body` (default: an OpenAI-style error object) and any extra `headers`. */
  failNext(status: number, count?: number, body?: unknown, headers?: Record<string, string>): void;
  /**
   * The next chat request is accepted and then never answered until the client gives up; with `afterChunks`,
   * a stream stalls after that many SSE chunks (the first chunk is the role chunk, then one per word).
   */
  hangNext(afterChunks?: number): void;
  /** The next chat request's connection is destroyed: before any response, or after `afterChunks` SSE chunks. */
  dropConnectionNext(afterChunks?: number): void;
  /** Resolves once `count` chat requests have arrived. */
  waitForRequests(count: number): Promise<void>;
  /** Resolves once `count` responses have been abandoned by the client. */
  waitForAborts(count: number): Promise<void>;
  /** Forgets requests, the abort count and scripted behaviour; options go back to those given at start. */
  reset(): void;
  close(): Promise<void>;
}

type Script = { kind: 'fail'; status: number; body: unknown; headers?: Record<string, string> } | { kind: 'hang' | 'drop'; afterChunks: number };
export type ThrottleHeader = 'retry-after-ms' | 'retry-after' | 'x-ratelimit-reset-requests';

/**
 * One of OpenAI's limits for one model: `limit` requests (or tokens) of capacity, refilled evenly over
 * `windowMs`, full at first. A refused request takes nothing. `peek` and `take` return what OpenAI
 * reports on every answer (whole units remaining, the time until full) and the wait until the bucket
 * holds `amount` (0 when it does).
 */
export class LimitBucket {
  private level: number;
  private readonly perMs: number;

  constructor(
    readonly limit: number,
    windowMs: number,
    private at: number,
  ) {
    this.level = limit;
    this.perMs = limit / windowMs;
  }

  /** Whether `amount` could be taken now. */
  holds(now: number, amount = 1): boolean {
    this.refill(now);
    return this.level >= amount;
  }

  /** Takes `amount` if the bucket holds it. */
  take(now: number, amount = 1): { admitted: boolean; remaining: number; untilFullMs: number; waitMs: number } {
    const admitted = this.holds(now, amount);
    if (admitted) this.level -= amount;
    return { admitted, ...this.peek(now, admitted ? 0 : amount) };
  }

  /** What OpenAI would report now, taking nothing. */
  peek(now: number, amount = 1): { remaining: number; untilFullMs: number; waitMs: number } {
    this.refill(now);
    return {
      remaining: Math.floor(this.level),
      untilFullMs: Math.ceil((this.limit - this.level) / this.perMs),
      waitMs: Math.max(0, Math.ceil((amount - this.level) / this.perMs)),
    };
  }

  private refill(now: number): void {
    this.level = Math.min(this.limit, this.level + (now - this.at) * this.perMs);
    this.at = now;
  }
}

/**
 * What OpenAI's token limit reserves for a chat request when it admits it: the estimate from its
 * prompt's characters (÷ 4) plus the completion tokens it may produce. (The service estimates the same
 * reservation on its own, from the request it sends.)
 */
export function requestTokenCharge(body: ChatCompletionCreateParams): number {
  const promptChars = (body.messages ?? []).reduce((sum, message) => sum + contentText(message.content).length, 0);
  return Math.ceil(promptChars / 4) + (body.max_completion_tokens ?? body.max_tokens ?? 0);
}

export async function startFakeUpstream(initial: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
  let options: FakeUpstreamOptions = { ...initial };
  let scripts: Script[] = [];
  const requests: ChatCompletionCreateParams[] = [];
  const requestTimes: number[] = [];
  let throttle: { until: number; header: ThrottleHeader; model?: string } | undefined;
  const throttledTimes: number[] = [];
  /** When the requests `rateLimit` admitted arrived, per model, oldest first. */
  let admitted = new Map<string, number[]>();
  /** The `bucket` style's buckets per model: requests, and tokens when the limit has them. */
  let buckets = new Map<string, { requests: LimitBucket; tokens?: LimitBucket }>();
  /**
   * `bucket` style: takes one request, and the request's tokens, from the model's buckets if both hold
   * them (else nothing); the wait (0 when admitted) and OpenAI's headers.
   */
  const takeFromBucket = (
    limit: NonNullable<FakeUpstreamOptions['rateLimit']>,
    body: ChatCompletionCreateParams,
    now: number,
  ): { waitMs: number; refusedFor: 'requests' | 'tokens'; headers: Record<string, string> } => {
    let bucket = buckets.get(body.model);
    if (!bucket) {
      bucket = { requests: new LimitBucket(limit.requests, limit.windowMs, now), tokens: limit.tokens ? new LimitBucket(limit.tokens, limit.windowMs, now) : undefined };
      buckets.set(body.model, bucket);
    }
    const charge = bucket.tokens ? requestTokenCharge(body) : 0;
    // Admitted only if both hold what it needs; a refusal takes from neither.
    const tokensHeld = bucket.tokens?.holds(now, charge) ?? true;
    const admitted = tokensHeld && bucket.requests.holds(now);
    const requests = admitted ? bucket.requests.take(now) : bucket.requests.peek(now);
    const tokens = bucket.tokens && (admitted ? bucket.tokens.take(now, charge) : bucket.tokens.peek(now, charge));
    const headers: Record<string, string> = {
      'x-ratelimit-limit-requests': String(limit.requests),
      'x-ratelimit-remaining-requests': String(requests.remaining),
      'x-ratelimit-reset-requests': `${requests.untilFullMs}ms`,
    };
    if (tokens) {
      headers['x-ratelimit-limit-tokens'] = String(limit.tokens);
      headers['x-ratelimit-remaining-tokens'] = String(tokens.remaining);
      headers['x-ratelimit-reset-tokens'] = `${tokens.untilFullMs}ms`;
    }
    return { waitMs: Math.max(requests.waitMs, tokens?.waitMs ?? 0), refusedFor: tokensHeld ? 'requests' : 'tokens', headers };
  };
  /** 0 and the request counts against its model's limit, or how long until it would be admitted. */
  const rateLimitWait = (limit: { requests: number; windowMs: number }, model: string, now: number): number => {
    const window = (admitted.get(model) ?? []).filter((at) => at > now - limit.windowMs);
    admitted.set(model, window);
    if (window.length < limit.requests) {
      window.push(now);
      return 0;
    }
    return window[0]! + limit.windowMs - now;
  };
  let abortedCount = 0;
  let completionCount = 0;
  const waiters = new Set<() => boolean>();
  const notify = () => waiters.forEach((check) => check() && waiters.delete(check));
  const waitFor = (condition: () => boolean) =>
    new Promise<void>((resolve) => {
      const check = () => (condition() ? (resolve(), true) : false);
      if (!check()) waiters.add(check);
    });

  const server = http.createServer(async (req, res) => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    const authorised = options.apiKey === undefined || req.headers.authorization === `Bearer ${options.apiKey}`;
    const unauthorised = () => sendError(res, 401, 'Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key');
    if (req.method === 'GET' && path === '/v1/models') {
      if (!authorised) return unauthorised();
      const data = (options.models ?? ['fake-model']).map((id) => ({ id, object: 'model', created: 0, owned_by: 'fake' }));
      return sendJson(res, 200, { object: 'list', data });
    }
    if (req.method !== 'POST' || path !== '/v1/chat/completions') {
      return sendError(res, 404, `Unknown request URL: ${req.method} ${path}`, 'invalid_request_error', 'unknown_url');
    }
    let body: ChatCompletionCreateParams;
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ChatCompletionCreateParams;
    } catch {
      return sendError(res, 400, 'We could not parse the JSON body of your request.', 'invalid_request_error', null);
    }
    requests.push(body);
    const arrived = Date.now();
    requestTimes.push(arrived);
    // A request refused by `throttleFor` does not count against `rateLimit`'s window.
    const trippedFor = throttle && (throttle.model === undefined || throttle.model === body.model) ? throttle.until - arrived : 0;
    const bucket = trippedFor <= 0 && options.rateLimit?.style === 'bucket' ? takeFromBucket(options.rateLimit, body, arrived) : undefined;
    for (const [name, value] of Object.entries(bucket?.headers ?? {})) res.setHeader(name, value);
    const throttledFor =
      trippedFor > 0 ? trippedFor : bucket ? bucket.waitMs : options.rateLimit ? rateLimitWait(options.rateLimit, body.model, arrived) : 0;
    if (throttledFor > 0) {
      throttledTimes.push(arrived);
      notify();
      const header = throttle?.header ?? 'retry-after-ms';
      const headers: Record<string, string> = bucket
        ? {}
        : header === 'retry-after-ms'
          ? { 'retry-after-ms': String(throttledFor) }
          : header === 'retry-after'
            ? { 'retry-after': String(Math.ceil(throttledFor / 1000)) }
            : { 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': `${throttledFor}ms` };
      for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
      // OpenAI's wording names the limit: "Rate limit reached for gpt-4o … on tokens per min (TPM): …".
      const per = bucket?.refusedFor === 'tokens' ? 'tokens' : 'requests';
      return sendError(res, 429, `Rate limit reached for ${body.model} on ${per} per min.`, per, 'rate_limit_exceeded');
    }
    const invalidOrder = toolMessageOrderError(body.messages ?? []);
    if (invalidOrder) return sendJson(res, 400, { error: { ...invalidOrder, type: 'invalid_request_error', code: null } });
    // Count responses the client abandons, and stop working on them.
    const gone = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) {
        abortedCount++;
        notify();
      }
      gone.abort();
    });
    notify();

    const script = scripts.shift();
    if (script?.kind === 'fail') {
      for (const [name, value] of Object.entries(script.headers ?? {})) res.setHeader(name, value);
      if (script.body === undefined) {
        const type = script.status >= 500 ? 'server_error' : 'invalid_request_error';
        return sendError(res, script.status, `Fake upstream failure ${script.status}`, type, null);
      }
      return typeof script.body === 'string' ? sendText(res, script.status, script.body) : sendJson(res, script.status, script.body);
    }
    if (script?.afterChunks === 0) {
      if (script.kind === 'drop') req.socket.destroy();
      return; // hang: never answer; the socket closes when the client gives up
    }
    if (!authorised) return unauthorised();
    if (options.models && !options.models.includes(body.model)) {
      return sendError(res, 404, `The model \`${body.model}\` does not exist or you do not have access to it.`, 'invalid_request_error', 'model_not_found');
    }

    const reply = typeof options.reply === 'function' ? options.reply(body) : (options.reply ?? defaultReply(body));
    const completion = build(body, reply, ++completionCount, options.cachedTokens ?? 0);
    if (options.answerDelayMs) await sleep(options.answerDelayMs, gone.signal);
    if (gone.signal.aborted) return;
    if (!body.stream) return sendJson(res, 200, completion.full);

    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
    const withUsage = body.stream_options?.include_usage === true;
    const chunks = completion.chunks.map((chunk) => (withUsage ? { ...chunk, usage: null } : chunk));
    if (withUsage && !options.omitUsage) chunks.push({ ...completion.chunks[0]!, choices: [], usage: completion.full.usage! });
    for (const [index, chunk] of chunks.entries()) {
      if (script && index === script.afterChunks) {
        if (script.kind === 'drop') res.socket?.destroy();
        return;
      }
      const delay = index === 0 ? options.firstTokenDelayMs : options.tokenDelayMs;
      if (delay) await sleep(delay, gone.signal);
      if (gone.signal.aborted) return;
      // Wait for each chunk to be flushed, so that a scripted drop or hang happens after it was delivered.
      await new Promise<void>((resolve) => res.write(`data: ${JSON.stringify(chunk)}\n\n`, () => resolve()));
    }
    res.end('data: [DONE]\n\n');
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    requests,
    requestTimes,
    get abortedCount() {
      return abortedCount;
    },
    get throttledCount() {
      return throttledTimes.length;
    },
    get throttledTimes() {
      return throttledTimes;
    },
    throttleFor(windowMs, header = 'retry-after-ms', model) {
      throttle = { until: Date.now() + windowMs, header, model };
    },
    set(next) {
      options = { ...options, ...next };
    },
    failNext(status, count = 1, body, headers) {
      for (let i = 0; i < count; i++) scripts.push({ kind: 'fail', status, body, headers });
    },
    hangNext(afterChunks = 0) {
      scripts.push({ kind: 'hang', afterChunks });
    },
    dropConnectionNext(afterChunks = 0) {
      scripts.push({ kind: 'drop', afterChunks });
    },
    waitForRequests: (count) => waitFor(() => requests.length >= count),
    waitForAborts: (count) => waitFor(() => abortedCount >= count),
    reset() {
      options = { ...initial };
      scripts = [];
      requests.length = 0;
      requestTimes.length = 0;
      throttle = undefined;
      throttledTimes.length = 0;
      admitted = new Map();
      buckets = new Map();
      abortedCount = 0;
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
    },
  };
}

/**
 * OpenAI's rule for tool messages, with its 400s: an assistant message with `tool_calls` must be
 * followed directly by one `tool` message per call, and a `tool` message must answer such a call.
 * Enforced so that no test passes only because this fake is more lenient than a real upstream.
 */
export function toolMessageOrderError(messages: readonly ChatCompletionMessageParam[]): { message: string; param: string } | null {
  let index = 0;
  while (index < messages.length) {
    const message = messages[index]!;
    if (message.role === 'tool') {
      return { message: "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.", param: `messages.[${index}].role` };
    }
    const calls = message.role === 'assistant' ? (message.tool_calls ?? []) : [];
    const callsAt = index;
    index++;
    if (calls.length === 0) continue;
    const unanswered = new Set(calls.map((call) => call.id));
    while (index < messages.length && messages[index]!.role === 'tool') {
      const answer = messages[index] as Extract<ChatCompletionMessageParam, { role: 'tool' }>;
      if (!unanswered.delete(answer.tool_call_id)) {
        return { message: "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.", param: `messages.[${index}].role` };
      }
      index++;
    }
    if (unanswered.size > 0) {
      return {
        message: `An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: ${[...unanswered].join(', ')}`,
        param: `messages.[${callsAt}].role`,
      };
    }
  }
  return null;
}

/** Deterministic: names how many messages arrived and quotes the last one. */
function defaultReply(body: ChatCompletionCreateParams): string {
  const last = body.messages[body.messages.length - 1];
  return `Fake reply to ${body.messages.length} messages. Last: "${last ? contentText(last.content) : ''}".`;
}

function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((part: { text?: unknown }) => (typeof part.text === 'string' ? part.text : '')).join('\n');
}

const words = (text: string) => text.match(/\S+\s*/g) ?? [];

/** The reply as a full completion and as stream chunks (role chunk, content words, tool-call fragments, finish). */
function build(body: ChatCompletionCreateParams, reply: FakeReply, n: number, cachedTokens: number) {
  const id = `chatcmpl-fake-${n}`;
  const created = Math.floor(Date.now() / 1000);
  const fullText = typeof reply === 'string' ? reply : (reply.text ?? '');
  const toolCalls = typeof reply === 'string' ? [] : reply.toolCalls.map((call, i) => ({ ...call, id: call.id ?? `call_fake_${n}_${i}` }));
  // One word is one token: a token limit cuts the text and finishes with 'length', as a real model does.
  const limit = body.max_completion_tokens ?? body.max_tokens ?? null;
  const cut = limit !== null && words(fullText).length > limit;
  const text = cut ? words(fullText).slice(0, limit).join('') : fullText;
  const finishReason = cut ? 'length' : toolCalls.length > 0 ? 'tool_calls' : 'stop';

  const chunk = (delta: ChatCompletionChunk.Choice.Delta, finish: ChatCompletionChunk.Choice['finish_reason'] = null): ChatCompletionChunk => ({
    id, object: 'chat.completion.chunk', created, model: body.model, system_fingerprint: 'fp_fake',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  });
  const chunks = [chunk({ role: 'assistant', content: '', refusal: null })];
  for (const word of words(text)) chunks.push(chunk({ content: word }));
  toolCalls.forEach((call, index) => {
    chunks.push(chunk({ tool_calls: [{ index, id: call.id, type: 'function', function: { name: call.name, arguments: '' } }] }));
    for (const piece of call.arguments.match(/[\s\S]{1,8}/g) ?? []) chunks.push(chunk({ tool_calls: [{ index, function: { arguments: piece } }] }));
  });
  chunks.push(chunk({}, finishReason));

  const promptTokens = body.messages.reduce((sum, message) => sum + words(contentText(message.content)).length, 0);
  const completionTokens = chunks.length - 2;
  const full: ChatCompletion = {
    id, object: 'chat.completion', created, model: body.model, system_fingerprint: 'fp_fake',
    choices: [{
      index: 0, logprobs: null, finish_reason: finishReason,
      message: {
        role: 'assistant', content: text || null, refusal: null,
        ...(toolCalls.length > 0 ? { tool_calls: toolCalls.map((c) => ({ id: c.id, type: 'function' as const, function: { name: c.name, arguments: c.arguments } })) } : {}),
      },
    }],
    usage: {
      prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens,
      prompt_tokens_details: { cached_tokens: cachedTokens, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    },
  };
  return { full, chunks };
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

function sendText(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain' }).end(body);
}

function sendError(res: http.ServerResponse, status: number, message: string, type: string, code: string | null): void {
  sendJson(res, status, { error: { message, type, param: null, code } });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
