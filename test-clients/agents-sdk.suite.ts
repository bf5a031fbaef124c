/**
 * The OpenAI Agents SDK (`@openai/agents`) against the running system, configured as its docs show for
 * an OpenAI-compatible endpoint: its default client pointed at our baseURL with a smith token, tracing
 * export off (nothing may leave loopback). The SDK's default runner keeps the first client it was
 * given for the life of the process, so each queue mode has its own test file (jest gives each file
 * fresh modules): agents-sdk.bullmq.test.ts and agents-sdk.in-process.test.ts.
 */
import { Agent, run, setDefaultOpenAIClient, setTracingDisabled, tool } from '@openai/agents';
import OpenAI from 'openai';
import { z } from 'zod';
import type { TurnStack } from '@ic/test-support';
import { callToolThenAnswer, MODEL, newConversation, QUEUE_MODES, runInput, sentToModel, startStack, transcript } from './support';

setTracingDisabled(true);

export function agentsSdkSuite([mode, options]: (typeof QUEUE_MODES)[number]): void {
  describe(`the Agents SDK over ${mode}`, () => {
    let stack: TurnStack;

    beforeAll(async () => {
      stack = await startStack(options);
      setDefaultOpenAIClient(new OpenAI({ apiKey: stack.seeded.smithToken, baseURL: stack.baseURL }));
    });
    afterAll(() => stack.close());
    beforeEach(() => stack.upstream.reset());

    const assistant = new Agent({ name: 'Assistant', instructions: 'Be brief.', model: MODEL });
    const weather = tool({
      name: 'weather',
      description: 'The weather in a city',
      parameters: z.object({ city: z.string() }),
      execute: async ({ city }) => `Sunny in ${city}`,
    });
    const forecaster = new Agent({ name: 'Forecaster', instructions: 'Use the weather tool.', model: MODEL, tools: [weather] });

    it('runs several turns of a conversation with run(agent, input, { conversationId })', async () => {
      stack.upstream.set({ reply: (request) => `Answer ${request.messages.length}` });
      const conversationId = await newConversation(stack);
      const first = await run(assistant, 'My name is Ada.', { conversationId });
      const second = await run(assistant, 'What is my name?', { conversationId });
      const third = await run(assistant, 'Thanks.', { conversationId });

      expect([first.finalOutput, second.finalOutput, third.finalOutput]).toEqual(['Answer 2', 'Answer 4', 'Answer 6']);
      expect(sentToModel(stack, 2)).toEqual(['system: Be brief.', 'user: My name is Ada.', 'assistant: Answer 2', 'user: What is my name?', 'assistant: Answer 4', 'user: Thanks.']);
      expect(await transcript(stack, conversationId)).toEqual([
        'user: My name is Ada.',
        'assistant: Answer 2',
        'user: What is my name?',
        'assistant: Answer 4',
        'user: Thanks.',
        'assistant: Answer 6',
      ]);
    });

    it('runs a tool() round trip inside a conversation', async () => {
      stack.upstream.set({ reply: callToolThenAnswer('weather', '{"city":"Oslo"}', 'call_agents_oslo', (result) => `It says: ${result}.`) });
      const conversationId = await newConversation(stack);
      const result = await run(forecaster, 'Weather in Oslo?', { conversationId });

      expect(result.finalOutput).toBe('It says: Sunny in Oslo.');
      expect(sentToModel(stack, 1)).toEqual([
        'system: Use the weather tool.',
        'user: Weather in Oslo?',
        'assistant: → weather({"city":"Oslo"}) call_agents_oslo',
        'tool call_agents_oslo: Sunny in Oslo',
      ]);
      expect(stack.upstream.requests[0]?.tools?.[0]).toMatchObject({ type: 'function', function: { name: 'weather' } });
      expect(await transcript(stack, conversationId)).toEqual([
        'user: Weather in Oslo?',
        'function_call weather({"city":"Oslo"}) call_agents_oslo',
        'function_call_output call_agents_oslo: Sunny in Oslo',
        'assistant: It says: Sunny in Oslo.',
      ]);
    });

    it('streams a run (stream: true) in a conversation', async () => {
      stack.upstream.set({ reply: 'one two three four', tokenDelayMs: 2 });
      const conversationId = await newConversation(stack);
      const result = await run(assistant, 'Count.', { conversationId, stream: true });
      const deltas: string[] = [];
      for await (const event of result) {
        if (event.type === 'raw_model_stream_event' && event.data.type === 'output_text_delta') deltas.push(event.data.delta);
      }
      await result.completed;

      expect(deltas.length).toBeGreaterThan(1);
      expect(deltas.join('')).toBe('one two three four');
      expect(result.finalOutput).toBe('one two three four');
      expect(await transcript(stack, conversationId)).toEqual(['user: Count.', 'assistant: one two three four']);
    });

    it('streams a run that uses a tool', async () => {
      stack.upstream.set({ reply: callToolThenAnswer('weather', '{"city":"Rome"}', 'call_agents_rome', (result) => `It says: ${result}.`) });
      const conversationId = await newConversation(stack);
      const result = await run(forecaster, 'Weather in Rome?', { conversationId, stream: true });
      let text = '';
      for await (const chunk of result.toTextStream({ compatibleWithNodeStreams: true })) text += String(chunk);
      await result.completed;

      expect(text).toBe('It says: Sunny in Rome.');
      expect(result.finalOutput).toBe('It says: Sunny in Rome.');
      expect(sentToModel(stack, 1).slice(1)).toEqual(['user: Weather in Rome?', 'assistant: → weather({"city":"Rome"}) call_agents_rome', 'tool call_agents_rome: Sunny in Rome']);
      expect(await transcript(stack, conversationId)).toEqual([
        'user: Weather in Rome?',
        'function_call weather({"city":"Rome"}) call_agents_rome',
        'function_call_output call_agents_rome: Sunny in Rome',
        'assistant: It says: Sunny in Rome.',
      ]);
    });

    it('chains runs with previousResponseId', async () => {
      stack.upstream.set({ reply: (request) => `Answer ${request.messages.length}` });
      const first = await run(assistant, 'Remember 42.');
      const second = await run(assistant, 'Which number?', { previousResponseId: first.lastResponseId });

      expect(second.finalOutput).toBe('Answer 4');
      expect(sentToModel(stack, 1)).toEqual(['system: Be brief.', 'user: Remember 42.', 'assistant: Answer 2', 'user: Which number?']);
      expect(await runInput(stack, second.lastResponseId!)).toEqual(['user: Which number?']);
    });

    it("surfaces an upstream failure with the upstream's message from run(), and fails a streamed run", async () => {
      stack.upstream.failNext(400, 2, { error: { message: 'This prompt was flagged.', type: 'invalid_request_error', code: null } });
      const failure = await run(assistant, 'Bad words.').catch((caught: unknown) => caught);
      expect(failure).toBeInstanceOf(Error);
      expect((failure as Error).message).toContain('The model upstream returned 400: This prompt was flagged.');
      expect((failure as Error).message).not.toContain(new URL(stack.upstream.baseURL).host);

      const streamed = await run(assistant, 'Bad words.', { stream: true });
      const streamFailure = await (async () => {
        for await (const _event of streamed) {
          // drain
        }
        await streamed.completed;
        return streamed.error;
      })().catch((caught: unknown) => caught);
      expect(streamFailure).toBeInstanceOf(Error);
      expect(stack.upstream.requests).toHaveLength(2); // one model call per failed turn: nothing ran twice
    });
  });
}
