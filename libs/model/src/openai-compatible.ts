import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'openai';
import type { ChatCompletionChunk, ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { toChatMessages, toChatRequestOptions } from './chat-messages';
import { trace } from '@opentelemetry/api';
import { ModelError, type FinishReason, type ModelAdapter, type ModelErrorCode, type ModelEvent, type ModelRequest } from './types';

export interface OpenAICompatibleConfig {
  /** Base URL including the version prefix, e.g. `http://127.0.0.1:11434/v1`. */
  baseURL: string;
  apiKey: string;
  /** Idle timeout: give up when no response or chunk arrives for this long (MODEL_TIMEOUT_MS). */
  timeoutMs: number;
}

type Usage = Extract<ModelEvent, { type: 'done' }>['usage'];

/**
 * A model adapter over any OpenAI-compatible Chat Completions upstream (OpenAI, vLLM, Ollama, llama.cpp,
 * LM Studio). Streams with `include_usage`; the `openai` client does the HTTP and SSE work, retries are
 * left to the caller (`ModelError.retryable`).
 */
export class OpenAICompatibleAdapter implements ModelAdapter {
  readonly name = 'openai-compatible';
  private readonly client: OpenAI;
  private readonly baseURL: string;
  private readonly apiKey: string;
  private readonly timeoutMs: number;

  constructor(config: OpenAICompatibleConfig) {
    this.baseURL = config.baseURL.replace(/\/+$/, '');
    this.apiKey = config.apiKey;
    this.timeoutMs = config.timeoutMs;
    this.client = new OpenAI({ baseURL: this.baseURL, apiKey: config.apiKey, maxRetries: 0, timeout: config.timeoutMs });
  }

  async *stream(request: ModelRequest): AsyncGenerator<ModelEvent> {
    if (request.signal.aborted) throw cancelled();
    const messages = toChatMessages(request.instructions, request.items);

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
    try {
      armIdleTimer();
      const stream = await this.client.chat.completions.create(
        {
          ...toChatRequestOptions(request.params),
          model: request.model,
          messages,
          stream: true,
          stream_options: { include_usage: true },
        },
        { signal: controller.signal },
      );
      const chunks = stream[Symbol.asyncIterator]();
      for (;;) {
        // The timer only runs while we wait on the upstream, not while our consumer handles an event.
        armIdleTimer();
        const next = await chunks.next();
        stopIdleTimer();
        if (next.done) break;
        const chunk = next.value;
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices.find((c) => c.index === 0);
        if (!choice) continue;
        const { delta } = choice;
        // A refusal has no event of its own; it is surfaced as text rather than lost.
        for (const text of [delta.content, delta.refusal]) {
          if (text) {
            outputChars += text.length;
            yield { type: 'text_delta', delta: storable(text) };
          }
        }
        for (const call of delta.tool_calls ?? []) {
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
      // The client ends the stream quietly when aborted; tell the two reasons apart here.
      if (request.signal.aborted) throw cancelled();
      if (timedOut) throw this.timeoutError();
      if (!finishReason) {
        throw this.failure('upstream_error', true, 'The model upstream ended the stream without a finish_reason.', `${this.upstream} ended the stream without a finish_reason.`);
      }
    } catch (error) {
      const failure = this.toModelError(error, request, timedOut);
      // Operators see the whole story on the turn's span; callers only see `message`.
      if (failure.code !== 'cancelled') trace.getActiveSpan()?.recordException({ name: 'ModelError', message: failure.detail });
      throw failure;
    } finally {
      stopIdleTimer();
      request.signal.removeEventListener('abort', onAbort);
      controller.abort(); // releases the connection if the consumer stopped early
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

  private get upstream(): string {
    return `Model upstream ${this.baseURL}`;
  }

  /** A ModelError whose public message cannot carry our upstream's address or key, whatever the upstream said. */
  private failure(code: ModelErrorCode, retryable: boolean, message: string, detail: string): ModelError {
    return new ModelError(this.redact(message), code, retryable, detail);
  }

  private redact(text: string): string {
    const url = new URL(this.baseURL);
    const secrets = [this.baseURL, url.origin, url.host, url.hostname, this.apiKey].filter((secret) => secret.length >= 4);
    // Longest first, so the URL goes before the host it contains.
    return secrets.sort((a, b) => b.length - a.length).reduce((out, secret) => out.split(secret).join('[upstream]'), text);
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
    if (timedOut || error instanceof APIConnectionTimeoutError) return this.timeoutError();
    const upstream = this.upstream;
    if (error instanceof APIUserAbortError) return cancelled(); // not reached: our signals are checked first
    if (error instanceof APIConnectionError) {
      const cause = describeCause(error);
      if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL/.test(cause)) {
        return this.failure('upstream_unreachable', true, 'The model upstream is unreachable.', `${upstream} is unreachable: ${cause}`);
      }
      return this.failure('upstream_error', true, 'The connection to the model upstream failed.', `${upstream} connection failed: ${cause}`);
    }
    if (error instanceof APIError) {
      const status = error.status;
      const detail = error.message.replace(/^\d{3}\s+/, '');
      if (status === undefined) {
        return this.failure('upstream_error', true, `The model upstream reported an error mid-stream: ${detail}`, `${upstream} reported an error mid-stream: ${detail}`);
      }
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
      if (status === 429) return this.failure('rate_limit_exceeded', true, says, internally);
      if (status === 408) return this.failure('upstream_timeout', true, says, internally);
      if (status === 409 || status >= 500) return this.failure('upstream_error', true, says, internally);
      return this.failure('upstream_bad_request', false, says, internally);
    }
    // Body read failures mid-stream (socket reset: undici's "terminated") and anything unexpected.
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

/** The messages of an error and its causes, e.g. "fetch failed: connect ECONNREFUSED 127.0.0.1:9". */
function describeCause(error: unknown): string {
  const messages: string[] = [];
  let current: unknown = error;
  // Duck-typed: errors from Node's built-in fetch may come from another realm (e.g. under jest), failing instanceof.
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const { message, code, cause } = current as { message?: unknown; code?: unknown; cause?: unknown };
    if (typeof message === 'string' && message !== '' && message !== 'Connection error.') {
      messages.push(typeof code === 'string' && !message.includes(code) ? `${message} (${code})` : message);
    }
    current = cause;
  }
  return messages.length > 0 ? messages.join(': ') : String(error);
}

/** Used when the upstream sends no usage: roughly four characters per token. */
function estimateUsage(messages: ChatCompletionMessageParam[], outputChars: number): Usage {
  let inputChars = 0;
  for (const message of messages) {
    const content = message.content;
    if (typeof content === 'string') inputChars += content.length;
    else if (Array.isArray(content)) {
      for (const part of content) if (part.type === 'text') inputChars += part.text.length;
    }
    if (message.role === 'assistant') {
      for (const call of message.tool_calls ?? []) {
        if (call.type === 'function') inputChars += call.function.name.length + call.function.arguments.length;
      }
    }
  }
  return { inputTokens: Math.ceil(inputChars / 4), outputTokens: Math.ceil(outputChars / 4), cachedTokens: 0 };
}

/**
 * PostgreSQL cannot store U+0000, so a model that emits one would leave its turn unstampable (retried
 * until it fails). It becomes U+FFFD, the replacement character, as undecodable input does elsewhere.
 */
function storable(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text;
}
