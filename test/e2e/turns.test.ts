import OpenAI from 'openai';
import { createRunsRepo, sql } from '@ic/db';
import { createRedis, RedisKeys } from '@ic/queue';
import { createLogger } from '@ic/telemetry';
import { freePort, seedSmith, startTurnStack as startAnotherStack, tokenFor } from '@ic/test-support';
import { z } from 'zod';
import { eventually, startTurnStack, type TurnStack } from '@ic/test-support';

/** The chat messages the fake upstream received for request `index`, as role/text pairs. */
function sentMessages(stack: TurnStack, index: number): Array<[string, string]> {
  const request = stack.upstream.requests[index];
  if (!request) throw new Error(`no upstream request #${index}`);
  return request.messages.map((message) => [message.role, typeof message.content === 'string' ? message.content : JSON.stringify(message.content)]);
}

/** A streaming POST /v1/responses read as the socket delivers it: each chunk's text and when it came. */
async function readStreamChunks(baseURL: string, token: string, body: object): Promise<Array<{ text: string; at: number }>> {
  const reply = await fetch(`${baseURL}/responses`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  expect(reply.status).toBe(200);
  const reads: Array<{ text: string; at: number }> = [];
  const decoder = new TextDecoder();
  for await (const chunk of reply.body!) reads.push({ text: decoder.decode(chunk as Uint8Array, { stream: true }), at: Date.now() });
  return reads;
}

function eventTypes(frames: string): string[] {
  return [...frames.matchAll(/^event: (\S+)$/gm)].map((match) => match[1]!);
}

describe('turns through the Responses API (BullMQ on Redis, fake upstream)', () => {
  let stack: TurnStack;
  let client: OpenAI;

  beforeAll(async () => {
    stack = await startTurnStack({ upstream: { reply: (request) => `Reply #${request.messages.length}` } });
    client = stack.client();
  });
  afterAll(() => stack.close());
  beforeEach(() => stack.upstream.reset());

  it('replays exactly the prior turns, in order, on each of three turns', async () => {
    const conversation = await client.conversations.create();
    const first = await client.responses.create({ model: '', conversation: conversation.id, input: 'one', instructions: 'Be brief.' });
    const second = await client.responses.create({ model: '', conversation: conversation.id, input: 'two' });
    const third = await client.responses.create({ model: '', conversation: { id: conversation.id }, input: [{ role: 'user', content: 'three' }] });

    expect([first.status, second.status, third.status]).toEqual(['completed', 'completed', 'completed']);
    expect(first.output_text).toBe('Reply #2');
    expect(first.model).toBe('fake-default-model');
    // Unset sampling parameters are echoed with OpenAI's defaults but not sent: the upstream keeps its own.
    expect([first.temperature, first.top_p]).toEqual([1, 1]);
    for (const unset of ['temperature', 'top_p', 'verbosity', 'tool_choice', 'response_format']) expect(stack.upstream.requests[0]).not.toHaveProperty(unset);
    expect(third.conversation).toEqual({ id: conversation.id });
    expect(stack.upstream.requests.map((request) => request.model)).toEqual(['fake-default-model', 'fake-default-model', 'fake-default-model']);
    expect(sentMessages(stack, 0)).toEqual([['system', 'Be brief.'], ['user', 'one']]);
    // Instructions apply to their own turn only; history is the transcript.
    expect(sentMessages(stack, 1)).toEqual([['user', 'one'], ['assistant', 'Reply #2'], ['user', 'two']]);
    expect(sentMessages(stack, 2)).toEqual([['user', 'one'], ['assistant', 'Reply #2'], ['user', 'two'], ['assistant', 'Reply #3'], ['user', 'three']]);

    const items = [];
    for await (const item of client.conversations.items.list(conversation.id, { limit: 2 })) items.push(item);
    expect(items.map((item) => item.id)).toEqual([`${first.id}.i0`, `${first.id}.o`, `${second.id}.i0`, `${second.id}.o`, `${third.id}.i0`, `${third.id}.o`]);
    expect(items[1]).toMatchObject({ type: 'message', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text: 'Reply #2' }] });
    expect(first.output[0]?.id).toBe(`${first.id}.o`);
    const retrieved = await client.conversations.items.retrieve(`${second.id}.i0`, { conversation_id: conversation.id });
    expect(retrieved).toMatchObject({ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'two' }] });
  });

  it('streams OpenAI events in order across the queue and finalResponse() succeeds', async () => {
    stack.upstream.set({ reply: 'alpha beta gamma delta', tokenDelayMs: 5 });
    const conversation = await client.conversations.create();
    const stream = client.responses.stream({ model: '', conversation: conversation.id, input: 'stream please' });
    const seen: Array<{ type: string; sequence_number: number }> = [];
    stream.on('event', (event) => seen.push(event));
    const final = await stream.finalResponse();

    expect(final.status).toBe('completed');
    expect(final.output_text).toBe('alpha beta gamma delta');
    expect(seen.map((event) => event.sequence_number)).toEqual(seen.map((_, index) => index));
    const types = seen.map((event) => event.type);
    expect(types.slice(0, 4)).toEqual(['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
    expect(types.filter((type) => type === 'response.output_text.delta').length).toBeGreaterThan(1);
    expect(types.slice(-4)).toEqual(['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed']);
    const stored = await client.responses.retrieve(final.id);
    expect(stored.output_text).toBe('alpha beta gamma delta');
  });

  it('keeps a turn whose streaming client disconnected, and resumes its stream with starting_after', async () => {
    stack.upstream.set({ reply: 'one two three four five six seven eight', tokenDelayMs: 20 });
    const conversation = await client.conversations.create();
    const stream = await client.responses.create({ model: '', conversation: conversation.id, input: 'tell me', stream: true });
    let responseId = '';
    let lastSeen = -1;
    let firstDelta = '';
    for await (const event of stream) {
      if (event.type === 'response.created') responseId = event.response.id;
      lastSeen = event.sequence_number;
      if (event.type === 'response.output_text.delta') {
        firstDelta = event.delta;
        break; // disconnects
      }
    }
    expect(responseId).not.toBe('');
    const finished = await eventually(async () => {
      const response = await client.responses.retrieve(responseId);
      return response.status === 'completed' ? response : undefined;
    });
    expect(finished.output_text).toBe('one two three four five six seven eight');

    const resumed = await client.responses.retrieve(responseId, { stream: true, starting_after: lastSeen });
    const rest: Array<{ type: string; sequence_number: number }> = [];
    for await (const event of resumed) rest.push(event);
    expect(rest[0]?.sequence_number).toBe(lastSeen + 1);
    expect(rest.at(-1)?.type).toBe('response.completed');
    const deltas = rest.filter((event): event is typeof event & { delta: string } => event.type === 'response.output_text.delta');
    expect(firstDelta + deltas.map((event) => event.delta).join('')).toBe('one two three four five six seven eight');
    expect(deltas.length).toBeGreaterThan(0);
    const items = await client.conversations.items.list(conversation.id);
    expect(items.data).toHaveLength(2);
  });

  it('runs five concurrent turns of one conversation one at a time, in acceptance order, each seeing the earlier ones', async () => {
    stack.upstream.set({ reply: (request) => `seen ${request.messages.length}`, tokenDelayMs: 2 });
    const conversation = await client.conversations.create();
    const responses = await Promise.all(
      [1, 2, 3, 4, 5].map((n) => client.responses.create({ model: '', conversation: conversation.id, input: `message ${n}` })),
    );
    expect(responses.every((response) => response.status === 'completed')).toBe(true);

    const order = await stack.db.pool.any(sql.type(z.object({ id: z.string(), conversation_seq: z.number() }))`
      SELECT id, conversation_seq FROM runs WHERE conversation_id = ${conversation.id} ORDER BY conversation_seq`);
    expect(order.map((row) => row.conversation_seq)).toEqual([1, 2, 3, 4, 5]);
    // Turn k (in acceptance order) saw the 2(k-1) earlier items plus its own input.
    const byId = new Map(responses.map((response) => [response.id, response.output_text]));
    expect(order.map((row) => byId.get(row.id))).toEqual(['seen 1', 'seen 3', 'seen 5', 'seen 7', 'seen 9']);

    const items = [];
    for await (const item of client.conversations.items.list(conversation.id, { limit: 3 })) items.push(item);
    expect(items.map((item) => item.id)).toEqual(order.flatMap((row) => [`${row.id}.i0`, `${row.id}.o`]));
    expect(new Set(items.map((item) => item.id)).size).toBe(10);
  });

  it('answers conversation_locked in reject mode while a turn runs, writing nothing', async () => {
    stack.upstream.hangNext();
    const conversation = await client.conversations.create();
    const running = await client.responses.create({ model: '', conversation: conversation.id, input: 'slow', background: true });
    await stack.upstream.waitForRequests(1);
    const rejecting = stack.client(undefined, { defaultHeaders: { 'IC-Conversation-Busy': 'reject' } });
    const error = await rejecting.responses.create({ model: '', conversation: conversation.id, input: 'again' }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as InstanceType<typeof OpenAI.BadRequestError>).code).toBe('conversation_locked');
    expect((error as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('conversation');
    const runCount = await stack.db.pool.oneFirst(sql.type(z.object({ n: z.number() }))`SELECT count(*)::int AS n FROM runs WHERE conversation_id = ${conversation.id}`);
    expect(runCount).toBe(1);

    const cancelled = await client.responses.cancel(running.id);
    expect(cancelled.status).toBe('cancelled');
  });

  it('runs background turns, polls them, and cancels a running one without touching the transcript', async () => {
    stack.upstream.hangNext();
    const conversation = await client.conversations.create();
    const started = await client.responses.create({ model: '', conversation: conversation.id, input: 'take your time', background: true });
    // The stack's own worker claimed it with the accept (EagerTurns), so it is already running.
    expect(started.status).toBe('in_progress');
    expect(started.background).toBe(true);
    await stack.upstream.waitForRequests(1);
    expect((await client.responses.retrieve(started.id)).status).toBe('in_progress');

    const cancelled = await client.responses.cancel(started.id);
    expect(cancelled.status).toBe('cancelled');
    await stack.upstream.waitForAborts(1);
    expect((await client.responses.retrieve(started.id)).status).toBe('cancelled');
    expect((await client.conversations.items.list(conversation.id)).data).toEqual([]);

    // The conversation moves on: the next turn runs and sees no trace of the cancelled one.
    const next = await client.responses.create({ model: '', conversation: conversation.id, input: 'hello again' });
    expect(next.status).toBe('completed');
    expect(sentMessages(stack, 1)).toEqual([['user', 'hello again']]);

    const polled = await client.responses.create({ model: '', conversation: conversation.id, input: 'background', background: true });
    const done = await eventually(async () => {
      const response = await client.responses.retrieve(polled.id);
      return response.status === 'completed' ? response : undefined;
    });
    expect(done.output).toHaveLength(1);
  });

  it('cancels a turn still queued behind another', async () => {
    stack.upstream.hangNext();
    const conversation = await client.conversations.create();
    const first = await client.responses.create({ model: '', conversation: conversation.id, input: 'first', background: true });
    const second = await client.responses.create({ model: '', conversation: conversation.id, input: 'second', background: true });
    await stack.upstream.waitForRequests(1);
    expect((await client.responses.cancel(second.id)).status).toBe('cancelled');
    expect((await client.responses.cancel(first.id)).status).toBe('cancelled');
    expect(stack.upstream.requests).toHaveLength(1);
  });

  it('turns a retried POST with the same Idempotency-Key into the same run, and refuses the key with another body', async () => {
    const conversation = await client.conversations.create();
    const keyed = stack.client(undefined, { defaultHeaders: { 'Idempotency-Key': `key-${conversation.id}` } });
    const body = { model: '', conversation: conversation.id, input: 'only once' };
    const first = await keyed.responses.create(body);
    const again = await keyed.responses.create(body);
    expect(again.id).toBe(first.id);
    expect(again.output_text).toBe(first.output_text);
    expect(stack.upstream.requests).toHaveLength(1);
    expect((await client.conversations.items.list(conversation.id)).data).toHaveLength(2);

    const error = await keyed.responses.create({ ...body, input: 'something else' }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe('idempotency_key_reused');
  });

  it("recognises the openai client's own retry of a timed-out POST (no key) and does not run the turn twice", async () => {
    stack.upstream.set({ reply: 'slow answer', firstTokenDelayMs: 800 });
    const conversation = await client.conversations.create();
    const retrying = stack.client(undefined, { maxRetries: 1, timeout: 400 });
    const response = await retrying.responses.create({ model: '', conversation: conversation.id, input: 'are you there?' }).catch(() => null);
    // Whatever the client saw, the server ran exactly one turn.
    const runs = await eventually(async () => {
      const rows = await stack.db.pool.any(sql.type(z.object({ status: z.string() }))`SELECT status FROM runs WHERE conversation_id = ${conversation.id}`);
      return rows.length === 1 && rows[0]!.status === 'completed' ? rows : undefined;
    });
    expect(runs).toHaveLength(1);
    expect(stack.upstream.requests).toHaveLength(1);
    if (response) expect(response.output_text).toBe('slow answer');
    expect((await client.conversations.items.list(conversation.id)).data).toHaveLength(2);
  });

  it('chains with previous_response_id, and rejects it together with conversation', async () => {
    const first = await client.responses.create({ model: 'chain-model', input: 'remember 42' });
    const second = await client.responses.create({ model: 'chain-model', input: 'what number?', previous_response_id: first.id });
    expect(second.previous_response_id).toBe(first.id);
    expect(second.conversation).toBeNull();
    expect(sentMessages(stack, 1)).toEqual([['user', 'remember 42'], ['assistant', first.output_text], ['user', 'what number?']]);

    const conversation = await client.conversations.create();
    const error = await client.responses
      .create({ model: '', input: 'x', conversation: conversation.id, previous_response_id: first.id })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as InstanceType<typeof OpenAI.APIError>).param).toBe('previous_response_id');
  });

  it('records upstream failures on the run and adds nothing to the transcript', async () => {
    const conversation = await client.conversations.create();
    stack.upstream.failNext(400, 1);
    // A synchronous turn that failed is answered as an error carrying the run's error; the run stays readable.
    const rejected = await client.responses.create({ model: '', conversation: conversation.id, input: 'bad' }).catch((caught: unknown) => caught);
    expect(rejected).toBeInstanceOf(OpenAI.BadRequestError);
    expect(rejected).toMatchObject({ status: 400, code: 'invalid_prompt', type: 'invalid_request_error', message: '400 The model upstream returned 400: Fake upstream failure 400' });
    const failedId = (rejected as InstanceType<typeof OpenAI.APIError>).headers?.get('ic-response-id');
    expect(await client.responses.retrieve(failedId!)).toMatchObject({ status: 'failed', error: { code: 'invalid_prompt', message: 'The model upstream returned 400: Fake upstream failure 400' } });
    expect(stack.upstream.requests).toHaveLength(1); // a 400 is not retried

    stack.upstream.failNext(503, 1);
    const recovered = await client.responses.create({ model: '', conversation: conversation.id, input: 'good' });
    expect(recovered.status).toBe('completed'); // a 503 is retried by the worker
    const items = (await client.conversations.items.list(conversation.id)).data;
    expect(items.map((item) => item.id)).toEqual([`${recovered.id}.i0`, `${recovered.id}.o`]);
    expect(sentMessages(stack, 2)).toEqual([['user', 'good']]);
  });

  it("waits out the upstream's Retry-After instead of failing the turn, and holds the worker's other turns meanwhile", async () => {
    // A rate limit tripped for 4 s: the worker's own schedule (0.5, 1, 2 s) would spend all three
    // retries inside it and fail the turn with rate_limit_exceeded.
    stack.upstream.throttleFor(4000);
    const [first, second] = await Promise.all([client.conversations.create(), client.conversations.create()]);
    const throttledTurn = client.responses.create({ model: '', conversation: first.id, input: 'during the limit' });
    await eventually(async () => (stack.upstream.throttledCount === 1 ? true : undefined), 5000, 'the first 429');
    // A turn that starts while the limit holds waits for it rather than earning its own 429s.
    const laterTurn = client.responses.create({ model: '', conversation: second.id, input: 'also during the limit' });
    const [throttled, later] = await Promise.all([throttledTurn, laterTurn]);
    expect(throttled).toMatchObject({ status: 'completed', output_text: 'Reply #1' });
    expect(later).toMatchObject({ status: 'completed', output_text: 'Reply #1' });
    expect(stack.upstream.throttledCount).toBe(1);
    expect(stack.upstream.requests).toHaveLength(3);
  }, 20000);

  it('completes every turn of a burst five times larger than the upstream admits per second, waiting out its limit', async () => {
    // 15 turns at once against 3 requests a second: the last 3 get their call through in the fifth
    // window, which the ordinary retries (four calls in 3.5 s) would not reach.
    const limited = await startAnotherStack({ workerConcurrency: 20, upstream: { rateLimit: { requests: 3, windowMs: 1000 }, reply: 'admitted' } });
    try {
      const burst = limited.client();
      const conversations = await Promise.all(Array.from({ length: 15 }, () => burst.conversations.create()));
      const answers = await Promise.all(conversations.map((conversation) => burst.responses.create({ model: '', conversation: conversation.id, input: 'burst' })));
      expect(answers.map((answer) => `${answer.status}: ${answer.output_text}`)).toEqual(Array(15).fill('completed: admitted'));
      expect(limited.upstream.requests.length - limited.upstream.throttledCount).toBe(15);
    } finally {
      await limited.close();
    }
  }, 30000);

  it("paces a burst to the request limit OpenAI's answers report, so that once it is known no call is refused", async () => {
    // OpenAI's bucket: 3 requests, one more every 200 ms; every answer reports what is left.
    const paced = await startAnotherStack({ workerConcurrency: 20, upstream: { rateLimit: { requests: 3, windowMs: 600, style: 'bucket' }, reply: 'admitted' } });
    try {
      const burst = paced.client();
      expect(await burst.responses.create({ model: '', input: 'the first answer reports the limit' })).toMatchObject({ status: 'completed' });
      const conversations = await Promise.all(Array.from({ length: 9 }, () => burst.conversations.create()));
      const answers = await Promise.all(conversations.map((conversation) => burst.responses.create({ model: '', conversation: conversation.id, input: 'burst' })));
      expect(answers.map((answer) => `${answer.status}: ${answer.output_text}`)).toEqual(Array(9).fill('completed: admitted'));
      expect(paced.upstream.throttledCount).toBe(0);
      expect(paced.upstream.requests).toHaveLength(10);
      // What the bucket held went at once; the rest reached the upstream about one refill (200 ms) apart.
      // Each gap may come out a millisecond short: Node's timers run on a monotonic clock rounded to
      // whole milliseconds, the fake stamps arrivals with Date.now() (seen: 999 ms for six refills).
      const times = paced.upstream.requestTimes;
      expect(times[9]! - times[3]!).toBeGreaterThanOrEqual(5 * 200 - 6 * 2);
    } finally {
      await paced.close();
    }
  }, 30000);

  it("paces a burst of long prompts to the token limit OpenAI's answers report: each turn waits for the tokens it needs, none is refused", async () => {
    // 100 requests, but 1,500 tokens per 1.5 s (one a millisecond). Each turn's prompt of 1,200
    // characters with max_output_tokens 200 reserves 500 tokens: the bucket holds three such calls,
    // then admits one every 500 ms.
    const tokenLimit = { requests: 100, windowMs: 1500, style: 'bucket' as const, tokens: 1500 };
    const paced = await startAnotherStack({ workerConcurrency: 20, upstream: { rateLimit: tokenLimit, reply: 'admitted' } });
    try {
      const burst = paced.client();
      const longTurn = { model: '', input: `${'p'.repeat(1199)}.`, max_output_tokens: 200 };
      expect(await burst.responses.create(longTurn)).toMatchObject({ status: 'completed' });
      const conversations = await Promise.all(Array.from({ length: 6 }, () => burst.conversations.create()));
      const answers = await Promise.all(conversations.map((conversation) => burst.responses.create({ ...longTurn, conversation: conversation.id })));
      expect(answers.map((answer) => `${answer.status}: ${answer.output_text}`)).toEqual(Array(6).fill('completed: admitted'));
      expect(paced.upstream.throttledCount).toBe(0);
      expect(paced.upstream.requests).toHaveLength(7);
    } finally {
      await paced.close();
    }
  }, 30000);

  it('fails a turn whose wait for the reported request limit would outlast MODEL_BACKOFF_BUDGET_MS, instead of queueing it for that long', async () => {
    // 2 requests, one more every 10 s; a turn may wait 1 s for the limit.
    const slow = await startAnotherStack({ modelBackoffBudgetMs: 1000, upstream: { rateLimit: { requests: 2, windowMs: 20_000, style: 'bucket' } } });
    try {
      const client = slow.client();
      for (const input of ['first', 'second']) expect(await client.responses.create({ model: '', input })).toMatchObject({ status: 'completed' });
      const started = Date.now();
      const third = await client.responses.create({ model: '', input: 'no request left for 10 s' }).catch((error: unknown) => error);
      expect(third).toBeInstanceOf(OpenAI.APIError);
      expect(third).toMatchObject({ code: 'rate_limit_exceeded' });
      // The call and its three scheduled retries (0.5, 1, 2 s) were each refused by the line at once.
      expect(Date.now() - started).toBeLessThan(9000);
      expect(slow.upstream.requests).toHaveLength(2);
    } finally {
      await slow.close();
    }
  }, 30000);

  it('fails the turn with rate_limit_exceeded after the ordinary retries once the wait is past MODEL_BACKOFF_BUDGET_MS', async () => {
    // A budget of 0: every throttled answer is an ordinary failure. Five 429s each asking for 100 ms:
    // within the budget the fifth call would get through; past it the first call and the three
    // scheduled retries (0.5, 1, 2 s) are all there is.
    const impatient = await startAnotherStack({ modelBackoffBudgetMs: 0 });
    try {
      impatient.upstream.failNext(429, 5, undefined, { 'retry-after-ms': '100' });
      const response = await impatient.client().responses.create({ model: '', input: 'over budget' }).catch((error: unknown) => error);
      expect(response).toBeInstanceOf(OpenAI.APIError);
      expect(response).toMatchObject({ code: 'rate_limit_exceeded' });
      expect(impatient.upstream.requests).toHaveLength(4);
    } finally {
      await impatient.close();
    }
  }, 30000);

  it("retries a failed call no sooner than its Retry-After, when that is longer than the worker's schedule", async () => {
    // A 502 holds no other turn, but this turn's retry still waits the 1.5 s asked for, not the scheduled 0.5 s.
    stack.upstream.failNext(502, 1, undefined, { 'retry-after': '1.5' });
    const response = await client.responses.create({ model: '', input: 'after a bad gateway' });
    expect(response.status).toBe('completed');
    const [failedAt, retriedAt] = stack.upstream.requestTimes;
    expect(retriedAt! - failedAt!).toBeGreaterThanOrEqual(1500);
  });

  it('passes function tools to the model and stores and replays function_call / function_call_output items', async () => {
    const conversation = await client.conversations.create();
    const tools = [{ type: 'function' as const, name: 'get_weather', description: 'Weather', parameters: { type: 'object', properties: {} }, strict: false }];
    stack.upstream.set({ reply: { toolCalls: [{ name: 'get_weather', arguments: '{"city":"Oslo"}', id: 'call_1' }] } });
    const asked = await client.responses.create({ model: '', conversation: conversation.id, input: 'weather?', tools });
    expect(stack.upstream.requests[0]?.tools?.[0]).toMatchObject({ type: 'function', function: { name: 'get_weather' } });
    expect(asked.output[0]).toMatchObject({ id: `${asked.id}.o`, type: 'function_call', call_id: 'call_1', name: 'get_weather', arguments: '{"city":"Oslo"}' });

    stack.upstream.set({ reply: 'It is sunny.' });
    const answered = await client.responses.create({
      model: '',
      conversation: conversation.id,
      input: [{ type: 'function_call_output', call_id: 'call_1', output: 'sunny' }],
      tools,
    });
    expect(answered.output_text).toBe('It is sunny.');
    const sent = stack.upstream.requests[1]!.messages;
    expect(sent.map((message) => message.role)).toEqual(['user', 'assistant', 'tool']);
    expect(sent[2]).toMatchObject({ role: 'tool', tool_call_id: 'call_1', content: 'sunny' });
    const items = (await client.conversations.items.list(conversation.id)).data;
    expect(items.map((item) => item.type)).toEqual(['message', 'function_call', 'function_call_output', 'message']);
  });

  it('lists a response input items with the client paginator', async () => {
    const response = await client.responses.create({
      model: '',
      input: [
        { role: 'user', content: 'a' },
        { role: 'user', content: 'b' },
        { role: 'user', content: 'c' },
      ],
    });
    const ids = [];
    for await (const item of client.responses.inputItems.list(response.id, { limit: 2 })) ids.push(item.id);
    expect(ids).toEqual([`${response.id}.i2`, `${response.id}.i1`, `${response.id}.i0`]);
    const ascending = [];
    for await (const item of client.responses.inputItems.list(response.id, { limit: 2, order: 'asc' })) ascending.push(item.id);
    expect(ascending).toEqual([`${response.id}.i0`, `${response.id}.i1`, `${response.id}.i2`]);
  });

  it('refuses unsupported and unknown parameters with a 400 naming them', async () => {
    const logprobs = await client.responses.create({ model: '', input: 'x', top_logprobs: 5 }).catch((caught: unknown) => caught);
    expect(logprobs).toBeInstanceOf(OpenAI.BadRequestError);
    expect((logprobs as InstanceType<typeof OpenAI.APIError>).param).toBe('top_logprobs');
    const tool = await client.responses
      .create({ model: '', input: 'x', tools: [{ type: 'web_search' }] } as never)
      .catch((caught: unknown) => caught);
    expect((tool as InstanceType<typeof OpenAI.APIError>).param).toBe('tools[0].type');
    const unknown = await client.responses.create({ model: '', input: 'x', frobnicate: true } as never).catch((caught: unknown) => caught);
    expect((unknown as InstanceType<typeof OpenAI.APIError>).param).toBe('frobnicate');
    const missingConversation = await client.responses.create({ model: '', input: 'x', conversation: 'cnv_doesnotexist000' }).catch((caught: unknown) => caught);
    expect(missingConversation).toBeInstanceOf(OpenAI.NotFoundError);
    expect(stack.upstream.requests).toHaveLength(0);
  });

  it('titles a conversation from its first user message and never overwrites a title the user chose', async () => {
    const auto = await client.conversations.create();
    await client.responses.create({ model: '', conversation: auto.id, input: '   What did   I spend on\ntravel in May?  ' });
    const titled = await eventually(async () => {
      const conversation = (await client.conversations.retrieve(auto.id)) as unknown as { title: string | null };
      return conversation.title ?? undefined;
    });
    expect(titled).toBe('What did I spend on travel in May?');

    const chosen = await fetch(`${stack.baseURL}/conversations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.seeded.smithToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ title: 'Mine' }),
    }).then((response) => response.json() as Promise<{ id: string }>);
    await client.responses.create({ model: '', conversation: chosen.id, input: 'something else entirely' });
    // The titler runs for completed turns only while no title was chosen; wait for the queue to drain.
    await eventually(async () => ((await stack.backend.queue.isPending('titles', `title-${chosen.id}`)) ? undefined : true));
    expect(((await client.conversations.retrieve(chosen.id)) as unknown as { title: string }).title).toBe('Mine');
  });

  it('deletes a finished response: 404 to clients afterwards, the run itself kept', async () => {
    const response = await client.responses.create({ model: '', input: 'bye' });
    await client.responses.delete(response.id);
    await expect(client.responses.retrieve(response.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    const runs = createRunsRepo(stack.db.pool);
    expect((await runs.find(response.id))?.status).toBe('completed'); // kept, only hidden
  });
  it('marks a turn cut by max_output_tokens incomplete, and still adds it to the transcript', async () => {
    stack.upstream.set({ reply: Array.from({ length: 40 }, (_, k) => `w${k}`).join(' ') });
    const conversation = await client.conversations.create();
    const response = await client.responses.create({ model: '', conversation: conversation.id, input: 'talk a lot', max_output_tokens: 16 });
    expect(response.status).toBe('incomplete');
    expect(response.incomplete_details).toEqual({ reason: 'max_output_tokens' });
    expect(stack.upstream.requests[0]).toMatchObject({ max_completion_tokens: 16 });
    expect(response.output_text.trim().split(' ')).toHaveLength(16);
    const items = (await client.conversations.items.list(conversation.id)).data;
    expect(items.map((item) => [item.id, (item as { status?: string }).status])).toEqual([
      [`${response.id}.i0`, 'completed'],
      [`${response.id}.o`, 'incomplete'],
    ]);
  });

  it('sends SSE comment keep-alives while the model is silent', async () => {
    stack.upstream.set({ reply: 'late', firstTokenDelayMs: 2500 }); // the stack relays with a 1 s keep-alive
    const conversation = await client.conversations.create();
    const reply = await fetch(`${stack.baseURL}/responses`, {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.seeded.smithToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: '', conversation: conversation.id, input: 'wait for it', stream: true }),
    });
    expect(reply.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const body = await reply.text();
    expect(body).toMatch(/^: keep-alive$/m);
    expect(body.indexOf(': keep-alive')).toBeLessThan(body.indexOf('event: response.output_text.delta'));
    expect(body.trimEnd().split('\n\n').at(-1)).toMatch(/^event: response\.completed\n/);
  });

  it("holds a stream's head (response.created, in_progress) back to leave in one write with the first text delta", async () => {
    // A hold of 5 s so the check does not depend on how loaded the machine is; the default is 25 ms.
    const holding = await startAnotherStack({ streamHeadHoldMs: 5000, upstream: { reply: 'alpha beta gamma', tokenDelayMs: 50 } });
    try {
      const reads = await readStreamChunks(holding.baseURL, holding.seeded.smithToken, { model: '', input: 'one write please', stream: true });
      const first = reads[0]!.text;
      expect(eventTypes(first).slice(0, 3)).toEqual(['response.created', 'response.in_progress', 'response.output_item.added']);
      expect(eventTypes(first)).toContain('response.output_text.delta');
      // Nothing after the head was held: the later words came in their own writes, as the model sent them.
      expect(reads.length).toBeGreaterThan(1);
      expect(eventTypes(reads.map((read) => read.text).join('')).at(-1)).toBe('response.completed');
    } finally {
      await holding.close();
    }
  }, 30000);

  it("writes the held head on its own when the model is slow to its first token, and never delays an output event", async () => {
    stack.upstream.set({ reply: 'late', firstTokenDelayMs: 1500 });
    const reads = await readStreamChunks(stack.baseURL, stack.seeded.smithToken, { model: '', input: 'slow start', stream: true });
    expect(eventTypes(reads[0]!.text)[0]).toBe('response.created');
    const firstDelta = reads.findIndex((read) => read.text.includes('event: response.output_text.delta'));
    expect(firstDelta).toBeGreaterThan(0);
    // The head went out within the hold (25 ms by default), not with the answer 1.5 s later.
    expect(reads[firstDelta]!.at - reads[0]!.at).toBeGreaterThan(1000);
  });

  it('enforces responses scopes and smith boundaries, and lets a tenant-admin act for a smith', async () => {
    const { tenant, smith } = stack.seeded;
    const conversationsOnly = await tokenFor(stack.db.pool, tenant.id, smith.id, ['conversations:read', 'conversations:write']);
    const denied = await stack.client(conversationsOnly).responses.create({ model: '', input: 'x' }).catch((caught: unknown) => caught);
    expect(denied).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect((denied as Error).message).toContain('responses:write');

    const mine = await client.responses.create({ model: '', input: 'mine' });
    const writeOnly = await tokenFor(stack.db.pool, tenant.id, smith.id, ['responses:write']);
    await expect(stack.client(writeOnly).responses.retrieve(mine.id)).rejects.toBeInstanceOf(OpenAI.PermissionDeniedError);

    const otherSmith = await seedSmith(stack.db.pool, tenant.id);
    const otherToken = await tokenFor(stack.db.pool, tenant.id, otherSmith.id, ['conversations:read', 'conversations:write', 'responses:read', 'responses:write']);
    const other = stack.client(otherToken);
    await expect(other.responses.retrieve(mine.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(other.responses.cancel(mine.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    const myConversation = await client.conversations.create();
    await expect(other.responses.create({ model: '', conversation: myConversation.id, input: 'sneak' })).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(other.responses.create({ model: '', previous_response_id: mine.id, input: 'sneak' })).rejects.toBeInstanceOf(OpenAI.BadRequestError);

    const admin = stack.client(stack.seeded.adminToken, { defaultHeaders: { 'IC-Smith-Id': smith.id } });
    const viaAdmin = await admin.responses.create({ model: '', conversation: myConversation.id, input: 'from the back office' });
    expect(viaAdmin.status).toBe('completed');
    const noSmith = await stack.client(stack.seeded.adminToken).responses.create({ model: '', input: 'x' }).catch((caught: unknown) => caught);
    expect(noSmith).toBeInstanceOf(OpenAI.BadRequestError);
    expect((noSmith as InstanceType<typeof OpenAI.APIError>).code).toBe('missing_smith_id');
  });

  it('keeps runs readable after their conversation is deleted, and refuses new turns into it', async () => {
    const conversation = await client.conversations.create();
    const response = await client.responses.create({ model: '', conversation: conversation.id, input: 'before delete' });
    await client.conversations.delete(conversation.id);
    const kept = await client.responses.retrieve(response.id);
    expect(kept.output_text).toBe(response.output_text);
    expect(kept.conversation).toEqual({ id: conversation.id });
    const inputs = await client.responses.inputItems.list(response.id);
    expect(inputs.data.map((item) => item.id)).toEqual([`${response.id}.i0`]);
    await expect(client.responses.create({ model: '', conversation: conversation.id, input: 'after' })).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(client.conversations.items.list(conversation.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });
  it('refuses a turn with 503 before writing anything while the queue is unreachable', async () => {
    const conversation = await client.conversations.create();
    const backend = stack.backend as { isAvailable(): boolean };
    const original = backend.isAvailable;
    backend.isAvailable = () => false;
    try {
      const error = await client.responses.create({ model: '', conversation: conversation.id, input: 'hello?' }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(OpenAI.InternalServerError);
      expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
      expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe('queue_unavailable');
    } finally {
      backend.isAvailable = original;
    }
    const runCount = await stack.db.pool.oneFirst(sql.type(z.object({ n: z.number() }))`SELECT count(*)::int AS n FROM runs WHERE conversation_id = ${conversation.id}`);
    expect(runCount).toBe(0);
    // The client's automatic retry then succeeds as a first and only turn.
    const retried = await client.responses.create({ model: '', conversation: conversation.id, input: 'hello?' });
    expect(retried.status).toBe('completed');
  });
  it('stores an empty assistant message when the model says nothing, so the transcript keeps its turns', async () => {
    stack.upstream.set({ reply: '' });
    const conversation = await client.conversations.create();
    const silent = await client.responses.create({ model: '', conversation: conversation.id, input: 'say nothing' });
    expect(silent.status).toBe('completed');
    expect(silent.output).toEqual([
      expect.objectContaining({ id: `${silent.id}.o`, type: 'message', role: 'assistant', content: [expect.objectContaining({ type: 'output_text', text: '' })] }),
    ]);
    const items = (await client.conversations.items.list(conversation.id)).data;
    expect(items.map((item) => (item as { role?: string }).role)).toEqual(['user', 'assistant']);
  });
  it('puts a turn that reaches a worker before an earlier one finished back on the queue, then runs it in order', async () => {
    stack.upstream.hangNext();
    const conversation = await client.conversations.create();
    const first = await client.responses.create({ model: '', conversation: conversation.id, input: 'first', background: true });
    const second = await client.responses.create({ model: '', conversation: conversation.id, input: 'second', background: true });
    await stack.upstream.waitForRequests(1);
    // As if the sweeper (or a duplicate delivery) handed the second turn to a worker too early.
    await stack.runtime.scheduler.enqueueRun({ id: second.id, conversation_id: conversation.id });
    // The worker took it, found the first turn unfinished and parked it in BullMQ's delayed set.
    const redis = createRedis(stack.redisUrl, 'worker', createLogger('test', 'silent'));
    await eventually(async () => ((await redis.zscore(`${new RedisKeys(stack.prefix).queuePrefix('turns')}:turns:delayed`, second.id)) !== null ? true : undefined));
    await redis.quit();
    expect((await client.responses.retrieve(second.id)).status).toBe('queued');
    expect(stack.upstream.requests).toHaveLength(1);

    await client.responses.cancel(first.id);
    const done = await eventually(async () => {
      const response = await client.responses.retrieve(second.id);
      return response.status === 'completed' ? response : undefined;
    });
    expect(done.output).toHaveLength(1);
    expect(sentMessages(stack, 1)).toEqual([['user', 'second']]);
  });
  it('ends a stream whose relay fails with an error event in the nested shape every client version throws on', async () => {
    stack.upstream.set({ reply: 'one two three', tokenDelayMs: 50 });
    const events = stack.backend.events;
    const original = events.follow;
    // The relay's cursor hands over its first batch (response.created), then its log becomes unreadable.
    events.follow = function (this: typeof events, ...args: Parameters<typeof original>) {
      const cursor = original.apply(this, args);
      const next = cursor.next.bind(cursor);
      let calls = 0;
      cursor.next = (...nextArgs) => {
        calls += 1;
        if (calls > 1) return Promise.reject(new Error('redis went away'));
        return next(...nextArgs);
      };
      return cursor;
    };
    try {
      const stream = await client.responses.create({ model: '', input: 'hello', stream: true });
      const seen: string[] = [];
      const failure = await (async () => {
        for await (const event of stream) seen.push(event.type);
      })().catch((caught: unknown) => caught);
      expect(seen[0]).toBe('response.created');
      expect(failure).toBeInstanceOf(OpenAI.APIError);
      expect((failure as InstanceType<typeof OpenAI.APIError>).code).toBe('server_error');
    } finally {
      events.follow = original;
    }
  });

  it('fails a turn clearly when the model upstream is unreachable', async () => {
    const port = await freePort(); // nothing listens there
    const unreachable = await startAnotherStack({ modelBaseUrl: `http://127.0.0.1:${port}/v1` });
    try {
      const failure = await unreachable.client().responses.create({ model: '', input: 'anyone there?' }).catch((caught: unknown) => caught);
      // Clear, but without our upstream's address: that goes to the logs only.
      expect(failure).toBeInstanceOf(OpenAI.BadRequestError);
      expect(failure).toMatchObject({ code: 'server_error', type: 'server_error', message: '400 The model upstream is unreachable.' });
      const response = await unreachable.client().responses.retrieve((failure as InstanceType<typeof OpenAI.APIError>).headers!.get('ic-response-id')!);
      expect(response.status).toBe('failed');
      expect(response.error).toEqual({ code: 'server_error', message: 'The model upstream is unreachable.' });
      expect(JSON.stringify(response)).not.toContain(String(port));
      expect(response.output).toEqual([]);
    } finally {
      await unreachable.close();
    }
  }, 20000);
});
