import { z } from 'zod';
import { ApiTokenRow, ConversationRow, ItemRow, RunRow, SmithRow, TenantRow } from '@ic/schemas';
import { createTestDatabase, seedTenant, type TestDatabase } from '@ic/test-support';
import { createConversationsRepo } from './repositories/conversations';
import { rowCheckFor } from './row-check';
import { sql } from './pool';

/** A deterministic generator (mulberry32), so a failure names a value that can be replayed. */
function random(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const oddValues: unknown[] = [
  undefined, null, 0, -1, 1.5, NaN, Infinity, -Infinity, '', 'x', 'user', 'auto', 'input', true, false,
  [], ['a'], [1], {}, { a: 'b' }, { a: 1 }, new Date(0), new Map(), Object.create(null), 2 ** 53, 10n,
];

/** The value with one random change somewhere inside it: a field replaced, removed or added, keys reordered, a "__proto__" key. */
function mutate(value: unknown, next: () => number): unknown {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)]!;
  if (Array.isArray(value)) {
    if (value.length === 0 || next() < 0.3) return next() < 0.5 ? [...value, pick(oddValues)] : pick(oddValues);
    const copy = [...value];
    const at = Math.floor(next() * copy.length);
    copy[at] = mutate(copy[at], next);
    return copy;
  }
  if (typeof value !== 'object' || value === null || value instanceof Date) return pick(oddValues);
  const entries = Object.entries(value);
  const roll = next();
  if (entries.length === 0 || roll < 0.1) return pick(oddValues);
  if (roll < 0.2) return Object.fromEntries(entries.filter((_, k) => k !== Math.floor(next() * entries.length)));
  if (roll < 0.3) return Object.fromEntries([...entries, [pick(['extra', 'id', 'type', 'metadata']) + (next() < 0.5 ? '' : '_x'), pick(oddValues)]]);
  if (roll < 0.4) return Object.fromEntries([...entries].reverse());
  if (roll < 0.45) return Object.defineProperty({ ...value }, '__proto__', { value: 'x', enumerable: true, writable: true, configurable: true });
  const copy: Record<string, unknown> = { ...value };
  const key = entries[Math.floor(next() * entries.length)]![0];
  copy[key] = mutate(copy[key], next);
  return copy;
}

/** The property every compiled check must have: when it passes, zod accepts the value and returns it unchanged, key order included. */
function expectAgreesWithZod(schema: z.ZodTypeAny, value: unknown): boolean {
  const check = rowCheckFor(schema)!;
  if (!check(value)) return false;
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new Error(`check passed a value zod rejects: ${String(JSON.stringify(value))}: ${parsed.error.message}`);
  expect(parsed.data).toStrictEqual(value);
  expect(JSON.stringify(parsed.data)).toBe(JSON.stringify(value));
  return true;
}

const conversation = {
  id: 'cnv_0123456789abcdef',
  tenant_id: 'tnt_1',
  smith_id: 'smt_1',
  title: 'Trip to Oslo',
  title_source: 'user',
  metadata: { topic: 'travel', team: 'x' },
  created_at: 1_700_000_000_123,
  updated_at: 1_700_000_000_456,
};
const run = {
  id: 'resp_1',
  tenant_id: 'tnt_1',
  smith_id: 'smt_1',
  conversation_id: 'cnv_1',
  conversation_seq: 3,
  previous_response_id: null,
  status: 'completed',
  model: 'gpt-4o-mini',
  instructions: null,
  params: {
    temperature: null,
    top_p: 1,
    max_output_tokens: null,
    tools: [{ type: 'function', name: 'f' }],
    tool_choice: 'auto',
    parallel_tool_calls: true,
    text: { format: { type: 'text' } },
    reasoning: {},
    metadata: { a: 'b' },
    user: null,
    safety_identifier: null,
    store: true,
    background: false,
    truncation: 'disabled',
  },
  input_count: 1,
  output_count: 1,
  usage: { input_tokens: 3, input_tokens_details: { cached_tokens: 0 }, output_tokens: 7, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 10 },
  error: null,
  incomplete_details: null,
  attempt: 1,
  idempotency_key: null,
  request_hash: 'abc',
  created_at: 1,
  started_at: 2,
  completed_at: 3,
  cancel_requested_at: null,
};
const item = { id: 'msg_1', run_id: 'resp_1', direction: 'output', ordinal: 0, conversation_id: 'cnv_1', position: 4, body: { type: 'message', role: 'assistant', content: [] } };
const token = { id: 'tok_1', tenant_id: 'tnt_1', smith_id: 'smt_1', kind: 'smith', scopes: ['conversations:read'], label: null, created_at: 1, expires_at: null, revoked_at: null };

