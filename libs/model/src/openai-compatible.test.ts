import { EventEmitter } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startFakeUpstream, type FakeUpstream } from '@ic/test-support';
import type { UpstreamHold } from '@ic/schemas';
import { OpenAICompatibleAdapter } from './openai-compatible';
import { assistant, baseParams, call, collect, output, rejection, request, textDeltas, user } from './test-helpers';
import { ModelError, type ModelEvent } from './types';
import type { UpstreamHoldPeers } from './upstream-backoff';

let fake: FakeUpstream;
/** Generous timeout, so that a loaded machine cannot turn ordinary tests into timeouts. */
let adapter: OpenAICompatibleAdapter;
/** For the idle-timeout tests: short, but well above the gaps the fake leaves between chunks. */
let idle: OpenAICompatibleAdapter;
const IDLE_MS = 1000;

beforeAll(async () => {
  fake = await startFakeUpstream();
  adapter = new OpenAICompatibleAdapter({ baseURL: fake.baseURL, apiKey: 'test-key', timeoutMs: 15_000 });
  idle = new OpenAICompatibleAdapter({ baseURL: fake.baseURL, apiKey: 'test-key', timeoutMs: IDLE_MS });
});
afterEach(() => fake.reset());
afterAll(async () => {
  adapter.close();
  idle.close();
  await fake.close();
});

const done = (events: ModelEvent[]) => {
  const last = events[events.length - 1];
  if (last?.type !== 'done') throw new Error(`stream did not end with done: ${JSON.stringify(events)}`);
  return last;
};

async function modelError(promise: Promise<unknown>): Promise<ModelError> {
  const error = await rejection(promise);
  expect(error).toBeInstanceOf(ModelError);
  return error as ModelError;
}

/** Reads a stream that must fail: the events that arrived before, and the ModelError it ended with. */
async function eventsBeforeError(stream: AsyncIterable<ModelEvent>): Promise<{ received: ModelEvent[]; error: ModelError }> {
  const received: ModelEvent[] = [];
  const error = await modelError(
    (async () => {
      for await (const event of stream) received.push(event);
    })(),
  );
  return { received, error };
}

