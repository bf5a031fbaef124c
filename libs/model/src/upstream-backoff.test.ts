import { MAX_UPSTREAM_BACKOFF_MS, UpstreamGate, UpstreamGates, upstreamBackoffMs } from './upstream-backoff';
import { rejection } from './test-helpers';

describe('upstreamBackoffMs: the wait an error answer asks for', () => {
  const now = Date.parse('2026-12-03T12:00:00Z');

  it('reads retry-after-ms first, then retry-after as seconds or as an HTTP date', () => {
    expect(upstreamBackoffMs(429, { 'retry-after-ms': '1500', 'retry-after': '9' })).toBe(1500);
    expect(upstreamBackoffMs(429, { 'retry-after-ms': '12.3' })).toBe(13);
    expect(upstreamBackoffMs(503, { 'retry-after': '2' })).toBe(2000);
    expect(upstreamBackoffMs(503, { 'retry-after': '0.5' })).toBe(500);
    expect(upstreamBackoffMs(429, { 'retry-after': 'Thu, 03 Dec 2026 12:00:07 GMT' }, { now })).toBe(7000);
  });

  it("reads OpenAI's reset duration of the limit that has nothing left, on a 429 only", () => {
    const headers = {
      'x-ratelimit-remaining-requests': '0',
      'x-ratelimit-reset-requests': '1m2.5s',
      'x-ratelimit-remaining-tokens': '4000',
      'x-ratelimit-reset-tokens': '20ms',
    };
    expect(upstreamBackoffMs(429, headers)).toBe(MAX_UPSTREAM_BACKOFF_MS); // 62.5 s, capped
    expect(upstreamBackoffMs(429, { ...headers, 'x-ratelimit-reset-requests': '1s' })).toBe(1000);
    expect(upstreamBackoffMs(429, { 'x-ratelimit-remaining-tokens': '0', 'x-ratelimit-reset-tokens': '6m0s' })).toBe(MAX_UPSTREAM_BACKOFF_MS);
    expect(upstreamBackoffMs(429, { 'x-ratelimit-remaining-tokens': '0', 'x-ratelimit-reset-tokens': '250ms' })).toBe(250);
    // Neither limit is exhausted, or it is not a 429: the resets say nothing about this failure.
    expect(upstreamBackoffMs(429, { 'x-ratelimit-remaining-requests': '3', 'x-ratelimit-reset-requests': '1s' })).toBeUndefined();
    expect(upstreamBackoffMs(500, { 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': '1s' })).toBeUndefined();
  });

  it('waits for one request, not for the whole refill, when the request limit is named', () => {
    // 10,000 a minute, all spent: full again in 60 s, one more request in 6 ms.
    const spent = { 'x-ratelimit-limit-requests': '10000', 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': '59.996s' };
    expect(upstreamBackoffMs(429, spent)).toBe(6);
    expect(upstreamBackoffMs(429, { ...spent, 'x-ratelimit-limit-requests': '60', 'x-ratelimit-reset-requests': '1m0s' })).toBe(1000);
    // The slower limit decides: tokens spent too (their need is unknown, so their whole reset).
    expect(upstreamBackoffMs(429, { ...spent, 'x-ratelimit-remaining-tokens': '0', 'x-ratelimit-reset-tokens': '450ms' })).toBe(450);
    // An unusable limit is ignored: the whole reset, as without it.
    expect(upstreamBackoffMs(429, { ...spent, 'x-ratelimit-limit-requests': '0' })).toBe(59_996);
    expect(upstreamBackoffMs(429, { ...spent, 'x-ratelimit-limit-requests': 'many' })).toBe(59_996);
    // retry-after, when present, still comes first.
    expect(upstreamBackoffMs(429, { ...spent, 'retry-after': '2' })).toBe(2000);
  });

  it('waits for the tokens the refused call needs, when it says how many: the token limit refused it even with some left', () => {
    // 30,000 tokens a minute, 1,000 left (full again in 58 s: 500 a second); the call needs 2,500.
    const short = { 'x-ratelimit-limit-tokens': '30000', 'x-ratelimit-remaining-tokens': '1000', 'x-ratelimit-reset-tokens': '58s' };
    expect(upstreamBackoffMs(429, short, { tokensNeeded: 2500 })).toBe(3000);
    // Without the call's need, some tokens left says nothing; none left, the whole reset.
    expect(upstreamBackoffMs(429, short)).toBeUndefined();
    expect(upstreamBackoffMs(429, { ...short, 'x-ratelimit-remaining-tokens': '0', 'x-ratelimit-reset-tokens': '1m0s' })).toBe(MAX_UPSTREAM_BACKOFF_MS);
    // Enough tokens left: not the token limit's refusal.
    expect(upstreamBackoffMs(429, short, { tokensNeeded: 900 })).toBeUndefined();
    // A call larger than the whole limit is never admitted: no wait would help, so none is named.
    expect(upstreamBackoffMs(429, { ...short, 'x-ratelimit-remaining-tokens': '30000', 'x-ratelimit-reset-tokens': '0s' }, { tokensNeeded: 40_000 })).toBeUndefined();
    // The slower of the two limits decides.
    const requestsSpent = { 'x-ratelimit-limit-requests': '100', 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': '10s' };
    expect(upstreamBackoffMs(429, { ...short, ...requestsSpent }, { tokensNeeded: 2500 })).toBe(3000);
    expect(upstreamBackoffMs(429, { ...short, ...requestsSpent }, { tokensNeeded: 1100 })).toBe(200);
  });

  it('caps long waits and ignores absent, past, zero or malformed ones', () => {
    expect(upstreamBackoffMs(429, { 'retry-after': '3600' })).toBe(MAX_UPSTREAM_BACKOFF_MS);
    expect(upstreamBackoffMs(429, {})).toBeUndefined();
    expect(upstreamBackoffMs(429, { 'retry-after': '0' })).toBeUndefined();
    expect(upstreamBackoffMs(429, { 'retry-after': 'Thu, 03 Dec 2026 11:59:00 GMT' }, { now })).toBeUndefined();
    expect(upstreamBackoffMs(429, { 'retry-after': 'soon' })).toBeUndefined();
    expect(upstreamBackoffMs(429, { 'retry-after-ms': '-5', 'retry-after': '1' })).toBe(1000);
    expect(upstreamBackoffMs(429, { 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': '5 minutes' })).toBeUndefined();
  });
});

describe('UpstreamGate', () => {
  it('keeps the longest hold and lets calls through once it has passed', async () => {
    const gate = new UpstreamGate();
    expect(gate.remainingMs()).toBe(0);
    gate.hold(120);
    gate.hold(30); // a shorter wait asked for later does not reopen the gate early
    expect(gate.remainingMs()).toBeGreaterThan(90);
    const started = Date.now();
    await gate.pass(new AbortController().signal, () => new Error('aborted'));
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    expect(gate.remainingMs()).toBe(0);
  });

  it('waits again when the hold is extended while it waits', async () => {
    const gate = new UpstreamGate();
    gate.hold(50);
    const started = Date.now();
    setTimeout(() => gate.hold(150), 20);
    await gate.pass(new AbortController().signal, () => new Error('aborted'));
    expect(Date.now() - started).toBeGreaterThanOrEqual(160);
  });

  it('releases held calls spread over up to a second after it opens, and open-gate calls at once', async () => {
    const gate = new UpstreamGate();
    const never = new AbortController().signal;
    const elapsed = async (random: () => number) => {
      const started = Date.now();
      await gate.pass(never, () => new Error('aborted'), random);
      return Date.now() - started;
    };
    gate.hold(200);
    expect(await elapsed(() => 0.5)).toBeGreaterThanOrEqual(290); // 200 ms held + half of a 200 ms spread
    // Open again: a new call goes at once, without a timer, however its draw falls.
    const order: string[] = [];
    await Promise.all([
      gate.pass(never, () => new Error('aborted'), () => 0.99).then(() => order.push('passed')),
      new Promise((resolve) => setImmediate(resolve)).then(() => order.push('next turn of the event loop')),
    ]);
    expect(order).toEqual(['passed', 'next turn of the event loop']);
  });

  it('spreads the release over 10 ms per call it held, so a short hold does not release them all at once', async () => {
    const gate = new UpstreamGate();
    const never = new AbortController().signal;
    gate.hold(20);
    const started = Date.now();
    // 50 held calls: a spread of 500 ms (the hold alone would give 20), each drawing its middle.
    const waits = await Promise.all(Array.from({ length: 50 }, () => gate.pass(never, () => new Error('aborted'), () => 0.5).then(() => Date.now() - started)));
    for (const waited of waits) expect(waited).toBeGreaterThanOrEqual(260);
  });

  it('says whether a hold is news: it closed the gate, or put the opening at least a second later', () => {
    const gate = new UpstreamGate();
    expect(gate.hold(5000)).toBe(true); // closed an open gate
    expect(gate.hold(5000)).toBe(false); // the same answer again, from a call that was already in flight
    expect(gate.hold(1000)).toBe(false); // shorter: the hold in place stays
    expect(gate.hold(7000)).toBe(true); // ≈ 2 s later than the hold in place
  });

  it('gives up at once when the caller aborts', async () => {
    const gate = new UpstreamGate();
    gate.hold(10_000);
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(), 20);
    const error = await rejection(gate.pass(controller.signal, () => new Error('cancelled while waiting')));
    expect((error as Error).message).toBe('cancelled while waiting');
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

describe('UpstreamGates', () => {
  const never = new AbortController().signal;

  it("holds only the model a 429 named, and every model for a 503's hold (model null)", async () => {
    const gates = new UpstreamGates();
    gates.hold('gpt-4o', 10_000);
    expect(gates.remainingMs('gpt-4o')).toBeGreaterThan(9000);
    expect(gates.remainingMs('gpt-4o-mini')).toBe(0);
    gates.hold(null, 150);
    expect(gates.remainingMs('gpt-4o-mini')).toBeGreaterThan(100);
    expect(gates.remainingMs('gpt-4o')).toBeGreaterThan(9000); // the longer of the two
    const started = Date.now();
    await gates.pass('gpt-4o-mini', never, () => new Error('aborted'));
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(gates.remainingMs('gpt-4o-mini')).toBe(0);
    expect(gates.remainingMs('gpt-4o')).toBeGreaterThan(8000);
  });

  it('waits out both gates when both are closed', async () => {
    const gates = new UpstreamGates();
    gates.hold(null, 60);
    gates.hold('m', 160);
    const started = Date.now();
    await gates.pass('m', never, () => new Error('aborted'));
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
  });
});
