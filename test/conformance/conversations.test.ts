/**
 * The Conversations API as the official openai client sees it, plus our extensions over plain HTTP:
 * everything goes through a real gateway on loopback backed by a real database.
 */
import { randomBytes } from 'node:crypto';
import OpenAI, { APIError, AuthenticationError, BadRequestError, NotFoundError, PermissionDeniedError } from 'openai';
import { createConversationsRepo, sql } from '@ic/db';
import { CURRENT_API_VERSION, newId } from '@ic/schemas';
import {
  assistantMessage,
  createTestDatabase,
  expectError,
  httpRequest,
  plainTurns,
  seedTenant,
  seedTranscript,
  startGateway,
  tokenFor,
  userMessage,
  type HttpRequest,
  type RunningGateway,
  type SeededItem,
  type SeededTenant,
  type TestDatabase,
} from '../support';

let db: TestDatabase;
let gateway: RunningGateway;
let main: SeededTenant;
let ai: OpenAI;

beforeAll(async () => {
  db = await createTestDatabase();
  gateway = await startGateway(db.pool);
  main = await seedTenant(db.pool);
  ai = gateway.client(main.smithToken);
});
afterAll(async () => {
  await gateway?.close();
  await db?.drop();
});

const call = (method: string, path: string, request: HttpRequest = {}) =>
  httpRequest(gateway.origin, method, path, { token: main.smithToken, ...request });

/** Row of the conversation as the repository sees it (soft-deleted rows included). */
const stored = (id: string) => createConversationsRepo(db.pool).find(id);

async function expectRejects<E extends APIError>(promise: Promise<unknown>, errorClass: new (...args: never[]) => E, status: number, code: string | null, param?: string | null): Promise<E> {
  const error = await promise.then(
    () => {
      throw new Error(`expected ${errorClass.name}, but the call succeeded`);
    },
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(errorClass);
  const apiError = error as E;
  expect(apiError.status).toBe(status);
  expect(apiError.code).toBe(code);
  if (param !== undefined) expect(apiError.param).toBe(param);
  expect(apiError.requestID).toMatch(/^req_[0-9a-f]{24}$/);
  return apiError;
}

/** An openai client that records every URL it fetches. */
function recordingClient(token: string) {
  const urls: URL[] = [];
  const client = gateway.client(token, {}, {
    fetch: (input: string | URL | Request, init?: RequestInit) => {
      urls.push(new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url));
      return fetch(input, init);
    },
  });
  return { client, urls };
}

describe('openai client: conversations', () => {
  it('create with no arguments mints an untitled conversation', async () => {
    const before = Math.floor(Date.now() / 1000);
    const { data: conversation, request_id } = await ai.conversations.create().withResponse();
    const after = Math.ceil(Date.now() / 1000);
    expect(request_id).toMatch(/^req_[0-9a-f]{24}$/);
    expect(conversation).toEqual({
      id: expect.stringMatching(/^cnv_[0-9A-Za-z]{24}$/),
      object: 'conversation',
      created_at: expect.any(Number),
      updated_at: expect.any(Number),
      title: null,
      smith_id: main.smith.id,
      metadata: {},
    });
    expect(conversation.created_at).toBeGreaterThanOrEqual(before);
    expect(conversation.created_at).toBeLessThanOrEqual(after);
    expect(Number.isInteger(conversation.created_at)).toBe(true);
    expect(await stored(conversation.id)).toMatchObject({ smith_id: main.smith.id, tenant_id: main.tenant.id, title: null });
  });

  it('create with metadata, then retrieve returns the same object', async () => {
    const created = await ai.conversations.create({ metadata: { topic: 'demo', lang: 'en' } });
    expect(created.metadata).toEqual({ topic: 'demo', lang: 'en' });
    const retrieved = await ai.conversations.retrieve(created.id);
    expect(retrieved).toEqual(created);
  });

  it('update merges metadata and returns the updated conversation', async () => {
    const created = await ai.conversations.create({ metadata: { a: '1', b: '2' } });
    const updated = await ai.conversations.update(created.id, { metadata: { b: '20', c: '3' } });
    expect(updated).toMatchObject({ id: created.id, object: 'conversation', created_at: created.created_at, metadata: { a: '1', b: '20', c: '3' } });
    expect(await ai.conversations.retrieve(created.id)).toEqual(updated);
    expect((await stored(created.id))!.metadata).toEqual({ a: '1', b: '20', c: '3' });
  });

  it('delete acknowledges, then the conversation is gone for every call', async () => {
    const created = await ai.conversations.create();
    const deleted = await ai.conversations.delete(created.id);
    expect(deleted).toEqual({ id: created.id, object: 'conversation.deleted', deleted: true });
    await expectRejects(ai.conversations.retrieve(created.id), NotFoundError, 404, 'not_found', 'conversation_id');
    await expectRejects(ai.conversations.delete(created.id), NotFoundError, 404, 'not_found');
    await expectRejects(ai.conversations.update(created.id, { metadata: { a: 'b' } }), NotFoundError, 404, 'not_found');
    await expectRejects(ai.conversations.items.list(created.id), NotFoundError, 404, 'not_found');
    // Delete removes the handle only.
    expect(await stored(created.id)).toMatchObject({ id: created.id });
  });

  it('an unknown conversation is a NotFoundError', async () => {
    const error = await expectRejects(ai.conversations.retrieve(newId('conversation')), NotFoundError, 404, 'not_found', 'conversation_id');
    expect(error.type).toBe('not_found_error');
  });

  it('a bad token is an AuthenticationError, a missing scope a PermissionDeniedError', async () => {
    const stranger = gateway.client(`ics_${'x'.repeat(40)}`);
    const unauthorized = await expectRejects(stranger.conversations.create(), AuthenticationError, 401, 'invalid_api_key');
    expect(unauthorized.type).toBe('authentication_error');
    const readOnly = gateway.client(await tokenFor(db.pool, main.tenant.id, main.smith.id, ['conversations:read']));
    const denied = await expectRejects(readOnly.conversations.create(), PermissionDeniedError, 403, 'insufficient_scope');
    expect(denied.type).toBe('permission_error');
    const { id } = await ai.conversations.create();
    await expectRejects(readOnly.conversations.delete(id), PermissionDeniedError, 403, 'insufficient_scope');
    expect(await readOnly.conversations.retrieve(id)).toMatchObject({ id });
  });

  it('invalid input is a BadRequestError naming the parameter', async () => {
    const tooMany = Object.fromEntries(Array.from({ length: 17 }, (_, k) => [`k${k}`, 'v']));
    const error = await expectRejects(ai.conversations.create({ metadata: tooMany }), BadRequestError, 400, 'invalid_value', 'metadata');
    expect(error.type).toBe('invalid_request_error');
    await expectRejects(ai.conversations.create({ items: [{ role: 'user', content: 'Hello!' }] }), BadRequestError, 400, 'invalid_value', 'items');
    const { id } = await ai.conversations.create();
    await expectRejects(ai.conversations.update(id, { metadata: { ['k'.repeat(65)]: 'v' } }), BadRequestError, 400, 'invalid_value');
  });

  it('create with an empty items array is accepted', async () => {
    expect(await ai.conversations.create({ items: [] })).toMatchObject({ object: 'conversation', title: null });
  });
});

