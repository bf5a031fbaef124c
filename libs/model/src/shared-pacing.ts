import { randomUUID } from 'node:crypto';
import type { UpstreamLimitAnswer, UpstreamLimitMirror, UpstreamLimitReading, UpstreamLimitStore, UpstreamLimitTake } from '@ic/schemas';
import { ADMISSION_ALLOWANCE_MS, RateLearner, type LimitReading, type LimitReadings, type Pacer, type PacerTakeOptions } from './upstream-pacing';

/** While no answer has reported the limits, how often a process asks the store whether a peer has heard them. */
const UNKNOWN_RECHECK_MS = 1000;

interface SharedCall {
  /** The store's seq for the call, 0 when it went unpaced (the limits unknown, or the store unreachable). */
  seq: number;
  tokens: number;
  sentAt: number;
}

/** A call waiting for its place in the store's line: its place in each limit's line, and its timer. */
interface WaitingCall {
  takenThrough: { requests?: number; tokens?: number };
  tokenSlack: number;
  timer: NodeJS.Timeout;
  go: () => void;
  fail: (error: Error) => void;
}

/**
 * A model's request and token limits kept once for every process calling the upstream (in the queue
 * backend's Redis), instead of a mirror per process that finds its share by meeting 429s.
 *
 * The store keeps what RateLimitPacer's mirror keeps (level, refill rate, the newest answer's reading,
 * the calls in flight), but for the calls of all processes: each answer resets the level to what
 * remained when the upstream admitted that call, less every call still in flight anywhere. A call takes
 * its place in one line across processes (one request and its tokens, due when the refill covers them)
 * and waits here until then. The refill rate is reckoned here from this process's readings (RateLearner)
 * and handed to the store with each answer; all processes read the same limit, so they agree.
 *
 * Until an answer reports a limit, calls go unpaced, as with the local pacer; a process that has not
 * heard one itself asks the store at most once a second whether a peer has. If the store cannot be
 * reached, the call goes unpaced (the back-off gate still answers 429s).
 */
export class SharedRateLimitPacer implements Pacer {
  private readonly calls = new Map<number, SharedCall>();
  private nextTicket = 0;
  private known = false;
  private checkedAt = -Infinity;
  private readonly waitingCalls = new Set<WaitingCall>();
  /** This process's unpaced calls in flight (the store never saw them): a reading is less them. */
  private readonly unseenInFlight = { requests: 0, tokens: 0 };
  /** The newest ticket issued when this process last reported a reading: unpaced calls up to it were counted in flight then. */
  private countedThroughTicket = 0;
  /** This pacer, as the store orders its unseen calls' answers. */
  private readonly origin = randomUUID();
  private readonly requestRate = new RateLearner();
  private readonly tokenRate = new RateLearner();

