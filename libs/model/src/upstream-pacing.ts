import type { IncomingHttpHeaders } from 'node:http';
import { headerValue, parseNumber, parseResetDuration } from './upstream-backoff';

/**
 * A request limit as one answer reported it, in OpenAI's `x-ratelimit-*-requests` headers (sent on
 * every answer, admitted or refused): the limit, what is left of it, and the time until it is full
 * again. The limit refills evenly, so the rate is (limit − remaining) ÷ that time.
 */
export interface RequestLimitReading {
  limit: number;
  remaining: number;
  untilFullMs: number;
}

export function requestLimitReading(headers: IncomingHttpHeaders): RequestLimitReading | undefined {
  const limit = parseNumber(headerValue(headers, 'x-ratelimit-limit-requests'));
  const remaining = parseNumber(headerValue(headers, 'x-ratelimit-remaining-requests'));
  const untilFullMs = parseResetDuration(headerValue(headers, 'x-ratelimit-reset-requests'));
  if (limit === undefined || remaining === undefined || untilFullMs === undefined || !(limit >= 1) || remaining > limit) return undefined;
  return { limit, remaining, untilFullMs };
}

/** The least share of a limit a process keeps taking (see RequestPacer): 1/16, enough for 16 pods at the limit. */
const MIN_SHARE = 1 / 16;

/** How long after a call was sent the upstream is taken to have admitted it: the way there, and a queue at the upstream's door. */
const ADMISSION_ALLOWANCE_MS = 50;

/** OpenAI's request limits are per minute; the refill rate of a limit reported full (nothing to reckon it from). */
const DEFAULT_REFILL_WINDOW_MS = 60_000;

/**
 * One model's request limit, mirrored from the upstream's answers, so this process sends no more
 * requests than the limit admits instead of learning of it from 429s.
 *
 * Each answer that reports the limit (requestLimitReading) resets the mirror: (this process's share of)
 * what remained when that call was sent, less the calls sent after it and not yet answered (the
 * upstream counted them, or will), refilled since. Between answers the mirror refills at (its share
 * of) the reported rate and each call takes one request from it; a call that finds it empty waits in
 * line for the refill. Calls are released one at a time, in the order they came.
 *
 * Until an answer reports a limit, or for an upstream that reports none, calls pass at once. Only the
 * newest answer counts: an older call's answer (a slow stream's headers) says less than one already
 * heard.
 *
 * The mirror sees this process's calls only, but worker pods share the quota: each would take the
 * whole refill, and all but one of them would be refused. So the process takes a share of it, found
 * as TCP finds its share of a link (additive increase, multiplicative decrease): a 429 for a call the
 * mirror let go halves the share (once per round of calls in flight: the refusals of one overdraft
 * come together), each admitted call gives back 1/limit of it. Alone, a process keeps (nearly) the
 * whole limit; N processes settle around 1/N each.
 */
