import { createHash, randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { createParser } from 'eventsource-parser';
import type { ChatCompletionChunk, ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { toChatMessages, toChatRequestOptions, type ChatRequestOptions } from './chat-messages';
import { trace } from '@opentelemetry/api';
import type { UpstreamHold, UpstreamLimitStore } from '@ic/schemas';
import { traceHttpClient, turnMetrics, type HttpClientCall } from '@ic/telemetry';
import { ModelError, type FinishReason, type ModelAdapter, type ModelErrorCode, type ModelEvent, type ModelRequest } from './types';
import { MAX_UPSTREAM_BACKOFF_MS, THROTTLING_STATUSES, UpstreamGates, upstreamBackoffMs, type UpstreamHoldPeers } from './upstream-backoff';
import { SharedRateLimitPacer } from './shared-pacing';
import { RateLimitPacer, limitReadings, type LimitReadings, type Pacer } from './upstream-pacing';

export interface OpenAICompatibleConfig {
  /** Base URL including the version prefix, e.g. `http://127.0.0.1:11434/v1`. */
  baseURL: string;
  apiKey: string;
  /** Idle timeout: give up when no response or chunk arrives for this long (MODEL_TIMEOUT_MS). */
  timeoutMs: number;
  /** The other processes calling this upstream: they hear our holds and we hear theirs. */
  peers?: UpstreamHoldPeers;
  /** Pace calls to the request and token limits the upstream's answers report (upstream-pacing.ts). Default true. */
  rateLimitPacing?: boolean;
  /** One mirror of the limits for every process calling the upstream (the queue backend's Redis); without it, each process paces on its own. */
  sharedLimits?: UpstreamLimitStore;
}

type Usage = Extract<ModelEvent, { type: 'done' }>['usage'];

/** A non-2xx answer: its status and what its body says (OpenAI's `{error: {message, code}}`, or the text). */
class UpstreamStatusError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly code: string | null,
    /** The wait its headers asked for (upstream-backoff.ts). */
    readonly backoffMs?: number,
  ) {
    super(`${status} ${detail}`);
  }
}

/** An `error` the upstream sent inside a stream it had already started with 200. */
class UpstreamStreamError extends Error {}

/** The request could not be sent or no answer came (refused, reset, DNS): `cause` says why. */
class UpstreamConnectionError extends Error {
  constructor(cause: Error) {
    super(cause.message, { cause });
  }
}

/** How long the end of a body may take after its [DONE] before the connection is dropped instead of kept. */
const DRAIN_AFTER_DONE_MS = 5000;

/** The largest error body read to quote its message; the rest is dropped. */
const MAX_ERROR_BODY_BYTES = 64 * 1024;

/**
 * A model adapter over any OpenAI-compatible Chat Completions upstream (OpenAI, vLLM, Ollama, llama.cpp,
 * LM Studio). Streams with `include_usage`; retries are left to the caller (`ModelError.retryable`).
 *
 * The HTTP is node:http on a keep-alive agent and the SSE framing is eventsource-parser's: a turn's
 * model call was the biggest share of a worker's CPU through the `openai` client (its fetch, web
 * streams and line decoder cost ≈1.5 ms of CPU per streamed call against ≈0.35 ms this way).
 */
export class OpenAICompatibleAdapter implements ModelAdapter {
  readonly name = 'openai-compatible';
  private readonly baseURL: string;
  private readonly endpoint: URL;
  private readonly apiKey: string;
  private readonly timeoutMs: number;
  private readonly agent: http.Agent;
  private readonly transport: typeof http | typeof https;
  /** Closed while the upstream has asked us to back off (429/503 with a wait): no such call of this process goes out. */
  private readonly gates = new UpstreamGates();
  /** Each model's request and token limits as the upstream's answers report them: calls wait for them here rather than meet a 429. */
  private readonly pacers = new Map<string, Pacer>();
  private readonly sharedLimits: UpstreamLimitStore | undefined;
  private readonly rateLimitPacing: boolean;
  private readonly peers: UpstreamHoldPeers | undefined;
  private readonly stopHearingPeers: () => void;
  /** This adapter, as the origin of the holds it shares. */
  private readonly holdOrigin = randomUUID();
  /** This upstream, as holds name it; the URL itself stays out of Redis. */
  private readonly upstreamDigest: string;

