import { LimitBucket } from '@ic/test-support';
import { RateLimitPacer, limitReadings } from './upstream-pacing';

const cancelled = () => new Error('cancelled');
const signal = () => new AbortController().signal;

/** A pacer on a clock the test moves; `take` resolves only through timers, so those are faked too. */
function pacerOnFakeClock() {
  jest.useFakeTimers({ now: 1_000_000 });
  return new RateLimitPacer(() => Date.now());
}

/** Takes `count` requests (each needing `tokens`); the tickets of those that went out at once (the rest wait in line). */
function takeAtOnce(pacer: RateLimitPacer, count: number, tokens = 0): { tickets: number[]; waiting: Array<Promise<number>> } {
  const tickets: number[] = [];
  const waiting: Array<Promise<number>> = [];
  for (let call = 0; call < count; call++) {
    const taken = pacer.take(signal(), cancelled, { tokens });
    if (typeof taken === 'number') tickets.push(taken);
    else waiting.push(taken);
  }
  return { tickets, waiting };
}

/**
 * Takes a request (needing `tokens`) that must wait exactly `ms` for it (on the fake clock), or up to
 * `slackMs` more (a rate the readings only bound); its ticket.
 */
async function releasedAfter(pacer: RateLimitPacer, ms: number, tokens = 0, slackMs = 0): Promise<number> {
  let ticket: number | undefined;
  void (pacer.take(signal(), cancelled, { tokens }) as Promise<number>).then((taken) => (ticket = taken));
  await jest.advanceTimersByTimeAsync(ms - 1);
  expect(ticket).toBeUndefined();
  await jest.advanceTimersByTimeAsync(1 + slackMs);
  expect(ticket).toEqual(expect.any(Number));
  return ticket!;
}

afterEach(() => jest.useRealTimers());

/** The request limit an answer's headers report, if any. */
const requestLimitReading = (headers: Parameters<typeof limitReadings>[0]) => limitReadings(headers)?.requests;

