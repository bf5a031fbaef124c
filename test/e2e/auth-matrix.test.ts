/**
 * Every gateway route against every way a caller can be wrong (or right): token problems, scopes,
 * other smiths' and tenants' conversations, and tenant-admin tokens naming a smith with IC-Smith-Id.
 */
import { mintToken, SCOPES, type Scope } from '@ic/auth';
import { createConversationsRepo, createTokensRepo, sql } from '@ic/db';
import { newId, randomBase62, type ConversationRow, type SmithRow } from '@ic/schemas';
import {
  createTestDatabase,
  expectError,
  httpRequest,
  plainTurns,
  seedSmith,
  seedTenant,
  seedTranscript,
  startGateway,
  type HttpReply,
  type RunningGateway,
  type SeededTenant,
  type TestDatabase,
} from '../support';

/** Small, so the revocation rows show a revoked token stops working within the cache TTL. */
const TOKEN_CACHE_TTL_MS = 250;
/** Allowance on top of the TTL for scheduling and request latency on a loaded machine. */
const REVOCATION_SLACK_MS = 3000;

let db: TestDatabase;
let gateway: RunningGateway;
let home: SeededTenant;
let otherSmith: SmithRow;
let foreign: SeededTenant;
let readOnlyToken: string;
let writeOnlyToken: string;

