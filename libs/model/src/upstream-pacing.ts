import type { IncomingHttpHeaders } from 'node:http';
import { limitHeaders, type LimitUnit } from './upstream-backoff';

/**
 * One of OpenAI's limits as one answer reported it, in its `x-ratelimit-*-requests` or `-tokens`
 * headers (sent on every answer, admitted or refused): the limit, what is left of it, and the time until
 * it is full again. A limit refills evenly, so its rate is (limit − remaining) ÷ that time.
 */
export interface LimitReading {
  limit: number;
  remaining: number;
  untilFullMs: number;
}

/** OpenAI meters each model's requests and tokens per minute apart; an answer reports both. */
export interface LimitReadings {
  requests?: LimitReading;
  tokens?: LimitReading;
}

/** A limit the answer reports whole: all three headers, and they make sense together. */
function limitReading(headers: IncomingHttpHeaders, unit: LimitUnit): LimitReading | undefined {
  const { limit, remaining, untilFullMs } = limitHeaders(headers, unit);
  if (limit === undefined || remaining === undefined || untilFullMs === undefined || !(limit >= 1) || remaining > limit) return undefined;
  return { limit, remaining, untilFullMs };
}

/** The request and token limits an answer reports; undefined when it reports neither. */
export function limitReadings(headers: IncomingHttpHeaders): LimitReadings | undefined {
  const requests = limitReading(headers, 'requests');
  const tokens = limitReading(headers, 'tokens');
  return requests || tokens ? { requests, tokens } : undefined;
}

/** The least share of a limit a process keeps taking (see RateLimitPacer): 1/16, enough for 16 pods at the limit. */
const MIN_SHARE = 1 / 16;

/** How long after a call was sent the upstream is taken to have admitted it: the way there, and a queue at the upstream's door. */
export const ADMISSION_ALLOWANCE_MS = 50;

/** OpenAI's limits are per minute; the refill rate of a limit reported full (nothing to reckon it from). */
const DEFAULT_REFILL_WINDOW_MS = 60_000;

/** The limit a call waited for: the one that would have held it longer. */
export type PacedLimit = LimitUnit;

/** What the pacer knows of one call sent and not yet answered. */
interface CallInFlight {
  sentAt: number;
  /** The tokens it was reckoned to need (see RateLimitPacer.take). */
  tokens: number;
  /** Whether each mirror knew its limit when the call went (only then can a 429 be the mirror's fault). */
  pacedRequests: boolean;
  pacedTokens: boolean;
}

/**
 * A limit's refill rate, from what its readings imply about it. `remaining` is whole units, the level
 * behind it anywhere in [remaining, remaining + 1), so one reading only bounds the rate:
 * (limit − remaining − 1) ÷ reset < rate ≤ (limit − remaining) ÷ reset. Readings narrow the bounds
 * down, and the rate used is the lower one: a mirror ahead of the upstream would send calls into 429s
 * (with a small limit the upper bound can be several times the rate). Until a reading bounds it from
 * below (a limit of 1 never is), it is the least upper bound, which the answer to a call admitted from
 * a full bucket gives exactly; until a reading bounds it at all, a limit is taken to be per minute, as
 * OpenAI's are.
 */
export class RateLearner {
  private limit = 0;
  private rateAtLeast = 0;
  private rateAtMost = Infinity;

  /** Takes in one reading; returns the rate to refill at (units per ms). */
  learn(reading: LimitReading): number {
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
    return this.rateAtLeast > 0 ? this.rateAtLeast : Number.isFinite(this.rateAtMost) ? this.rateAtMost : reading.limit / DEFAULT_REFILL_WINDOW_MS;
  }
}

/**
 * One limit of one model (its requests, or its tokens), mirrored from the upstream's answers: what is
 * left of this process's share of it, refilled at the rate the readings imply. See RateLimitPacer.
 */