  constructor(config: OpenAICompatibleConfig) {
    this.baseURL = config.baseURL.replace(/\/+$/, '');
    this.endpoint = new URL(`${this.baseURL}/chat/completions`);
    this.apiKey = config.apiKey;
    this.timeoutMs = config.timeoutMs;
    this.transport = this.endpoint.protocol === 'https:' ? https : http;
    this.agent = new this.transport.Agent({ keepAlive: true });
    this.upstreamDigest = createHash('sha256').update(this.baseURL).digest('hex').slice(0, 16);
    this.peers = config.peers;
    this.rateLimitPacing = config.rateLimitPacing ?? true;
    this.sharedLimits = config.sharedLimits;
    this.stopHearingPeers = this.peers?.onUpstreamHold((hold) => this.heardHold(hold)) ?? (() => undefined);
  }

  /** Upstream connections kept alive for the next call. */
  get idleConnections(): number {
    return Object.values(this.agent.freeSockets).reduce((sum, sockets) => sum + (sockets?.length ?? 0), 0);
  }

  /** Closes idle upstream connections and stops hearing peers' holds (shutdown, tests). */
  close(): void {
    this.agent.destroy();
    this.stopHearingPeers();
    for (const pacer of this.pacers.values()) pacer.close(cancelled);
    this.pacers.clear();
  }

  /** The model's pacer; pacers with nothing to remember go, so the map holds only the models near their limit. */
  private pacerFor(model: string): Pacer {
    let pacer = this.pacers.get(model);
    if (pacer) return pacer;
    for (const [name, other] of this.pacers) if (other.idle) this.pacers.delete(name);
    // One mirror per quota: the upstream, the API key (limits belong to the account the key is of) and the
    // model, by a digest, so neither the URL, the key nor a model name goes into Redis. A call whose answer
    // never comes stops counting after the idle timeout and a margin.
    pacer = this.sharedLimits
      ? new SharedRateLimitPacer(this.sharedLimits, createHash('sha256').update(`${this.baseURL}\n${this.apiKey}\n${model}`).digest('hex').slice(0, 32), this.timeoutMs + 30_000)
      : new RateLimitPacer();
    this.pacers.set(model, pacer);
    return pacer;
  }

  /** Milliseconds new calls to `model` still wait because the upstream asked us (or a peer) to back off (0 when none). */
  backoffRemainingMs(model: string): number {
    return this.gates.remainingMs(model);
  }

  /** A throttled answer: hold our calls, and tell the peers when the hold is news to them. */
  private hold(model: string | null, ms: number): void {
    if (!this.gates.hold(model, ms) || !this.peers) return;
    const hold: UpstreamHold = { origin: this.holdOrigin, upstream: this.upstreamDigest, model, ms };
    // Best effort: a peer that does not hear it meets the limit itself and holds its own gate.
    this.peers.publishUpstreamHold(hold).catch(() => undefined);
  }

  private heardHold(hold: UpstreamHold): void {
    if (hold.origin === this.holdOrigin || hold.upstream !== this.upstreamDigest) return;
    this.gates.hold(hold.model, Math.min(hold.ms, MAX_UPSTREAM_BACKOFF_MS));
  }