describe('openai client: conversation items', () => {
  let conversationId: string;
  let items: SeededItem[];

  beforeAll(async () => {
    const { id } = await ai.conversations.create();
    conversationId = id;
    const row = (await stored(id))!;
    items = await seedTranscript(db.pool, row, [
      ...plainTurns(8),
      {
        input: [userMessage('What is the weather?')],
        output: [
          { type: 'function_call', call_id: 'call_w', name: 'get_weather', arguments: '{"city":"Paris"}', status: 'completed' },
          { type: 'function_call_output', call_id: 'call_w', output: '{"sky":"clear"}', status: 'completed' },
          assistantMessage('Clear skies in Paris.'),
        ],
      },
      ...plainTurns(2, 'late'),
    ]);
    expect(items).toHaveLength(24);
  });

  const expectedItems = () => items.map((item) => ({ id: item.id, ...item.body }));

  it('auto-paginates oldest first by default, one request per page, following last_id', async () => {
    const { client, urls } = recordingClient(main.smithToken);
    const seen = [];
    for await (const item of client.conversations.items.list(conversationId, { limit: 5 })) seen.push(item);
    expect(seen).toEqual(expectedItems());
    expect(urls).toHaveLength(5);
    expect(urls[0]!.pathname).toBe(`/v1/conversations/${conversationId}/items`);
    expect(urls[0]!.searchParams.get('after')).toBeNull();
    for (let page = 1; page < 5; page++) {
      expect(urls[page]!.searchParams.get('after')).toBe(items[page * 5 - 1]!.id);
      expect(urls[page]!.searchParams.get('limit')).toBe('5');
    }
  });

  it('auto-paginates newest first with order=desc', async () => {
    const { client, urls } = recordingClient(main.smithToken);
    const seen = [];
    for await (const item of client.conversations.items.list(conversationId, { limit: 7, order: 'desc' })) seen.push(item);
    expect(seen).toEqual(expectedItems().reverse());
    expect(urls).toHaveLength(4);
    expect(urls.every((url) => url.searchParams.get('order') === 'desc')).toBe(true);
  });

  it('asc with an exact multiple of the page size stops on has_more without an empty extra page', async () => {
    const { client, urls } = recordingClient(main.smithToken);
    const seen = [];
    for await (const item of client.conversations.items.list(conversationId, { limit: 8, order: 'asc' })) seen.push(item);
    expect(seen.map((item) => item.id)).toEqual(items.map((item) => item.id));
    expect(urls).toHaveLength(3);
  });

  it('serves OpenAI\'s list envelope', async () => {
    const envelope = await ai.conversations.items.list(conversationId, { limit: 3, order: 'asc' }).asResponse().then((response) => response.json());
    expect(envelope).toEqual({
      object: 'list',
      data: expectedItems().slice(0, 3),
      first_id: items[0]!.id,
      last_id: items[2]!.id,
      has_more: true,
    });
    const page = await ai.conversations.items.list(conversationId, { limit: 100 });
    expect(page.has_more).toBe(false);
    expect(page.last_id).toBe(items[items.length - 1]!.id);
    expect(page.data).toHaveLength(24);
  });

  it('after= continues right after that item in either order', async () => {
    const asc = await ai.conversations.items.list(conversationId, { after: items[10]!.id, limit: 3, order: 'asc' });
    expect(asc.data.map((item) => item.id)).toEqual(items.slice(11, 14).map((item) => item.id));
    const desc = await ai.conversations.items.list(conversationId, { after: items[10]!.id, limit: 3, order: 'desc' });
    expect(desc.data.map((item) => item.id)).toEqual([items[9]!.id, items[8]!.id, items[7]!.id]);
    const end = await ai.conversations.items.list(conversationId, { after: items[23]!.id, order: 'asc' });
    expect(end.data).toEqual([]);
    expect(end.has_more).toBe(false);
  });

  it('accepts include[] as the client sends it', async () => {
    const { client, urls } = recordingClient(main.smithToken);
    const page = await client.conversations.items.list(conversationId, { limit: 2, include: ['message.output_text.logprobs', 'reasoning.encrypted_content'] });
    expect(page.data).toHaveLength(2);
    expect(urls[0]!.searchParams.getAll('include[]')).toEqual(['message.output_text.logprobs', 'reasoning.encrypted_content']);
    const item = await client.conversations.items.retrieve(items[0]!.id, { conversation_id: conversationId, include: ['message.input_image.image_url'] });
    expect(item.id).toBe(items[0]!.id);
  });

  it('an empty conversation lists nothing in one request', async () => {
    const { id } = await ai.conversations.create();
    const { client, urls } = recordingClient(main.smithToken);
    const seen = [];
    for await (const item of client.conversations.items.list(id)) seen.push(item);
    expect(seen).toEqual([]);
    expect(urls).toHaveLength(1);
    const envelope = await ai.conversations.items.list(id).asResponse().then((response) => response.json());
    expect(envelope).toEqual({ object: 'list', data: [], first_id: null, last_id: null, has_more: false });
  });

  it('retrieves single items of every stored type', async () => {
    for (const index of [0, 1, 16, 17, 18, 19]) {
      const item = await ai.conversations.items.retrieve(items[index]!.id, { conversation_id: conversationId });
      expect(item).toEqual({ id: items[index]!.id, ...items[index]!.body });
    }
    const call = await ai.conversations.items.retrieve(items[17]!.id, { conversation_id: conversationId });
    expect(call).toMatchObject({ type: 'function_call', call_id: 'call_w', name: 'get_weather', arguments: '{"city":"Paris"}' });
  });

  it('an item of another conversation, or an unknown one, is a NotFoundError', async () => {
    const other = await ai.conversations.create();
    await expectRejects(ai.conversations.items.retrieve(items[0]!.id, { conversation_id: other.id }), NotFoundError, 404, 'not_found', 'item_id');
    await expectRejects(ai.conversations.items.retrieve(`${items[0]!.runId}.i9`, { conversation_id: conversationId }), NotFoundError, 404, 'not_found', 'item_id');
    await expectRejects(ai.conversations.items.retrieve(items[0]!.id, { conversation_id: newId('conversation') }), NotFoundError, 404, 'not_found', 'conversation_id');
  });

  it('items are read-only: create and delete are 405 items_read_only', async () => {
    const created = await expectRejects(
      ai.conversations.items.create(conversationId, { items: [{ type: 'message', role: 'user', content: 'hi' }] }),
      APIError,
      405,
      'items_read_only',
    );
    expect((created.headers as Headers | undefined)?.get('allow')).toBe('GET');
    await expectRejects(ai.conversations.items.delete(items[0]!.id, { conversation_id: conversationId }), APIError, 405, 'items_read_only');
    expect((await ai.conversations.items.list(conversationId, { limit: 100 })).data).toHaveLength(24);
  });
});