class LimitMirror {
  private limit = 0;
  /** The refill rate the mirror uses (units per ms). */
  private perMs = 0;
  private readonly rate = new RateLearner();
  /** The part of the limit this process takes (MIN_SHARE..1). */
  private share = 1;
  /** The newest call sent when the share was last halved: refusals of calls up to it are the same overdraft. */
  private shareCutThrough = 0;
  /** Units left as of `levelAt` (negative: owed to calls already sent). */
  private level = 0;
  private levelAt = 0;
  /** The newest call whose answer set the level, and what its answer said remained. */
  private basisTicket = 0;
  private basisRemaining = 0;

  constructor(private readonly now: () => number) {}

  /** Whether an answer has reported this limit: until then calls pass at once. */
  get known(): boolean {
    return this.limit > 0;
  }

  /** Nothing owed and nothing to wait for: forgetting the mirror loses nothing. */
  get full(): boolean {
    this.refill();
    return this.limit === 0 || this.level >= this.limit;
  }

  /**
   * Whether a call needing `amount` may go now. A call needing more than this process's whole share
   * goes once the share is there (then the mirror owes the rest), else it would never go.
   */
  holds(amount: number): boolean {
    if (!this.known) return true;
    this.refill();
    return this.level >= this.needed(amount);
  }

  take(amount: number): void {
    if (this.known) this.level -= amount;
  }

  /** Milliseconds until the mirror holds `amount` more than it holds now (0 when unknown or already there). */
  msUntil(amount: number, capped = true): number {
    if (!this.known) return 0;
    this.refill();
    return Math.max(0, ((capped ? this.needed(amount) : amount) - this.level) / (this.perMs * this.share));
  }

  /**
   * The call with `ticket` (which needed `amount`) was answered with `reading`.
   * - `refused`: a 429; `exhausted`: this limit is the one that refused it; `paced`: the mirror knew
   *   the limit when the call went, so the refusal is an overdraft of this process's share.
   * - `inFlight`: what the calls still in flight took (the upstream counted them after this one, or
   *   will); `newestTicket`: the newest call sent so far.
   */
  answered(
    ticket: number,
    reading: LimitReading,
    call: { amount: number; sentAt: number; refused: boolean; exhausted: boolean; paced: boolean },
    inFlight: number,
    newestTicket: number,
  ): void {
    if (call.refused && call.exhausted && call.paced && ticket > this.shareCutThrough) {
      this.share = Math.max(MIN_SHARE, this.share / 2);
      this.shareCutThrough = newestTicket;
    } else if (!call.refused) this.share = Math.min(1, this.share + call.amount / reading.limit);
    if (ticket <= this.basisTicket) {
      // An older call, answered after the newest: the level counted it as taken after that one. It was
      // not if it was refused (a 429 takes nothing), nor if it was admitted first, which its answer
      // shows by more remaining (the limit only falls between admissions, give or take the refill).
      if (call.refused || reading.remaining >= this.basisRemaining) this.level += call.amount;
      return;
    }
    this.basisTicket = ticket;
    this.basisRemaining = reading.remaining;
    this.learnRate(reading);
    // What remained when the upstream admitted the call, less every call still in flight, refilled since.
    // It was admitted between being sent and being answered (which may be seconds later, after the
    // model's first token): taken as ADMISSION_ALLOWANCE_MS after it was sent, or at the answer if that
    // came sooner. A mirror ahead of the upstream would send a call into a 429; one behind it costs
    // each waiting call that much delay, not any rate.
    this.level = Math.floor(reading.remaining * this.share) - inFlight;
    this.levelAt = Math.min(this.now(), call.sentAt + ADMISSION_ALLOWANCE_MS);
    this.refill();
  }

  /** A call needing more than the whole share waits for the share (and at least one unit). */
  private needed(amount: number): number {
    return Math.min(amount, Math.max(1, this.limit * this.share));
  }

  private learnRate(reading: LimitReading): void {
    this.limit = reading.limit;
    this.perMs = this.rate.learn(reading);
  }

  private refill(): void {
    const now = this.now();
    if (this.limit > 0 && this.level < this.limit) this.level = Math.min(this.limit, this.level + (now - this.levelAt) * this.perMs * this.share);
    this.levelAt = now;
  }
}

interface Waiter {
  tokens: number;
  resolve: (ticket: number) => void;
  reject: (error: Error) => void;
  signal: AbortSignal;
  onAbort: () => void;
}

