import type { RunParams, StoredItem } from '@ic/schemas';

/** What a worker asks of a model: the whole replayed history plus this turn's input, already in order. */
export interface ModelRequest {
  /** Upstream model name, after the MODEL_MAP lookup. */
  model: string;
  instructions: string | null;
  /** Prior transcript items followed by this turn's input items. */
  items: readonly StoredItem[];
  params: RunParams;
  /** Aborted on cancel or shutdown; adapters must stop promptly and throw ModelError('cancelled'). */
  signal: AbortSignal;
  /**
   * The longest the call may wait for the upstream's rate limit before it goes out (an adapter that
   * paces calls to the limit); a longer wait fails it at once with `rate_limit_exceeded`, not
   * throttled. Default: no limit.
   */
  maxRateLimitWaitMs?: number;
}

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter';

/** Normalised stream of what the model produced, independent of the upstream protocol. */
export type ModelEvent =
  | { type: 'text_delta'; delta: string }
  /** Tool-call fragments; `index` identifies the call within this turn. `callId` and `name` arrive on the first fragment. */
  | { type: 'tool_call_delta'; index: number; callId?: string; name?: string; argumentsDelta: string }
  | { type: 'done'; finishReason: FinishReason; usage: { inputTokens: number; outputTokens: number; cachedTokens: number } };

export interface ModelAdapter {
  readonly name: string;
  stream(request: ModelRequest): AsyncIterable<ModelEvent>;
  /** Closes the connections it keeps open to its upstream (after the last call: shutdown, tests). */
  close?(): void;
}

export type ModelErrorCode =
  | 'model_not_found'
  | 'upstream_bad_request'
  | 'upstream_auth'
  | 'rate_limit_exceeded'
  | 'upstream_error'
  | 'upstream_unreachable'
  | 'upstream_timeout'
  | 'cancelled';

/**
 * A failed model call. `retryable` tells the worker whether another attempt could succeed.
 * `message` is shown to callers (on the failed run): the upstream's status and its error message,
 * never our upstream's address or key. `detail` is for operators (logs, traces): the full story,
 * including the upstream URL and the network causes.
 */
export class ModelError extends Error {
  override name = 'ModelError';
  readonly detail: string;
  constructor(
    message: string,
    readonly code: ModelErrorCode,
    readonly retryable: boolean,
    detail?: string,
    backoff?: { retryAfterMs: number; throttled: boolean },
  ) {
    super(message);
    this.detail = detail ?? message;
    this.retryAfterMs = backoff?.retryAfterMs;
    this.throttled = backoff?.throttled ?? false;
  }

  /** How long the upstream asked us to wait before calling again (its Retry-After), when it said. */
  readonly retryAfterMs: number | undefined;
  /**
   * The upstream is rate-limiting us (a 429 or 503 that named a wait), rather than failing: the call
   * is worth repeating once the wait is over, however often that takes (within MODEL_BACKOFF_BUDGET_MS).
   * An adapter sets it only if it holds its next calls until that wait is over, so a caller may call
   * again at once.
   */
  readonly throttled: boolean;
}
