/**
 * GET /v1/conversations?q=…: the chat sidebar's search box. Titles match by case-insensitive substring in
 * any language, LIKE wildcards taken literally, paginated with keyset cursors bound to the search.
 * The openai client has no conversation list, so it is called the way a tenant's app would: `client.get`.
 */
import type OpenAI from 'openai';
import { BadRequestError } from 'openai';
import {
  createTestDatabase,
  expectError,
  httpRequest,
  seedSmith,
  seedTenant,
  startGateway,
  tokenFor,
  type RunningGateway,
  type SeededTenant,
  type TestDatabase,
} from '@ic/test-support';
import { SCOPES } from '@ic/auth';

interface Conversation {
  id: string;
  title: string | null;
  metadata: Record<string, string>;
}
interface Page {
  object: 'list';
  data: Conversation[];
  next_cursor: string | null;
  has_more: boolean;
}

let db: TestDatabase;
let gateway: RunningGateway;
let seeded: SeededTenant;
let ai: OpenAI;

beforeAll(async () => {
  db = await createTestDatabase();
  gateway = await startGateway(db.pool);
  seeded = await seedTenant(db.pool);
  ai = gateway.client(seeded.smithToken);
});
afterAll(async () => {
  await gateway?.close();
  await db?.drop();
});

type Query = Record<string, string | number | undefined>;
const listPage = (client: OpenAI, query: Query) => client.get<Page>('/conversations', { query });
const raw = (query: string) => httpRequest(gateway.origin, 'GET', `/v1/conversations?${query}`, { token: seeded.smithToken });

/** Titles are our extension of the create body, which the openai client's types do not know. */
async function create(token: string, body: { title: string; metadata?: Record<string, string> }): Promise<string> {
  const reply = await httpRequest(gateway.origin, 'POST', '/v1/conversations', { token, body });
  expect(reply.status).toBe(200);
  return reply.json.id;
}

/** Every page of a listing, following next_cursor; returns the titles in listing order. */
async function walk(client: OpenAI, query: Query): Promise<Array<string | null>> {
  const titles: Array<string | null> = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 100; pages++) {
    const page = await listPage(client, { ...query, cursor });
    titles.push(...page.data.map((conversation) => conversation.title));
    if (!page.next_cursor) {
      expect(page.has_more).toBe(false);
      return titles;
    }
    expect(page.has_more).toBe(true);
    expect(page.data).toHaveLength(Number(query.limit));
    cursor = page.next_cursor;
  }
  throw new Error('pagination does not terminate');
}

const TITLES = [
  'Trip to Lisbon',
  'Budget for the TRIP',
  'Road trip snacks',
  'Tripod repair',
  'Weekly groceries',
  'Ünïcode Reise nach München',
  'ÉCOLE homework',
  '東京への旅行の計画',
  '旅行保険',
  '100% done',
  '1000 done',
  'a_b notes',
  'axb notes',
  'back\\slash',
  'backXslash',
  'strip mall',
];

