import { startTurnStack, type TurnStack } from '@ic/test-support';

/**
 * What the model is sent when a conversation's tool calls and outputs are not neatly paired. The fake
 * upstream refuses anything but OpenAI's order, so these turns only complete if the replay is valid.
 */
describe('replaying tool calls in a conversation', () => {
  let stack: TurnStack;

  beforeAll(async () => {
    stack = await startTurnStack();
  });
  afterAll(() => stack.close());
  beforeEach(() => stack.upstream.reset());

  const tools = [{ type: 'function' as const, name: 'lookup', parameters: { type: 'object', properties: {} }, strict: false }];

  it('leaves out a call the user never answered, and still sends the text around it', async () => {
    const client = stack.client();
    const conversation = await client.conversations.create();
    stack.upstream.set({ reply: { text: 'Let me look.', toolCalls: [{ name: 'lookup', arguments: '{}', id: 'call_unanswered' }] } });
    await client.responses.create({ model: '', conversation: conversation.id, input: 'Find it.', tools });
    stack.upstream.set({ reply: 'Fine.' });
    const next = await client.responses.create({ model: '', conversation: conversation.id, input: 'Never mind.', tools });

    expect(next.output_text).toBe('Fine.');
    expect(stack.upstream.requests[1]?.messages).toEqual([
      { role: 'user', content: 'Find it.' },
      { role: 'assistant', content: 'Let me look.' },
      { role: 'user', content: 'Never mind.' },
    ]);
    // The transcript keeps what happened.
    const items = (await client.conversations.items.list(conversation.id)).data;
    expect(items.map((item) => item.type)).toEqual(['message', 'message', 'function_call', 'message', 'message']);
  });

  it('puts an output sent after other input directly behind its call', async () => {
    const client = stack.client();
    const conversation = await client.conversations.create();
    stack.upstream.set({ reply: { toolCalls: [{ name: 'lookup', arguments: '{}', id: 'call_late' }] } });
    await client.responses.create({ model: '', conversation: conversation.id, input: 'Find it.', tools });
    stack.upstream.set({ reply: 'Found.' });
    const next = await client.responses.create({
      model: '',
      conversation: conversation.id,
      input: [{ role: 'user', content: 'Here you go.' }, { type: 'function_call_output', call_id: 'call_late', output: 'it' }],
      tools,
    });

    expect(next.output_text).toBe('Found.');
    expect(stack.upstream.requests[1]?.messages).toEqual([
      { role: 'user', content: 'Find it.' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_late', type: 'function', function: { name: 'lookup', arguments: '{}' } }] },
      { role: 'tool', tool_call_id: 'call_late', content: 'it' },
      { role: 'user', content: 'Here you go.' },
    ]);
  });
});
