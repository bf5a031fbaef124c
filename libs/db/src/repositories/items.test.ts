import { assistantMessage, createTestDatabase, plainTurns, seedTenant, seedTranscript, SEED_RUN_PARAMS, userMessage, type SeededItem, type TestDatabase } from '@ic/test-support';
import { newId, type ConversationRow } from '@ic/schemas';
import { jsonb, sql, type DatabasePool } from '../pool';
import { createConversationsRepo } from './conversations';
import { createItemsRepo } from './items';

let db: TestDatabase;
let pool: DatabasePool;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = db.pool;
});
afterAll(() => db.drop());

async function newConversation(smith: { id: string; tenant_id: string }): Promise<ConversationRow> {
  return createConversationsRepo(pool).insert({ id: newId('conversation'), tenantId: smith.tenant_id, smithId: smith.id, title: null, metadata: {} });
}

/** Follows `afterKey` from page to page the way the service does (the anchor's position). */
async function walk(conversationId: string, order: 'asc' | 'desc', limit: number) {
  const repo = createItemsRepo(pool);
  const ids: string[] = [];
  let afterKey: number | undefined;
  for (let pages = 0; pages < 1000; pages++) {
    const rows = await repo.listConversationPage(conversationId, { order, limit, afterKey });
    expect(rows.length).toBeLessThanOrEqual(limit + 1);
    const page = rows.slice(0, limit);
    ids.push(...page.map((row) => row.id));
    if (rows.length <= limit) return ids;
    afterKey = page[page.length - 1]!.position!;
  }
  throw new Error('pagination does not terminate');
}

describe('items repository: listConversationPage', () => {
  let conversation: ConversationRow;
  let other: ConversationRow;
  let items: SeededItem[];
  let unattachedRun: string;

  beforeAll(async () => {
    const { smith } = await seedTenant(pool);
    conversation = await newConversation(smith);
    other = await newConversation(smith);
    // Interleave the two transcripts so neither is contiguous in the table.
    items = [];
    for (let k = 0; k < 6; k++) {
      items.push(...(await seedTranscript(pool, conversation, plainTurns(2, `c${k}`))));
      await seedTranscript(pool, other, plainTurns(1, `o${k}`));
    }
    // A turn with a function call: several outputs in one run.
    items.push(
      ...(await seedTranscript(pool, conversation, [
        {
          input: [userMessage('weather?')],
          output: [
            { type: 'function_call', call_id: 'call_1', name: 'weather', arguments: '{}', status: 'completed' },
            { type: 'function_call_output', call_id: 'call_1', output: 'sunny', status: 'completed' },
            assistantMessage('It is sunny.'),
          ],
        },
      ])),
    );
    // A run whose items never joined a transcript (e.g. an unfinished turn): no conversation, no position.
    unattachedRun = newId('run');
    await pool.query(sql.unsafe`
      INSERT INTO runs (id, tenant_id, smith_id, conversation_id, conversation_seq, status, model, params, input_count, request_hash)
      VALUES (${unattachedRun}, ${smith.tenant_id}, ${smith.id}, ${conversation.id}, 999, 'in_progress', 'dev-echo', ${jsonb(SEED_RUN_PARAMS)}, 1, 'x')`);
    await createItemsRepo(pool).insertMany([
      { id: `${unattachedRun}.i0`, runId: unattachedRun, direction: 'input', ordinal: 0, conversationId: null, position: null, body: userMessage('pending') },
    ]);
  });

  it('seeds positions 0..n-1 in transcript order', () => {
    expect(items.map((item) => item.position)).toEqual(items.map((_, k) => k));
    expect(items).toHaveLength(28);
  });

  it.each([
    ['asc', 1],
    ['asc', 2],
    ['asc', 3],
    ['asc', 5],
    ['asc', 28],
    ['asc', 100],
    ['desc', 1],
    ['desc', 3],
    ['desc', 4],
    ['desc', 27],
    ['desc', 100],
  ] as const)('order=%s limit=%i returns every item of the conversation once, in position order', async (order, limit) => {
    const expected = items.map((item) => item.id);
    if (order === 'desc') expected.reverse();
    expect(await walk(conversation.id, order, limit)).toEqual(expected);
  });

  it('returns the stored rows whole, with limit + 1 rows when more follow', async () => {
    const repo = createItemsRepo(pool);
    const first = await repo.listConversationPage(conversation.id, { order: 'asc', limit: 2 });
    expect(first).toHaveLength(3);
    expect(first[0]).toEqual({
      id: items[0]!.id,
      run_id: items[0]!.runId,
      direction: 'input',
      ordinal: 0,
      conversation_id: conversation.id,
      position: 0,
      body: items[0]!.body,
    });
    expect(first[1]).toMatchObject({ id: items[1]!.id, direction: 'output', ordinal: 1, position: 1, body: items[1]!.body });
    const last = await repo.listConversationPage(conversation.id, { order: 'desc', limit: 3 });
    expect(last.map((row) => row.body)).toEqual(items.slice(-4).reverse().map((item) => item.body));
  });

  it('treats afterKey as an exclusive bound in both orders', async () => {
    const repo = createItemsRepo(pool);
    const asc = await repo.listConversationPage(conversation.id, { order: 'asc', limit: 3, afterKey: 10 });
    expect(asc.map((row) => row.position)).toEqual([11, 12, 13, 14]);
    const desc = await repo.listConversationPage(conversation.id, { order: 'desc', limit: 3, afterKey: 10 });
    expect(desc.map((row) => row.position)).toEqual([9, 8, 7, 6]);
    expect(await repo.listConversationPage(conversation.id, { order: 'asc', limit: 3, afterKey: 27 })).toEqual([]);
    expect(await repo.listConversationPage(conversation.id, { order: 'desc', limit: 3, afterKey: 0 })).toEqual([]);
  });

  it('keeps other conversations\' and unattached items out', async () => {
    const ids = await walk(conversation.id, 'asc', 100);
    expect(ids).not.toContain(`${unattachedRun}.i0`);
    const otherIds = await walk(other.id, 'asc', 100);
    expect(otherIds).toHaveLength(12);
    expect(otherIds.filter((id) => ids.includes(id))).toEqual([]);
  });

  it('pages by position, not by offset: gaps in positions lose nothing', async () => {
    const { smith } = await seedTenant(pool);
    const gappy = await newConversation(smith);
    const seeded = await seedTranscript(pool, gappy, plainTurns(5));
    // Spread the positions out (0, 10, 20, …) as if other turns' items had been removed.
    await pool.query(sql.unsafe`UPDATE items SET position = position * 10 WHERE conversation_id = ${gappy.id}`);
    const expected = seeded.map((item) => item.id);
    for (const limit of [1, 3, 4]) {
      expect(await walk(gappy.id, 'asc', limit)).toEqual(expected);
      expect(await walk(gappy.id, 'desc', limit)).toEqual([...expected].reverse());
    }
  });

  it('lists nothing for an empty or unknown conversation', async () => {
    const { smith } = await seedTenant(pool);
    const empty = await newConversation(smith);
    const repo = createItemsRepo(pool);
    expect(await repo.listConversationPage(empty.id, { order: 'asc', limit: 20 })).toEqual([]);
    expect(await repo.listConversationPage(newId('conversation'), { order: 'desc', limit: 20 })).toEqual([]);
  });
});