describe('title search on the conversation list', () => {
  const deletedTitle = 'Deleted trip plans';

  beforeAll(async () => {
    for (const [k, title] of TITLES.entries()) await create(seeded.smithToken, { title, metadata: { folder: k % 2 === 0 ? 'even' : 'odd' } });
    await ai.conversations.create({});
    await ai.conversations.delete(await create(seeded.smithToken, { title: deletedTitle }));
    const other = await seedSmith(db.pool, seeded.tenant.id);
    await create(await tokenFor(db.pool, seeded.tenant.id, other.id, [...SCOPES]), { title: 'Another smith’s trip' });
  });

  /** What the search must return: the unfiltered listing, filtered here the obvious way. */
  async function expected(needle: string, query: Query = {}) {
    const all = await walk(ai, { limit: 100, ...query });
    return all.filter((title) => title !== null && title.toLowerCase().includes(needle.toLowerCase()));
  }

  it('matches substrings case-insensitively, newest first, and excludes deleted, untitled and other smiths’ conversations', async () => {
    const found = await walk(ai, { q: 'trip', limit: 100 });
    expect([...found].sort()).toEqual(['Budget for the TRIP', 'Road trip snacks', 'Trip to Lisbon', 'Tripod repair', 'strip mall']);
    expect(found).toEqual(await expected('trip'));
    expect(await walk(ai, { q: 'TRIP', limit: 100 })).toEqual(found);
    expect(found).not.toContain(deletedTitle);
    expect(found).not.toContain('Another smith’s trip');
    expect(await walk(ai, { q: 'no such words', limit: 100 })).toEqual([]);
    // Without a search the untitled conversation is listed; with any search it cannot match.
    expect(await walk(ai, { limit: 100 })).toContain(null);
    expect(await walk(ai, { q: 'e', limit: 100 })).not.toContain(null);
  });

  it('folds case in any language and finds CJK substrings', async () => {
    expect(await walk(ai, { q: 'üNÏCODE', limit: 100 })).toEqual(['Ünïcode Reise nach München']);
    expect(await walk(ai, { q: 'MÜNCHEN', limit: 100 })).toEqual(['Ünïcode Reise nach München']);
    expect(await walk(ai, { q: 'école', limit: 100 })).toEqual(['ÉCOLE homework']);
    expect((await walk(ai, { q: '旅行', limit: 100 })).sort()).toEqual(['旅行保険', '東京への旅行の計画'].sort());
    expect((await walk(ai, { q: '旅', limit: 100 })).sort()).toEqual(['旅行保険', '東京への旅行の計画'].sort());
  });

  it('takes LIKE wildcards and the escape character literally', async () => {
    expect(await walk(ai, { q: '0%', limit: 100 })).toEqual(['100% done']);
    expect(await walk(ai, { q: '%', limit: 100 })).toEqual(['100% done']);
    expect(await walk(ai, { q: 'a_b', limit: 100 })).toEqual(['a_b notes']);
    expect(await walk(ai, { q: '_', limit: 100 })).toEqual(['a_b notes']);
    expect(await walk(ai, { q: 'k\\s', limit: 100 })).toEqual(['back\\slash']);
    expect(await walk(ai, { q: '\\', limit: 100 })).toEqual(['back\\slash']);
  });

  it('paginates a search with cursors, in every sort, combined with metadata filters, for smith and admin tokens', async () => {
    const admin = gateway.client(seeded.adminToken, { 'ic-smith-id': seeded.smith.id });
    for (const client of [ai, admin]) {
      for (const sort_by of ['created_at', 'updated_at']) {
        for (const order of ['desc', 'asc']) {
          for (const limit of [1, 2, 3]) {
            const query = { sort_by, order, limit };
            expect(await walk(client, { ...query, q: 'trip' })).toEqual(await expected('trip', { sort_by, order }));
          }
        }
      }
      const filtered = await walk(client, { q: 'trip', 'metadata[folder]': 'even', limit: 1 });
      expect([...filtered].sort()).toEqual(['Road trip snacks', 'Trip to Lisbon']);
      expect(filtered).toEqual(await expected('trip', { 'metadata[folder]': 'even' }));
    }
  });

  it('treats an empty q as no search, and its cursors as those of a plain listing', async () => {
    expect(await walk(ai, { q: '', limit: 3 })).toEqual(await walk(ai, { limit: 3 }));
    const plain = await listPage(ai, { limit: 2 });
    const next = await listPage(ai, { limit: 2, q: '', cursor: plain.next_cursor! });
    expect(next.data).toEqual((await listPage(ai, { limit: 4 })).data.slice(2));
  });

  it('refuses a cursor from a listing with another search, or none', async () => {
    const searched = await listPage(ai, { q: 'trip', limit: 1 });
    const plain = await listPage(ai, { limit: 1 });
    const mismatches: Query[] = [
      { q: 'TRIP', cursor: searched.next_cursor! },
      { q: 'tri', cursor: searched.next_cursor! },
      { cursor: searched.next_cursor! },
      { q: 'trip', cursor: plain.next_cursor! },
    ];
    for (const query of mismatches) {
      const error = await listPage(ai, { ...query, limit: 1 }).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(BadRequestError);
      expect(error).toMatchObject({ status: 400, code: 'invalid_cursor', param: 'cursor' });
    }
  });

  it('refuses a q that is too long or given twice, naming it', async () => {
    expect((await raw(`q=${encodeURIComponent('ü'.repeat(200))}`)).status).toBe(200);
    expectError(await raw(`q=${'x'.repeat(201)}`), 400, { param: 'q', type: 'invalid_request_error' });
    expectError(await raw('q=a&q=b'), 400, { param: 'q' });
    expectError(await raw('q[]=a'), 400, { param: 'q[]' });
  });
});
