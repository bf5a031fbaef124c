import { sql, type DatabasePool } from '@ic/db';
import { createTestDatabase, eventually, seedTenant, type SeededTenant, type TestDatabase } from '@ic/test-support';
import { Authenticator, mintToken } from './index';

let db: TestDatabase;
let seeded: SeededTenant;

beforeAll(async () => {
  db = await createTestDatabase();
  seeded = await seedTenant(db.pool);
});
afterAll(() => db.drop());

/** The real pool, counting the single-row lookups the Authenticator makes (token and smith). */
function countingPool(): { pool: DatabasePool; lookups: () => number } {
  let lookups = 0;
  const pool = new Proxy(db.pool, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (property !== 'maybeOne' || typeof value !== 'function') return typeof value === 'function' ? value.bind(target) : value;
      return (...args: unknown[]) => {
        lookups++;
        return value.apply(target, args);
      };
    },
  });
  return { pool, lookups: () => lookups };
}

describe('Authenticator', () => {
  it('serves concurrent requests with a cold cache from one token lookup and one smith lookup', async () => {
    const { pool, lookups } = countingPool();
    const authenticator = new Authenticator(pool, 5000);
    const principals = await Promise.all(Array.from({ length: 20 }, () => authenticator.verify(`Bearer ${seeded.smithToken}`)));
    expect(new Set(principals.map((principal) => principal.tokenId)).size).toBe(1);
    expect(principals[0]).toMatchObject({ tenantId: seeded.tenant.id, smithId: seeded.smith.id, kind: 'smith' });
    const smiths = await Promise.all(principals.map((principal) => authenticator.actingSmith(principal, undefined)));
    expect(smiths.every((smith) => smith.id === seeded.smith.id)).toBe(true);
    expect(lookups()).toBe(2);
    // Cached afterwards.
    await authenticator.actingSmith(await authenticator.verify(`Bearer ${seeded.smithToken}`), undefined);
    expect(lookups()).toBe(2);
  });

  it('without a cache, reads the token on every call, so a revocation counts at once', async () => {
    const { pool, lookups } = countingPool();
    const authenticator = new Authenticator(pool, 0);
    await authenticator.verify(`Bearer ${seeded.adminToken}`);
    await authenticator.verify(`Bearer ${seeded.adminToken}`);
    expect(lookups()).toBe(2);
  });

  it('does not cache a failed lookup', async () => {
    let fail = true;
    const flaky = new Proxy(db.pool, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver);
        if (property === 'maybeOne' && fail) return () => Promise.reject(new Error('database down'));
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const authenticator = new Authenticator(flaky, 5000);
    await expect(authenticator.verify(`Bearer ${seeded.smithToken}`)).rejects.toThrow('database down');
    fail = false;
    await expect(authenticator.verify(`Bearer ${seeded.smithToken}`)).resolves.toMatchObject({ smithId: seeded.smith.id });
  });

  it('refreshes an entry in use before it expires, in the background, and still honours a revocation within the TTL', async () => {
    const { token, row } = await mintToken(db.pool, { tenantId: seeded.tenant.id, kind: 'smith', smithId: seeded.smith.id, scopes: ['conversations:read'] });
    const { pool, lookups } = countingPool();
    let now = 1_000_000;
    const authenticator = new Authenticator(pool, 1000, () => now);
    await authenticator.verify(`Bearer ${token}`);
    expect(lookups()).toBe(1);
    await db.pool.query(sql.unsafe`UPDATE api_tokens SET revoked_at = now() WHERE id = ${row.id}`);

    // Early in its life the entry answers alone (the revocation is not seen yet: at most one TTL).
    now += 500;
    await expect(authenticator.verify(`Bearer ${token}`)).resolves.toMatchObject({ tokenId: row.id });
    expect(lookups()).toBe(1);
    // In its last quarter it still answers at once, and reloads behind the answer: one lookup, however many hits.
    now += 300;
    const hits = await Promise.all(Array.from({ length: 5 }, () => authenticator.verify(`Bearer ${token}`)));
    expect(hits.every((principal) => principal.tokenId === row.id)).toBe(true);
    expect(lookups()).toBe(2);
    // The reloaded entry carries the revocation, before the old one would have expired.
    await eventually(() => authenticator.verify(`Bearer ${token}`).then(() => undefined, () => true), 5000, 'the refreshed entry');
    await expect(authenticator.verify(`Bearer ${token}`)).rejects.toMatchObject({ status: 401, message: 'This token has been revoked.' });
    expect(lookups()).toBe(2);
    expect(now).toBeLessThan(1_000_000 + 1000);
  });

  it('rejects an unknown token', async () => {
    const authenticator = new Authenticator(db.pool, 5000);
    await expect(authenticator.verify(`Bearer ics_${'x'.repeat(40)}`)).rejects.toMatchObject({ status: 401 });
  });
});
