import OpenAI from 'openai';
import { sql } from '@ic/db';
import { z } from 'zod';
import { seedSmith, startTurnStack, tokenFor, type TurnStack } from '@ic/test-support';

/** `item_reference` input items: resolved at accept time to the items they name, or a 400 that names the item. */
describe.each([
  ['BullMQ on Redis', false],
  ['the in-process queue', true],
])('item references over %s', (_mode, inProcessQueue) => {
  let stack: TurnStack;
  let client: OpenAI;

  beforeAll(async () => {
    stack = await startTurnStack({ inProcessQueue, upstream: { reply: (request) => `Answer ${request.messages.length}` } });
    client = stack.client();
  });
  afterAll(() => stack.close());
  beforeEach(() => stack.upstream.reset());

  const runCount = () => stack.db.pool.oneFirst(sql.type(z.object({ n: z.number() }))`SELECT count(*)::int AS n FROM runs`);

  it('replays referenced items (with or without `type`) as the items they name, and stores them as such', async () => {
    const first = await client.responses.create({ model: '', input: 'My name is Ada.' });
    const second = await client.responses.create({
      model: '',
      input: [{ id: `${first.id}.i0` }, { type: 'item_reference', id: `${first.id}.o` }, { role: 'user', content: 'What is my name?' }],
    });

    expect(second.output_text).toBe('Answer 3');
    expect(stack.upstream.requests[1]?.messages).toEqual([
      { role: 'user', content: 'My name is Ada.' },
      { role: 'assistant', content: 'Answer 1' },
      { role: 'user', content: 'What is my name?' },
    ]);
    const inputs = await client.responses.inputItems.list(second.id, { order: 'asc' });
    expect(inputs.data).toEqual([
      expect.objectContaining({ id: `${second.id}.i0`, type: 'message', role: 'user', content: [expect.objectContaining({ type: 'input_text', text: 'My name is Ada.' })] }),
      expect.objectContaining({ id: `${second.id}.i1`, type: 'message', role: 'assistant', content: [expect.objectContaining({ type: 'output_text', text: 'Answer 1' })] }),
      expect.objectContaining({ id: `${second.id}.i2`, type: 'message', role: 'user' }),
    ]);
  });

  it("refuses unknown, malformed, hidden and other smiths' ids alike with a 400 naming input[i].id, writing nothing", async () => {
    const mine = await client.responses.create({ model: '', input: 'mine' });
    const hidden = await client.responses.create({ model: '', input: 'not stored', store: false });
    const { tenant } = stack.seeded;
    const otherSmith = await seedSmith(stack.db.pool, tenant.id);
    const other = stack.client(await tokenFor(stack.db.pool, tenant.id, otherSmith.id, ['responses:read', 'responses:write']));
    const theirs = await other.responses.create({ model: '', input: 'theirs' });
    const before = await runCount();

    for (const id of ['run_000000000000000000000000.o', 'msg_123', `${hidden.id}.o`, `${theirs.id}.o`, `${theirs.id}.i0`]) {
      const error = await client.responses
        .create({ model: '', input: [{ role: 'user', content: 'hi' }, { type: 'item_reference', id }] })
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(OpenAI.BadRequestError);
      expect(error).toMatchObject({ param: 'input[1].id', code: 'item_not_found', message: `400 Item with id '${id}' not found.` });
    }
    expect(await runCount()).toBe(before);
    // The same reference works for its owner.
    const ok = await other.responses.create({ model: '', input: [{ type: 'item_reference', id: `${theirs.id}.o` }, { role: 'user', content: 'and?' }] });
    expect(ok.status).toBe('completed');
    expect(mine.status).toBe('completed');
  });

  it('refuses a reference with other fields than type and id', async () => {
    const error = await client.responses
      .create({ model: '', input: [{ type: 'item_reference', id: 'run_000000000000000000000000.o', role: 'user' } as never] })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error).toMatchObject({ code: 'unknown_parameter', param: expect.stringMatching(/^input.*0.*role$/) });
  });
});