/** A hand-written upstream (for wire details the fake upstream does not script) and an adapter on it, closed after `use`. */
async function withRawUpstream(handler: http.RequestListener, use: (adapter: OpenAICompatibleAdapter) => Promise<void>): Promise<void> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const raw = new OpenAICompatibleAdapter({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'k', timeoutMs: 5000 });
  try {
    await use(raw);
  } finally {
    raw.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('OpenAICompatibleAdapter streaming', () => {
  it('streams text as several deltas in order and maps usage, including cached tokens', async () => {
    fake.set({ reply: 'one two three four', cachedTokens: 3 });
    const events = await collect(adapter, request({ items: [user('count to four please')] }));
    expect(textDeltas(events)).toEqual(['one ', 'two ', 'three ', 'four']);
    expect(events.filter((e) => e.type === 'done')).toHaveLength(1);
    // Fake usage: prompt = words in messages (4), completion = content chunks (4).
    expect(done(events)).toEqual({ type: 'done', finishReason: 'stop', usage: { inputTokens: 4, outputTokens: 4, cachedTokens: 3 } });
  });

  it('replaces U+0000 in what the model sends, which PostgreSQL could not store', async () => {
    fake.set({ reply: 'bad \u0000 output' });
    const events = await collect(adapter, request({ items: [user('hi')] }));
    expect(textDeltas(events).join('')).toBe('bad \uFFFD output');
  });

  it('sends the exact history, model and parameters upstream', async () => {
    const items = [user('Weather?'), assistant('Checking.'), call('call_1', 'get_weather', '{"city":"Oslo"}'), output('call_1', 'rain'), user('Thanks')];
    const params = { ...baseParams, temperature: 0.3, max_output_tokens: 64, tools: [{ type: 'function', name: 'get_weather', parameters: { type: 'object' } }] };
    const events = await collect(adapter, request({ model: 'llama3.1:8b', instructions: 'Be terse.', items, params }));

    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]).toEqual({
      model: 'llama3.1:8b',
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0.3,
      max_completion_tokens: 64,
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }],
      messages: [
        { role: 'system', content: 'Be terse.' },
        { role: 'user', content: 'Weather?' },
        { role: 'assistant', content: 'Checking.', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: 'rain' },
        { role: 'user', content: 'Thanks' },
      ],
    });
    // The fake's default reply proves what it received.
    expect(textDeltas(events).join('')).toBe('Fake reply to 5 messages. Last: "Thanks".');
  });

  it('delivers deltas as they arrive, before the upstream has finished', async () => {
    fake.set({ reply: 'alpha beta gamma delta' });
    fake.hangNext(3); // role chunk, "alpha ", "beta ", then silence
    const received: string[] = [];
    const error = await modelError(
      (async () => {
        for await (const event of idle.stream(request())) if (event.type === 'text_delta') received.push(event.delta);
      })(),
    );
    expect(received).toEqual(['alpha ', 'beta ']);
    expect(error.code).toBe('upstream_timeout');
  });

  it('streams tool calls with index, id, name and argument fragments', async () => {
    fake.set({
      reply: {
        toolCalls: [
          { id: 'call_w', name: 'get_weather', arguments: '{"city":"Paris","unit":"celsius"}' },
          { id: 'call_t', name: 'get_time', arguments: '{}' },
        ],
      },
    });
    const tools = [{ type: 'function', name: 'get_weather' }, { type: 'function', name: 'get_time' }];
    const events = await collect(adapter, request({ params: { ...baseParams, tools } }));
    const calls = events.filter((e): e is Extract<ModelEvent, { type: 'tool_call_delta' }> => e.type === 'tool_call_delta');
    expect(calls[0]).toEqual({ type: 'tool_call_delta', index: 0, callId: 'call_w', name: 'get_weather', argumentsDelta: '' });
    const weatherArgs = calls.filter((c) => c.index === 0).map((c) => c.argumentsDelta);
    expect(weatherArgs.length).toBeGreaterThan(2); // really streamed in fragments
    expect(weatherArgs.join('')).toBe('{"city":"Paris","unit":"celsius"}');
    expect(calls.filter((c) => c.callId !== undefined).map((c) => [c.index, c.callId, c.name])).toEqual([
      [0, 'call_w', 'get_weather'],
      [1, 'call_t', 'get_time'],
    ]);
    expect(calls.filter((c) => c.index === 1).map((c) => c.argumentsDelta).join('')).toBe('{}');
    expect(done(events).finishReason).toBe('tool_calls');
  });

  it('estimates usage at about four characters per token when the upstream sends none', async () => {
    fake.set({ reply: 'abcd efgh', omitUsage: true });
    const events = await collect(adapter, request({ instructions: '12345678', items: [user('1234')] }));
    expect(done(events).usage).toEqual({ inputTokens: 3, outputTokens: 3, cachedTokens: 0 });
  });

  it('keeps streaming past the timeout as long as chunks keep arriving (the timeout is idle, not total)', async () => {
    fake.set({ reply: 'a b c d e f g h i j k l', tokenDelayMs: 120 });
    const started = Date.now();
    const events = await collect(idle, request());
    expect(Date.now() - started).toBeGreaterThan(IDLE_MS);
    expect(textDeltas(events)).toHaveLength(12);
    expect(done(events).finishReason).toBe('stop');
  });

  it('does not count time the consumer spends on an event against the idle timeout', async () => {
    fake.set({ reply: 'slow consumer here' });
    const received: string[] = [];
    for await (const event of idle.stream(request())) {
      if (event.type !== 'text_delta') continue;
      received.push(event.delta);
      // The consumer (not the upstream) is slow here, e.g. persisting each delta.
      if (received.length === 1) await new Promise((resolve) => setTimeout(resolve, IDLE_MS + 200));
    }
    expect(received.join('')).toBe('slow consumer here');
  });

  it('closes the upstream connection when the consumer stops early', async () => {
    fake.set({ reply: 'one two three four five six', tokenDelayMs: 50 });
    for await (const event of adapter.stream(request())) {
      if (event.type === 'text_delta') break;
    }
    await fake.waitForAborts(1);
  });
});