describe('extension: listing conversations', () => {
  let tenant: SeededTenant;
  let ids: string[];
  const BASE = Date.UTC(2024, 0, 1);

  const list = (query: string) => call('GET', `/v1/conversations${query}`, { token: tenant.smithToken });

  async function walk(query: string, limit: number) {
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let pages = 1; pages < 100; pages++) {
      const reply = await list(`?limit=${limit}${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      expect(reply.status).toBe(200);
      expect(Object.keys(reply.json).sort()).toEqual(['data', 'has_more', 'next_cursor', 'object']);
      expect(reply.json.object).toBe('list');
      seen.push(...reply.json.data.map((c: { id: string }) => c.id));
      expect(reply.json.has_more).toBe(reply.json.next_cursor !== null);
      if (!reply.json.has_more) return { seen, pages };
      expect(reply.json.data).toHaveLength(limit);
      cursor = reply.json.next_cursor;
    }
    throw new Error('listing does not terminate');
  }

  beforeAll(async () => {
    tenant = await seedTenant(db.pool);
    ids = [];
    // created_at: 0, 1, 1, 1, 2, 3, 3, 4 seconds after BASE (ties included); updated_at the reverse.
    const offsets = [0, 1, 1, 1, 2, 3, 3, 4];
    for (const [k, offset] of offsets.entries()) {
      const reply = await call('POST', '/v1/conversations', { token: tenant.smithToken, body: { title: `c${k}` } });
      expect(reply.status).toBe(200);
      ids.push(reply.json.id);
      await db.pool.query(sql.unsafe`
        UPDATE conversations SET created_at = to_timestamp(${(BASE + offset * 1000) / 1000}), updated_at = to_timestamp(${(BASE + (10 - offset) * 1000) / 1000})
        WHERE id = ${reply.json.id}`);
    }
    // Noise that must never show up: a deleted conversation and another smith's.
    const gone = await call('POST', '/v1/conversations', { token: tenant.smithToken });
    expect((await call('DELETE', `/v1/conversations/${gone.json.id}`, { token: tenant.smithToken })).status).toBe(200);
    await call('POST', '/v1/conversations', { token: main.smithToken });
  });

  /** Expected order: by key, ties broken by id, both in the listing's direction. */
  async function expected(sortBy: 'created_at' | 'updated_at', order: 'asc' | 'desc') {
    const direction = order === 'desc' ? sql.fragment`DESC` : sql.fragment`ASC`;
    return db.pool.anyFirst(sql.unsafe`
      SELECT id FROM conversations WHERE smith_id = ${tenant.smith.id} AND deleted_at IS NULL
      ORDER BY ${sql.identifier([sortBy])} ${direction}, id ${direction}`);
  }

  it('lists newest first by default in one page of up to 20', async () => {
    const reply = await list('');
    expect(reply.status).toBe(200);
    expect(reply.json.has_more).toBe(false);
    expect(reply.json.next_cursor).toBeNull();
    const listed = reply.json.data.map((c: { id: string }) => c.id);
    expect(listed).toEqual(await expected('created_at', 'desc'));
    expect(listed[0]).toBe(ids[7]);
    expect(listed[listed.length - 1]).toBe(ids[0]);
    expect(reply.json.data[0]).toEqual({
      id: ids[7],
      object: 'conversation',
      created_at: BASE / 1000 + 4,
      updated_at: BASE / 1000 + 6,
      title: 'c7',
      smith_id: tenant.smith.id,
      metadata: {},
    });
  });

  it.each([
    ['created_at', 'desc', 3],
    ['created_at', 'asc', 3],
    ['created_at', 'desc', 1],
    ['updated_at', 'desc', 3],
    ['updated_at', 'asc', 2],
    ['updated_at', 'asc', 8],
  ] as const)('sort_by=%s order=%s limit=%i walks every conversation once via next_cursor', async (sortBy, order, limit) => {
    const { seen, pages } = await walk(`&sort_by=${sortBy}&order=${order}`, limit);
    expect(seen).toEqual(await expected(sortBy, order));
    expect(seen).toHaveLength(8);
    expect(pages).toBe(Math.ceil(8 / limit));
  });

  it('sort_by=updated_at puts the most recently active first', async () => {
    const renamed = await call('POST', `/v1/conversations/${ids[0]}`, { token: tenant.smithToken, body: { title: 'bumped' } });
    expect(renamed.status).toBe(200);
    const reply = await list('?sort_by=updated_at&limit=2');
    expect(reply.json.data.map((c: { id: string }) => c.id)[0]).toBe(ids[0]);
    const byCreation = await list('?limit=1&order=asc');
    expect(byCreation.json.data[0].id).toBe(ids[0]);
  });

  it('refuses a cursor replayed with another sort_by or order', async () => {
    const first = await list('?limit=2');
    expect(first.json.next_cursor).toEqual(expect.any(String));
    const cursor = encodeURIComponent(first.json.next_cursor);
    expectError(await list(`?limit=2&sort_by=updated_at&cursor=${cursor}`), 400, { code: 'invalid_cursor', param: 'cursor' });
    expectError(await list(`?limit=2&order=asc&cursor=${cursor}`), 400, { code: 'invalid_cursor', param: 'cursor' });
    expect((await list(`?limit=5&cursor=${cursor}`)).status).toBe(200);
  });

  it.each([
    ['garbage', 'not-a-cursor'],
    ['two dots', 'a.b.c'],
    ['empty signature', 'eyJ2IjoxfQ.'],
    ['over 1024 characters', 'x'.repeat(2000)],
  ])('rejects a %s cursor with 400 invalid_cursor or invalid_value', async (_name, cursor) => {
    const reply = await list(`?cursor=${encodeURIComponent(cursor)}`);
    expectError(reply, 400, { param: 'cursor' });
    expect(['invalid_cursor', 'invalid_value']).toContain(reply.json.error.code);
  });

  it('rejects tampered cursors and cursors signed with another secret', async () => {
    const first = await list('?limit=2');
    const cursor: string = first.json.next_cursor;
    const [body, signature] = cursor.split('.') as [string, string];
    const payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
    payload.p.at -= 1;
    const forgedBody = Buffer.from(JSON.stringify(payload)).toString('base64url');
    const flipped = signature.slice(0, -1) + (signature.endsWith('A') ? 'B' : 'A');
    for (const tampered of [`${forgedBody}.${signature}`, `${body}.${flipped}`, `${body}x.${signature}`]) {
      expectError(await list(`?limit=2&cursor=${encodeURIComponent(tampered)}`), 400, { code: 'invalid_cursor', param: 'cursor' });
    }
    const elsewhere = await startGateway(db.pool, { cursorSecret: 'another-secret-for-cursors' });
    try {
      const foreign = await httpRequest(elsewhere.origin, 'GET', '/v1/conversations?limit=2', { token: tenant.smithToken });
      expectError(await list(`?limit=2&cursor=${encodeURIComponent(foreign.json.next_cursor)}`), 400, { code: 'invalid_cursor' });
    } finally {
      await elsewhere.close();
    }
  });

  it.each(['0', '101', '-1', '1.5', 'abc', '', '1&limit=2'])('rejects limit=%s with 400 param limit', async (limit) => {
    expectError(await list(`?limit=${limit}`), 400, { param: 'limit', type: 'invalid_request_error' });
  });

  it('accepts limit=100 and rejects unknown sort keys, orders and parameters', async () => {
    expect((await list('?limit=100')).json.data).toHaveLength(8);
    expectError(await list('?sort_by=title'), 400, { param: 'sort_by' });
    expectError(await list('?order=sideways'), 400, { param: 'order' });
    expectError(await list('?after=cnv_x'), 400, { code: 'unknown_parameter', param: 'after' });
  });
});

describe('extension: titles', () => {
  it('sets a title on create, trims it, renames and clears it', async () => {
    const created = await call('POST', '/v1/conversations', { body: { title: '  Travel spend  ' } });
    expect(created.status).toBe(200);
    expect(created.json.title).toBe('Travel spend');
    expect(await stored(created.json.id)).toMatchObject({ title: 'Travel spend', title_source: 'user' });

    const renamed = await call('POST', `/v1/conversations/${created.json.id}`, { body: { title: 'May travel' } });
    expect(renamed.json).toMatchObject({ id: created.json.id, title: 'May travel', metadata: {} });
    expect(renamed.json.updated_at).toBeGreaterThanOrEqual(created.json.updated_at);
    expect((await call('GET', `/v1/conversations/${created.json.id}`)).json.title).toBe('May travel');

    const cleared = await call('POST', `/v1/conversations/${created.json.id}`, { body: { title: null } });
    expect(cleared.json.title).toBeNull();
    expect(await stored(created.json.id)).toMatchObject({ title: null, title_source: 'user' });
  });

  it('a title update leaves metadata alone and a metadata update leaves the title alone', async () => {
    const created = await call('POST', '/v1/conversations', { body: { title: 'Keep', metadata: { a: '1' } } });
    expect((await call('POST', `/v1/conversations/${created.json.id}`, { body: { title: 'Kept' } })).json.metadata).toEqual({ a: '1' });
    expect((await call('POST', `/v1/conversations/${created.json.id}`, { body: { metadata: { b: '2' } } })).json.title).toBe('Kept');
  });

  it.each([
    ['empty', ''],
    ['blank', '   '],
    ['too long', 't'.repeat(257)],
    ['a number', 5],
    ['an object', { text: 'x' }],
  ])('refuses a title that is %s', async (_name, title) => {
    expectError(await call('POST', '/v1/conversations', { body: { title } }), 400, { param: 'title' });
    const { json } = await call('POST', '/v1/conversations', { body: {} });
    expectError(await call('POST', `/v1/conversations/${json.id}`, { body: { title } }), 400, { param: 'title' });
    expect((await stored(json.id))!.title).toBeNull();
  });

  it('accepts a title of exactly 256 characters', async () => {
    const reply = await call('POST', '/v1/conversations', { body: { title: 'T'.repeat(256) } });
    expect(reply.status).toBe(200);
    expect(reply.json.title).toHaveLength(256);
  });
});

describe('extension: metadata', () => {
  const pairs = (count: number, prefix = 'k') => Object.fromEntries(Array.from({ length: count }, (_, k) => [`${prefix}${k}`, `v${k}`]));

  it('merges on update: new keys added, existing replaced, null deletes, null metadata clears', async () => {
    const { json: created } = await call('POST', '/v1/conversations', { body: { metadata: { a: '1', b: '2', c: '3' } } });
    const merged = await call('POST', `/v1/conversations/${created.id}`, { body: { metadata: { b: null, c: '30', d: '4', missing: null } } });
    expect(merged.status).toBe(200);
    expect(merged.json.metadata).toEqual({ a: '1', c: '30', d: '4' });
    expect((await stored(created.id))!.metadata).toEqual({ a: '1', c: '30', d: '4' });
    const unchanged = await call('POST', `/v1/conversations/${created.id}`, { body: {} });
    expect(unchanged.json.metadata).toEqual({ a: '1', c: '30', d: '4' });
    const cleared = await call('POST', `/v1/conversations/${created.id}`, { body: { metadata: null } });
    expect(cleared.json.metadata).toEqual({});
  });

  it('accepts the limits exactly: 16 pairs, 64-character keys, 512-character values', async () => {
    const body = { metadata: { ...pairs(15), ['K'.repeat(64)]: 'V'.repeat(512) } };
    const reply = await call('POST', '/v1/conversations', { body });
    expect(reply.status).toBe(200);
    expect(reply.json.metadata).toEqual(body.metadata);
  });

  it.each([
    ['17 pairs', 'metadata', pairs(17)],
    ['a 65-character key', `metadata.${'K'.repeat(65)}`, { ['K'.repeat(65)]: 'v' }],
    ['a 513-character value', 'metadata.k', { k: 'V'.repeat(513) }],
    ['a number value', 'metadata.k', { k: 1 }],
    ['an empty key', 'metadata.', { '': 'v' }],
    ['an array', 'metadata', ['a']],
    ['a string', 'metadata', 'a=b'],
  ])('create refuses metadata with %s: 400 on param %s', async (_name, param, metadata) => {
    const before = await db.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM conversations`);
    expectError(await call('POST', '/v1/conversations', { body: { metadata } }), 400, { param, type: 'invalid_request_error' });
    expect(await db.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM conversations`)).toBe(before);
  });

  it('update refuses the same limits and a merge that would exceed 16 pairs, changing nothing', async () => {
    const { json: created } = await call('POST', '/v1/conversations', { body: { metadata: pairs(16) } });
    const path = `/v1/conversations/${created.id}`;
    expectError(await call('POST', path, { body: { metadata: { extra: 'x' } } }), 400, { param: 'metadata', code: 'metadata_too_large' });
    expectError(await call('POST', path, { body: { metadata: { k0: 'V'.repeat(513) } } }), 400, { param: 'metadata.k0' });
    expectError(await call('POST', path, { body: { metadata: { ['K'.repeat(65)]: null } } }), 400, { param: `metadata.${'K'.repeat(65)}` });
    expect((await stored(created.id))!.metadata).toEqual(pairs(16));
    // Replacing one key while deleting another stays within the limit.
    const swapped = await call('POST', path, { body: { metadata: { k0: null, extra: 'x' } } });
    expect(swapped.status).toBe(200);
    expect(Object.keys(swapped.json.metadata)).toHaveLength(16);
    expect(swapped.json.metadata.extra).toBe('x');
  });
});

describe('extension: concurrent metadata merges', () => {
  it('compose: parallel updates each adding a key all land', async () => {
    const { json: created } = await call('POST', '/v1/conversations', { body: { metadata: { base: '0' } } });
    const replies = await Promise.all(
      Array.from({ length: 12 }, (_, k) => call('POST', `/v1/conversations/${created.id}`, { body: { metadata: { [`p${k}`]: `${k}` } } })),
    );
    expect(replies.map((reply) => reply.status)).toEqual(replies.map(() => 200));
    const expected = { base: '0', ...Object.fromEntries(Array.from({ length: 12 }, (_, k) => [`p${k}`, `${k}`])) };
    expect((await stored(created.id))!.metadata).toEqual(expected);
  });

  it('never exceed 16 pairs: of parallel additions past the limit exactly the ones that fit succeed', async () => {
    const base = Object.fromEntries(Array.from({ length: 10 }, (_, k) => [`b${k}`, 'x']));
    const { json: created } = await call('POST', '/v1/conversations', { body: { metadata: base } });
    const replies = await Promise.all(
      Array.from({ length: 10 }, (_, k) => call('POST', `/v1/conversations/${created.id}`, { body: { metadata: { [`n${k}`]: 'y' } } })),
    );
    const statuses = replies.map((reply) => reply.status).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 400, 400, 400, 400]);
    for (const reply of replies.filter((r) => r.status === 400)) expectError(reply, 400, { code: 'metadata_too_large', param: 'metadata' });
    expect(Object.keys((await stored(created.id))!.metadata)).toHaveLength(16);
  });
});

describe('IC-Api-Version', () => {
  it('echoes a supported version, reports the current one when absent, and refuses an unknown one', async () => {
    const pinned = await call('GET', '/v1/conversations', { headers: { 'IC-Api-Version': '2026-05-01' } });
    expect(pinned.status).toBe(200);
    expect(pinned.headers.get('ic-api-version')).toBe('2026-05-01');
    const absent = await call('GET', '/v1/conversations');
    expect(absent.status).toBe(200);
    expect(absent.headers.get('ic-api-version')).toBe(CURRENT_API_VERSION);
    const unknown = await call('POST', '/v1/conversations', { headers: { 'IC-Api-Version': '2023-01-01' }, body: { title: 'never' } });
    expectError(unknown, 400, { code: 'unsupported_api_version', param: 'IC-Api-Version' });
    expect(unknown.json.error.message).toContain('2026-05-01');
    const titled = await db.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM conversations WHERE title = 'never'`);
    expect(titled).toBe(0);
  });

  it('the openai client, which sends no version, gets the current one', async () => {
    const { response } = await ai.conversations.create().withResponse();
    expect(response.headers.get('ic-api-version')).toBe(CURRENT_API_VERSION);
  });
});

