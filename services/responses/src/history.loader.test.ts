import { createConversationsRepo, createRunsRepo } from '@ic/db';
import { newId, type ConversationRow } from '@ic/schemas';
import { createTestDatabase, plainTurns, seedTenant, seedTranscript, turnToAccept, userMessage, type TestDatabase } from '@ic/test-support';
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
const texts = (items: Array<{ type: string; content?: Array<{ text?: string }> }>) => items.map((item) => item.content?.[0]?.text);

/** Accepts a turn in the conversation, claims it through the loader, and cancels it again (so the transcript stays as it is). */
async function claimTurn(loader: HistoryLoader, conversation: ConversationRow, hint: string | null = conversation.id) {
  const runs = createRunsRepo(db.pool);
  const turn = turnToAccept(smith, conversation.id, 'this turn');
  const id = turn.id;
  const accepted = await runs.accept(turn);
  if (accepted.outcome !== 'accepted') throw new Error(accepted.outcome);
  const claim = await loader.claim(id, hint);
  if (claim.outcome !== 'claimed') throw new Error(claim.outcome);
  await runs.stamp({ run: claim.run, outcome: { status: 'cancelled', outputCount: 0, usage: null, error: null, incompleteDetails: null }, outputs: [] });
  expect(texts(claim.input as never)).toEqual(['this turn']);
  return claim.prior;
}

describe('HistoryLoader', () => {
  it('reads transcripts in order within the claim, picks up items stamped elsewhere, and stays within its item budget', async () => {
    const a = await newConversation();
    const b = await newConversation();
    await seedTranscript(db.pool, a, plainTurns(3, 'a'));
    await seedTranscript(db.pool, b, plainTurns(2, 'b'));
    const loader = new HistoryLoader(db.pool, 8);

    expect(texts((await claimTurn(loader, a)) as never)).toEqual(['a 0 question', 'a 0 answer', 'a 1 question', 'a 1 answer', 'a 2 question', 'a 2 answer']);
    expect(loader.size).toBe(6);
    expect(await claimTurn(loader, b)).toHaveLength(4);
    expect(loader.size).toBe(4); // a (least recently used) made room for b

    // Another worker stamps a turn of b: the next claim carries just that.
    await seedTranscript(db.pool, b, [{ input: [userMessage('b 2 question')], output: [] }]);
    expect(texts((await claimTurn(loader, b)) as never).at(-1)).toBe('b 2 question');
    expect(loader.size).toBe(5);

    // This worker's own stamp extends the cache without a read; a gap in positions drops the entry instead.
    loader.recordStamped(b.id, 5, [userMessage('b 3 question')]);
    expect(loader.size).toBe(6);
    loader.recordStamped(b.id, 99, [userMessage('out of order')]);
    expect(loader.size).toBe(0);
    expect(await claimTurn(loader, b)).toHaveLength(5); // the database, not the dropped cache entry

    // A job that does not name its conversation gets the whole transcript, and the cache starts over.
    expect(texts((await claimTurn(loader, b, null)) as never)).toEqual(['b 0 question', 'b 0 answer', 'b 1 question', 'b 1 answer', 'b 2 question']);
    expect(loader.size).toBe(5);
  });
});
