import type { IncomingHttpHeaders } from 'node:http';
import type { UpstreamHold } from '@ic/schemas';
import { abortableDelay } from './abortable-delay';

/**
 * The longest back-off an upstream can impose on us: a longer Retry-After is cut to this. The openai
 * client draws its line at 60 s too; past that a caller is better served by a failed turn it can see.
 */
export const MAX_UPSTREAM_BACKOFF_MS = 60_000;

/** Statuses whose Retry-After asks every caller, not just this request, to slow down. */
export const THROTTLING_STATUSES: ReadonlySet<number> = new Set([429, 503]);

/**
 * How long the upstream asked us to wait before the next call, from an error answer's headers:
 * `retry-after-ms` (Azure OpenAI), `retry-after` (seconds or an HTTP date), or on a 429 OpenAI's
 * `x-ratelimit-reset-requests` / `-tokens` ("1s", "6m0s", "20ms") for whichever limit could not admit
 * the call. Capped at MAX_UPSTREAM_BACKOFF_MS; undefined when the answer names no wait.
 *
 * OpenAI's reset is the time until the limit is full again ("resets to its initial state": limit 60,
 * remaining 59, reset 1s), and it refills evenly. With nothing left, one more request is allowed after
 * reset ÷ limit, so that is the wait when `x-ratelimit-limit-requests` says the limit: a spent
 * 10,000-per-minute limit reports ≈ 60 s but admits a request every 6 ms. Likewise for tokens, given
 * the tokens the refused call needs (`tokensNeeded`, as reckoned for the pacer): the token limit
 * refused it if fewer remain, and admits it once they have refilled, which is usually far sooner than
 * full. Without them, an exhausted token limit (nothing remaining) waits its whole reset.
 */
export function upstreamBackoffMs(status: number, headers: IncomingHttpHeaders, options: { now?: number; tokensNeeded?: number } = {}): number | undefined {
  const capped = (ms: number | undefined) => (ms === undefined || !Number.isFinite(ms) || ms <= 0 ? undefined : Math.min(Math.ceil(ms), MAX_UPSTREAM_BACKOFF_MS));
  const retryAfterMs = capped(parseNumber(headerValue(headers, 'retry-after-ms')));
  if (retryAfterMs !== undefined) return retryAfterMs;
  const retryAfter = headerValue(headers, 'retry-after');
  if (retryAfter !== undefined) {
    const seconds = parseNumber(retryAfter);
    const ms = seconds !== undefined ? seconds * 1000 : Date.parse(retryAfter) - (options.now ?? Date.now());
    const fromRetryAfter = capped(ms);
    if (fromRetryAfter !== undefined) return fromRetryAfter;
  }
  return status === 429 ? exhaustedLimitWaitMs(headers, options.tokensNeeded) : undefined;
}

/** OpenAI's two limits per model, each reported in its own `x-ratelimit-*-<unit>` headers. */
export type LimitUnit = 'requests' | 'tokens';

/** One limit's `x-ratelimit-{limit,remaining,reset}-<unit>` headers, each parsed, or undefined when absent or malformed. */
export function limitHeaders(headers: IncomingHttpHeaders, unit: LimitUnit): { limit?: number; remaining?: number; untilFullMs?: number } {
  return {
    limit: parseNumber(headerValue(headers, `x-ratelimit-limit-${unit}`)),
    remaining: parseNumber(headerValue(headers, `x-ratelimit-remaining-${unit}`)),
    untilFullMs: parseResetDuration(headerValue(headers, `x-ratelimit-reset-${unit}`)),
  };
}

/** From a 429's `x-ratelimit-*` headers: how long until the limit that refused the call admits it (see upstreamBackoffMs). */
function exhaustedLimitWaitMs(headers: IncomingHttpHeaders, tokensNeeded: number | undefined): number | undefined {
  const waits = (['requests', 'tokens'] as const).map((unit) => {
    const needed = unit === 'requests' ? 1 : (tokensNeeded ?? 1);
    const { limit: size, remaining, untilFullMs: untilFull } = limitHeaders(headers, unit);
    if (remaining === undefined || remaining >= needed || untilFull === undefined) return undefined;
    // Without the limit's size (or the call's tokens) only "full again" is known; with them, the refill
    // of what the call lacks: the limit refills (limit − remaining) in `untilFull`.
    if (size === undefined || !(size > remaining) || (unit === 'tokens' && tokensNeeded === undefined)) return untilFull;
    return Math.min(untilFull, ((needed - remaining) * untilFull) / (size - remaining));
  });
  const known = waits.filter((ms): ms is number => ms !== undefined && Number.isFinite(ms) && ms > 0);
  return known.length > 0 ? Math.min(Math.ceil(Math.max(...known)), MAX_UPSTREAM_BACKOFF_MS) : undefined;
}

export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