describe('OpenAICompatibleAdapter errors', () => {
  it('maps an unknown model (404) to model_not_found, not retryable, with a clear message', async () => {
    fake.set({ models: ['known-model'] });
    const error = await modelError(collect(adapter, request({ model: 'nope' })));
    expect(error).toMatchObject({ code: 'model_not_found', retryable: false });
    expect(error.message).toContain('The model upstream returned 404: The model `nope` does not exist');
    expect(error.detail).toContain(`Model upstream ${fake.baseURL} returned 404: The model \`nope\` does not exist`);
    expect(error.detail).toContain("model 'nope'");
  });

  it('maps a wrong API key (401) to upstream_auth', async () => {
    fake.set({ apiKey: 'the-right-key' });
    const error = await modelError(collect(adapter, request()));
    expect(error).toMatchObject({ code: 'upstream_auth', retryable: false });
    // An auth failure's message may quote part of the key: callers get the status only, operators the rest.
    expect(error.message).toBe('The model upstream refused our credentials (401).');
    expect(error.detail).toContain('returned 401: Incorrect API key provided.');
  });

  it.each([
    [400, 'upstream_bad_request', false],
    [422, 'upstream_bad_request', false],
    [403, 'upstream_auth', false],
    [429, 'rate_limit_exceeded', true],
    [500, 'upstream_error', true],
    [503, 'upstream_error', true],
  ] as const)('maps HTTP %i to %s (retryable: %s)', async (status, code, retryable) => {
    fake.failNext(status);
    const error = await modelError(collect(adapter, request()));
    expect(error).toMatchObject({ code, retryable });
    expect(error.message).toBe(status === 403 ? 'The model upstream refused our credentials (403).' : `The model upstream returned ${status}: Fake upstream failure ${status}`);
    expect(error.detail).toBe(`Model upstream ${fake.baseURL} returned ${status}: Fake upstream failure ${status}` + (status === 403 ? ' (check MODEL_API_KEY)' : ''));
    expect(fake.requests).toHaveLength(1); // no hidden client retries
  });

  it('quotes a plain-text error body', async () => {
    fake.failNext(502, 1, 'Bad gateway from the proxy');
    const error = await modelError(collect(adapter, request()));
    expect(error).toMatchObject({ code: 'upstream_error', retryable: true });
    expect(error.message).toBe('The model upstream returned 502: Bad gateway from the proxy');
  });

  it("never lets the upstream's address or key into the public message, even when the upstream quotes them", async () => {
    const { host } = new URL(fake.baseURL);
    const keyed = new OpenAICompatibleAdapter({ baseURL: fake.baseURL, apiKey: 'sk-secret-upstream-key', timeoutMs: 5000 });
    fake.failNext(500, 1, { error: { message: `proxy ${fake.baseURL}/chat/completions (${host}) failed with key sk-secret-upstream-key`, type: 'server_error' } });
    const error = await modelError(collect(keyed, request()));
    expect(error.message).toBe('The model upstream returned 500: proxy [upstream]/chat/completions ([upstream]) failed with key [upstream]');
    expect(error.detail).toContain(fake.baseURL);
  });

  it('recovers once scripted failures are used up', async () => {
    fake.failNext(503, 2);
    await expect(collect(adapter, request())).rejects.toMatchObject({ code: 'upstream_error' });
    await expect(collect(adapter, request())).rejects.toMatchObject({ code: 'upstream_error' });
    const events = await collect(adapter, request());
    expect(done(events).finishReason).toBe('stop');
  });

  describe('an upstream that asks us to back off', () => {
    // Each test gets its own adapter: a back-off holds every call of the adapter that was told.
    let throttled: OpenAICompatibleAdapter;
    beforeEach(() => {
      throttled = new OpenAICompatibleAdapter({ baseURL: fake.baseURL, apiKey: 'k', timeoutMs: 5000 });
    });
    afterEach(() => throttled.close());

    it.each(['retry-after-ms', 'retry-after', 'x-ratelimit-reset-requests'] as const)('reports the wait a 429 names in %s on the error', async (header) => {
      fake.throttleFor(1000, header);
      const error = await modelError(collect(throttled, request()));
      expect(error).toMatchObject({ code: 'rate_limit_exceeded', retryable: true, throttled: true });
      expect(error.retryAfterMs).toBeGreaterThan(800);
      expect(error.retryAfterMs).toBeLessThanOrEqual(1000);
      expect(error.detail).toMatch(/asked us to wait \d+ ms/);
      expect(error.message).not.toContain('asked us to wait'); // callers see the upstream's words only
    });

    it('holds every call of the process until the wait is over, so none earns another 429', async () => {
      const windowMs = 400;
      fake.throttleFor(windowMs);
      const refused = await modelError(collect(throttled, request()));
      const heldUntil = fake.requestTimes[0]! + refused.retryAfterMs!;
      // Five turns call while the upstream still refuses: they wait instead of being refused again.
      const results = await Promise.all(Array.from({ length: 5 }, () => collect(throttled, request())));
      for (const events of results) expect(done(events).finishReason).toBe('stop');
      expect(fake.throttledCount).toBe(1);
      expect(fake.requestTimes).toHaveLength(6);
      for (const arrived of fake.requestTimes.slice(1)) expect(arrived).toBeGreaterThanOrEqual(heldUntil);
      expect(throttled.backoffRemainingMs('fake-model')).toBe(0);
    });

    it('lets a call cancelled while it waits go at once, without reaching the upstream', async () => {
      fake.throttleFor(10_000);
      await modelError(collect(throttled, request()));
      const controller = new AbortController();
      const started = Date.now();
      setTimeout(() => controller.abort(), 50);
      const error = await modelError(collect(throttled, request({ signal: controller.signal })));
      expect(error.code).toBe('cancelled');
      expect(Date.now() - started).toBeLessThan(5000);
      expect(fake.requestTimes).toHaveLength(1);
    });

    it('holds nothing for a 429 that names no wait, nor for a 500 that does', async () => {
      fake.failNext(429, 1);
      const unnamed = await modelError(collect(throttled, request()));
      expect(unnamed).toMatchObject({ code: 'rate_limit_exceeded', retryAfterMs: undefined, throttled: false });
      expect(throttled.backoffRemainingMs('fake-model')).toBe(0);
      await withRawUpstream(
        (_req, res) => void res.writeHead(500, { 'content-type': 'application/json', 'retry-after': '30' }).end('{"error":{"message":"boom"}}'),
        async (raw) => {
          const error = await modelError(collect(raw, request()));
          // The turn's own retry honours it; other calls are not held for one request's failure.
          expect(error).toMatchObject({ code: 'upstream_error', retryAfterMs: 30_000, throttled: false });
          expect(raw.backoffRemainingMs('fake-model')).toBe(0);
        },
      );
    });

    it("paces calls by the request limit OpenAI's headers report on every answer: none meets a 429", async () => {
      // OpenAI's bucket: 3 requests, refilled one per 200 ms; every answer says what is left.
      fake.set({ rateLimit: { requests: 3, windowMs: 600, style: 'bucket' } });
      expect(done(await collect(throttled, request())).finishReason).toBe('stop'); // 2 left
      const burst = Promise.all(Array.from({ length: 6 }, () => collect(throttled, request())));
      // Another model's limit is its own: its call goes out while this model's calls wait in line.
      expect(done(await collect(throttled, request({ model: 'model-b' }))).finishReason).toBe('stop');
      const otherAnsweredAt = Date.now();
      for (const events of await burst) expect(done(events).finishReason).toBe('stop');
      expect(fake.throttledCount).toBe(0);
      expect(fake.requestTimes).toHaveLength(8);
      expect(otherAnsweredAt).toBeLessThan(Math.max(...fake.requestTimes));
      // What the bucket held went at once; the rest reached the upstream about one refill (200 ms) apart
      // (three admissions after any one need at least two whole refills).
      const modelA = fake.requests.flatMap((body, index) => (body.model === 'fake-model' ? [fake.requestTimes[index]!] : []));
      expect(modelA[6]! - modelA[3]!).toBeGreaterThanOrEqual(2 * 200);
    });

    it('paces calls by the token limit too, each waiting for the tokens it needs: none meets a 429', async () => {
      // 1,000 requests but 3,000 tokens per 600 ms (5 a millisecond). Each call's prompt is 800
      // characters with max_output_tokens 300: the upstream reserves 500 tokens for it (the adapter
      // reckons 504), so six fit at first, then one per 100 ms.
      fake.set({ rateLimit: { requests: 1000, windowMs: 600, style: 'bucket', tokens: 3000 } });
      const big = () => request({ items: [user(`${'x'.repeat(799)}.`)], params: { ...baseParams, max_output_tokens: 300 } });
      expect(done(await collect(throttled, big())).finishReason).toBe('stop'); // 2,500 left
      const burst = await Promise.all(Array.from({ length: 10 }, () => collect(throttled, big())));
      for (const events of burst) expect(done(events).finishReason).toBe('stop');
      expect(fake.throttledCount).toBe(0);
      expect(fake.requestTimes).toHaveLength(11);
      // 5,500 tokens against 3,000 at first and 5 a millisecond: the last call went no sooner than the
      // refill of the other 2,500 allows (500 ms), less the admission allowance.
      expect(fake.requestTimes[10]! - fake.requestTimes[0]!).toBeGreaterThanOrEqual(400);
    });

    it('treats a 429 from the token limit as a throttle naming the refill of the tokens the call needs, though some remain', async () => {
      // 30,000 a minute, 1,000 left, full in 58 s: 500 a second. The call reckons ≈ 2,505 tokens.
      const headers = { 'x-ratelimit-limit-tokens': '30000', 'x-ratelimit-remaining-tokens': '1000', 'x-ratelimit-reset-tokens': '58s' };
      fake.failNext(429, 1, undefined, headers);
      const started = Date.now();
      const refused = await modelError(collect(throttled, request({ model: 'model-t', items: [user('y'.repeat(10_000))] })));
      expect(refused).toMatchObject({ code: 'rate_limit_exceeded', throttled: true });
      expect(refused.retryAfterMs).toBeGreaterThanOrEqual(3000);
      expect(refused.retryAfterMs).toBeLessThanOrEqual(3020);
      // The model's calls are held that long, not the minute until the limit is full again.
      expect(throttled.backoffRemainingMs('model-t')).toBeGreaterThan(2000);
      expect(throttled.backoffRemainingMs('model-t')).toBeLessThanOrEqual(3020 - (Date.now() - started));
    });

    it('does not pace with rateLimitPacing off: the calls meet the limit', async () => {
      const unpaced = new OpenAICompatibleAdapter({ baseURL: fake.baseURL, apiKey: 'k', timeoutMs: 5000, rateLimitPacing: false });
      try {
        fake.set({ rateLimit: { requests: 3, windowMs: 600, style: 'bucket' } });
        expect(done(await collect(unpaced, request())).finishReason).toBe('stop'); // 2 left
        const outcomes = await Promise.all(Array.from({ length: 4 }, () => collect(unpaced, request()).then(() => 'stop', (error: ModelError) => error.code)));
        expect(outcomes.sort()).toEqual(['rate_limit_exceeded', 'rate_limit_exceeded', 'stop', 'stop']);
      } finally {
        unpaced.close();
      }
    });

    it('fails a call at once, as rate_limit_exceeded, when the line for the request limit is longer than it may wait', async () => {
      // One request a second, just spent.
      fake.set({ rateLimit: { requests: 1, windowMs: 1000, style: 'bucket' } });
      expect(done(await collect(throttled, request())).finishReason).toBe('stop');
      const started = Date.now();
      const error = await modelError(collect(throttled, request({ maxRateLimitWaitMs: 200 })));
      expect(error).toMatchObject({ code: 'rate_limit_exceeded', retryable: true, throttled: false });
      expect(error.message).toMatch(/rate limit would hold this call about (0\.9|1\.0) s, longer than the 0\.2 s it may wait/);
      expect(Date.now() - started).toBeLessThan(500); // not the second its turn would take
      expect(fake.requestTimes).toHaveLength(1);
      // Without a bound it waits its turn.
      expect(done(await collect(throttled, request())).finishReason).toBe('stop');
      expect(fake.throttledCount).toBe(0);
    });

    it("holds only the model whose quota a 429 named: another model's calls go out meanwhile", async () => {
      fake.throttleFor(2000, 'retry-after-ms', 'model-a');
      const refused = await modelError(collect(throttled, request({ model: 'model-a' })));
      const heldUntil = fake.requestTimes[0]! + refused.retryAfterMs!;
      const events = await collect(throttled, request({ model: 'model-b' }));
      expect(done(events).finishReason).toBe('stop');
      expect(fake.requestTimes[1]!).toBeLessThan(heldUntil);
      expect(throttled.backoffRemainingMs('model-a')).toBeGreaterThan(0);
      expect(throttled.backoffRemainingMs('model-b')).toBe(0);
    });

    it('holds every model for a 503 that names a wait (the server itself is overloaded)', async () => {
      fake.failNext(503, 1, undefined, { 'retry-after-ms': '400' });
      const refused = await modelError(collect(throttled, request({ model: 'model-a' })));
      expect(refused).toMatchObject({ code: 'upstream_error', throttled: true });
      const heldUntil = fake.requestTimes[0]! + refused.retryAfterMs!;
      expect(done(await collect(throttled, request({ model: 'model-b' }))).finishReason).toBe('stop');
      expect(fake.requestTimes[1]!).toBeGreaterThanOrEqual(heldUntil);
    });

    describe('shared with the other processes calling the upstream', () => {
      /** Stands in for the queue backend's signals (its Redis channel is tested in libs/queue). */
      function peerBus(): UpstreamHoldPeers & { published: UpstreamHold[] } {
        const emitter = new EventEmitter();
        const published: UpstreamHold[] = [];
        return {
          published,
          async publishUpstreamHold(hold) {
            published.push(hold);
            emitter.emit('hold', hold);
          },
          onUpstreamHold(listener) {
            emitter.on('hold', listener);
            return () => emitter.off('hold', listener);
          },
        };
      }
      const peerOf = (peers: UpstreamHoldPeers, baseURL = fake.baseURL) => new OpenAICompatibleAdapter({ baseURL, apiKey: 'k', timeoutMs: 5000, peers });

      it("holds a peer's calls after one process meets the limit, so the peer earns no 429 of its own", async () => {
        const bus = peerBus();
        const [first, second] = [peerOf(bus), peerOf(bus)];
        try {
          fake.throttleFor(400);
          const refused = await modelError(collect(first, request()));
          const heldUntil = fake.requestTimes[0]! + refused.retryAfterMs!;
          expect(bus.published).toEqual([expect.objectContaining({ model: 'fake-model', ms: refused.retryAfterMs })]);
          const results = await Promise.all(Array.from({ length: 3 }, () => collect(second, request())));
          for (const events of results) expect(done(events).finishReason).toBe('stop');
          expect(fake.throttledCount).toBe(1);
          for (const arrived of fake.requestTimes.slice(1)) expect(arrived).toBeGreaterThanOrEqual(heldUntil);
        } finally {
          first.close();
          second.close();
        }
      });

      it('tells the peers once per hold, not once per refused call in flight', async () => {
        const bus = peerBus();
        const sharing = peerOf(bus);
        try {
          fake.throttleFor(3000);
          // Five calls reach the upstream before its first refusal comes back: five 429s, one hold.
          const refused = await Promise.all(Array.from({ length: 5 }, () => modelError(collect(sharing, request()))));
          expect(refused.every((error) => error.throttled)).toBe(true);
          expect(fake.throttledCount).toBe(5);
          expect(bus.published).toHaveLength(1);
        } finally {
          sharing.close();
        }
      });

      it("ignores a hold for another upstream, its own hold coming back, and any hold once closed", async () => {
        const bus = peerBus();
        const other = peerOf(bus, 'http://127.0.0.1:9/v1');
        const closed = peerOf(bus);
        closed.close();
        const sharing = peerOf(bus);
        try {
          fake.throttleFor(3000);
          await modelError(collect(sharing, request()));
          expect(bus.published).toHaveLength(1);
          expect(other.backoffRemainingMs('fake-model')).toBe(0);
          expect(closed.backoffRemainingMs('fake-model')).toBe(0);
          // Its own hold, heard back from the channel, neither extends nor re-publishes it.
          const remaining = sharing.backoffRemainingMs('fake-model');
          await bus.publishUpstreamHold({ ...bus.published[0]!, ms: 50_000 });
          expect(sharing.backoffRemainingMs('fake-model')).toBeLessThanOrEqual(remaining);
          expect(bus.published).toHaveLength(2);
        } finally {
          other.close();
          sharing.close();
        }
      });
    });
  });

  it('maps connection refused on a closed port to upstream_unreachable', async () => {
    const server = http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const closed = new OpenAICompatibleAdapter({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'k', timeoutMs: 5000 });
    const error = await modelError(collect(closed, request()));
    expect(error).toMatchObject({ code: 'upstream_unreachable', retryable: true });
    expect(error.message).toBe('The model upstream is unreachable.');
    expect(error.detail).toContain(`Model upstream http://127.0.0.1:${port}/v1 is unreachable`);
    expect(error.detail).toContain('ECONNREFUSED');
  });

  it('gives up with upstream_timeout when the upstream accepts and never answers', async () => {
    fake.hangNext();
    const started = Date.now();
    const error = await modelError(collect(idle, request()));
    expect(error).toMatchObject({ code: 'upstream_timeout', retryable: true });
    expect(error.message).toBe(`The model upstream sent nothing for ${IDLE_MS} ms; gave up.`);
    expect(error.detail).toBe(`Model upstream ${fake.baseURL} sent nothing for ${IDLE_MS} ms; gave up.`);
    expect(Date.now() - started).toBeGreaterThanOrEqual(IDLE_MS - 10);
    await fake.waitForAborts(1); // and the upstream request was abandoned
  });

  it('maps a connection dropped before any response to a retryable upstream_error', async () => {
    // A fresh adapter: its first request goes out on a new connection, so nothing is resent.
    const fresh = new OpenAICompatibleAdapter({ baseURL: fake.baseURL, apiKey: 'k', timeoutMs: 5000 });
    fake.dropConnectionNext();
    const error = await modelError(collect(fresh, request()));
    fresh.close();
    expect(error).toMatchObject({ code: 'upstream_error', retryable: true });
    expect(error.message).toBe('The connection to the model upstream failed.');
    expect(error.detail).toContain(`Model upstream ${fake.baseURL} connection failed: socket hang up (ECONNRESET)`);
    expect(fake.requests).toHaveLength(1);
  });

  it('sends a request once more when a kept-alive connection turns out closed, and only once', async () => {
    const kept = new OpenAICompatibleAdapter({ baseURL: fake.baseURL, apiKey: 'k', timeoutMs: 5000 });
    try {
      expect(done(await collect(kept, request())).finishReason).toBe('stop');
      // The body's end after [DONE] is read in the background; then the connection is kept for the next call.
      const keptAlive = async () => {
        for (let wait = 0; kept.idleConnections === 0 && wait < 200; wait++) await new Promise((resolve) => setTimeout(resolve, 10));
        expect(kept.idleConnections).toBe(1);
      };
      await keptAlive();
      fake.dropConnectionNext();
      expect(done(await collect(kept, request())).finishReason).toBe('stop');
      expect(fake.requests).toHaveLength(3);
      await keptAlive();
      fake.dropConnectionNext();
      fake.dropConnectionNext();
      await expect(collect(kept, request())).rejects.toMatchObject({ code: 'upstream_error', retryable: true });
      expect(fake.requests).toHaveLength(5);
    } finally {
      kept.close();
    }
  });

  it('maps an error event inside a started stream to a retryable upstream_error quoting it', async () => {
    const upstream: http.RequestListener = (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n');
      res.end('data: {"error":{"message":"The server overloaded mid-answer","type":"server_error"}}\n\n');
    };
    await withRawUpstream(upstream, async (failing) => {
      const { received, error } = await eventsBeforeError(failing.stream(request()));
      expect(textDeltas(received)).toEqual(['Hel']);
      expect(error).toMatchObject({ code: 'upstream_error', retryable: true });
      expect(error.message).toBe('The model upstream reported an error mid-stream: The server overloaded mid-answer');
    });
  });

  it('reads SSE split anywhere across packets, with CRLF line ends and comment lines', async () => {
    const chunk = (content: string, finish: string | null) =>
      `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content }, finish_reason: finish }] })}\r\n\r\n`;
    const wire = `: keep-alive\r\n\r\n${chunk('Hello ', null)}${chunk('wörld', null)}${chunk('', 'stop')}data: [DONE]\r\n\r\n`;
    const upstream: http.RequestListener = (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // One byte at a time, so frames, lines and multi-byte characters all split across writes.
      const bytes = Buffer.from(wire);
      let k = 0;
      const next = () => {
        if (k >= bytes.length) return void res.end();
        res.write(bytes.subarray(k, k + 1));
        k += 1;
        setImmediate(next);
      };
      next();
    };
    await withRawUpstream(upstream, async (bytewise) => {
      const events = await collect(bytewise, request());
      expect(textDeltas(events).join('')).toBe('Hello wörld');
      expect(done(events).finishReason).toBe('stop');
    });
  });

  it('maps a connection dropped mid-stream to a retryable upstream_error after the deltas that arrived', async () => {
    fake.set({ reply: 'one two three' });
    fake.dropConnectionNext(2);
    const { received, error } = await eventsBeforeError(adapter.stream(request()));
    expect(textDeltas(received)).toEqual(['one ']);
    expect(error).toMatchObject({ code: 'upstream_error', retryable: true });
    expect(error.message).toBe('The model upstream connection failed mid-stream.');
    expect(error.detail).toContain(`Model upstream ${fake.baseURL} failed mid-stream`);
  });
});