  async *stream(request: ModelRequest): AsyncGenerator<ModelEvent> {
    if (request.signal.aborted) throw cancelled();
    // Before the idle timer starts: waiting out a back-off is not the upstream going quiet.
    // (Checked first so that the usual open gate costs the turn no extra await.)
    if (this.gates.remainingMs(request.model) > 0) await this.gates.pass(request.model, request.signal, cancelled);
    const messages = toChatMessages(request.instructions, request.items);
    const options = toChatRequestOptions(request.params);
    const tokens = reservedTokens(messages, options);
    // Like the gate's wait, before the idle timer: a wait for the model's limits is not the upstream going quiet.
    const pacer = this.rateLimitPacing ? this.pacerFor(request.model) : undefined;
    const maxWaitMs = request.maxRateLimitWaitMs;
    const taken =
      pacer?.take(request.signal, cancelled, {
        tokens,
        maxWaitMs,
        tooLong: (expectedMs) => this.pacedTooLong(expectedMs, maxWaitMs!),
        onWait: (limit) => turnMetrics().upstreamPaced.add(1, { limit }),
      }) ?? 0;
    const ticket = typeof taken === 'number' ? taken : await taken;

    // One controller for the upstream call, aborted by the caller's signal or by the idle timer.
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    request.signal.addEventListener('abort', onAbort, { once: true });
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const armIdleTimer = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, this.timeoutMs);
    };
    const stopIdleTimer = () => clearTimeout(timer);

    let finishReason: ChatCompletionChunk.Choice['finish_reason'] = null;
    let usage: ChatCompletionChunk['usage'] = null;
    let outputChars = 0;
    let sawToolCall = false;
    let call: HttpClientCall | undefined;
    let readToTheEnd = false;
    try {
      armIdleTimer();
      const body = JSON.stringify({
        ...options,
        model: request.model,
        messages,
        stream: true,
        stream_options: { include_usage: true },
      });
      call = traceHttpClient('POST', this.endpoint);
      const response = await this.post(body, request.model, tokens, controller.signal, call, (readings, refused) => pacer?.answered(ticket, readings, refused));
      const chunks = readChunks(response, controller.signal);
      for (;;) {
        // The timer only runs while we wait on the upstream, not while our consumer handles an event.
        armIdleTimer();
        const next = await chunks.next();
        stopIdleTimer();
        if (next.done) break;
        const chunk = next.value;
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices?.find((c) => c.index === 0);
        if (!choice) continue;
        const { delta } = choice;
        // A refusal has no event of its own; it is surfaced as text rather than lost.
        for (const text of [delta?.content, delta?.refusal]) {
          if (text) {
            outputChars += text.length;
            yield { type: 'text_delta', delta: storable(text) };
          }
        }
        for (const call of delta?.tool_calls ?? []) {
          sawToolCall = true;
          const event: Extract<ModelEvent, { type: 'tool_call_delta' }> = {
            type: 'tool_call_delta',
            index: call.index,
            argumentsDelta: storable(call.function?.arguments ?? ''),
          };
          if (call.id) event.callId = storable(call.id);
          if (call.function?.name) event.name = storable(call.function.name);
          outputChars += (event.name?.length ?? 0) + event.argumentsDelta.length;
          yield event;
        }
        if (choice.finish_reason) finishReason = choice.finish_reason;
      }
      if (request.signal.aborted) throw cancelled();
      if (timedOut) throw this.timeoutError();
      if (!finishReason) {
        throw this.failure('upstream_error', true, 'The model upstream ended the stream without a finish_reason.', `${this.upstream} ended the stream without a finish_reason.`);
      }
      readToTheEnd = true;
    } catch (error) {
      const failure = this.toModelError(error, request, timedOut);
      call?.end({ type: failure.code, message: failure.detail });
      // Operators see the whole story on the turn's span; callers only see `message`.
      if (failure.code !== 'cancelled') trace.getActiveSpan()?.recordException({ name: 'ModelError', message: failure.detail });
      throw failure;
    } finally {
      stopIdleTimer();
      pacer?.answered(ticket, undefined); // no-op once its answer came
      request.signal.removeEventListener('abort', onAbort);
      // Releases the connection if the consumer stopped early or the call failed. Not after a whole answer:
      // there is nothing to release, and an abort costs a DOMException with its stack trace per turn.
      if (!readToTheEnd) controller.abort();
      call?.end(); // no-op when it already ended with the failure
    }

    yield {
      type: 'done',
      finishReason: normaliseFinishReason(finishReason, sawToolCall),
      usage: usage
        ? {
            inputTokens: usage.prompt_tokens,
            outputTokens: usage.completion_tokens,
            cachedTokens: usage.prompt_tokens_details?.cached_tokens ?? 0,
          }
        : estimateUsage(messages, outputChars),
    };
  }

  /**
   * POSTs the request; resolves with a 2xx response once its headers arrive, rejects with the status
   * and the body's message otherwise. A kept-alive connection the upstream closed just as we reused it
   * fails before any answer (`reusedSocket`): that request is sent once more on a fresh connection.
   */
  private post(
    body: string,
    model: string,
    tokens: number,
    signal: AbortSignal,
    call: HttpClientCall,
    onAnswer: (readings: LimitReadings | undefined, refused: boolean) => void,
    retried = false,
  ): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = this.transport.request(this.endpoint, {
        method: 'POST',
        agent: this.agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          accept: 'text/event-stream',
          authorization: `Bearer ${this.apiKey}`,
          ...call.headers,
        },
      });
      let answered = false;
      const onAbort = () => req.destroy(abortError());
      signal.addEventListener('abort', onAbort, { once: true });
      req.on('error', (error: NodeJS.ErrnoException) => {
        signal.removeEventListener('abort', onAbort);
        if (answered) return; // the response stream reports it
        if (!retried && req.reusedSocket && error.code === 'ECONNRESET' && !signal.aborted) resolve(this.post(body, model, tokens, signal, call, onAnswer, true));
        else reject(new UpstreamConnectionError(error));
      });
      req.on('response', (response) => {
        answered = true;
        // From here the response's reader (readChunks, readErrorBody) answers an abort.
        signal.removeEventListener('abort', onAbort);
        const status = response.statusCode ?? 0;
        call.answered(status);
        onAnswer(limitReadings(response.headers), status === 429);
        if (status >= 200 && status < 300) resolve(response);
        else {
          const backoffMs = upstreamBackoffMs(status, response.headers, { tokensNeeded: tokens });
          if (backoffMs !== undefined && THROTTLING_STATUSES.has(status)) {
            // Before the body is read, so calls starting meanwhile already wait. A 429 is the model's
            // quota (metered per model); a 503 is the whole server.
            this.hold(status === 429 ? model : null, backoffMs);
            turnMetrics().upstreamThrottled.add(1, { status: String(status) });
          }
          const dropOnAbort = () => response.destroy(abortError());
          signal.addEventListener('abort', dropOnAbort, { once: true });
          readErrorBody(response)
            .finally(() => signal.removeEventListener('abort', dropOnAbort))
            .then((text) => reject(statusError(status, text, backoffMs)), reject);
        }
      });
      req.end(body);
    });
  }

  private get upstream(): string {
    return `Model upstream ${this.baseURL}`;
  }

  /** A ModelError whose public message cannot carry our upstream's address or key, whatever the upstream said. */
  private failure(code: ModelErrorCode, retryable: boolean, message: string, detail: string, backoff?: { retryAfterMs: number; throttled: boolean }): ModelError {
    return new ModelError(this.redact(message), code, retryable, detail, backoff);
  }

  private redact(text: string): string {
    const url = new URL(this.baseURL);
    const secrets = [this.baseURL, url.origin, url.host, url.hostname, this.apiKey].filter((secret) => secret.length >= 4);
    // Longest first, so the URL goes before the host it contains.
    return secrets.sort((a, b) => b.length - a.length).reduce((out, secret) => out.split(secret).join('[upstream]'), text);
  }

  /** A call whose turn in the line for the model's rate limits would come too late. */
  private pacedTooLong(expectedMs: number, maxWaitMs: number): ModelError {
    const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    const message = `The model upstream's rate limit would hold this call about ${seconds(expectedMs)}, longer than the ${seconds(maxWaitMs)} it may wait.`;
    return this.failure('rate_limit_exceeded', true, message, `${this.upstream}: ${message}`);
  }

  private timeoutError(): ModelError {
    return this.failure(
      'upstream_timeout',
      true,
      `The model upstream sent nothing for ${this.timeoutMs} ms; gave up.`,
      `${this.upstream} sent nothing for ${this.timeoutMs} ms; gave up.`,
    );
  }

  private toModelError(error: unknown, request: ModelRequest, timedOut: boolean): ModelError {
    if (error instanceof ModelError) return error;
    if (request.signal.aborted) return cancelled();
    if (timedOut) return this.timeoutError();
    const upstream = this.upstream;
    if (error instanceof UpstreamStreamError) {
      return this.failure('upstream_error', true, `The model upstream reported an error mid-stream: ${error.message}`, `${upstream} reported an error mid-stream: ${error.message}`);
    }
    if (error instanceof UpstreamStatusError) {
      const { status, detail } = error;
      const says = `The model upstream returned ${status}: ${detail}`;
      const internally = `${upstream} returned ${status}: ${detail}`;
      if (status === 404 || error.code === 'model_not_found' || (status === 400 && /model\b.*\b(not found|does not exist)/i.test(detail))) {
        return this.failure(
          'model_not_found',
          false,
          says,
          `${internally} (model '${request.model}'; check the model name and that MODEL_BASE_URL includes the /v1 prefix)`,
        );
      }
      // An auth failure's message can quote part of our key (OpenAI's does): only the status goes out.
      if (status === 401 || status === 403) {
        return this.failure('upstream_auth', false, `The model upstream refused our credentials (${status}).`, `${internally} (check MODEL_API_KEY)`);
      }
      const backoff = error.backoffMs === undefined ? undefined : { retryAfterMs: error.backoffMs, throttled: THROTTLING_STATUSES.has(status) };
      const waited = backoff ? ` (asked us to wait ${backoff.retryAfterMs} ms)` : '';
      if (status === 429) return this.failure('rate_limit_exceeded', true, says, internally + waited, backoff);
      if (status === 408) return this.failure('upstream_timeout', true, says, internally + waited, backoff);
      if (status === 409 || status >= 500) return this.failure('upstream_error', true, says, internally + waited, backoff);
      return this.failure('upstream_bad_request', false, says, internally);
    }
    if (error instanceof UpstreamConnectionError) {
      const cause = describeCause(error);
      if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL/.test(cause)) {
        return this.failure('upstream_unreachable', true, 'The model upstream is unreachable.', `${upstream} is unreachable: ${cause}`);
      }
      return this.failure('upstream_error', true, 'The connection to the model upstream failed.', `${upstream} connection failed: ${cause}`);
    }
    // Body read failures mid-stream (socket reset, truncated chunked body) and anything unexpected.
    return this.failure('upstream_error', true, 'The model upstream connection failed mid-stream.', `${upstream} failed mid-stream: ${describeCause(error)}`);
  }
}

