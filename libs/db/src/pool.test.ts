import { z } from 'zod';
import { createTestDatabase, type TestDatabase } from '@ic/test-support';
import { sql } from './pool';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(() => db.drop());

describe('result parser', () => {
  it('returns every row as its zod schema parsed it (transforms applied)', async () => {
    const Row = z.object({ n: z.number().transform((n) => n * 10), label: z.string() }).strict();
    const rows = await db.pool.any(sql.type(Row)`SELECT g AS n, 'row ' || g AS label FROM generate_series(1, 3) AS g ORDER BY g`);
    expect(rows).toEqual([
      { n: 10, label: 'row 1' },
      { n: 20, label: 'row 2' },
      { n: 30, label: 'row 3' },
    ]);
  });

  // slonik re-emits a SchemaValidationError on the connection's events, which (without a listener) wraps it; either way the query fails naming it.
  it('rejects a row that does not match its schema', async () => {
    const Row = z.object({ n: z.string() }).strict();
    await expect(db.pool.one(sql.type(Row)`SELECT 1 AS n`)).rejects.toThrow(/do not conform with the schema/);
    await expect(db.pool.one(sql.type(Row)`SELECT '1' AS n, 2 AS extra`)).rejects.toThrow(/do not conform with the schema/);
  });
});
