/**
 * LangChain (`@langchain/openai` ChatOpenAI with `useResponsesApi: true`) against the running system,
 * configured as its docs show for an OpenAI-compatible endpoint (`configuration.baseURL`).
 */
import { AIMessage, HumanMessage, ToolMessage, type AIMessageChunk, type BaseMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { ChatOpenAI } from '@langchain/openai';
import { z } from 'zod';
import type { TurnStack } from '@ic/test-support';
import { callToolThenAnswer, MODEL, newConversation, QUEUE_MODES, runInput, sentToModel, startStack, storedRun, transcript } from './support';

describe.each(QUEUE_MODES)('LangChain over %s', (_mode, options) => {
  let stack: TurnStack;
  let chat: (fields?: ConstructorParameters<typeof ChatOpenAI>[0] & object) => ChatOpenAI;

  beforeAll(async () => {
    stack = await startStack(options);
    chat = (fields = {}) => new ChatOpenAI({ model: MODEL, apiKey: stack.seeded.smithToken, configuration: { baseURL: stack.baseURL }, useResponsesApi: true, ...fields });
  });
  afterAll(() => stack.close());
  beforeEach(() => stack.upstream.reset());

  const responseId = (message: BaseMessage) => (message.response_metadata as { id?: string }).id!;

  it('invoke answers and the run is stored', async () => {
    stack.upstream.set({ reply: 'Hello from the model.' });
    const reply = await chat().invoke('Hello?');

    expect(reply.text).toBe('Hello from the model.');
    expect(sentToModel(stack, 0)).toEqual(['user: Hello?']);
    expect(responseId(reply)).toMatch(/^run_/);
    expect(await runInput(stack, responseId(reply))).toEqual(['user: Hello?']);
  });

  it('keeps a multi-turn chat by resending the messages', async () => {
    stack.upstream.set({ reply: (request) => `Answer ${request.messages.length}` });
    const model = chat();
    const history: BaseMessage[] = [new HumanMessage('My name is Ada.')];
    history.push(await model.invoke(history), new HumanMessage('What is my name?'));
    const second = await model.invoke(history);

    expect(second.text).toBe('Answer 3');
    expect(sentToModel(stack, 1)).toEqual(['user: My name is Ada.', 'assistant: Answer 1', 'user: What is my name?']);
    expect(await runInput(stack, responseId(second))).toEqual(['user: My name is Ada.', 'assistant: Answer 1', 'user: What is my name?']);
  });

  it('stream yields the answer in chunks', async () => {
    stack.upstream.set({ reply: 'one two three four', tokenDelayMs: 2 });
    const chunks: string[] = [];
    let whole: AIMessageChunk | undefined;
    for await (const chunk of await chat().stream('Count.')) {
      chunks.push(chunk.text);
      whole = whole ? whole.concat(chunk) : chunk;
    }

    expect(chunks.filter((text) => text !== '').length).toBeGreaterThan(1);
    expect(chunks.join('')).toBe('one two three four');
    expect(sentToModel(stack, 0)).toEqual(['user: Count.']);
    expect(await storedRun(stack, responseId(whole!))).toMatchObject({ status: 'completed', output_text: 'one two three four' });
  });

  it('runs bindTools + ToolMessage round trips, resending the whole history', async () => {
    stack.upstream.set({ reply: callToolThenAnswer('weather', '{"city":"Oslo"}', 'call_lc_oslo', (result) => `It says: ${result}.`) });
    const weather = tool(async ({ city }: { city: string }) => `Sunny in ${city}`, {
      name: 'weather',
      description: 'The weather in a city',
      schema: z.object({ city: z.string() }),
    });
    const model = chat().bindTools([weather]);
    const messages: BaseMessage[] = [new HumanMessage('Weather in Oslo?')];
    const call = await model.invoke(messages);
    expect(call.tool_calls).toEqual([expect.objectContaining({ name: 'weather', args: { city: 'Oslo' }, id: 'call_lc_oslo' })]);
    messages.push(call, new ToolMessage({ tool_call_id: 'call_lc_oslo', content: String(await weather.invoke(call.tool_calls![0]!.args as { city: string })) }));
    const answer = await model.invoke(messages);

    expect(answer.text).toBe('It says: Sunny in Oslo.');
    expect(sentToModel(stack, 1)).toEqual(['user: Weather in Oslo?', 'assistant: → weather({"city":"Oslo"}) call_lc_oslo', 'tool call_lc_oslo: Sunny in Oslo']);
    expect(await runInput(stack, responseId(answer))).toEqual([
      'user: Weather in Oslo?',
      'function_call weather({"city":"Oslo"}) call_lc_oslo',
      'function_call_output call_lc_oslo: Sunny in Oslo',
    ]);
  });

  it('chains with previous_response_id', async () => {
    stack.upstream.set({ reply: (request) => `Answer ${request.messages.length}` });
    const model = chat();
    const first = await model.invoke('Remember 42.');
    const second = await model.invoke('Which number?', { previous_response_id: responseId(first) });

    expect(second.text).toBe('Answer 3');
    expect(sentToModel(stack, 1)).toEqual(['user: Remember 42.', 'assistant: Answer 1', 'user: Which number?']);
    expect(await storedRun(stack, responseId(second))).toMatchObject({ previous_response_id: responseId(first), output_text: 'Answer 3' });
    expect(await runInput(stack, responseId(second))).toEqual(['user: Which number?']);
  });

  it('runs turns in a conversation given through modelKwargs', async () => {
    stack.upstream.set({ reply: (request) => `Answer ${request.messages.length}` });
    const conversation = await newConversation(stack);
    const model = chat({ modelKwargs: { conversation } });
    await model.invoke('First.');
    const second = await model.invoke([new HumanMessage('Second.')]);

    expect(second).toBeInstanceOf(AIMessage);
    expect(second.text).toBe('Answer 3');
    expect(sentToModel(stack, 1)).toEqual(['user: First.', 'assistant: Answer 1', 'user: Second.']);
    expect(await transcript(stack, conversation)).toEqual(['user: First.', 'assistant: Answer 1', 'user: Second.', 'assistant: Answer 3']);
  });

  // (LangChain 1.6's stream() ignores `response.failed`: a failed streamed turn just ends without text.)
  it("surfaces an upstream failure with the upstream's message from invoke", async () => {
    stack.upstream.failNext(400, 1, { error: { message: 'This prompt was flagged.', type: 'invalid_request_error', code: null } });
    const failure = await chat().invoke('Bad words.').catch((caught: unknown) => caught);
    expect(failure).toBeInstanceOf(Error);
    expect((failure as Error).message).toContain('The model upstream returned 400: This prompt was flagged.');
    expect((failure as Error).message).not.toContain(new URL(stack.upstream.baseURL).host);
    expect(stack.upstream.requests).toHaveLength(1); // LangChain did not retry the failed turn
  });
});