describe('OpenAICompatibleAdapter cancellation', () => {
  it('stops mid-stream with cancelled when the signal aborts, and closes the upstream connection', async () => {
    fake.set({ reply: 'one two three four five six seven eight', tokenDelayMs: 30 });
    const controller = new AbortController();
    const received: string[] = [];
    const error = await modelError(
      (async () => {
        for await (const event of adapter.stream(request({ signal: controller.signal }))) {
          if (event.type === 'text_delta') {
            received.push(event.delta);
            controller.abort();
          }
        }
      })(),
    );
    expect(error).toMatchObject({ code: 'cancelled', retryable: false });
    expect(received).toEqual(['one ']);
    await fake.waitForAborts(1);
  });

  it('cancels promptly while waiting for a hanging upstream', async () => {
    const patient = new OpenAICompatibleAdapter({ baseURL: fake.baseURL, apiKey: 'k', timeoutMs: 60_000 });
    fake.hangNext();
    const controller = new AbortController();
    const pending = modelError(collect(patient, request({ signal: controller.signal })));
    await fake.waitForRequests(1);
    const abortedAt = Date.now();
    controller.abort();
    const error = await pending;
    expect(error).toMatchObject({ code: 'cancelled', retryable: false });
    expect(Date.now() - abortedAt).toBeLessThan(2000);
    await fake.waitForAborts(1);
  });

  it('does not call the upstream when the signal is already aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(collect(adapter, request({ signal: controller.signal }))).rejects.toMatchObject({ code: 'cancelled' });
    expect(fake.requests).toHaveLength(0);
  });
});