describe('compiled row checks', () => {
  it('compiles every row schema, and passes rows as the database returns them', () => {
    for (const schema of [TenantRow, SmithRow, ApiTokenRow, ConversationRow, RunRow, ItemRow]) expect(rowCheckFor(schema)).toBeDefined();
    expect(rowCheckFor(ConversationRow)!(conversation)).toBe(true);
    expect(rowCheckFor(RunRow)!({ ...run, usage: null })).toBe(true);
    expect(rowCheckFor(ItemRow)!(item)).toBe(true);
    expect(rowCheckFor(ApiTokenRow)!(token)).toBe(true);
  });

  it.each([
    ['ConversationRow', ConversationRow, conversation],
    ['RunRow', RunRow, run],
    ['ItemRow', ItemRow, item],
    ['ApiTokenRow', ApiTokenRow, token],
  ] as const)('%s: a value the check passes is one zod accepts and returns unchanged (3,000 random changes)', (_name, schema, valid) => {
    const next = random(20261204);
    let passed = 0;
    let sent = 0;
    for (let k = 0; k < 3000; k++) {
      let value: unknown = valid;
      for (let depth = 1 + Math.floor(next() * 3); depth > 0; depth--) value = mutate(value, next);
      if (expectAgreesWithZod(schema, value)) passed++;
      else sent++;
    }
    // Both sides are exercised: some changes keep the row valid as it is, most send it to zod.
    expect(passed).toBeGreaterThan(30);
    expect(sent).toBeGreaterThan(1000);
  });

  it('sends to zod what zod would change or refuse', () => {
    const check = rowCheckFor(ConversationRow)!;
    const { title, ...withoutTitle } = conversation;
    expect(check({ ...conversation, extra: 1 })).toBe(false);
    expect(check(withoutTitle)).toBe(false);
    expect(check({ title, ...withoutTitle })).toBe(false);
    expect(check({ ...conversation, created_at: NaN })).toBe(false);
    expect(check({ ...conversation, metadata: JSON.parse('{"__proto__":"x"}') as unknown })).toBe(false);
    expect(check({ ...conversation, metadata: new Map() })).toBe(false);
    expect(check({ ...conversation, title_source: 'other' })).toBe(false);
    expect(check(Object.assign(Object.create({ inherited: 1 }) as object, conversation))).toBe(false);
    // jsonb returns keys shortest first; zod returns them in the shape's order, so such a usage is zod's to rebuild.
    const usage = JSON.parse('{"input_tokens":3,"total_tokens":10,"output_tokens":7,"input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":0}}') as unknown;
    expect(rowCheckFor(RunRow)!({ ...run, usage })).toBe(false);
    expect(RunRow.parse({ ...run, usage }).usage).toStrictEqual(run.usage);
    expect(rowCheckFor(RunRow)!({ ...run, usage: { ...run.usage, total_tokens: 1.5 } })).toBe(false);
  });

  it('compiles only what it can check exactly: string checks, defaults, transforms and ambiguous unions are zod\'s', () => {
    expect(rowCheckFor(z.object({ a: z.string().min(1) }))).toBeUndefined();
    expect(rowCheckFor(z.object({ a: z.number().default(1) }))).toBeUndefined();
    expect(rowCheckFor(z.object({ a: z.string().transform((s) => s.trim()) }))).toBeUndefined();
    expect(rowCheckFor(z.union([z.object({ a: z.string() }), z.object({ b: z.string() })]))).toBeUndefined();
    expect(rowCheckFor(z.object({ a: z.union([z.string(), z.record(z.unknown())]) }))).toBeDefined();
    const passthrough = rowCheckFor(z.object({ a: z.string() }).passthrough())!;
    expect(passthrough({ a: 'x', b: 1 })).toBe(true);
    expect(passthrough({ b: 1, a: 'x' })).toBe(false);
    const optional = rowCheckFor(z.object({ a: z.string(), b: z.string().optional(), c: z.number() }).strict())!;
    expect(optional({ a: 'x', c: 1 })).toBe(true);
    expect(optional({ a: 'x', b: 'y', c: 1 })).toBe(true);
    expect(optional({ a: 'x', c: 1, b: 'y' })).toBe(false);
    expect(optional({ a: 'x', c: 1, d: 'y' })).toBe(false);
  });
});

describe('compiled row checks on rows from Postgres', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db.drop());

  it('a conversation row as the repository selects it takes the compiled check, metadata included', async () => {
    const { tenant, smith } = await seedTenant(db.pool);
    const repo = createConversationsRepo(db.pool);
    await repo.insert({ id: 'cnv_rowcheck1', tenantId: tenant.id, smithId: smith.id, title: null, metadata: { b: '2', a: '1', long_key_first: 'x' } });
    const [raw] = await db.pool.any(
      sql.unsafe`SELECT id, tenant_id, smith_id, title, title_source, metadata, created_at, updated_at FROM conversations WHERE id = 'cnv_rowcheck1'`,
    );
    expect(rowCheckFor(ConversationRow)!(raw)).toBe(true);
    const [listed] = await repo.listPage({ smithId: smith.id, sortBy: 'created_at', order: 'desc', limit: 1 });
    expect(listed).toStrictEqual(ConversationRow.parse(raw));
  });
});
