import { createTestDatabase, seedSmith, seedTenant, seedTranscript, plainTurns, type TestDatabase } from '@ic/test-support';
import { newId } from '@ic/schemas';
import { sql, type DatabasePool } from '../pool';
import { createConversationsRepo, type ConversationSort } from './conversations';
import { createItemsRepo } from './items';

let db: TestDatabase;
let pool: DatabasePool;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = db.pool;
});
afterAll(() => db.drop());

const BASE = Date.UTC(2026, 4, 1, 12, 0, 0);

async function insertConversation(smith: { id: string; tenant_id: string }, fields: { title?: string | null; metadata?: Record<string, string> } = {}) {
  return createConversationsRepo(pool).insert({
    id: newId('conversation'),
    tenantId: smith.tenant_id,
    smithId: smith.id,
    title: fields.title ?? null,
    metadata: fields.metadata ?? {},
  });
}

async function setTimes(id: string, createdAt: number, updatedAt: number) {
  await pool.query(sql.unsafe`
    UPDATE conversations SET created_at = to_timestamp(${createdAt} / 1000.0), updated_at = to_timestamp(${updatedAt} / 1000.0)
    WHERE id = ${id}`);
}

/** Follows the keyset from page to page the way the service does; returns the ids in page order. */
async function walk(smithId: string, sortBy: ConversationSort, order: 'asc' | 'desc', limit: number) {
  const repo = createConversationsRepo(pool);
  const ids: string[] = [];
  const pageSizes: number[] = [];
  let after: { at: number; id: string } | undefined;
  for (;;) {
    const rows = await repo.listPage({ smithId, sortBy, order, limit, after });
    expect(rows.length).toBeLessThanOrEqual(limit + 1);
    const page = rows.slice(0, limit);
    ids.push(...page.map((row) => row.id));
    pageSizes.push(page.length);
    if (rows.length <= limit) return { ids, pageSizes };
    const last = page[page.length - 1]!;
    after = { at: last[sortBy], id: last.id };
    if (pageSizes.length > 500) throw new Error('pagination does not terminate');
  }
}