export class RequestPacer {
  private limit = 0;
  /** The refill rate the mirror uses (requests per ms), and what the readings so far say of the real one. */
  private perMs = 0;
  private rateAtLeast = 0;
  private rateAtMost = Infinity;
  /** The part of the limit this process takes (MIN_SHARE..1). */
  private share = 1;
  /** The newest call sent when the share was last halved: refusals of calls up to it are the same overdraft. */
  private shareCutThrough = 0;
  /** Requests left as of `levelAt` (negative: owed to calls already sent). */
  private level = 0;
  private levelAt = 0;
  /** The newest call whose answer set the level. */
  private basisTicket = 0;
  private nextTicket = 0;
  /** Calls sent and not yet answered: ticket → when it was sent and whether the mirror knew the limit then. */
  private readonly unanswered = new Map<number, { sentAt: number; paced: boolean }>();
  private readonly line: Array<{ resolve: (ticket: number) => void; reject: (error: Error) => void; signal: AbortSignal; onAbort: () => void }> = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly now: () => number = Date.now) {}

  /** Nothing waiting or in flight, and the mirror full: forgetting it loses nothing. */
  get idle(): boolean {
    if (this.line.length > 0 || this.unanswered.size > 0) return false;
    this.refill();
    return this.limit === 0 || this.level >= this.limit;
  }

  /** Calls waiting for the refill now. */
  get waiting(): number {
    return this.line.length;
  }

  /**
   * Takes one request for a call about to be sent: at once while the mirror holds one, else in line.
   * Resolves with the call's ticket (for `answered`); rejects with `onAbort()` if the signal aborts
   * first, and at once with `tooLong(ms)` when its turn in line would come only after more than
   * `maxWaitMs`.
   */
  take(signal: AbortSignal, onAbort: () => Error, maxWaitMs = Infinity, tooLong?: (expectedMs: number) => Error): Promise<number> | number {
    if (this.line.length === 0 && this.tryTake()) return this.issue();
    const expectedMs = (this.line.length + 1 - this.level) / (this.perMs * this.share);
    if (expectedMs > maxWaitMs && tooLong) return Promise.reject(tooLong(Math.ceil(expectedMs)));
    return new Promise<number>((resolve, reject) => {
      const waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const index = this.line.indexOf(waiter);
          if (index !== -1) this.line.splice(index, 1);
          reject(onAbort());
        },
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
      this.line.push(waiter);
      this.schedule();
    });
  }

  /**
   * The call with `ticket` was answered (or failed without an answer): `reading` is what its answer
   * reported, `refused` whether it was a 429.
   */
  answered(ticket: number, reading: RequestLimitReading | undefined, refused = false): void {
    const call = this.unanswered.get(ticket);
    this.unanswered.delete(ticket);
    if (!reading || call === undefined) return;
    if (refused && call.paced && ticket > this.shareCutThrough) {
      this.share = Math.max(MIN_SHARE, this.share / 2);
      this.shareCutThrough = this.nextTicket;
    } else if (!refused) this.share = Math.min(1, this.share + 1 / reading.limit);
    if (ticket <= this.basisTicket) return;
    const sentAt = call.sentAt;
    this.basisTicket = ticket;
    this.learnRate(reading);
    // What remained when the upstream admitted the call, less every call sent since, refilled since.
    // It was admitted between being sent and being answered (which may be seconds later, after the
    // model's first token): taken as ADMISSION_ALLOWANCE_MS after it was sent, or at the answer if that
    // came sooner. A mirror ahead of the upstream would send a call into a 429; one behind it costs
    // each waiting call that much delay, not any rate.
    this.level = Math.floor(reading.remaining * this.share) - this.unansweredAfter(ticket);
    this.levelAt = Math.min(this.now(), sentAt + ADMISSION_ALLOWANCE_MS);
    this.refill();
    if (this.line.length > 0) this.schedule(true);
  }

  /**
   * The refill rate, from what a reading implies about it. `remaining` is whole requests, the level
   * behind it anywhere in [remaining, remaining + 1), so one reading only bounds the rate:
   * (limit − remaining − 1) ÷ reset < rate ≤ (limit − remaining) ÷ reset. Readings narrow the bounds
   * down, and the mirror refills at the lower one: a mirror ahead of the upstream would send calls
   * into 429s (with a small limit the upper bound can be several times the rate). Until a reading
   * bounds it from below (a limit of 1 never is), it refills at the least upper bound, which the
   * answer to a call admitted from a full bucket gives exactly; until a reading bounds it at all, a
   * limit is taken to be per minute, as OpenAI's are.
   */
  private learnRate(reading: RequestLimitReading): void {
    if (reading.limit !== this.limit) {
      this.limit = reading.limit;
      this.rateAtLeast = 0;
      this.rateAtMost = Infinity;
    }
    if (reading.remaining < reading.limit && reading.untilFullMs > 0) {
      const atLeast = (reading.limit - reading.remaining - 1) / reading.untilFullMs;
      const atMost = (reading.limit - reading.remaining) / reading.untilFullMs;
      if (atLeast > this.rateAtMost || atMost < this.rateAtLeast) {
        // The limit's window changed under the same size: start over.
        this.rateAtLeast = atLeast;
        this.rateAtMost = atMost;
      } else {
        this.rateAtLeast = Math.max(this.rateAtLeast, atLeast);
        this.rateAtMost = Math.min(this.rateAtMost, atMost);
      }
    }
    this.perMs = this.rateAtLeast > 0 ? this.rateAtLeast : Number.isFinite(this.rateAtMost) ? this.rateAtMost : reading.limit / DEFAULT_REFILL_WINDOW_MS;
  }

  /** Drops the calls in line (shutdown). */
  close(error: () => Error): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const waiter of this.line.splice(0)) {
      waiter.signal.removeEventListener('abort', waiter.onAbort);
      waiter.reject(error());
    }
  }

  /**
   * Calls sent after `ticket` and not yet answered. The map holds tickets in the order they were issued,
   * so only the older calls still in flight (few: answers come back about in order) are walked.
   */
  private unansweredAfter(ticket: number): number {
    let older = 0;
    for (const other of this.unanswered.keys()) {
      if (other > ticket) break;
      older++;
    }
    return this.unanswered.size - older;
  }

  private issue(): number {
    const ticket = ++this.nextTicket;
    this.unanswered.set(ticket, { sentAt: this.now(), paced: this.limit > 0 });
    return ticket;
  }

  private refill(): void {
    const now = this.now();
    if (this.limit > 0 && this.level < this.limit) this.level = Math.min(this.limit, this.level + (now - this.levelAt) * this.perMs * this.share);
    this.levelAt = now;
  }

  private tryTake(): boolean {
    if (this.limit === 0) return true;
    this.refill();
    if (this.level < 1) return false;
    this.level -= 1;
    return true;
  }

  /** Releases the head of the line for as long as the mirror holds requests, then waits for the next one. */
  private schedule(reschedule = false): void {
    if (this.timer && !reschedule) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.line.length > 0 && this.tryTake()) {
      const waiter = this.line.shift()!;
      waiter.signal.removeEventListener('abort', waiter.onAbort);
      waiter.resolve(this.issue());
    }
    if (this.line.length === 0) return;
    const untilNextMs = Math.max(1, Math.ceil((1 - this.level) / (this.perMs * this.share)));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.schedule();
    }, untilNextMs);
  }
}