describe("limitReadings: OpenAI's request and token limits from an answer's headers", () => {
  it('reads the limit, what remains and the time until it is full', () => {
    expect(requestLimitReading({ 'x-ratelimit-limit-requests': '60', 'x-ratelimit-remaining-requests': '59', 'x-ratelimit-reset-requests': '1s' })).toEqual({
      limit: 60,
      remaining: 59,
      untilFullMs: 1000,
    });
    expect(requestLimitReading({ 'x-ratelimit-limit-requests': '10000', 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': '6m0s' })).toEqual({
      limit: 10000,
      remaining: 0,
      untilFullMs: 360_000,
    });
    // The token limit comes in its own headers, beside the request limit.
    const requests = { 'x-ratelimit-limit-requests': '60', 'x-ratelimit-remaining-requests': '59', 'x-ratelimit-reset-requests': '1s' };
    const tokens = { 'x-ratelimit-limit-tokens': '30000', 'x-ratelimit-remaining-tokens': '29000', 'x-ratelimit-reset-tokens': '2s' };
    expect(limitReadings({ ...requests, ...tokens })).toEqual({ requests: { limit: 60, remaining: 59, untilFullMs: 1000 }, tokens: { limit: 30000, remaining: 29000, untilFullMs: 2000 } });
    expect(limitReadings(tokens)).toEqual({ requests: undefined, tokens: { limit: 30000, remaining: 29000, untilFullMs: 2000 } });
  });

  it('is undefined when a header is missing or makes no sense', () => {
    const full = { 'x-ratelimit-limit-requests': '60', 'x-ratelimit-remaining-requests': '59', 'x-ratelimit-reset-requests': '1s' };
    expect(requestLimitReading({})).toBeUndefined();
    expect(requestLimitReading({ ...full, 'x-ratelimit-limit-requests': undefined })).toBeUndefined();
    expect(requestLimitReading({ ...full, 'x-ratelimit-reset-requests': 'soon' })).toBeUndefined();
    expect(requestLimitReading({ ...full, 'x-ratelimit-limit-requests': '0' })).toBeUndefined();
    expect(requestLimitReading({ ...full, 'x-ratelimit-remaining-requests': '61' })).toBeUndefined();
  });
});

describe("RateLimitPacer: calls wait for the model's request limit instead of meeting a 429", () => {
  it('lets every call through until an answer reports a limit', () => {
    const pacer = pacerOnFakeClock();
    const { tickets, waiting } = takeAtOnce(pacer, 500);
    expect(tickets).toHaveLength(500);
    expect(waiting).toHaveLength(0);
  });

  it('sends no more than what remains, then one call per refill, in the order they came', async () => {
    const pacer = pacerOnFakeClock();
    const first = takeAtOnce(pacer, 1).tickets[0]!;
    // 10 a second: 3 left (and nearly a fourth: full again in 600 ms), one more request per 100 ms.
    pacer.answered(first, { requests: { limit: 10, remaining: 3, untilFullMs: 600 } });
    const { tickets, waiting } = takeAtOnce(pacer, 8);
    expect(tickets).toHaveLength(3);
    expect(pacer.waiting).toBe(5);
    const releasedAt: number[] = [];
    waiting.forEach((taken) => void taken.then(() => releasedAt.push(Date.now() - 1_000_000)));
    await jest.advanceTimersByTimeAsync(99);
    expect(releasedAt).toEqual([]);
    await jest.advanceTimersByTimeAsync(401);
    expect(releasedAt).toEqual([100, 200, 300, 400, 500]);
    expect(await Promise.all(waiting)).toEqual([...waiting.keys()].map((index) => tickets[2]! + 1 + index));
  });

  it('counts every call still in flight as taken, those sent before the answered one too, until their own answers say otherwise', async () => {
    const pacer = pacerOnFakeClock();
    const { tickets } = takeAtOnce(pacer, 6);
    // The 3rd call's answer: 5 left after it. Calls 4–6 went out after it, and the 1st and 2nd, not
    // answered yet, went on other connections and may have been admitted after it too: nothing is left.
    pacer.answered(tickets[2]!, { requests: { limit: 10, remaining: 5, untilFullMs: 500 } });
    expect(typeof pacer.take(signal(), cancelled)).not.toBe('number');
    // The 2nd call's answer says 4 left: it was admitted after the 3rd, as counted.
    pacer.answered(tickets[1]!, { requests: { limit: 10, remaining: 4, untilFullMs: 600 } });
    await jest.advanceTimersByTimeAsync(0);
    expect(pacer.waiting).toBe(1);
    // The 1st call's answer says 7 left: admitted before the 3rd, which already counted it. Its
    // request comes back, and the waiting call goes.
    pacer.answered(tickets[0]!, { requests: { limit: 10, remaining: 7, untilFullMs: 300 } });
    await jest.advanceTimersByTimeAsync(0);
    expect(pacer.waiting).toBe(0);
  });

  it('gives back the request of a call in flight that was refused after a newer answer (a 429 takes nothing)', async () => {
    const pacer = pacerOnFakeClock();
    const { tickets } = takeAtOnce(pacer, 3);
    pacer.answered(tickets[2]!, { requests: { limit: 10, remaining: 2, untilFullMs: 800 } }); // 2 − the 2 in flight
    expect(typeof pacer.take(signal(), cancelled)).not.toBe('number');
    pacer.answered(tickets[0]!, { requests: { limit: 10, remaining: 0, untilFullMs: 1000 } }, true);
    await jest.advanceTimersByTimeAsync(0);
    expect(pacer.waiting).toBe(0);
  });

  it('reckons the refill from about when the answered call was admitted, not from when its answer came', async () => {
    const pacer = pacerOnFakeClock();
    const ticket = takeAtOnce(pacer, 1).tickets[0]!;
    // The answer (after the model's first token) comes 500 ms after the call was sent, and says nothing
    // was left when the upstream admitted it, taken as 50 ms after it was sent: at 10 a second, 4.5
    // requests have come back since, so 4 calls go at once (not 0, as reckoned from the answer).
    await jest.advanceTimersByTimeAsync(500);
    pacer.answered(ticket, { requests: { limit: 10, remaining: 0, untilFullMs: 1000 } });
    const { tickets, waiting } = takeAtOnce(pacer, 8);
    expect(tickets).toHaveLength(4);
    expect(pacer.waiting).toBe(4);
    pacer.close(cancelled);
    await Promise.all(waiting.map((taken) => expect(taken).rejects.toThrow('cancelled')));
  });

  it('halves its share of the refill on 429s for calls it let go, once per overdraft, and earns it back per admitted call', async () => {
    const pacer = pacerOnFakeClock();
    // 10 a second (9 left, full again in 100 ms).
    pacer.answered(takeAtOnce(pacer, 1).tickets[0]!, { requests: { limit: 10, remaining: 9, untilFullMs: 100 } });
    const overdraft = takeAtOnce(pacer, 9).tickets;
    // Another process took those requests: all nine are refused, one overdraft, one halving.
    for (const ticket of overdraft) pacer.answered(ticket, { requests: { limit: 10, remaining: 0, untilFullMs: 900 } }, true);
    // At half the refill (5 a second), the next request is 200 ms away, not 100 (nor 1,600 after nine halvings).
    const next = await releasedAfter(pacer, 200);
    // Its answer, admitted, gives back 1/10 of the share: 6 a second, the next one 167 ms away.
    pacer.answered(next, { requests: { limit: 10, remaining: 0, untilFullMs: 1000 } });
    await releasedAfter(pacer, 167);
  });

  /**
   * OpenAI's bucket of `limit` requests refilled over `windowMs` (the fake upstream's LimitBucket), and
   * `processes` pacers with `turnsEach` turns at once. An admitted call's answer comes after 300–337 ms
   * (the model's first token), a refusal's after 2 ms, and a refused turn tries again 100 ms later.
   */
  async function simulateSharedLimit(processes: number, turnsEach: number, limit: number, windowMs = 1000) {
    jest.useFakeTimers({ now: 1_000_000 });
    const start = Date.now();
    const bucket = new LimitBucket(limit, windowMs, start);
    let admitted = 0;
    const admittedAtMs: number[] = [];
    let refusedAfterFirstWave = 0;
    const call = () => {
      const taken = bucket.take(Date.now());
      if (taken.admitted) admittedAtMs[admitted++] = Date.now() - start;
      else if (Date.now() - start > 500) refusedAfterFirstWave++;
      return { reading: { limit, remaining: taken.remaining, untilFullMs: taken.untilFullMs }, refused: !taken.admitted };
    };
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    // Answers take 300–337 ms (a fixed sequence, so that every run is the same): levels fall between whole requests.
    let jitter = 0;
    const answerMs = () => 300 + (jitter = (jitter * 7 + 13) % 38);
    let lastAnswerMs = 0;
    const turn = async (pacer: RateLimitPacer): Promise<void> => {
      for (;;) {
        const ticket = await pacer.take(signal(), cancelled);
        const answer = call();
        await sleep(answer.refused ? 2 : answerMs());
        pacer.answered(ticket, { requests: answer.reading }, answer.refused);
        if (!answer.refused) return void (lastAnswerMs = Date.now() - start);
        await sleep(100);
      }
    };
    const pacers = Array.from({ length: processes }, () => new RateLimitPacer(() => Date.now()));
    const turns = pacers.flatMap((pacer) => Array.from({ length: turnsEach }, () => turn(pacer)));
    await jest.advanceTimersByTimeAsync(300_000);
    await Promise.all(turns);
    return { admitted, admittedAtMs, refusedAfterFirstWave, lastAnswerMs };
  }

  it('lets processes sharing one limit settle on shares of it instead of each taking all of it', async () => {
    const { admitted, refusedAfterFirstWave, lastAnswerMs } = await simulateSharedLimit(4, 50, 10);
    expect(admitted).toBe(200);
    // Each taking all of the refill, 484 calls were refused after the first wave; as fast as the limit allows.
    expect(refusedAfterFirstWave).toBeLessThan(100);
    expect(lastAnswerMs).toBeLessThan((190 / 10) * 1000 + 337 + 1000);
  });

  it('alone, meets no 429 once the limit is known, even a small one whose readings fall between whole requests', async () => {
    // 3 a second: "1 left, full in 350 ms" is 1.95 left at 3 a second, but could be read as 1.0 left at almost 6.
    const { admitted, refusedAfterFirstWave, lastAnswerMs } = await simulateSharedLimit(1, 60, 3);
    expect(admitted).toBe(60);
    expect(refusedAfterFirstWave).toBe(0);
    expect(lastAnswerMs).toBeLessThan((57 / 3) * 1000 + 337 + 2000);
  });

  it('after a cold burst, is not held back by the admitted calls still awaiting their answers', async () => {
    // 50 requests per 5 s. The burst's first 50 calls are admitted and answered 300+ ms later; the
    // other 150 are refused at once, and their 429s (nothing left) come back first. Counted as taken
    // after those 429s for good, the admitted calls would hold the line until the whole 5 s had refilled.
    const { admitted, admittedAtMs, refusedAfterFirstWave, lastAnswerMs } = await simulateSharedLimit(1, 200, 50, 5000);
    expect(admitted).toBe(200);
    expect(refusedAfterFirstWave).toBe(0);
    // Once their answers show them admitted first, the line goes on at the refill: a request every 100 ms.
    expect(admittedAtMs[50]).toBeLessThan(1000);
    expect(admittedAtMs[60]).toBeLessThan(2000);
    expect(lastAnswerMs).toBeLessThan((150 / 10) * 1000 + 337 + 1000);
  });

  it('lets a call in line go when its signal aborts, and rejects it', async () => {
    const pacer = pacerOnFakeClock();
    pacer.answered(takeAtOnce(pacer, 1).tickets[0]!, { requests: { limit: 10, remaining: 0, untilFullMs: 900 } });
    const controller = new AbortController();
    const aborted = pacer.take(controller.signal, cancelled) as Promise<number>;
    const next = pacer.take(signal(), cancelled) as Promise<number>;
    controller.abort();
    await expect(aborted).rejects.toThrow('cancelled');
    expect(pacer.waiting).toBe(1);
    await jest.advanceTimersByTimeAsync(100);
    await expect(next).resolves.toEqual(expect.any(Number));
  });

  it('is idle once nothing waits or is in flight and the mirror has refilled', async () => {
    const pacer = pacerOnFakeClock();
    const ticket = takeAtOnce(pacer, 1).tickets[0]!;
    expect(pacer.idle).toBe(false);
    pacer.answered(ticket, { requests: { limit: 10, remaining: 0, untilFullMs: 900 } });
    expect(pacer.idle).toBe(false);
    await jest.advanceTimersByTimeAsync(1000);
    expect(pacer.idle).toBe(true);
  });

  it('refuses at once a call whose turn in line would come after the longest wait it may have', async () => {
    const pacer = pacerOnFakeClock();
    pacer.answered(takeAtOnce(pacer, 1).tickets[0]!, { requests: { limit: 10, remaining: 0, untilFullMs: 900 } }); // one per 100 ms
    const tooLong = (expectedMs: number) => new Error(`would wait ${expectedMs} ms`);
    const first = pacer.take(signal(), cancelled, { maxWaitMs: 250, tooLong }) as Promise<number>; // 100 ms
    const second = pacer.take(signal(), cancelled, { maxWaitMs: 250, tooLong }) as Promise<number>; // 200 ms
    await expect(pacer.take(signal(), cancelled, { maxWaitMs: 250, tooLong })).rejects.toThrow('would wait 300 ms');
    expect(pacer.waiting).toBe(2);
    await jest.advanceTimersByTimeAsync(200);
    await expect(Promise.all([first, second])).resolves.toEqual([expect.any(Number), expect.any(Number)]);
  });

  it('rejects the calls in line on close', async () => {
    const pacer = pacerOnFakeClock();
    pacer.answered(takeAtOnce(pacer, 1).tickets[0]!, { requests: { limit: 10, remaining: 0, untilFullMs: 1000 } });
    const waiting = pacer.take(signal(), cancelled) as Promise<number>;
    pacer.close(cancelled);
    await expect(waiting).rejects.toThrow('cancelled');
  });
});

describe("RateLimitPacer: calls wait for the model's token limit, each for the tokens it needs", () => {
  /** 60,000 tokens a minute: one a millisecond (the reading bounds the rate to within 1/60,000 of it). */
  const tokenReading = (remaining: number) => ({ tokens: { limit: 60_000, remaining, untilFullMs: 60_000 - remaining } });

  it('sends what the tokens left cover, then each call once its tokens have refilled, in the order the calls came', async () => {
    const pacer = pacerOnFakeClock();
    pacer.answered(takeAtOnce(pacer, 1, 100).tickets[0]!, tokenReading(4000));
    expect(takeAtOnce(pacer, 1, 3000).tickets).toHaveLength(1); // 1,000 left
    const releasedAt: Record<string, number> = {};
    const track = (name: string, tokens: number) => void (pacer.take(signal(), cancelled, { tokens }) as Promise<number>).then(() => (releasedAt[name] = Date.now() - 1_000_000));
    track('big', 3000); // 2,000 short: 2 s
    track('small', 10); // behind it, though 10 tokens are there now
    expect(pacer.waiting).toBe(2);
    await jest.advanceTimersByTimeAsync(1999);
    expect(releasedAt).toEqual({});
    await jest.advanceTimersByTimeAsync(3);
    expect(releasedAt.big).toBeGreaterThanOrEqual(2000);
    expect(releasedAt.small).toBeUndefined(); // the big call took what had refilled
    await jest.advanceTimersByTimeAsync(20);
    expect(releasedAt.small! - releasedAt.big!).toBeGreaterThanOrEqual(9);
    expect(releasedAt.small! - releasedAt.big!).toBeLessThanOrEqual(12);
  });

  it('counts the tokens of the calls still in flight as taken', async () => {
    const pacer = pacerOnFakeClock();
    const { tickets } = takeAtOnce(pacer, 4, 2500);
    // The 2nd call's answer: 8,000 left after it; calls 1, 3 and 4, in flight, took 7,500 of them.
    pacer.answered(tickets[1]!, tokenReading(8000));
    expect(takeAtOnce(pacer, 1, 400).tickets).toHaveLength(1);
    const { waiting } = takeAtOnce(pacer, 1, 400);
    expect(waiting).toHaveLength(1);
    pacer.close(cancelled);
    await expect(waiting[0]).rejects.toThrow('cancelled');
  });

  it('lets a call that needs more than the whole limit go once the limit is full, instead of never', async () => {
    const pacer = pacerOnFakeClock();
    pacer.answered(takeAtOnce(pacer, 1, 100).tickets[0]!, { tokens: { limit: 1000, remaining: 0, untilFullMs: 1000 } });
    let released = false;
    void (pacer.take(signal(), cancelled, { tokens: 5000 }) as Promise<number>).then(() => (released = true));
    await jest.advanceTimersByTimeAsync(990);
    expect(released).toBe(false);
    await jest.advanceTimersByTimeAsync(20);
    expect(released).toBe(true);
  });

  it('halves its share of the token limit on a 429 the token limit gave a call it let go', async () => {
    const pacer = pacerOnFakeClock();
    const { tickets } = takeAtOnce(pacer, 1, 100);
    pacer.answered(tickets[0]!, tokenReading(59_000));
    const overdrawn = takeAtOnce(pacer, 1, 1000).tickets[0]!;
    // Another process took the tokens: refused, with 500 left (fewer than the 1,000 it needs).
    pacer.answered(overdrawn, { tokens: { limit: 60_000, remaining: 500, untilFullMs: 59_500 }, requests: { limit: 1000, remaining: 990, untilFullMs: 600 } }, true);
    // Half the share: 250 of the 500 left, refilled at half a token a millisecond. 750 more: 1.5 s
    // (the whole limit would have sent it in 0.5 s).
    await releasedAfter(pacer, 1500, 1000, 1);
  });

  it('keeps its share when the upstream refuses a call that needs more tokens than the whole limit', async () => {
    const pacer = pacerOnFakeClock();
    pacer.answered(takeAtOnce(pacer, 1, 100).tickets[0]!, tokenReading(60_000));
    const oversized = takeAtOnce(pacer, 1, 100_000).tickets[0]!; // goes once the whole limit is there
    pacer.answered(oversized, { tokens: { limit: 60_000, remaining: 60_000, untilFullMs: 0 } }, true);
    // The whole limit is left for the others: calls needing 30,000 and 20,000 go at once (on half of
    // it, the second would wait).
    expect(takeAtOnce(pacer, 1, 30_000).tickets).toHaveLength(1);
    expect(takeAtOnce(pacer, 1, 20_000).tickets).toHaveLength(1);
  });

  it('tells which limit a call that cannot go at once waits for', async () => {
    const heard: string[] = [];
    const onWait = (limit: string) => void heard.push(limit);
    const byTokens = pacerOnFakeClock();
    byTokens.answered(takeAtOnce(byTokens, 1, 100).tickets[0]!, { requests: { limit: 100, remaining: 50, untilFullMs: 500 }, ...tokenReading(1000) });
    expect(byTokens.take(signal(), cancelled, { tokens: 500, onWait })).toEqual(expect.any(Number)); // both there: no wait
    const waiting = [byTokens.take(signal(), cancelled, { tokens: 2000, onWait }), byTokens.take(signal(), cancelled, { tokens: 10, onWait })];
    const byRequests = new RateLimitPacer(() => Date.now());
    byRequests.answered(takeAtOnce(byRequests, 1, 100).tickets[0]!, { requests: { limit: 100, remaining: 0, untilFullMs: 60_000 }, ...tokenReading(50_000) });
    waiting.push(byRequests.take(signal(), cancelled, { tokens: 10, onWait }));
    // The small call behind the big one waits for the same tokens.
    expect(heard).toEqual(['tokens', 'tokens', 'requests']);
    byTokens.close(cancelled);
    byRequests.close(cancelled);
    for (const taken of waiting) await expect(taken).rejects.toThrow('cancelled');
  });

  it('estimates nothing from an upstream that reports no token limit: calls of any size pass at once', () => {
    const pacer = pacerOnFakeClock();
    pacer.answered(takeAtOnce(pacer, 1, 100).tickets[0]!, { requests: { limit: 10_000, remaining: 9_999, untilFullMs: 6 } });
    expect(takeAtOnce(pacer, 5, 1_000_000).tickets).toHaveLength(5);
  });
});