export function parseNumber(text: string | undefined): number | undefined {
  if (text === undefined || !/^\s*\d+(\.\d+)?\s*$/.test(text)) return undefined;
  return Number(text);
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** OpenAI's reset durations: "1s", "6m0s", "20ms", "1.5s", "2h3m". */
export function parseResetDuration(text: string | undefined): number | undefined {
  const trimmed = text?.trim();
  if (!trimmed || !/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(trimmed)) return undefined;
  let total = 0;
  for (const [, amount, , unit] of trimmed.matchAll(/(\d+(\.\d+)?)(ms|s|m|h)/g)) total += Number(amount) * DURATION_UNITS_MS[unit!]!;
  return total;
}

/** The most a call held by the gate waits past its opening, so that the held calls do not all go at once. */
export const MAX_RELEASE_SPREAD_MS = 1000;

/**
 * The release spread per held call: about how long a refused call takes to come back and close the
 * gate again, so that about one held call goes out in that time.
 */
export const RELEASE_SPREAD_PER_CALL_MS = 10;

/**
 * Holds new calls while an upstream has asked us to back off. One throttled answer closes the gate
 * for the whole process (UpstreamGates: its model's, or every call's), so the hundreds of turns a
 * worker runs at once wait it out together instead of each spending its retries on more 429s (a
 * retry storm that keeps the upstream's limit tripped).
 * The held calls go out spread over the time after the gate opens (random, as in "full jitter"
 * back-off): released together they would all reach the upstream before its first refusal could close
 * the gate again, and every one it cannot admit would be refused. The spread is 10 ms per held call,
 * at least the hold itself and at most a second: a limit that frees one slot a few ms from now (a
 * sliding window's usual answer) would otherwise release hundreds of held calls within those few ms.
 */
export class UpstreamGate {
  private openAt = 0;
  private spreadMs = 0;
  /** Calls waiting in `pass` now. */
  private waiting = 0;

  /**
   * The upstream asked for `ms` of quiet from now; a longer hold already in place stays. Returns whether
   * the hold is news: it closed an open gate, or moved its opening at least a release spread later (the
   * calls already in flight when the gate closed bring more of the same answer, a few ms apart).
   */
  hold(ms: number): boolean {
    const now = Date.now();
    const before = this.openAt;
    this.openAt = Math.max(before, now + ms);
    this.spreadMs = Math.min(ms, MAX_RELEASE_SPREAD_MS);
    return before <= now || this.openAt - before >= MAX_RELEASE_SPREAD_MS;
  }

  /** Milliseconds until calls may go out again (0 when open). */
  remainingMs(): number {
    return Math.max(0, this.openAt - Date.now());
  }

  /** Open, and no call still in its release spread. */
  get idle(): boolean {
    return this.waiting === 0 && this.remainingMs() === 0;
  }

  /**
   * Resolves at once when the gate is open; otherwise after it opens plus a random share of the spread
   * (reckoned then, from the calls held at the opening), re-checked then (a call released earlier may
   * have been refused and closed it again). Rejects with `onAbort()` if the signal aborts first.
   */
  async pass(signal: AbortSignal, onAbort: () => Error, random: () => number = Math.random): Promise<void> {
    if (this.remainingMs() === 0) return;
    this.waiting++;
    try {
      for (let remaining = this.remainingMs(); remaining > 0; remaining = this.remainingMs()) {
        await abortableDelay(remaining, signal, onAbort);
        if (this.remainingMs() > 0) continue; // held longer meanwhile
        const spreadMs = Math.min(MAX_RELEASE_SPREAD_MS, Math.max(this.spreadMs, this.waiting * RELEASE_SPREAD_PER_CALL_MS));
        await abortableDelay(Math.floor(random() * spreadMs), signal, onAbort);
      }
    } finally {
      this.waiting--;
    }
  }
}

/**
 * The gates of one upstream. A 429 holds only the model it named: OpenAI and Azure OpenAI meter
 * requests and tokens per model (per deployment), so one model's exhausted quota says nothing about
 * the others. A 503 holds every call: the server itself is overloaded.
 */
export class UpstreamGates {
  private readonly everyModel = new UpstreamGate();
  private readonly byModel = new Map<string, UpstreamGate>();

  /** Holds `model`'s calls (every call when null) for `ms`; returns UpstreamGate.hold's "is news". */
  hold(model: string | null, ms: number): boolean {
    if (model === null) return this.everyModel.hold(ms);
    // Idle gates go, so the map holds only the models being throttled now. (A gate whose calls are
    // still in their release spread stays: its next hold must count them.)
    for (const [name, gate] of this.byModel) if (gate.idle) this.byModel.delete(name);
    let gate = this.byModel.get(model);
    if (!gate) this.byModel.set(model, (gate = new UpstreamGate()));
    return gate.hold(ms);
  }

  /** Milliseconds until a call to `model` may go out (0 when open). */
  remainingMs(model: string): number {
    const everyModel = this.everyModel.remainingMs();
    if (this.byModel.size === 0) return everyModel;
    return Math.max(everyModel, this.byModel.get(model)?.remainingMs() ?? 0);
  }

  /** Resolves once both the model's gate and the upstream's are open (UpstreamGate.pass, one after the other). */
  async pass(model: string, signal: AbortSignal, onAbort: () => Error): Promise<void> {
    for (;;) {
      const modelGate = this.byModel.get(model);
      const closed = this.everyModel.remainingMs() > 0 ? this.everyModel : modelGate && modelGate.remainingMs() > 0 ? modelGate : undefined;
      if (!closed) return;
      await closed.pass(signal, onAbort);
    }
  }
}

/**
 * How processes sharing an upstream hear each other's holds (the queue backend's signals). A worker
 * that meets a 429 closes the gate of every worker pod, instead of each pod spending its own calls to
 * learn the same thing, and again at every reopening.
 */
export interface UpstreamHoldPeers {
  publishUpstreamHold(hold: UpstreamHold): Promise<void>;
  onUpstreamHold(listener: (hold: UpstreamHold) => void): () => void;
}
