import { randomBytes } from 'node:crypto';
import { createTestDatabase, type TestDatabase } from '@ic/test-support';
import { newId } from '@ic/schemas';
import { sql, type DatabasePool } from '../pool';
import { createSmithsRepo, createTenantsRepo, createTokensRepo } from './tenants';

let db: TestDatabase;
let pool: DatabasePool;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = db.pool;
});
afterAll(() => db.drop());

const newTenant = (name = 'acme') => createTenantsRepo(pool).insert({ id: newId('tenant'), name });
const newSmith = (tenantId: string, name = 'helper') =>
  createSmithsRepo(pool).insert({ id: newId('smith'), tenantId, name, defaultModel: 'dev-echo' });

describe('tenants repository', () => {
  it('inserts, finds and lists tenants oldest first', async () => {
    const repo = createTenantsRepo(pool);
    const first = await newTenant('first');
    const second = await newTenant('second');
    // created_at has millisecond resolution: separate the two so the expected order does not rest on ids.
    await pool.query(sql.unsafe`UPDATE tenants SET created_at = created_at - interval '1 second' WHERE id = ${first.id}`);
    expect(first).toEqual({ id: first.id, name: 'first', created_at: expect.any(Number) });
    expect(await repo.find(second.id)).toEqual(second);
    expect((await repo.find(first.id))!.created_at).toBe(first.created_at - 1000);
    expect(await repo.find(newId('tenant'))).toBeNull();
    const ids = (await repo.list()).map((tenant) => tenant.id);
    expect(ids.indexOf(first.id)).toBeGreaterThanOrEqual(0);
    expect(ids.indexOf(first.id)).toBeLessThan(ids.indexOf(second.id));
  });

  it('refuses a duplicate id', async () => {
    const tenant = await newTenant();
    await expect(createTenantsRepo(pool).insert({ id: tenant.id, name: 'again' })).rejects.toThrow();
  });
});

describe('smiths repository', () => {
  it('scopes smiths to their tenant', async () => {
    const tenant = await newTenant();
    const otherTenant = await newTenant();
    const smith = await newSmith(tenant.id, 'one');
    const second = await newSmith(tenant.id, 'two');
    await newSmith(otherTenant.id, 'elsewhere');
    await pool.query(sql.unsafe`UPDATE smiths SET created_at = created_at + interval '1 second' WHERE id = ${smith.id}`);
    const repo = createSmithsRepo(pool);
    expect(smith).toMatchObject({ tenant_id: tenant.id, name: 'one', default_model: 'dev-echo' });
    expect(await repo.find(smith.id)).toEqual({ ...smith, created_at: smith.created_at + 1000 });
    expect(await repo.findInTenant(tenant.id, smith.id)).toEqual({ ...smith, created_at: smith.created_at + 1000 });
    expect(await repo.findInTenant(otherTenant.id, smith.id)).toBeNull();
    expect((await repo.listByTenant(tenant.id)).map((s) => s.id)).toEqual([second.id, smith.id]);
  });

  it('refuses a smith of an unknown tenant', async () => {
    await expect(newSmith(newId('tenant'))).rejects.toThrow();
  });

  it('changes the default model', async () => {
    const tenant = await newTenant();
    const smith = await newSmith(tenant.id);
    const repo = createSmithsRepo(pool);
    expect(await repo.setDefaultModel(smith.id, 'fast')).toMatchObject({ id: smith.id, default_model: 'fast' });
    expect((await repo.find(smith.id))!.default_model).toBe('fast');
    expect(await repo.setDefaultModel(newId('smith'), 'fast')).toBeNull();
  });
});

describe('tokens repository', () => {
  const hash = () => randomBytes(32);

  it('stores a token by the hash of its secret and finds it by that hash only', async () => {
    const tenant = await newTenant();
    const smith = await newSmith(tenant.id);
    const secretHash = hash();
    const expiresAt = new Date(Date.now() + 3_600_000);
    const repo = createTokensRepo(pool);
    const row = await repo.insert({
      id: newId('token'),
      tenantId: tenant.id,
      smithId: smith.id,
      kind: 'smith',
      scopes: ['conversations:read'],
      secretHash,
      label: 'browser',
      expiresAt,
    });
    expect(row).toMatchObject({ tenant_id: tenant.id, smith_id: smith.id, kind: 'smith', scopes: ['conversations:read'], label: 'browser', revoked_at: null });
    expect(row.expires_at).toBe(expiresAt.getTime());
    expect(row).not.toHaveProperty('secret_hash');
    expect(await repo.findBySecretHash(Buffer.from(secretHash))).toEqual(row);
    expect(await repo.findBySecretHash(hash())).toBeNull();
  });

  it('refuses a smith token without a smith and an admin token bound to one', async () => {
    const tenant = await newTenant();
    const smith = await newSmith(tenant.id);
    const repo = createTokensRepo(pool);
    const base = { tenantId: tenant.id, scopes: [], label: null, expiresAt: null };
    await expect(repo.insert({ ...base, id: newId('token'), smithId: null, kind: 'smith', secretHash: hash() })).rejects.toThrow();
    await expect(repo.insert({ ...base, id: newId('token'), smithId: smith.id, kind: 'tenant_admin', secretHash: hash() })).rejects.toThrow();
  });

  it('revokes once: a second revoke keeps the first revocation time', async () => {
    const tenant = await newTenant();
    const repo = createTokensRepo(pool);
    const row = await repo.insert({
      id: newId('token'), tenantId: tenant.id, smithId: null, kind: 'tenant_admin', scopes: [], secretHash: hash(), label: null, expiresAt: null,
    });
    const revoked = await repo.revoke(row.id);
    expect(revoked!.revoked_at).toEqual(expect.any(Number));
    await pool.query(sql.unsafe`UPDATE api_tokens SET revoked_at = revoked_at - interval '1 hour' WHERE id = ${row.id}`);
    const again = await repo.revoke(row.id);
    expect(again!.revoked_at).toBe(revoked!.revoked_at! - 3_600_000);
    expect(await repo.revoke(newId('token'))).toBeNull();
  });

  it('lists a tenant\'s tokens oldest first, or every token', async () => {
    const tenant = await newTenant();
    const other = await newTenant();
    const repo = createTokensRepo(pool);
    const mint = (tenantId: string) =>
      repo.insert({ id: newId('token'), tenantId, smithId: null, kind: 'tenant_admin', scopes: [], secretHash: hash(), label: null, expiresAt: null });
    const a = await mint(tenant.id);
    const b = await mint(tenant.id);
    const c = await mint(other.id);
    await pool.query(sql.unsafe`UPDATE api_tokens SET created_at = created_at - interval '1 minute' WHERE id = ${b.id}`);
    expect((await repo.list(tenant.id)).map((t) => t.id)).toEqual([b.id, a.id]);
    const all = (await repo.list()).map((t) => t.id);
    expect(all).toEqual(expect.arrayContaining([a.id, b.id, c.id]));
  });
});