function cancelled(): ModelError {
  return new ModelError('The model call was cancelled.', 'cancelled', false);
}

function normaliseFinishReason(reason: ChatCompletionChunk.Choice['finish_reason'], sawToolCall: boolean): FinishReason {
  if (reason === 'function_call' || reason === 'tool_calls') return 'tool_calls';
  // Some local servers report 'stop' after a tool call.
  if (reason === 'stop' && sawToolCall) return 'tool_calls';
  if (reason === 'length' || reason === 'content_filter') return reason;
  return 'stop';
}

/** Reads the SSE body as Chat Completions chunks, until `[DONE]` or the end of the body. */
async function* readChunks(response: http.IncomingMessage, signal: AbortSignal): AsyncGenerator<ChatCompletionChunk> {
  // In arrival order; an error event becomes its place in the queue, so chunks before it still go out.
  const parsed: Array<ChatCompletionChunk | UpstreamStreamError> = [];
  let finished = false;
  const parser = createParser({
    onEvent: (message) => {
      if (finished) return;
      if (message.data === '[DONE]') {
        finished = true;
        return;
      }
      const data = JSON.parse(message.data) as ChatCompletionChunk & { error?: { message?: unknown } | string; message?: unknown };
      if (message.event === 'error' || data.error) {
        const said = typeof data.error === 'string' ? data.error : (data.error?.message ?? data.message);
        parsed.push(new UpstreamStreamError(typeof said === 'string' ? said : JSON.stringify(data.error ?? data)));
        finished = true;
        return;
      }
      parsed.push(data);
    },
  });
  // An abort (cancel, idle timeout, consumer gone) drops the connection, unless only the end after [DONE] is left.
  const onAbort = () => {
    if (!finished && !response.complete) response.destroy(abortError());
  };
  signal.addEventListener('abort', onAbort, { once: true });
  if (signal.aborted) onAbort();
  response.setEncoding('utf8');
  try {
    // Not destroyed on leaving the loop: after [DONE] the body's end is still read (see finally).
    for await (const text of response.iterator({ destroyOnReturn: false }) as AsyncIterable<string>) {
      parser.feed(text);
      for (const item of parsed.splice(0)) {
        if (item instanceof UpstreamStreamError) throw item;
        yield item;
      }
      if (finished || signal.aborted) break;
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    if (!response.complete) {
      if (finished && !signal.aborted) {
        // Only the body's end is left after [DONE]: read it, so the connection can be kept alive.
        const giveUp = setTimeout(() => response.destroy(), DRAIN_AFTER_DONE_MS).unref();
        response.once('end', () => clearTimeout(giveUp)).resume();
      } else response.destroy();
    }
  }
}

/** Reads up to MAX_ERROR_BODY_BYTES of an error response as text. */
async function readErrorBody(response: http.IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of response as AsyncIterable<Buffer>) {
    if (size < MAX_ERROR_BODY_BYTES) parts.push(part);
    size += part.length;
  }
  return Buffer.concat(parts).toString('utf8').slice(0, MAX_ERROR_BODY_BYTES);
}

