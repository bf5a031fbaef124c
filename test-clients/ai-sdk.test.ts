/**
 * The Vercel AI SDK (`ai` + `@ai-sdk/openai`) against the running system, used the way its docs show:
 * `openai.responses(model)` with generateText / streamText. The AI SDK is ESM-only, so it is loaded
 * with import() (jest compiles it to CommonJS; see jest.config.js).
 */
import type { TurnStack } from '@ic/test-support';
import { z } from 'zod';
import { callToolThenAnswer, MODEL, newConversation, QUEUE_MODES, runInput, sentToModel, startStack, storedRun, transcript } from './support';

const loadAi = () => import('ai');
const loadProvider = () => import('@ai-sdk/openai');

describe.each(QUEUE_MODES)('the AI SDK over %s', (_mode, options) => {
  let stack: TurnStack;
  let ai: Awaited<ReturnType<typeof loadAi>>;
  let openai: ReturnType<Awaited<ReturnType<typeof loadProvider>>['createOpenAI']>;
  /** The Responses request bodies the AI SDK sent, to show which of its features each test exercises. */
  const sent: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    stack = await startStack(options);
    ai = await loadAi();
    const { createOpenAI } = await loadProvider();
    openai = createOpenAI({
      apiKey: stack.seeded.smithToken,
      baseURL: stack.baseURL,
      fetch: async (url, init) => {
        if (typeof init?.body === 'string') sent.push(JSON.parse(init.body) as Record<string, unknown>);
        return fetch(url, init);
      },
    });
  });
  afterAll(() => stack.close());
  beforeEach(() => {
    stack.upstream.reset();
    sent.length = 0;
  });

  it('generateText answers a prompt, and the run is stored', async () => {
    stack.upstream.set({ reply: 'Hello from the model.' });
    const result = await ai.generateText({ model: openai.responses(MODEL), prompt: 'Hello?' });

    expect(result.text).toBe('Hello from the model.');
    expect(sentToModel(stack, 0)).toEqual(['user: Hello?']);
    const responseId = result.providerMetadata?.openai?.responseId as string;
    expect(responseId).toMatch(/^run_/);
    expect(await storedRun(stack, responseId)).toMatchObject({ status: 'completed', output_text: 'Hello from the model.', model: MODEL });
  });

  it('keeps a multi-turn chat by resending messages: earlier answers come back as item references (store: true)', async () => {
    stack.upstream.set({ reply: (request) => `Answer ${request.messages.length}` });
    const model = openai.responses(MODEL);
    const messages: Parameters<typeof ai.generateText>[0]['messages'] & object = [{ role: 'user', content: 'My name is Ada.' }];
    const first = await ai.generateText({ model, messages });
    messages.push(...first.response.messages, { role: 'user', content: 'What is my name?' });
    const second = await ai.generateText({ model, messages });

    expect(second.text).toBe('Answer 3');
    const firstId = first.providerMetadata?.openai?.responseId as string;
    expect(sent[1]?.input).toEqual([
      { role: 'user', content: [{ type: 'input_text', text: 'My name is Ada.' }] },
      { type: 'item_reference', id: `${firstId}.o` },
      { role: 'user', content: [{ type: 'input_text', text: 'What is my name?' }] },
    ]);
    expect(sentToModel(stack, 1)).toEqual(['user: My name is Ada.', 'assistant: Answer 1', 'user: What is my name?']);
    // The reference is stored as the item it names.
    expect(await runInput(stack, second.providerMetadata?.openai?.responseId as string)).toEqual([
      'user: My name is Ada.',
      'assistant: Answer 1',
      'user: What is my name?',
    ]);
  });

  it('chains turns with providerOptions.openai.previousResponseId', async () => {
    stack.upstream.set({ reply: (request) => `Answer ${request.messages.length}` });
    const model = openai.responses(MODEL);
    const first = await ai.generateText({ model, prompt: 'Remember 42.' });
    const second = await ai.generateText({
      model,
      prompt: 'Which number?',
      providerOptions: { openai: { previousResponseId: first.providerMetadata?.openai?.responseId as string } },
    });

    expect(second.text).toBe('Answer 3');
    expect(sentToModel(stack, 1)).toEqual(['user: Remember 42.', 'assistant: Answer 1', 'user: Which number?']);
    expect(await storedRun(stack, second.providerMetadata?.openai?.responseId as string)).toMatchObject({
      previous_response_id: first.providerMetadata?.openai?.responseId,
    });
  });

  it('runs turns in a conversation with providerOptions.openai.conversation', async () => {
    stack.upstream.set({ reply: (request) => `Answer ${request.messages.length}` });
    const conversation = await newConversation(stack);
    const model = openai.responses(MODEL);
    await ai.generateText({ model, prompt: 'First.', providerOptions: { openai: { conversation } } });
    const second = await ai.generateText({ model, prompt: 'Second.', providerOptions: { openai: { conversation } } });

    expect(second.text).toBe('Answer 3');
    expect(sentToModel(stack, 1)).toEqual(['user: First.', 'assistant: Answer 1', 'user: Second.']);
    expect(await transcript(stack, conversation)).toEqual(['user: First.', 'assistant: Answer 1', 'user: Second.', 'assistant: Answer 3']);
  });

  const weather = () =>
    ai.tool({
      description: 'The weather in a city',
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => `Sunny in ${city}`,
    });

  it('runs a tool over several steps (stopWhen) without a conversation', async () => {
    stack.upstream.set({ reply: callToolThenAnswer('weather', '{"city":"Oslo"}', 'call_oslo', (result) => `The tool says: ${result}.`) });
    const result = await ai.generateText({
      model: openai.responses(MODEL),
      prompt: 'Weather in Oslo?',
      tools: { weather: weather() },
      stopWhen: ai.stepCountIs(3),
    });

    expect(result.text).toBe('The tool says: Sunny in Oslo.');
    expect(result.steps).toHaveLength(2);
    expect(sentToModel(stack, 1)).toEqual(['user: Weather in Oslo?', 'assistant: → weather({"city":"Oslo"}) call_oslo', 'tool call_oslo: Sunny in Oslo']);
    expect(await runInput(stack, result.providerMetadata?.openai?.responseId as string)).toEqual([
      'user: Weather in Oslo?',
      'function_call weather({"city":"Oslo"}) call_oslo',
      'function_call_output call_oslo: Sunny in Oslo',
    ]);
    expect(stack.upstream.requests[0]?.tools?.[0]).toMatchObject({ type: 'function', function: { name: 'weather' } });
  });

  it('runs a tool over several steps inside a conversation, where the AI SDK sends the user message again with the tool result', async () => {
    stack.upstream.set({ reply: callToolThenAnswer('weather', '{"city":"Rome"}', 'call_rome', (result) => `The tool says: ${result}.`) });
    const conversation = await newConversation(stack);
    const result = await ai.generateText({
      model: openai.responses(MODEL),
      prompt: 'Weather in Rome?',
      tools: { weather: weather() },
      stopWhen: ai.stepCountIs(3),
      providerOptions: { openai: { conversation } },
    });

    expect(result.text).toBe('The tool says: Sunny in Rome.');
    expect(sent[1]?.input).toEqual([
      { role: 'user', content: [{ type: 'input_text', text: 'Weather in Rome?' }] },
      { type: 'function_call_output', call_id: 'call_rome', output: 'Sunny in Rome' },
    ]);
    // A valid Chat Completions sequence: the tool result right after its call, the repeated question after it.
    expect(sentToModel(stack, 1)).toEqual([
      'user: Weather in Rome?',
      'assistant: → weather({"city":"Rome"}) call_rome',
      'tool call_rome: Sunny in Rome',
      'user: Weather in Rome?',
    ]);
    expect(await transcript(stack, conversation)).toEqual([
      'user: Weather in Rome?',
      'function_call weather({"city":"Rome"}) call_rome',
      'user: Weather in Rome?',
      'function_call_output call_rome: Sunny in Rome',
      'assistant: The tool says: Sunny in Rome.',
    ]);
  });

  it('streamText streams the answer into a conversation', async () => {
    stack.upstream.set({ reply: 'one two three four', tokenDelayMs: 2 });
    const conversation = await newConversation(stack);
    const result = ai.streamText({ model: openai.responses(MODEL), prompt: 'Count.', providerOptions: { openai: { conversation } } });
    const deltas: string[] = [];
    for await (const delta of result.textStream) deltas.push(delta);

    expect(deltas.length).toBeGreaterThan(1);
    expect(deltas.join('')).toBe('one two three four');
    expect(await result.text).toBe('one two three four');
    expect(sentToModel(stack, 0)).toEqual(['user: Count.']);
    expect(await transcript(stack, conversation)).toEqual(['user: Count.', 'assistant: one two three four']);
  });

  it("surfaces an upstream failure with the upstream's message, from generateText and from streamText", async () => {
    stack.upstream.failNext(400, 2, { error: { message: 'This prompt was flagged.', type: 'invalid_request_error', code: null } });
    const failure = await ai.generateText({ model: openai.responses(MODEL), prompt: 'Bad words.' }).catch((caught: unknown) => caught);
    expect(failure).toBeInstanceOf(Error);
    expect((failure as Error).message).toBe('The model upstream returned 400: This prompt was flagged.');
    expect(stack.upstream.requests).toHaveLength(1); // neither we nor the AI SDK ran the turn again

    const errors: unknown[] = [];
    const streamed = ai.streamText({ model: openai.responses(MODEL), prompt: 'Bad words.', onError: ({ error }) => void errors.push(error) });
    const parts: string[] = [];
    for await (const part of streamed.fullStream) parts.push(part.type);
    expect(parts).toContain('error');
    expect(JSON.stringify(errors)).toContain('The model upstream returned 400: This prompt was flagged.');
    expect(JSON.stringify(errors)).not.toContain(new URL(stack.upstream.baseURL).host); // the upstream's address stays inside
  });
});