describe('x-request-id', () => {
  it('is on every reply: success, client errors, unknown routes, preflights and health', async () => {
    const replies = [
      await call('GET', '/v1/conversations'),
      await call('POST', '/v1/conversations', { raw: '{"title":' }),
      await call('GET', '/v1/conversations', { token: undefined }),
      await call('GET', '/v1/nothing-here'),
      await call('GET', '/nothing-here', { token: undefined }),
      await call('POST', `/v1/conversations/${newId('conversation')}/items`, { body: {} }),
      await call('GET', `/v1/conversations/${newId('conversation')}`),
      await call('OPTIONS', '/v1/conversations', { token: undefined, headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' } }),
      await call('GET', '/healthz', { token: undefined }),
    ];
    expect(replies.map((reply) => reply.status)).toEqual([200, 400, 401, 404, 404, 405, 404, 204, 200]);
    const ids = replies.map((reply) => reply.headers.get('x-request-id'));
    for (const id of ids) expect(id).toMatch(/^req_[0-9a-f]{24}$/);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('echoes a well-formed incoming id and replaces a malformed one', async () => {
    const echoed = await call('GET', '/v1/conversations', { headers: { 'x-request-id': 'trace-1.2:abc_DEF' } });
    expect(echoed.headers.get('x-request-id')).toBe('trace-1.2:abc_DEF');
    const failed = await call('GET', '/v1/conversations/nope', { headers: { 'x-request-id': 'trace-err' } });
    expect(failed.status).toBe(400);
    expect(failed.headers.get('x-request-id')).toBe('trace-err');
    for (const bad of ['has space', 'x'.repeat(129), 'semi;colon']) {
      const replaced = await call('GET', '/v1/conversations', { headers: { 'x-request-id': bad } });
      expect(replaced.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{24}$/);
    }
  });
});

describe('CORS', () => {
  it('answers a browser preflight for our methods and headers', async () => {
    const reply = await call('OPTIONS', `/v1/conversations/${newId('conversation')}`, {
      token: undefined,
      headers: {
        origin: 'https://console.example',
        'access-control-request-method': 'DELETE',
        'access-control-request-headers': 'authorization,content-type,ic-api-version,ic-smith-id',
      },
    });
    expect(reply.status).toBe(204);
    expect(reply.headers.get('access-control-allow-origin')).toBe('https://console.example');
    expect(reply.headers.get('access-control-allow-methods')!.split(',')).toEqual(expect.arrayContaining(['GET', 'POST', 'DELETE']));
    const allowed = reply.headers.get('access-control-allow-headers')!.toLowerCase().split(',');
    expect(allowed).toEqual(expect.arrayContaining(['authorization', 'content-type', 'ic-api-version', 'ic-smith-id']));
    expect(reply.headers.get('access-control-max-age')).toBe('600');
  });

  it('lets a browser read the request id and version of an actual reply', async () => {
    const reply = await call('GET', '/v1/conversations', { headers: { origin: 'https://console.example' } });
    expect(reply.status).toBe(200);
    expect(reply.headers.get('access-control-allow-origin')).toBe('https://console.example');
    const exposed = reply.headers.get('access-control-expose-headers')!.toLowerCase().split(',');
    expect(exposed).toEqual(expect.arrayContaining(['x-request-id', 'ic-api-version']));
  });

  it('only allows the configured origins when a list is given', async () => {
    const strict = await startGateway(db.pool, { corsOrigins: ['https://console.example'] });
    try {
      const preflight = (origin: string) =>
        httpRequest(strict.origin, 'OPTIONS', '/v1/conversations', { headers: { origin, 'access-control-request-method': 'POST' } });
      expect((await preflight('https://console.example')).headers.get('access-control-allow-origin')).toBe('https://console.example');
      expect((await preflight('https://evil.example')).headers.get('access-control-allow-origin')).toBeNull();
    } finally {
      await strict.close();
    }
  });
});

describe('malformed requests are 4xx in the error envelope, never 5xx', () => {
  let conversationId: string;
  let itemIds: string[];
  let otherItemId: string;

  beforeAll(async () => {
    const { id } = await ai.conversations.create();
    conversationId = id;
    itemIds = (await seedTranscript(db.pool, (await stored(id))!, plainTurns(3))).map((item) => item.id);
    const other = await ai.conversations.create();
    otherItemId = (await seedTranscript(db.pool, (await stored(other.id))!, plainTurns(1)))[0]!.id;
  });

  it.each([
    ['truncated JSON', '{"title":', 400, 'invalid_json'],
    ['a JSON string', '"hello"', 400, 'invalid_json'],
    ['JSON null', 'null', 400, 'invalid_json'],
    ['a JSON array', '[]', 400, 'invalid_value'],
    ['trailing garbage', '{"title":"x"} trailing', 400, 'invalid_json'],
  ])('a body that is %s', async (_name, raw, status, code) => {
    expectError(await call('POST', '/v1/conversations', { raw }), status, { code });
  });

  it('wrong types and unknown fields name the parameter', async () => {
    expectError(await call('POST', '/v1/conversations', { body: { metadata: 'x' } }), 400, { param: 'metadata', code: 'invalid_value' });
    expectError(await call('POST', '/v1/conversations', { body: { colour: 'red' } }), 400, { param: 'colour', code: 'unknown_parameter' });
    expectError(await call('POST', `/v1/conversations/${conversationId}`, { body: { metadata: { a: ['b'] } } }), 400, { param: 'metadata.a' });
    expectError(await call('POST', `/v1/conversations/${conversationId}`, { body: { items: [] } }), 400, { param: 'items', code: 'unknown_parameter' });
  });

  it('a non-empty body that is not declared as JSON is 415, not silently ignored', async () => {
    for (const contentType of ['text/plain;charset=UTF-8', 'application/x-www-form-urlencoded']) {
      const reply = await call('POST', '/v1/conversations', { raw: '{"title":"dropped?"}', headers: { 'content-type': contentType } });
      expectError(reply, 415, { code: 'unsupported_media_type' });
    }
    expect(await db.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM conversations WHERE title = 'dropped?'`)).toBe(0);
    // No body at all (and no content type) is an empty create, as the openai client's create() without arguments would be.
    const empty = await httpRequest(gateway.origin, 'POST', '/v1/conversations', { token: main.smithToken });
    expect(empty.status).toBe(200);
    expect(empty.json.title).toBeNull();
    expect((await call('POST', '/v1/conversations', { raw: '' })).status).toBe(200);
  });

  it('a body over the limit is 413', async () => {
    const reply = await call('POST', '/v1/conversations', { body: { title: 'x'.repeat(1_100_000) } });
    expectError(reply, 413, { code: 'request_too_large' });
    expect(await db.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM conversations WHERE length(title) > 1000`)).toBe(0);
  });

  it('an unsupported charset or encoding is 415', async () => {
    expectError(await call('POST', '/v1/conversations', { raw: '{}', headers: { 'content-type': 'application/json; charset=latin1' } }), 415);
    expectError(await call('POST', '/v1/conversations', { raw: '{}', headers: { 'content-encoding': 'x-unknown' } }), 415);
    const corrupt = await call('POST', '/v1/conversations', { raw: Buffer.from('not gzip at all'), headers: { 'content-encoding': 'gzip' } });
    expectError(corrupt, corrupt.status);
    expect(corrupt.status).toBeGreaterThanOrEqual(400);
    expect(corrupt.status).toBeLessThan(500);
  });

  it.each([
    ['a word', 'nope'],
    ['an OpenAI-style id', 'conv_689667905b048191b4740501625afd94'],
    ['a quote', "cnv_abc'def12345"],
    ['a very long id', `cnv_${'a'.repeat(5000)}`],
    ['an encoded slash', 'cnv_abcdefgh%2Fitems'],
    ['a NUL byte', 'cnv_abcdefgh%00'],
    ['broken percent-encoding', 'cnv_abcdefgh%E0%A4%A'],
    ['a lone percent sign', '%'],
  ])('a conversation id that is %s', async (_name, id) => {
    for (const [method, suffix] of [['GET', ''], ['POST', ''], ['DELETE', ''], ['GET', '/items'], ['GET', `/items/${itemIds[0]}`]] as const) {
      const reply = await call(method, `/v1/conversations/${id}${suffix}`, method === 'POST' ? { body: { title: 'x' } } : {});
      expectError(reply, reply.status);
      expect([400, 404]).toContain(reply.status);
    }
  });

  it('malformed ids are 400 on the parameter that holds them', async () => {
    expectError(await call('GET', '/v1/conversations/nope'), 400, { param: 'conversation_id', code: 'invalid_value' });
    expectError(await call('GET', `/v1/conversations/${conversationId}/items/msg_abc`), 400, { param: 'item_id', code: 'invalid_value' });
    expectError(await call('GET', `/v1/conversations/${conversationId}/items/${itemIds[0]}x`), 400, { param: 'item_id' });
  });

  it('bad after= values', async () => {
    const items = (query: string) => call('GET', `/v1/conversations/${conversationId}/items${query}`);
    expectError(await items('?after=msg_abc'), 400, { param: 'after', code: 'invalid_value' });
    expectError(await items(`?after=${itemIds[0]!.replace('.i0', '.i9')}`), 400, { param: 'after', code: 'invalid_after' });
    expectError(await items(`?after=${otherItemId}`), 400, { param: 'after', code: 'invalid_after' });
    expectError(await items(`?after=${itemIds[0]}&after=${itemIds[1]}`), 400, { param: 'after' });
    expect((await items(`?after=${itemIds[0]}`)).json.data.map((item: { id: string }) => item.id)).toEqual(itemIds.slice(1));
  });

  it.each(['0', '101', '-5', '2.5', 'ten', '', '1&limit=1'])('items limit=%s is 400 param limit', async (limit) => {
    expectError(await call('GET', `/v1/conversations/${conversationId}/items?limit=${limit}`), 400, { param: 'limit' });
  });

  it('items: bad order and unknown parameters are 400', async () => {
    expectError(await call('GET', `/v1/conversations/${conversationId}/items?order=newest`), 400, { param: 'order' });
    expectError(await call('GET', `/v1/conversations/${conversationId}/items?cursor=abc`), 400, { param: 'cursor', code: 'unknown_parameter' });
    expectError(await call('GET', `/v1/conversations/${conversationId}/items/${itemIds[0]}?limit=2`), 400, { param: 'limit', code: 'unknown_parameter' });
  });

  it('unknown routes and methods are 404 unknown_route', async () => {
    expectError(await call('GET', '/v1/nothing-here'), 404, { code: 'unknown_route', type: 'not_found_error' });
    expectError(await call('PUT', `/v1/conversations/${conversationId}`, { body: {} }), 404, { code: 'unknown_route' });
    expectError(await call('DELETE', '/v1/conversations'), 404, { code: 'unknown_route' });
    expectError(await call('GET', '/nothing-here', { token: undefined }), 404, { code: 'unknown_route' });
  });

  it('write-item routes are 405 items_read_only with Allow: GET', async () => {
    for (const [method, path] of [
      ['POST', `/v1/conversations/${conversationId}/items`],
      ['DELETE', `/v1/conversations/${conversationId}/items/${itemIds[0]}`],
      ['POST', `/v1/conversations/${newId('conversation')}/items`],
    ] as const) {
      const reply = await call(method, path, method === 'POST' ? { body: { items: [{ role: 'user', content: 'x' }] } } : {});
      expectError(reply, 405, { code: 'items_read_only', type: 'invalid_request_error' });
      expect(reply.headers.get('allow')).toBe('GET');
    }
    expect((await call('GET', `/v1/conversations/${conversationId}/items`)).json.data).toHaveLength(6);
  });

  it('a storm of random garbage never yields a 5xx', async () => {
    const statuses = new Set<number>();
    for (let k = 0; k < 40; k++) {
      const junk = randomBytes(1 + (k % 16) * 8);
      // A lone "." is a dot segment the URL parser removes, which would make this the (valid) list request.
      const segment = junk.toString('latin1') === '.' ? '.~' : junk.toString('latin1');
      const reply = await call(k % 2 ? 'POST' : 'GET', `/v1/conversations/${encodeURIComponent(segment)}`, k % 2 ? { raw: junk } : {});
      statuses.add(reply.status);
      expect(reply.status).toBeLessThan(500);
      expect(reply.status).toBeGreaterThanOrEqual(400);
    }
    expect(statuses.size).toBeGreaterThan(0);
  });
});
