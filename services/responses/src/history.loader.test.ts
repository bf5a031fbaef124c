import { createConversationsRepo } from '@ic/db';
import { newId, type ConversationRow, type RunRow } from '@ic/schemas';
import { createTestDatabase, plainTurns, seedTenant, seedTranscript, userMessage, type TestDatabase } from '@ic/test-support';
import { HistoryLoader } from './history';

let db: TestDatabase;
let smith: { id: string; tenant_id: string };
beforeAll(async () => {
  db = await createTestDatabase();
  smith = (await seedTenant(db.pool)).smith;
});
afterAll(() => db.drop());

const newConversation = (): Promise<ConversationRow> =>
  createConversationsRepo(db.pool).insert({ id: newId('conversation'), tenantId: smith.tenant_id, smithId: smith.id, title: null, metadata: {} });
/** A run of the conversation that has no input items of its own: forRun then returns just the history. */
const turnIn = (conversation: ConversationRow) => ({ id: newId('run'), conversation_id: conversation.id, previous_response_id: null }) as RunRow;
const texts = (items: Array<{ type: string; content?: Array<{ text?: string }> }>) => items.map((item) => item.content?.[0]?.text);

describe('HistoryLoader', () => {
  it('reads transcripts in order, picks up items stamped elsewhere, and stays within its item budget', async () => {
    const a = await newConversation();
    const b = await newConversation();
    await seedTranscript(db.pool, a, plainTurns(3, 'a'));
    await seedTranscript(db.pool, b, plainTurns(2, 'b'));
    const loader = new HistoryLoader(db.pool, 8);

    expect(texts((await loader.forRun(turnIn(a))).prior as never)).toEqual(['a 0 question', 'a 0 answer', 'a 1 question', 'a 1 answer', 'a 2 question', 'a 2 answer']);
    expect(loader.size).toBe(6);
    expect((await loader.forRun(turnIn(b))).prior).toHaveLength(4);
    expect(loader.size).toBe(4); // a (least recently used) made room for b

    // Another worker stamps a turn of b: the next read appends just that.
    await seedTranscript(db.pool, b, [{ input: [userMessage('b 2 question')], output: [] }]);
    expect(texts((await loader.forRun(turnIn(b))).prior as never).at(-1)).toBe('b 2 question');
    expect(loader.size).toBe(5);

    // This worker's own stamp extends the cache without a read; a gap in positions drops the entry instead.
    loader.recordStamped(b.id, 5, [userMessage('b 3 question')]);
    expect(loader.size).toBe(6);
    loader.recordStamped(b.id, 99, [userMessage('out of order')]);
    expect(loader.size).toBe(0);
    expect((await loader.forRun(turnIn(b))).prior).toHaveLength(5); // the database, not the dropped cache entry
  });
});
