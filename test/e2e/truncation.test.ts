import { startTurnStack, type TurnStack } from '@ic/test-support';

describe('truncation: "auto"', () => {
  let stack: TurnStack;
  beforeAll(async () => {
    // A tiny context budget so a few turns overflow it.
    stack = await startTurnStack({ contextTokens: 260, upstream: { reply: 'short answer' } });
  });
  afterAll(() => stack.close());

  it('replays only the newest turns that fit, starting at a user message; disabled replays everything', async () => {
    const client = stack.client();
    const conversation = await client.conversations.create();
    for (let turn = 1; turn <= 6; turn++) {
      await client.responses.create({ model: '', conversation: conversation.id, input: `question number ${turn} with some padding text` });
    }
    stack.upstream.reset();
    const truncated = await client.responses.create({ model: '', conversation: conversation.id, input: 'latest', truncation: 'auto' });
    expect(truncated.truncation).toBe('auto');
    const sent = stack.upstream.requests[0]!.messages;
    expect(sent.length).toBeLessThan(13);
    expect(sent.length).toBeGreaterThan(1);
    expect(sent[0]).toMatchObject({ role: 'user' });
    expect(sent.at(-1)).toMatchObject({ role: 'user', content: 'latest' });
    expect(sent.at(-3)).toMatchObject({ role: 'user', content: 'question number 6 with some padding text' });

    const full = await client.responses.create({ model: '', conversation: conversation.id, input: 'everything' });
    expect(full.truncation).toBe('disabled');
    expect(stack.upstream.requests[1]!.messages).toHaveLength(15);
    // Truncation shapes the request only: the transcript keeps every item.
    const items = [];
    for await (const item of client.conversations.items.list(conversation.id, { limit: 100 })) items.push(item);
    expect(items).toHaveLength(16);
  });
});