describe('conversations repository: keyset pagination', () => {
  let smithId: string;
  let liveCount: number;
  const deleted: string[] = [];

  beforeAll(async () => {
    const { tenant, smith } = await seedTenant(pool);
    smithId = smith.id;
    const other = await seedSmith(pool, tenant.id);
    // Timestamps with runs of identical values (down to the millisecond), so page boundaries fall inside ties.
    const createdOffsets = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 5, 5, 8, 8, 8, 8, 8, 13, 21, 21, 34, 34, 34, 55, 55];
    const updatedOffsets = [9, 9, 4, 4, 4, 4, 0, 0, 7, 7, 7, 1, 1, 1, 1, 2, 3, 3, 9, 9, 9, 6, 6, 6, 5];
    const repo = createConversationsRepo(pool);
    for (const [k, createdOffset] of createdOffsets.entries()) {
      const row = await insertConversation(smith);
      await setTimes(row.id, BASE + createdOffset, BASE + 1000 + updatedOffsets[k]!);
      // A deleted row and another smith's row share every timestamp with a live one.
      if (k % 5 === 0) {
        const gone = await insertConversation(smith);
        await setTimes(gone.id, BASE + createdOffset, BASE + 1000 + updatedOffsets[k]!);
        expect(await repo.softDelete(smith.id, gone.id)).toBe(gone.id);
        deleted.push(gone.id);
      }
      const foreign = await insertConversation(other);
      await setTimes(foreign.id, BASE + createdOffset, BASE + 1000 + updatedOffsets[k]!);
    }
    liveCount = await pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM conversations WHERE smith_id = ${smithId} AND deleted_at IS NULL`);
    expect(liveCount).toBe(createdOffsets.length);
  });

  const cases: Array<[ConversationSort, 'asc' | 'desc', number]> = [];
  for (const sortBy of ['created_at', 'updated_at'] as const) {
    for (const order of ['desc', 'asc'] as const) for (const limit of [1, 2, 3, 4, 7, 25, 100]) cases.push([sortBy, order, limit]);
  }

  it.each(cases)('sort_by=%s order=%s limit=%i: every live row exactly once, in key order', async (sortBy, order, limit) => {
    const { ids, pageSizes } = await walk(smithId, sortBy, order, limit);
    const direction = order === 'desc' ? sql.fragment`DESC` : sql.fragment`ASC`;
    const expected = await pool.anyFirst(sql.unsafe`
      SELECT id FROM conversations WHERE smith_id = ${smithId} AND deleted_at IS NULL
      ORDER BY ${sql.identifier([sortBy])} ${direction}, id ${direction}`);
    expect(ids).toEqual(expected);
    expect(new Set(ids).size).toBe(liveCount);
    for (const id of deleted) expect(ids).not.toContain(id);
    // Every page but the last is full; the last is not empty unless the listing is.
    expect(pageSizes.slice(0, -1).every((size) => size === limit)).toBe(true);
    expect(pageSizes.length).toBe(Math.max(1, Math.ceil(liveCount / limit)));
  });

  it('orders by the requested key, newest first for desc, and returns limit + 1 rows when more follow', async () => {
    const repo = createConversationsRepo(pool);
    for (const sortBy of ['created_at', 'updated_at'] as const) {
      const desc = await repo.listPage({ smithId, sortBy, order: 'desc', limit: 100 });
      const keys = desc.map((row) => row[sortBy]);
      expect(keys).toEqual([...keys].sort((a, b) => b - a));
      const asc = await repo.listPage({ smithId, sortBy, order: 'asc', limit: 100 });
      expect(asc.map((row) => row.id)).toEqual(desc.map((row) => row.id).reverse());
    }
    expect(await repo.listPage({ smithId, sortBy: 'created_at', order: 'desc', limit: 5 })).toHaveLength(6);
    expect(await repo.listPage({ smithId, sortBy: 'created_at', order: 'desc', limit: liveCount })).toHaveLength(liveCount);
  });

  it('treats the cursor as an exclusive bound, also inside a run of equal timestamps', async () => {
    const repo = createConversationsRepo(pool);
    const all = await repo.listPage({ smithId, sortBy: 'created_at', order: 'desc', limit: 100 });
    for (const [k, row] of all.entries()) {
      const rest = await repo.listPage({ smithId, sortBy: 'created_at', order: 'desc', limit: 100, after: { at: row.created_at, id: row.id } });
      expect(rest.map((r) => r.id)).toEqual(all.slice(k + 1).map((r) => r.id));
    }
  });

  it('lists nothing for a smith without conversations', async () => {
    const { smith } = await seedTenant(pool);
    expect(await createConversationsRepo(pool).listPage({ smithId: smith.id, sortBy: 'updated_at', order: 'desc', limit: 10 })).toEqual([]);
  });
});

describe('conversations repository: rows, metadata and soft delete', () => {
  it('stores title, title_source and metadata on insert', async () => {
    const { smith } = await seedTenant(pool);
    const titled = await insertConversation(smith, { title: 'Travel spend', metadata: { topic: 'travel', 'ключ': 'значение ✓' } });
    expect(titled).toMatchObject({ smith_id: smith.id, tenant_id: smith.tenant_id, title: 'Travel spend', title_source: 'user' });
    expect(titled.metadata).toEqual({ topic: 'travel', 'ключ': 'значение ✓' });
    expect(titled.created_at).toBe(titled.updated_at);
    expect(Math.abs(titled.created_at - Date.now())).toBeLessThan(60_000);
    const untitled = await insertConversation(smith);
    expect(untitled).toMatchObject({ title: null, title_source: null, metadata: {} });
    expect(await createConversationsRepo(pool).findForSmith(smith.id, titled.id)).toEqual(titled);
  });

  it('update replaces metadata and/or title, marks the title as the user\'s and bumps updated_at', async () => {
    const { smith } = await seedTenant(pool);
    const repo = createConversationsRepo(pool);
    const row = await insertConversation(smith, { metadata: { a: '1', b: '2' } });
    await setTimes(row.id, BASE, BASE);
    const metadataOnly = await repo.update(row.id, { metadata: { c: '3' } });
    expect(metadataOnly).toMatchObject({ title: null, title_source: null, metadata: { c: '3' } });
    expect(metadataOnly.updated_at).toBeGreaterThan(BASE);
    expect(metadataOnly.created_at).toBe(BASE);
    const titleOnly = await repo.update(row.id, { title: 'Renamed' });
    expect(titleOnly).toMatchObject({ title: 'Renamed', title_source: 'user', metadata: { c: '3' } });
    const cleared = await repo.update(row.id, { title: null, metadata: {} });
    expect(cleared).toMatchObject({ title: null, title_source: 'user', metadata: {} });
    expect(await repo.findForSmith(smith.id, row.id)).toEqual(cleared);
  });

  it('findForSmith hides other smiths\' conversations', async () => {
    const { tenant, smith } = await seedTenant(pool);
    const other = await seedSmith(pool, tenant.id);
    const row = await insertConversation(smith);
    const repo = createConversationsRepo(pool);
    expect(await repo.findForSmith(other.id, row.id)).toBeNull();
    expect(await repo.findForSmith(smith.id, newId('conversation'))).toBeNull();
  });

  it('soft delete hides the conversation everywhere but keeps the row, its runs and its items', async () => {
    const { tenant, smith } = await seedTenant(pool);
    const other = await seedSmith(pool, tenant.id);
    const repo = createConversationsRepo(pool);
    const row = await insertConversation(smith);
    const keep = await insertConversation(smith);
    const items = await seedTranscript(pool, row, plainTurns(2));

    expect(await repo.softDelete(other.id, row.id)).toBeNull();
    expect(await repo.findForSmith(smith.id, row.id)).not.toBeNull();

    expect(await repo.softDelete(smith.id, row.id)).toBe(row.id);
    expect(await repo.softDelete(smith.id, row.id)).toBeNull();
    expect(await repo.findForSmith(smith.id, row.id)).toBeNull();
    const listed = await repo.listPage({ smithId: smith.id, sortBy: 'created_at', order: 'desc', limit: 10 });
    expect(listed.map((r) => r.id)).toEqual([keep.id]);
    expect(await repo.setAutoTitle(row.id, 'too late')).toBeNull();
    expect(await repo.takeNextRunSeq(smith.id, row.id)).toBeNull();

    expect(await repo.find(row.id)).toMatchObject({ id: row.id, title: null });
    const runs = await pool.anyFirst(sql.unsafe`SELECT id FROM runs WHERE conversation_id = ${row.id} AND deleted_at IS NULL`);
    expect(runs).toHaveLength(2);
    expect(await createItemsRepo(pool).findInConversation(row.id, items[0]!.id)).toMatchObject({ id: items[0]!.id, position: 0 });
  });
});

describe('conversations repository: setAutoTitle', () => {
  it('sets a title only while title_source is null, and only once', async () => {
    const { smith } = await seedTenant(pool);
    const repo = createConversationsRepo(pool);
    const untitled = await insertConversation(smith);
    expect(await repo.setAutoTitle(untitled.id, 'First question')).toBe(untitled.id);
    expect(await repo.find(untitled.id)).toMatchObject({ title: 'First question', title_source: 'auto' });
    expect(await repo.setAutoTitle(untitled.id, 'Second guess')).toBeNull();
    expect(await repo.find(untitled.id)).toMatchObject({ title: 'First question', title_source: 'auto' });

    // A user rename after an auto title sticks.
    await repo.update(untitled.id, { title: 'Mine' });
    expect(await repo.setAutoTitle(untitled.id, 'Generated')).toBeNull();
    expect((await repo.find(untitled.id))!.title).toBe('Mine');
  });

  it('never overrides a title the user chose, including a cleared one', async () => {
    const { smith } = await seedTenant(pool);
    const repo = createConversationsRepo(pool);
    const titled = await insertConversation(smith, { title: 'Chosen' });
    expect(await repo.setAutoTitle(titled.id, 'Generated')).toBeNull();
    expect(await repo.find(titled.id)).toMatchObject({ title: 'Chosen', title_source: 'user' });

    const cleared = await insertConversation(smith);
    await repo.update(cleared.id, { title: null });
    expect(await repo.setAutoTitle(cleared.id, 'Generated')).toBeNull();
    expect(await repo.find(cleared.id)).toMatchObject({ title: null, title_source: 'user' });
  });

  it('does not bump updated_at (an auto title is not activity)', async () => {
    const { smith } = await seedTenant(pool);
    const repo = createConversationsRepo(pool);
    const row = await insertConversation(smith);
    await setTimes(row.id, BASE, BASE);
    await repo.setAutoTitle(row.id, 'Generated');
    expect((await repo.find(row.id))!.updated_at).toBe(BASE);
  });
});
