/** GET /v1/conversations?metadata[key]=value: filtered, paginated listing for tags/folders in a chat sidebar. */
import { createTestDatabase, expectError, httpRequest, seedTenant, startGateway, type RunningGateway, type SeededTenant, type TestDatabase } from '@ic/test-support';

let db: TestDatabase;
let gateway: RunningGateway;
let seeded: SeededTenant;

beforeAll(async () => {
  db = await createTestDatabase();
  gateway = await startGateway(db.pool);
  seeded = await seedTenant(db.pool);
});
afterAll(async () => {
  await gateway.close();
  await db.drop();
});

const list = (query: string) => httpRequest(gateway.origin, 'GET', `/v1/conversations?${query}`, { token: seeded.smithToken });

describe('metadata filters on the conversation list', () => {
  const created: Record<string, string[]> = { work: [], home: [] };

  beforeAll(async () => {
    for (let k = 0; k < 7; k++) {
      const folder = k % 2 === 0 ? 'work' : 'home';
      const reply = await httpRequest(gateway.origin, 'POST', '/v1/conversations', {
        token: seeded.smithToken,
        body: { metadata: { folder, pinned: k < 3 ? 'yes' : 'no' } },
      });
      created[folder]!.push(reply.json.id);
    }
  });

  it('returns only conversations holding every requested pair, newest first, across pages', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const reply = await list(`metadata[folder]=work&limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      expect(reply.status).toBe(200);
      for (const conversation of reply.json.data) expect(conversation.metadata.folder).toBe('work');
      seen.push(...reply.json.data.map((conversation: { id: string }) => conversation.id));
      cursor = reply.json.next_cursor;
    } while (cursor);
    expect(seen).toEqual([...created.work!].reverse());

    const both = await list('metadata[folder]=work&metadata[pinned]=yes');
    expect(both.json.data.map((conversation: { id: string }) => conversation.id)).toEqual([created.work![1], created.work![0]]);
    expect((await list('metadata[folder]=nowhere')).json).toEqual({ object: 'list', data: [], next_cursor: null, has_more: false });
  });

  it('refuses a cursor from a listing with another filter, and bad filters', async () => {
    const first = await list('metadata[folder]=home&limit=1');
    expect(first.json.has_more).toBe(true);
    expectError(await list(`metadata[folder]=work&limit=1&cursor=${encodeURIComponent(first.json.next_cursor)}`), 400, { code: 'invalid_cursor', param: 'cursor' });
    expectError(await list(`cursor=${encodeURIComponent(first.json.next_cursor)}&limit=1`), 400, { code: 'invalid_cursor' });
    expectError(await list(`metadata[${'k'.repeat(65)}]=x`), 400, { param: `metadata.${'k'.repeat(65)}` });
    expectError(await list('metadata[folder]=a&metadata[folder]=b'), 400, { param: 'metadata.folder' });
  });
});