/** The status and message of an error answer, read as the openai client reads them. */
function statusError(status: number, text: string, backoffMs?: number): UpstreamStatusError {
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // a plain-text body is quoted as it is
  }
  const error = typeof body === 'object' && body !== null ? ((body as { error?: unknown }).error ?? body) : body;
  const message = typeof error === 'object' && error !== null ? (error as { message?: unknown }).message : undefined;
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  const detail = typeof message === 'string' ? message : typeof error === 'string' ? error.trim() || `status code ${status}` : JSON.stringify(error);
  return new UpstreamStatusError(status, detail, typeof code === 'string' ? code : null, backoffMs);
}

function abortError(): Error {
  return Object.assign(new Error('The model call was aborted.'), { name: 'AbortError', code: 'ABORT_ERR' });
}

/** The messages of an error and its causes, e.g. "connect ECONNREFUSED 127.0.0.1:9". */
function describeCause(error: unknown): string {
  const messages: string[] = [];
  let current: unknown = error;
  // Duck-typed: errors may come from another realm (e.g. under jest), failing instanceof.
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const { message, code, cause } = current as { message?: unknown; code?: unknown; cause?: unknown };
    if (typeof message === 'string' && message !== '') {
      const described = typeof code === 'string' && !message.includes(code) ? `${message} (${code})` : message;
      // A wrapper repeating its cause's message is said once, with the cause's code.
      if (messages.length > 0 && messages[messages.length - 1] === message) messages[messages.length - 1] = described;
      else messages.push(described);
    }
    current = cause;
  }
  return messages.length > 0 ? messages.join(': ') : String(error);
}

