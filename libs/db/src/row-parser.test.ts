import { z } from 'zod';
import { ApiTokenRow, ConversationRow, ItemRow, RunRow, SmithRow, TenantRow } from '@ic/schemas';
import { createTestDatabase, seedTenant, type TestDatabase } from '@ic/test-support';
import { createConversationsRepo } from './repositories/conversations';
import { ASK_ZOD, rowParserFor } from './row-parser';
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

/** The property every compiled parser must have: what it returns is what zod returns, key order included. */
function expectAgreesWithZod(schema: z.ZodTypeAny, value: unknown): boolean {
  const parsed = rowParserFor(schema)!(value);
  if (parsed === ASK_ZOD) return false;
  const byZod = schema.safeParse(value);
  if (!byZod.success) throw new Error(`compiled parser accepted a value zod rejects: ${String(JSON.stringify(value))}: ${byZod.error.message}`);
  expect(parsed).toStrictEqual(byZod.data);
  expect(JSON.stringify(parsed)).toBe(JSON.stringify(byZod.data));
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
const Outcome = z.discriminatedUnion('outcome', [
  RunRow.extend({ outcome: z.literal('claimed') }),
  z.object({ outcome: z.literal('missing') }).strict(),
]);
const token = { id: 'tok_1', tenant_id: 'tnt_1', smith_id: 'smt_1', kind: 'smith', scopes: ['conversations:read'], label: null, created_at: 1, expires_at: null, revoked_at: null };

describe('compiled row parsers', () => {
  it('compiles every row schema, and returns a row as the database gives it as it is', () => {
    for (const schema of [TenantRow, SmithRow, ApiTokenRow, ConversationRow, RunRow, ItemRow]) expect(rowParserFor(schema)).toBeDefined();
    for (const [schema, row] of [
      [ConversationRow, conversation],
      [RunRow, run],
      [ItemRow, item],
      [ApiTokenRow, token],
    ] as const) {
      expect(rowParserFor(schema)!(row)).toBe(row);
    }
  });

  it.each([
    ['ConversationRow', ConversationRow, conversation],
    ['RunRow', RunRow, run],
    ['ItemRow', ItemRow, item],
    ['ApiTokenRow', ApiTokenRow, token],
    ['a discriminated union', Outcome, { outcome: 'claimed', ...run }],
  ] as const)('%s: whatever the compiled parser returns is what zod returns (3,000 random changes)', (_name, schema, valid) => {
    const next = random(20261204);
    let parsed = 0;
    let asked = 0;
    for (let k = 0; k < 3000; k++) {
      let value: unknown = valid;
      for (let depth = 1 + Math.floor(next() * 3); depth > 0; depth--) value = mutate(value, next);
      if (expectAgreesWithZod(schema, value)) parsed++;
      else asked++;
    }
    // Both sides are exercised: some changed rows are parsed here, most are zod's.
    expect(parsed).toBeGreaterThan(100);
    expect(asked).toBeGreaterThan(1000);
  });

  it('leaves to zod what it refuses or cannot be sure of', () => {
    const parse = rowParserFor(ConversationRow)!;
    expect(parse({ ...conversation, extra: 1 })).toBe(ASK_ZOD);
    expect(parse({ ...conversation, title: undefined })).toBe(ASK_ZOD);
    expect(parse({ ...conversation, created_at: NaN })).toBe(ASK_ZOD);
    expect(parse({ ...conversation, metadata: JSON.parse('{"__proto__":"x"}') as unknown })).toBe(ASK_ZOD);
    expect(parse({ ...conversation, metadata: new Map() })).toBe(ASK_ZOD);
    expect(parse({ ...conversation, title_source: 'other' })).toBe(ASK_ZOD);
    expect(parse(Object.assign(Object.create({ inherited: 1 }) as object, conversation))).toBe(ASK_ZOD);
    expect(rowParserFor(RunRow)!({ ...run, usage: { ...run.usage, total_tokens: 1.5 } })).toBe(ASK_ZOD);
  });

  it('returns a jsonb object in the shape\'s key order, as zod does', () => {
    // jsonb gives keys shortest first; zod gives them in the shape's order, which is what the API shows.
    const usage = JSON.parse(
      '{"input_tokens":3,"total_tokens":10,"output_tokens":7,"input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":0}}',
    ) as unknown;
    const parsed = rowParserFor(RunRow)!({ ...run, usage }) as typeof run;
    expect(JSON.stringify(parsed.usage)).toBe(JSON.stringify(run.usage));
    expect(JSON.stringify(parsed)).toBe(JSON.stringify(RunRow.parse({ ...run, usage })));
    const { title, ...withoutTitle } = conversation;
    expect(JSON.stringify(rowParserFor(ConversationRow)!({ title, ...withoutTitle }))).toBe(JSON.stringify(conversation));
    // Inside arrays and records too.
    const Pair = z.object({ a: z.string(), b: z.number() });
    const listed = [{ a: 'x', b: 1 }, JSON.parse('{"b":2,"a":"y"}') as unknown];
    expect(JSON.stringify(rowParserFor(z.array(Pair))!(listed))).toBe('[{"a":"x","b":1},{"a":"y","b":2}]');
    expect(JSON.stringify(rowParserFor(z.record(Pair))!({ k: listed[1] }))).toBe('{"k":{"a":"y","b":2}}');
  });

  it('compiles only what it can parse exactly: string checks, defaults, transforms and ambiguous unions are zod\'s', () => {
    expect(rowParserFor(z.object({ a: z.string().min(1) }))).toBeUndefined();
    expect(rowParserFor(z.object({ a: z.number().default(1) }))).toBeUndefined();
    expect(rowParserFor(z.object({ a: z.string().transform((s) => s.trim()) }))).toBeUndefined();
    expect(rowParserFor(z.union([z.object({ a: z.string() }), z.object({ b: z.string() })]))).toBeUndefined();
    expect(rowParserFor(z.object({ a: z.union([z.string(), z.record(z.unknown())]) }))).toBeDefined();
    const passthrough = rowParserFor(z.object({ a: z.string(), b: z.number() }).passthrough())!;
    expect(JSON.stringify(passthrough({ c: 1, b: 2, a: 'x' }))).toBe('{"a":"x","b":2,"c":1}');
    const stripping = rowParserFor(z.object({ a: z.string() }))!;
    expect(stripping({ a: 'x', b: 1 })).toStrictEqual({ a: 'x' });
    const optional = rowParserFor(z.object({ a: z.string(), b: z.string().optional(), c: z.number() }).strict())!;
    const row = { a: 'x', c: 1 };
    expect(optional(row)).toStrictEqual(row);
    expect(optional({ a: 'x', c: 1, d: 'y' })).toBe(ASK_ZOD);
  });
});

describe('compiled row parsers on rows from Postgres', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db.drop());

  it('a conversation row as the repository selects it is returned as it is, metadata included', async () => {
    const { tenant, smith } = await seedTenant(db.pool);
    const repo = createConversationsRepo(db.pool);
    await repo.insert({ id: 'cnv_rowcheck1', tenantId: tenant.id, smithId: smith.id, title: null, metadata: { b: '2', a: '1', long_key_first: 'x' } });
    const [raw] = await db.pool.any(
      sql.unsafe`SELECT id, tenant_id, smith_id, title, title_source, metadata, created_at, updated_at FROM conversations WHERE id = 'cnv_rowcheck1'`,
    );
    expect(rowParserFor(ConversationRow)!(raw)).toBe(raw);
    const [listed] = await repo.listPage({ smithId: smith.id, sortBy: 'created_at', order: 'desc', limit: 1 });
    expect(JSON.stringify(listed)).toBe(JSON.stringify(ConversationRow.parse(raw)));
  });
});