/** What the adapter asks of a model's pacer: RateLimitPacer (this process's mirror) or SharedRateLimitPacer (one mirror in Redis for every process). */
export interface Pacer {
  /** Nothing waiting or in flight, and nothing to remember: forgetting the pacer loses nothing. */
  readonly idle: boolean;
  take(signal: AbortSignal, onAbort: () => Error, options?: PacerTakeOptions): Promise<number> | number;
  answered(ticket: number, readings: LimitReadings | undefined, refused?: boolean): void;
  close(error: () => Error): void;
}

export interface PacerTakeOptions {
  tokens?: number;
  maxWaitMs?: number;
  tooLong?: (expectedMs: number) => Error;
  onWait?: (limit: PacedLimit) => void;
}

/**
 * One model's request and token limits, mirrored from the upstream's answers, so this process sends no
 * more than the limits admit instead of learning of them from 429s.
 *
 * A call takes one request and the tokens it is reckoned to need (the upstream reserves them when it
 * admits the call: OpenAI counts the prompt's estimated tokens plus `max_completion_tokens`). Each
 * answer that reports a limit resets that limit's mirror: (this process's share of) what remained when
 * that call was admitted, less what the calls still in flight took, refilled since.
 * Between answers each mirror refills at (its share of) the reported rate. A call that finds either
 * short waits in line for the refill; calls are released one at a time, in the order they came, so a
 * big call is not passed over by small ones for ever.
 *
 * Until an answer reports a limit, or for an upstream that reports none, calls pass at once. Only the
 * newest call's answer resets a mirror: an older call's answer (a slow stream's headers) says less
 * than one already heard. It says one thing: whether that call was counted twice, as in flight after
 * the newest though the upstream had refused it or admitted it first.
 *
 * The mirror sees this process's calls only. With Redis, worker pods pace to one mirror instead
 * (SharedRateLimitPacer); without it, should several processes share the quota, each would take the
 * whole refill, and all but one of them would be refused. So the process takes a share of each limit,
 * found as TCP finds its share of a link (additive increase, multiplicative decrease): a 429 from a
 * limit for a call the mirror let go halves the share (once per round of calls in flight: the refusals
 * of one overdraft come together), each admitted call gives back what it took of the limit. Alone, a
 * process keeps (nearly) the whole limit; N processes settle around 1/N each.
 */
