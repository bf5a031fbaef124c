import type { DatabasePool } from '@ic/db';
import { createTestDatabase, seedTenant, type SeededTenant, type TestDatabase } from '@ic/test-support';
import { Authenticator } from './index';

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

  it('rejects an unknown token', async () => {
    const authenticator = new Authenticator(db.pool, 5000);
    await expect(authenticator.verify(`Bearer ics_${'x'.repeat(40)}`)).rejects.toMatchObject({ status: 401 });
  });
});