describe('items repository: findInConversation', () => {
  it('finds an item only through the conversation whose transcript holds it', async () => {
    const { smith } = await seedTenant(pool);
    const mine = await newConversation(smith);
    const theirs = await newConversation(smith);
    const [input, output] = await seedTranscript(pool, mine, plainTurns(1));
    const [foreign] = await seedTranscript(pool, theirs, plainTurns(1));
    const repo = createItemsRepo(pool);

    expect(await repo.findInConversation(mine.id, input!.id)).toMatchObject({ id: input!.id, position: 0, direction: 'input', body: input!.body });
    expect(await repo.findInConversation(mine.id, output!.id)).toMatchObject({ id: output!.id, position: 1, direction: 'output', body: output!.body });
    expect(await repo.findInConversation(mine.id, foreign!.id)).toBeNull();
    expect(await repo.findInConversation(theirs.id, input!.id)).toBeNull();
    expect(await repo.findInConversation(mine.id, `${input!.runId}.i7`)).toBeNull();
    expect(await repo.findInConversation(newId('conversation'), input!.id)).toBeNull();
  });

  it('does not find a run\'s item before it joins the transcript', async () => {
    const { smith } = await seedTenant(pool);
    const conversation = await newConversation(smith);
    const runId = newId('run');
    await pool.query(sql.unsafe`
      INSERT INTO runs (id, tenant_id, smith_id, conversation_id, conversation_seq, status, model, params, input_count, request_hash)
      VALUES (${runId}, ${smith.tenant_id}, ${smith.id}, ${conversation.id}, 1, 'queued', 'dev-echo', ${jsonb(SEED_RUN_PARAMS)}, 1, 'x')`);
    const repo = createItemsRepo(pool);
    await repo.insertMany([{ id: `${runId}.i0`, runId, direction: 'input', ordinal: 0, conversationId: null, position: null, body: userMessage('hi') }]);
    expect(await repo.findInConversation(conversation.id, `${runId}.i0`)).toBeNull();
    await repo.attachInputsToConversation(runId, conversation.id, 0);
    expect(await repo.findInConversation(conversation.id, `${runId}.i0`)).toMatchObject({ position: 0, body: userMessage('hi') });
  });
});

describe('items repository: firstUserMessageWhileUntitled', () => {
  it('returns the first user message only while the conversation has no chosen title', async () => {
    const { smith } = await seedTenant(pool);
    const repo = createItemsRepo(pool);
    const conversations = createConversationsRepo(pool);
    const untitled = await newConversation(smith);
    await seedTranscript(pool, untitled, [{ input: [userMessage('first question')], output: [assistantMessage('an answer')] }]);
    await seedTranscript(pool, untitled, [{ input: [userMessage('second question')], output: [assistantMessage('another')] }]);
    expect((await repo.firstUserMessageWhileUntitled(untitled.id))?.body).toMatchObject({ role: 'user', content: [{ text: 'first question' }] });

    await conversations.setAutoTitle(untitled.id, 'First question');
    expect(await repo.firstUserMessageWhileUntitled(untitled.id)).toBeNull();

    const renamed = await newConversation(smith);
    await seedTranscript(pool, renamed, [{ input: [userMessage('hello')], output: [assistantMessage('hi')] }]);
    await conversations.update(renamed.id, { title: null });
    expect(await repo.firstUserMessageWhileUntitled(renamed.id)).toBeNull();

    const deleted = await newConversation(smith);
    await seedTranscript(pool, deleted, [{ input: [userMessage('gone soon')], output: [assistantMessage('ok')] }]);
    await conversations.softDelete(smith.id, deleted.id);
    expect(await repo.firstUserMessageWhileUntitled(deleted.id)).toBeNull();

    expect(await repo.firstUserMessageWhileUntitled(newId('conversation'))).toBeNull();
    expect(await repo.firstUserMessageWhileUntitled((await newConversation(smith)).id)).toBeNull();
  });
});