/** The characters of the prompt a model reads: message text and tool calls' names and arguments. */
function promptChars(messages: ChatCompletionMessageParam[]): number {
  let chars = 0;
  for (const message of messages) {
    const content = message.content;
    if (typeof content === 'string') chars += content.length;
    else if (Array.isArray(content)) {
      for (const part of content) if (part.type === 'text') chars += part.text.length;
    }
    if (message.role === 'assistant') {
      for (const call of message.tool_calls ?? []) {
        if (call.type === 'function') chars += call.function.name.length + call.function.arguments.length;
      }
    }
  }
  return chars;
}

/** Used when the upstream sends no usage: roughly four characters per token. */
function estimateUsage(messages: ChatCompletionMessageParam[], outputChars: number): Usage {
  return { inputTokens: Math.ceil(promptChars(messages) / 4), outputTokens: Math.ceil(outputChars / 4), cachedTokens: 0 };
}

/** Tokens a chat format adds per message (role, separators), as OpenAI's cookbook counts them. */
const TOKENS_PER_MESSAGE = 4;

/**
 * What the upstream's token limit reserves for a call when it admits it, reckoned before sending as
 * OpenAI's cookbook does (its parallel request processor): the prompt's tokens, which OpenAI's limiter
 * estimates from its characters, plus `max_completion_tokens` (the most the answer may take).
 * Characters ÷ 4, the per-message overhead and the tool definitions make it an estimate on the high
 * side, as it should be: too high costs a little pace near the limit, too low a 429. The readings of
 * the upstream's answers correct the mirror whichever it is.
 */
function reservedTokens(messages: ChatCompletionMessageParam[], options: ChatRequestOptions): number {
  const toolChars = options.tools ? JSON.stringify(options.tools).length : 0;
  return Math.ceil((promptChars(messages) + toolChars) / 4) + TOKENS_PER_MESSAGE * messages.length + (options.max_completion_tokens ?? 0);
}

/**
 * PostgreSQL cannot store U+0000, so a model that emits one would leave its turn unstampable (retried
 * until it fails). It becomes U+FFFD, the replacement character, as undecodable input does elsewhere.
 */
function storable(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text;
}
