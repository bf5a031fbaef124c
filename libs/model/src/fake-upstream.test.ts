/** The fake upstream the adapter tests rely on, checked against the official client. */
import OpenAI from 'openai';
import { startFakeUpstream, type FakeUpstream } from '@ic/test-support';

let fake: FakeUpstream;
let client: OpenAI;
beforeAll(async () => {
  fake = await startFakeUpstream({ models: ['fake-model', 'other'] });
  client = new OpenAI({ baseURL: fake.baseURL, apiKey: 'k', maxRetries: 0 });
});
afterEach(() => fake.reset());
afterAll(() => fake.close());

it('lists its models', async () => {
  const page = await client.models.list();
  expect(page.data.map((model) => model.id)).toEqual(['fake-model', 'other']);
});

it('answers non-streaming requests with a complete chat.completion, deterministically', async () => {
  const body = { model: 'fake-model', messages: [{ role: 'system' as const, content: 's' }, { role: 'user' as const, content: 'hi there' }] };
  const completion = await client.chat.completions.create(body);
  expect(completion.object).toBe('chat.completion');
  expect(completion.choices[0]).toMatchObject({ finish_reason: 'stop', message: { role: 'assistant', content: 'Fake reply to 2 messages. Last: "hi there".' } });
  expect(completion.usage).toMatchObject({ prompt_tokens: 3, completion_tokens: 8, total_tokens: 11 });
  expect((await client.chat.completions.create(body)).choices[0]?.message.content).toBe(completion.choices[0]?.message.content);
  expect(fake.requests).toEqual([body, body]);
});

it('streams chunks in the Chat Completions format, with a final usage chunk only when asked', async () => {
  fake.set({ reply: (request) => `echo ${request.messages.length}` });
  const chunks = [];
  const stream = await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'x' }], stream: true, stream_options: { include_usage: true } });
  for await (const chunk of stream) chunks.push(chunk);
  expect(chunks.map((c) => c.object)).toEqual(Array(chunks.length).fill('chat.completion.chunk'));
  expect(chunks[0]?.choices[0]?.delta).toEqual({ role: 'assistant', content: '', refusal: null });
  expect(chunks.flatMap((c) => c.choices.map((choice) => choice.delta.content ?? '')).join('')).toBe('echo 1');
  expect(chunks[chunks.length - 2]?.choices[0]?.finish_reason).toBe('stop');
  expect(chunks[chunks.length - 1]).toMatchObject({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 2 } });

  const plain = [];
  for await (const chunk of await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'x' }], stream: true })) plain.push(chunk);
  expect(plain.every((chunk) => chunk.usage === undefined && chunk.choices.length === 1)).toBe(true);
});

it('rejects unknown models with 404 model_not_found and runs scripted failures in order', async () => {
  await expect(client.chat.completions.create({ model: 'missing', messages: [] })).rejects.toMatchObject({ status: 404, code: 'model_not_found' });
  fake.failNext(429, 1, { error: { message: 'slow down', type: 'requests', code: 'rate_limit_exceeded' } });
  await expect(client.chat.completions.create({ model: 'fake-model', messages: [] })).rejects.toMatchObject({ status: 429, message: '429 slow down' });
  await expect(client.chat.completions.create({ model: 'fake-model', messages: [] })).resolves.toMatchObject({ object: 'chat.completion' });
});

it("answers tool messages out of OpenAI's order with OpenAI's 400s", async () => {
  const call = { id: 'call_1', type: 'function' as const, function: { name: 'f', arguments: '{}' } };
  const user = { role: 'user' as const, content: 'q' };
  const assistant = { role: 'assistant' as const, content: null, tool_calls: [call] };
  const tool = { role: 'tool' as const, tool_call_id: 'call_1', content: 'r' };
  await expect(client.chat.completions.create({ model: 'fake-model', messages: [user, assistant, user, tool] })).rejects.toMatchObject({
    status: 400,
    param: 'messages.[1].role',
    message: expect.stringContaining("An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: call_1"),
  });
  await expect(client.chat.completions.create({ model: 'fake-model', messages: [user, tool] })).rejects.toMatchObject({
    status: 400,
    param: 'messages.[1].role',
    message: expect.stringContaining("messages with role 'tool' must be a response to a preceeding message with 'tool_calls'"),
  });
  await expect(client.chat.completions.create({ model: 'fake-model', messages: [user, assistant, tool, user] })).resolves.toMatchObject({ object: 'chat.completion' });
});

it("meters tokens like OpenAI's token limit: reserves each request's prompt ÷ 4 plus max_completion_tokens, reports both limits, refuses what does not fit", async () => {
  // 1,000 tokens per 10 s; each request reserves 400 ÷ 4 + 200 = 300.
  fake.set({ rateLimit: { requests: 100, windowMs: 10_000, style: 'bucket', tokens: 1000 } });
  const body = { model: 'fake-model', messages: [{ role: 'user' as const, content: 'z'.repeat(400) }], max_completion_tokens: 200 };
  const headers = async () => (await client.chat.completions.create(body).withResponse()).response.headers;
  const first = await headers();
  expect(first.get('x-ratelimit-limit-tokens')).toBe('1000');
  expect(first.get('x-ratelimit-remaining-tokens')).toBe('700');
  expect(Number.parseInt(first.get('x-ratelimit-reset-tokens')!, 10)).toBeGreaterThan(2900); // 300 tokens at 0.1 a ms: "3000ms"
  expect(first.get('x-ratelimit-remaining-requests')).toBe('99');
  await headers();
  await headers(); // 100 left: the next needs 300
  const refused = await client.chat.completions.create(body).then(
    () => undefined,
    (error: unknown) => error as InstanceType<typeof OpenAI.APIError>,
  );
  expect(refused).toMatchObject({ status: 429, code: 'rate_limit_exceeded', message: expect.stringContaining('on tokens per min') });
  // A refusal takes nothing from either limit.
  expect(refused?.headers?.get('x-ratelimit-remaining-tokens')).toMatch(/^10\d$/);
  expect(refused?.headers?.get('x-ratelimit-remaining-requests')).toBe('97');
  expect(fake.throttledCount).toBe(1);
});