export class RateLimitPacer implements Pacer {
  private readonly requests: LimitMirror;
  private readonly tokens: LimitMirror;
  private nextTicket = 0;
  /** Calls sent and not yet answered, and the tokens they took. */
  private readonly unanswered = new Map<number, CallInFlight>();
  private unansweredTokens = 0;
  private readonly line: Waiter[] = [];
  private lineTokens = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly now: () => number = Date.now) {
    this.requests = new LimitMirror(now);
    this.tokens = new LimitMirror(now);
  }

  /** Nothing waiting or in flight, and both mirrors full: forgetting the pacer loses nothing. */
  get idle(): boolean {
    return this.line.length === 0 && this.unanswered.size === 0 && this.requests.full && this.tokens.full;
  }

  /** Calls waiting for the refill now. */
  get waiting(): number {
    return this.line.length;
  }

  /**
   * Takes one request and `tokens` for a call about to be sent: at once while the mirrors hold them,
   * else in line. Resolves with the call's ticket (for `answered`); rejects with `onAbort()` if the
   * signal aborts first, and at once with `tooLong(ms)` when its turn in line would come only after
   * more than `maxWaitMs`. `onWait` hears which limit a call that cannot go at once waits for.
   */
  take(
    signal: AbortSignal,
    onAbort: () => Error,
    options: PacerTakeOptions = {},
  ): Promise<number> | number {
    const tokens = options.tokens ?? 0;
    if (this.line.length === 0 && this.tryTake(tokens)) return this.issue(tokens);
    const requestsMs = this.requests.msUntil(this.line.length + 1, false);
    const tokensMs = this.tokens.msUntil(this.lineTokens + tokens, false);
    options.onWait?.(tokensMs > requestsMs ? 'tokens' : 'requests');
    const expectedMs = Math.max(requestsMs, tokensMs);
    if (options.tooLong && expectedMs > (options.maxWaitMs ?? Infinity)) return Promise.reject(options.tooLong(Math.ceil(expectedMs)));
    return new Promise<number>((resolve, reject) => {
      const waiter: Waiter = {
        tokens,
        resolve,
        reject,
        signal,
        onAbort: () => {
          const index = this.line.indexOf(waiter);
          if (index !== -1) {
            this.line.splice(index, 1);
            this.lineTokens -= tokens;
          }
          reject(onAbort());
        },
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
      this.line.push(waiter);
      this.lineTokens += tokens;
      this.schedule();
    });
  }

  /**
   * The call with `ticket` was answered (or failed without an answer): `readings` is what its answer
   * reported, `refused` whether it was a 429.
   */
  answered(ticket: number, readings: LimitReadings | undefined, refused = false): void {
    const call = this.unanswered.get(ticket);
    if (call === undefined) return;
    this.unanswered.delete(ticket);
    this.unansweredTokens -= call.tokens;
    if (!readings) return;
    // The limit that refused it is the one that could not cover it; when neither reading shows that
    // (our reckoning of its tokens fell short, or a limit we do not read), both are taken to have. A
    // call needing more tokens than the whole limit is refused whatever this process's share: that says
    // nothing about the share, and halving it would slow every other call for that one.
    const overdraft = refused && !(readings.tokens !== undefined && call.tokens > readings.tokens.limit);
    const requestsShort = overdraft && readings.requests !== undefined && readings.requests.remaining < 1;
    const tokensShort = overdraft && readings.tokens !== undefined && readings.tokens.remaining < call.tokens;
    const neitherShort = overdraft && !requestsShort && !tokensShort;
    // Every call still in flight is taken to be counted after this one, those sent before it too: they
    // went on other connections, and the upstream may well have admitted them after this one. Their own
    // answers, when they come, tell which (LimitMirror.answered gives back what was counted twice).
    if (readings.requests) {
      const exhausted = requestsShort || neitherShort;
      this.requests.answered(ticket, readings.requests, { amount: 1, sentAt: call.sentAt, refused, exhausted, paced: call.pacedRequests }, this.unanswered.size, this.nextTicket);
    }
    if (readings.tokens) {
      const exhausted = tokensShort || neitherShort;
      this.tokens.answered(ticket, readings.tokens, { amount: call.tokens, sentAt: call.sentAt, refused, exhausted, paced: call.pacedTokens }, this.unansweredTokens, this.nextTicket);
    }
    if (this.line.length > 0) this.schedule(true);
  }

  /** Drops the calls in line (shutdown). */
  close(error: () => Error): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const waiter of this.line.splice(0)) {
      waiter.signal.removeEventListener('abort', waiter.onAbort);
      waiter.reject(error());
    }
    this.lineTokens = 0;
  }

  private issue(tokens: number): number {
    const ticket = ++this.nextTicket;
    this.unanswered.set(ticket, { sentAt: this.now(), tokens, pacedRequests: this.requests.known, pacedTokens: this.tokens.known });
    this.unansweredTokens += tokens;
    return ticket;
  }

  private tryTake(tokens: number): boolean {
    if (!this.requests.holds(1) || !this.tokens.holds(tokens)) return false;
    this.requests.take(1);
    this.tokens.take(tokens);
    return true;
  }

  /** Releases the head of the line for as long as the mirrors hold what it needs, then waits for the refill. */
  private schedule(reschedule = false): void {
    if (this.timer && !reschedule) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.line.length > 0 && this.tryTake(this.line[0]!.tokens)) {
      const waiter = this.line.shift()!;
      this.lineTokens -= waiter.tokens;
      waiter.signal.removeEventListener('abort', waiter.onAbort);
      waiter.resolve(this.issue(waiter.tokens));
    }
    const head = this.line[0];
    if (!head) return;
    const untilNextMs = Math.max(1, Math.ceil(Math.max(this.requests.msUntil(1), this.tokens.msUntil(head.tokens))));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.schedule();
    }, untilNextMs);
  }
}