  constructor(
    private readonly store: UpstreamLimitStore,
    private readonly key: string,
    /** How long the store keeps a call counted in flight with no answer (a process that died mid-call). */
    private readonly expireMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get idle(): boolean {
    return this.calls.size === 0 && this.waitingCalls.size === 0;
  }

  take(signal: AbortSignal, onAbort: () => Error, options: PacerTakeOptions = {}): Promise<number> | number {
    const tokens = options.tokens ?? 0;
    if (!this.known && this.now() - this.checkedAt < UNKNOWN_RECHECK_MS) return this.issue(0, tokens);
    return this.takePlace(signal, onAbort, tokens, options);
  }

  private async takePlace(signal: AbortSignal, onAbort: () => Error, tokens: number, options: PacerTakeOptions): Promise<number> {
    let place;
    try {
      // As with the local pacer, a call may wait any time unless it says what to fail with when it cannot.
      const maxWaitMs = options.tooLong ? (options.maxWaitMs ?? Number.MAX_SAFE_INTEGER) : Number.MAX_SAFE_INTEGER;
      place = await this.store.take(this.key, { tokens, maxWaitMs, expireMs: this.expireMs });
    } catch {
      return this.issue(0, tokens);
    }
    if (place.kind === 'unknown') {
      this.known = false;
      this.checkedAt = this.now();
      return this.issue(0, tokens);
    }
    this.known = true;
    if (place.kind === 'too-long') {
      options.onWait?.(place.limit);
      throw options.tooLong!(place.waitMs);
    }
    if (signal.aborted) {
      // Aborted while the store answered: the place goes back, and the call never starts.
      this.report(place.seq, { unsent: true });
      throw onAbort();
    }
    if (place.waitMs > 0) {
      options.onWait?.(place.limit);
      try {
        await this.waitForPlace(place, signal, onAbort);
      } catch (error) {
        this.report(place.seq, { unsent: true });
        throw error;
      }
    }
    return this.issue(place.seq, tokens);
  }

  /** Waits until the place is due: `waitMs` at first, re-timed whenever a report shows where the limits stand now. */
  private waitForPlace(place: Extract<UpstreamLimitTake, { kind: 'taken' }>, signal: AbortSignal, onAbort: () => Error): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const stop = (error?: Error) => {
        clearTimeout(waiting.timer);
        this.waitingCalls.delete(waiting);
        signal.removeEventListener('abort', abort);
        if (error) reject(error);
        else resolve();
      };
      const abort = () => stop(onAbort());
      const waiting: WaitingCall = { takenThrough: place.takenThrough, tokenSlack: place.tokenSlack, timer: setTimeout(() => stop(), place.waitMs), go: () => stop(), fail: stop };
      if (signal.aborted) return abort();
      this.waitingCalls.add(waiting);
      signal.addEventListener('abort', abort, { once: true });
    });
  }

  /**
   * Where the limits stand now, as a report's reply says: each waiting call is due once the level, as if
   * only the calls placed up to it had taken theirs, covers it. A level the answers raised (refused
   * calls given back, the upstream ahead of the mirror) lets calls go sooner; one they lowered, later.
   */
  private retime(mirror: UpstreamLimitMirror): void {
    const waitFor = (limit: UpstreamLimitMirror['requests'], takenThrough: number | undefined, slack: number) =>
      limit && takenThrough !== undefined ? Math.max(0, (slack - (limit.level + limit.total - takenThrough)) / limit.perMs) : 0;
    for (const waiting of this.waitingCalls) {
      const waitMs = Math.max(waitFor(mirror.requests, waiting.takenThrough.requests, 0), waitFor(mirror.tokens, waiting.takenThrough.tokens, waiting.tokenSlack));
      clearTimeout(waiting.timer);
      waiting.timer = setTimeout(waiting.go, Math.ceil(waitMs));
    }
  }

  answered(ticket: number, readings: LimitReadings | undefined, refused = false): void {
    const call = this.calls.get(ticket);
    if (call === undefined) return;
    this.calls.delete(ticket);
    if (call.seq === 0) {
      this.unseenInFlight.requests -= 1;
      this.unseenInFlight.tokens -= call.tokens;
    }
    if (!readings) {
      // No answer (the connection failed, or the caller gave up first): it no longer counts in flight.
      if (call.seq !== 0) this.report(call.seq, {});
      return;
    }
    this.known = true;
    // An unpaced call in flight when an earlier reading was reported was counted in it (if it was refused
    // or admitted first, that gives back).
    const counted = call.seq === 0 && ticket <= this.countedThroughTicket;
    this.countedThroughTicket = this.nextTicket;
    const reading = (value: LimitReading | undefined, rate: RateLearner): UpstreamLimitReading | undefined =>
      value && { limit: value.limit, remaining: value.remaining, perMs: rate.learn(value) };
    const now = this.now();
    this.report(call.seq, {
      sinceAdmittedMs: Math.max(0, now - Math.min(now, call.sentAt + ADMISSION_ALLOWANCE_MS)),
      refused,
      requests: reading(readings.requests, this.requestRate),
      tokens: reading(readings.tokens, this.tokenRate),
      unseenInFlight: { ...this.unseenInFlight },
      giveBack: counted ? { requests: 1, tokens: call.tokens } : undefined,
      origin: this.origin,
      ticket,
    });
  }

  /** Best effort: a report lost resets nothing, and the next answer resets the mirror again. */
  private report(seq: number, answer: Partial<UpstreamLimitAnswer>): void {
    this.store.answer(this.key, { seq, sinceAdmittedMs: 0, refused: false, unseenInFlight: { requests: 0, tokens: 0 }, ...answer }).then(
      (mirror) => this.retime(mirror),
      () => undefined,
    );
  }

  /** Calls waiting for their place reject with `error()` (shutdown). */
  close(error: () => Error): void {
    for (const waiting of [...this.waitingCalls]) waiting.fail(error());
  }

  private issue(seq: number, tokens: number): number {
    const ticket = ++this.nextTicket;
    this.calls.set(ticket, { seq, tokens, sentAt: this.now() });
    if (seq === 0) {
      this.unseenInFlight.requests += 1;
      this.unseenInFlight.tokens += tokens;
    }
    return ticket;
  }
}
