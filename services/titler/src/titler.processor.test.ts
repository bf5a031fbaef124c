import { createConversationsRepo, type DatabasePool } from '@ic/db';
import { createModelAdapter } from '@ic/model';
import { newId, type ConversationRow } from '@ic/schemas';
import { createLogger } from '@ic/telemetry';
import { createTestDatabase, seedTenant, seedTranscript, startFakeUpstream, userMessage, assistantMessage, type FakeUpstream, type TestDatabase } from '@ic/test-support';
import { createTitleHandler } from './titler.processor';

const logger = createLogger('test', 'silent');
let db: TestDatabase;
let pool: DatabasePool;
let upstream: FakeUpstream;
let smith: { id: string; tenant_id: string };

beforeAll(async () => {
  db = await createTestDatabase();
  pool = db.pool;
  smith = (await seedTenant(pool)).smith;
  upstream = await startFakeUpstream();
});
afterAll(async () => {
  await upstream.close();
  await db.drop();
});
beforeEach(() => upstream.reset());

async function conversationWithFirstTurn(text: string, title: string | null = null): Promise<ConversationRow> {
  const conversation = await createConversationsRepo(pool).insert({ id: newId('conversation'), tenantId: smith.tenant_id, smithId: smith.id, title, metadata: {} });
  await seedTranscript(pool, conversation, [{ input: [userMessage(text)], output: [assistantMessage('ok')] }]);
  return conversation;
}

const titleOf = async (id: string) => (await createConversationsRepo(pool).find(id))!.title;
const model = () => createModelAdapter({ adapter: 'openai-compatible', baseUrl: upstream.baseURL, apiKey: 'k', timeoutMs: 2000, devTokenDelayMs: 0 });

describe('title handler', () => {
  it('titles from the first user message, once', async () => {
    const conversation = await conversationWithFirstTurn('  Where   should we eat tonight?  ');
    const handle = createTitleHandler({ pool, logger, mode: 'message' });
    await handle({ conversationId: conversation.id });
    expect(await titleOf(conversation.id)).toBe('Where should we eat tonight?');
    // A second run (job retried or enqueued again) changes nothing, even if the transcript did.
    await createConversationsRepo(pool).setAutoTitle(conversation.id, 'changed by nobody');
    await handle({ conversationId: conversation.id });
    expect(await titleOf(conversation.id)).toBe('Where should we eat tonight?');
  });

  it('asks the model in model mode, and falls back to the message when the model fails', async () => {
    upstream.set({ reply: '"Dinner plans."' });
    const asked = await conversationWithFirstTurn('Where should we eat tonight? Somewhere near the station please');
    await createTitleHandler({ pool, logger, mode: 'model', model: model(), titleModel: 'title-model' })({ conversationId: asked.id });
    expect(await titleOf(asked.id)).toBe('Dinner plans');
    expect(upstream.requests[0]).toMatchObject({ model: 'title-model', max_completion_tokens: 32 });

    upstream.failNext(500, 1);
    const fallback = await conversationWithFirstTurn('Where should we eat tonight?');
    await createTitleHandler({ pool, logger, mode: 'model', model: model() })({ conversationId: fallback.id });
    expect(await titleOf(fallback.id)).toBe('Where should we eat tonight?');
  });

  it('never overwrites a title the user set, even one set while the title was being generated', async () => {
    const preset = await conversationWithFirstTurn('anything', 'My own title');
    await createTitleHandler({ pool, logger, mode: 'message' })({ conversationId: preset.id });
    expect(await titleOf(preset.id)).toBe('My own title');

    upstream.set({ reply: 'Generated title', firstTokenDelayMs: 300 });
    const racing = await conversationWithFirstTurn('Where should we eat tonight?');
    const running = createTitleHandler({ pool, logger, mode: 'model', model: model() })({ conversationId: racing.id });
    await upstream.waitForRequests(1);
    await createConversationsRepo(pool).update(racing.id, { title: 'Renamed meanwhile' });
    await running;
    expect(await titleOf(racing.id)).toBe('Renamed meanwhile');
  });

  it('leaves the title unset when there is no user text, or no conversation', async () => {
    const conversation = await createConversationsRepo(pool).insert({ id: newId('conversation'), tenantId: smith.tenant_id, smithId: smith.id, title: null, metadata: {} });
    const handle = createTitleHandler({ pool, logger, mode: 'message' });
    await handle({ conversationId: conversation.id });
    expect(await titleOf(conversation.id)).toBeNull();
    await expect(handle({ conversationId: newId('conversation') })).resolves.toBeUndefined();
  });
});