beforeAll(async () => {
  db = await createTestDatabase();
  gateway = await startGateway(db.pool, { tokenCacheTtlMs: TOKEN_CACHE_TTL_MS });
  home = await seedTenant(db.pool);
  otherSmith = await seedSmith(db.pool, home.tenant.id);
  foreign = await seedTenant(db.pool);
  const smithToken = (scopes: Scope[]) => mintToken(db.pool, { tenantId: home.tenant.id, kind: 'smith', smithId: home.smith.id, scopes });
  readOnlyToken = (await smithToken(['conversations:read', 'responses:read', 'responses:write'])).token;
  writeOnlyToken = (await smithToken(['conversations:write', 'responses:read', 'responses:write'])).token;
});
afterAll(async () => {
  await gateway?.close();
  await db?.drop();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Target {
  conversation: ConversationRow;
  itemIds: string[];
}

interface Route {
  name: string;
  /** The scope the route needs; null for the write-item routes, which exist only to say 405. */
  scope: 'conversations:read' | 'conversations:write' | null;
  /** Whether the route names a conversation in its path. */
  perConversation: boolean;
  request(target: Target): { method: string; path: string; body?: unknown };
  /** Checks a successful reply against the target (owned by home.smith) and the database. */
  verify?(reply: HttpReply, target: Target): Promise<void>;
}

const routes: Route[] = [
  {
    name: 'POST /v1/conversations',
    scope: 'conversations:write',
    perConversation: false,
    request: () => ({ method: 'POST', path: '/v1/conversations', body: { title: 'matrix' } }),
    verify: async (reply) => {
      expect(reply.json).toMatchObject({ object: 'conversation', smith_id: home.smith.id, title: 'matrix' });
      expect(await createConversationsRepo(db.pool).find(reply.json.id)).toMatchObject({ tenant_id: home.tenant.id, smith_id: home.smith.id });
    },
  },
  {
    name: 'GET /v1/conversations',
    scope: 'conversations:read',
    perConversation: false,
    request: () => ({ method: 'GET', path: '/v1/conversations?limit=100' }),
    verify: async (reply, target) => {
      const ids = reply.json.data.map((c: { id: string }) => c.id);
      expect(ids).toContain(target.conversation.id);
      expect(reply.json.data.every((c: { smith_id: string }) => c.smith_id === home.smith.id)).toBe(true);
    },
  },
  {
    name: 'GET /v1/conversations/:id',
    scope: 'conversations:read',
    perConversation: true,
    request: (t) => ({ method: 'GET', path: `/v1/conversations/${t.conversation.id}` }),
    verify: async (reply, t) => expect(reply.json).toMatchObject({ id: t.conversation.id, smith_id: home.smith.id }),
  },
  {
    name: 'POST /v1/conversations/:id',
    scope: 'conversations:write',
    perConversation: true,
    request: (t) => ({ method: 'POST', path: `/v1/conversations/${t.conversation.id}`, body: { title: 'renamed', metadata: { k: 'v' } } }),
    verify: async (reply, t) => {
      expect(reply.json).toMatchObject({ id: t.conversation.id, title: 'renamed', metadata: { k: 'v' } });
      expect(await createConversationsRepo(db.pool).find(t.conversation.id)).toMatchObject({ title: 'renamed', metadata: { k: 'v' } });
    },
  },
  {
    name: 'DELETE /v1/conversations/:id',
    scope: 'conversations:write',
    perConversation: true,
    request: (t) => ({ method: 'DELETE', path: `/v1/conversations/${t.conversation.id}` }),
    verify: async (reply, t) => {
      expect(reply.json).toEqual({ id: t.conversation.id, object: 'conversation.deleted', deleted: true });
      expect(await createConversationsRepo(db.pool).findForSmith(home.smith.id, t.conversation.id)).toBeNull();
    },
  },
  {
    name: 'GET /v1/conversations/:id/items',
    scope: 'conversations:read',
    perConversation: true,
    request: (t) => ({ method: 'GET', path: `/v1/conversations/${t.conversation.id}/items` }),
    verify: async (reply, t) => expect(reply.json.data.map((item: { id: string }) => item.id)).toEqual(t.itemIds),
  },
  {
    name: 'GET /v1/conversations/:id/items/:item_id',
    scope: 'conversations:read',
    perConversation: true,
    request: (t) => ({ method: 'GET', path: `/v1/conversations/${t.conversation.id}/items/${t.itemIds[1]}` }),
    verify: async (reply, t) => expect(reply.json).toMatchObject({ id: t.itemIds[1], type: 'message', role: 'assistant' }),
  },
  {
    name: 'POST /v1/conversations/:id/items',
    scope: null,
    perConversation: true,
    request: (t) => ({ method: 'POST', path: `/v1/conversations/${t.conversation.id}/items`, body: { items: [{ role: 'user', content: 'x' }] } }),
  },
  {
    name: 'DELETE /v1/conversations/:id/items/:item_id',
    scope: null,
    perConversation: true,
    request: (t) => ({ method: 'DELETE', path: `/v1/conversations/${t.conversation.id}/items/${t.itemIds[0]}` }),
  },
];

type Owner = 'home' | 'otherSmith' | 'foreign';
type Outcome = { status: number; code: string | null } | 'ok' | 'skip';

interface Case {
  name: string;
  /** Whose conversation the request targets. */
  owner: Owner;
  /** The caller's credentials; may prepare state (e.g. revoke a token it has just used). */
  caller(): Promise<{ token?: string; headers?: Record<string, string> }>;
  expect(route: Route): Outcome;
}

const unauthenticated = (code: string) => (): Outcome => ({ status: 401, code });
/** What an authenticated caller gets from the write-item routes, whoever they are: they do not exist. */
const itemsReadOnly = { status: 405, code: 'items_read_only' };

const cases: Case[] = [
  { name: 'no token', owner: 'home', caller: async () => ({}), expect: unauthenticated('missing_api_key') },
  { name: 'bad token', owner: 'home', caller: async () => ({ token: `ics_${randomBase62(40)}` }), expect: unauthenticated('invalid_api_key') },
  { name: 'malformed token', owner: 'home', caller: async () => ({ token: 'sk-not-ours' }), expect: unauthenticated('invalid_api_key') },
  {
    name: 'revoked token',
    owner: 'home',
    caller: async () => {
      const { token, row } = await mintToken(db.pool, { tenantId: home.tenant.id, kind: 'smith', smithId: home.smith.id, scopes: [...SCOPES] });
      // Use it first, so the gateway's cache holds it as valid; then revoke and wait for the TTL to expire it.
      expect((await httpRequest(gateway.origin, 'GET', '/v1/conversations', { token })).status).toBe(200);
      await createTokensRepo(db.pool).revoke(row.id);
      const revokedAt = Date.now();
      for (;;) {
        const probe = await httpRequest(gateway.origin, 'GET', '/v1/conversations', { token });
        if (probe.status === 401) {
          expect(probe.json.error.code).toBe('token_revoked');
          break;
        }
        expect(probe.status).toBe(200);
        if (Date.now() - revokedAt > TOKEN_CACHE_TTL_MS + REVOCATION_SLACK_MS) throw new Error('revoked token still accepted after the cache TTL');
        await sleep(20);
      }
      expect(Date.now() - revokedAt).toBeLessThanOrEqual(TOKEN_CACHE_TTL_MS + REVOCATION_SLACK_MS);
      return { token };
    },
    expect: unauthenticated('token_revoked'),
  },
  {
    name: 'expired token',
    owner: 'home',
    caller: async () => ({
      token: (await mintToken(db.pool, { tenantId: home.tenant.id, kind: 'smith', smithId: home.smith.id, scopes: [...SCOPES], expiresAt: new Date(Date.now() - 60_000) })).token,
    }),
    expect: unauthenticated('token_expired'),
  },
  {
    name: 'missing scope',
    owner: 'home',
    caller: async () => ({}),
    expect: (route) => (route.scope === null ? itemsReadOnly : { status: 403, code: 'insufficient_scope' }),
  },
  {
    name: "other smith's conversation",
    owner: 'otherSmith',
    caller: async () => ({ token: home.smithToken }),
    expect: (route) => (route.scope === null ? itemsReadOnly : route.name === 'POST /v1/conversations' ? 'skip' : route.perConversation ? { status: 404, code: 'not_found' } : 'ok'),
  },
  {
    name: "other tenant's conversation",
    owner: 'foreign',
    caller: async () => ({ token: home.smithToken }),
    expect: (route) => (route.scope === null ? itemsReadOnly : route.name === 'POST /v1/conversations' ? 'skip' : route.perConversation ? { status: 404, code: 'not_found' } : 'ok'),
  },
  {
    name: 'admin naming the owner in IC-Smith-Id',
    owner: 'home',
    caller: async () => ({ token: home.adminToken, headers: { 'IC-Smith-Id': home.smith.id } }),
    expect: (route) => (route.scope === null ? itemsReadOnly : 'ok'),
  },
  {
    name: "admin naming another smith for the owner's conversation",
    owner: 'home',
    caller: async () => ({ token: home.adminToken, headers: { 'IC-Smith-Id': otherSmith.id } }),
    expect: (route) => (route.scope === null ? itemsReadOnly : route.perConversation ? { status: 404, code: 'not_found' } : 'skip'),
  },
  {
    name: 'admin without IC-Smith-Id',
    owner: 'home',
    caller: async () => ({ token: home.adminToken }),
    expect: (route) => (route.scope === null ? itemsReadOnly : { status: 400, code: 'missing_smith_id' }),
  },
  {
    name: 'admin with a malformed IC-Smith-Id',
    owner: 'home',
    caller: async () => ({ token: home.adminToken, headers: { 'IC-Smith-Id': 'nobody' } }),
    expect: (route) => (route.scope === null ? itemsReadOnly : { status: 400, code: 'invalid_smith_id' }),
  },
  {
    name: "admin with a foreign tenant's smith id",
    owner: 'foreign',
    caller: async () => ({ token: home.adminToken, headers: { 'IC-Smith-Id': foreign.smith.id } }),
    expect: (route) => (route.scope === null ? itemsReadOnly : { status: 404, code: 'not_found' }),
  },
  {
    name: "foreign admin naming this tenant's smith",
    owner: 'home',
    caller: async () => ({ token: foreign.adminToken, headers: { 'IC-Smith-Id': home.smith.id } }),
    expect: (route) => (route.scope === null ? itemsReadOnly : { status: 404, code: 'not_found' }),
  },
  {
    name: "smith token with someone else's IC-Smith-Id",
    owner: 'home',
    caller: async () => ({ token: home.smithToken, headers: { 'IC-Smith-Id': otherSmith.id } }),
    expect: (route) => (route.scope === null ? itemsReadOnly : { status: 403, code: 'smith_mismatch' }),
  },
  {
    name: 'smith token with its own IC-Smith-Id',
    owner: 'home',
    caller: async () => ({ token: home.smithToken, headers: { 'IC-Smith-Id': home.smith.id } }),
    expect: (route) => (route.scope === null ? itemsReadOnly : 'ok'),
  },
  {
    name: 'smith token',
    owner: 'home',
    caller: async () => ({ token: home.smithToken }),
    expect: (route) => (route.scope === null ? itemsReadOnly : 'ok'),
  },
];

/** The missing-scope caller holds every scope but the one the route needs. */
function missingScopeToken(route: Route): string {
  return route.scope === 'conversations:read' ? writeOnlyToken : readOnlyToken;
}

async function newTarget(owner: Owner): Promise<Target> {
  const smith = owner === 'home' ? home.smith : owner === 'otherSmith' ? otherSmith : foreign.smith;
  const conversation = await createConversationsRepo(db.pool).insert({
    id: newId('conversation'),
    tenantId: smith.tenant_id,
    smithId: smith.id,
    title: 'original',
    metadata: { owner },
  });
  const items = await seedTranscript(db.pool, conversation, plainTurns(1));
  return { conversation, itemIds: items.map((item) => item.id) };
}

/** Everything a refused request must leave untouched. */
async function snapshot(target: Target) {
  return db.pool.one(sql.unsafe`
    SELECT title, title_source, metadata, deleted_at, updated_at,
           (SELECT count(*)::int FROM conversations) AS conversations, (SELECT count(*)::int FROM items) AS items
    FROM conversations WHERE id = ${target.conversation.id}`);
}

const table = routes.flatMap((route) =>
  cases.flatMap((testCase) => {
    const outcome = testCase.expect(route);
    return outcome === 'skip' ? [] : [{ route: route.name, case: testCase.name, routeDef: route, testCase, outcome }];
  }),
);

describe('auth matrix', () => {
  it('covers every route under every case it applies to', () => {
    expect(new Set(table.map((row) => row.route)).size).toBe(routes.length);
    expect(new Set(table.map((row) => row.case)).size).toBe(cases.length);
    expect(table.length).toBeGreaterThan(routes.length * (cases.length - 3));
  });

  it.each(table)('$route × $case', async ({ routeDef, testCase, outcome }) => {
    const target = await newTarget(testCase.owner);
    const caller = testCase.name === 'missing scope' ? { token: missingScopeToken(routeDef) } : await testCase.caller();
    const before = await snapshot(target);
    const { method, path, body } = routeDef.request(target);
    const reply = await httpRequest(gateway.origin, method, path, { token: caller.token, headers: caller.headers, body });
    if (outcome === 'ok') {
      expect({ status: reply.status, body: reply.status === 200 ? 'ok' : reply.text }).toEqual({ status: 200, body: 'ok' });
      if (testCase.owner === 'home') await routeDef.verify?.(reply, target);
      else {
        // Listing while someone else owns the target: ours are listed, theirs never.
        expect(reply.json.data.map((c: { id: string }) => c.id)).not.toContain(target.conversation.id);
        expect(reply.json.data.every((c: { smith_id: string }) => c.smith_id === home.smith.id)).toBe(true);
      }
      return;
    }
    expectError(reply, outcome.status, { code: outcome.code });
    if (outcome.status === 401) expect(reply.json.error.type).toBe('authentication_error');
    if (outcome.status === 403) expect(reply.json.error.type).toBe('permission_error');
    if (outcome.status === 404) expect(reply.json.error.type).toBe('not_found_error');
    expect(await snapshot(target)).toEqual(before);
    if (outcome.status === 404 && outcome.code === 'not_found' && routeDef.perConversation && caller.headers?.['IC-Smith-Id'] !== foreign.smith.id) {
      // "Exists but is not yours" reads exactly like "does not exist".
      const ghost = { ...target, conversation: { ...target.conversation, id: newId('conversation') } };
      const request = routeDef.request(ghost);
      const missing = await httpRequest(gateway.origin, request.method, request.path, { token: caller.token, headers: caller.headers, body: request.body });
      const normalise = (error: { message: string }, id: string) => ({ ...error, message: error.message.replaceAll(id, '<id>') });
      expect(normalise(reply.json.error, target.conversation.id)).toEqual(normalise(missing.json.error, ghost.conversation.id));
    }
  });
});

describe('token lifetime', () => {
  it('a token that expires while cached is refused from its expiry on', async () => {
    const expiresAt = new Date(Date.now() + 600);
    const { token } = await mintToken(db.pool, { tenantId: home.tenant.id, kind: 'smith', smithId: home.smith.id, scopes: [...SCOPES], expiresAt });
    expect((await httpRequest(gateway.origin, 'GET', '/v1/conversations', { token })).status).toBe(200);
    for (;;) {
      const sentAt = Date.now();
      const reply = await httpRequest(gateway.origin, 'GET', '/v1/conversations', { token });
      if (reply.status === 401) {
        expect(reply.json.error.code).toBe('token_expired');
        break;
      }
      expect(reply.status).toBe(200);
      // Accepted requests must have been sent before the expiry.
      expect(sentAt).toBeLessThan(expiresAt.getTime());
      await sleep(20);
    }
    // Expiry is checked per request, independent of the cache: well inside the TTL of a fresh use.
    expect(Date.now()).toBeLessThan(expiresAt.getTime() + TOKEN_CACHE_TTL_MS + REVOCATION_SLACK_MS);
  });

  it('a revoked token is refused at once by a gateway without a token cache', async () => {
    const uncached = await startGateway(db.pool, { tokenCacheTtlMs: 0 });
    try {
      const { token, row } = await mintToken(db.pool, { tenantId: home.tenant.id, kind: 'smith', smithId: home.smith.id, scopes: [...SCOPES] });
      expect((await httpRequest(uncached.origin, 'GET', '/v1/conversations', { token })).status).toBe(200);
      await createTokensRepo(db.pool).revoke(row.id);
      expectError(await httpRequest(uncached.origin, 'GET', '/v1/conversations', { token }), 401, { code: 'token_revoked' });
    } finally {
      await uncached.close();
    }
  });

  it('a tenant-admin token cannot be used without naming a smith, even for listing', async () => {
    expectError(await httpRequest(gateway.origin, 'GET', '/v1/conversations', { token: home.adminToken }), 400, { code: 'missing_smith_id', param: 'IC-Smith-Id' });
  });
});
