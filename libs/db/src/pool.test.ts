import { z } from 'zod';
import { createTestDatabase, type TestDatabase } from '@ic/test-support';
import type { CommonQueryMethods } from 'slonik';
import { createDbPool, sql } from './pool';

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

describe('prepared statements', () => {
  const Prepared = z.object({ name: z.string(), statement: z.string() }).strict();
  const preparedOn = (connection: CommonQueryMethods) =>
    connection.any(sql.type(Prepared)`SELECT name, statement FROM pg_prepared_statements ORDER BY name`);
  const Answer = z.object({ answer: z.number() }).strict();

  it('prepares a marked statement once per connection and reuses it; unmarked statements stay unnamed', async () => {
    await db.pool.connect(async (connection) => {
      for (const n of [1, 2, 3]) {
        expect(await connection.one(sql.type(Answer)`/* prepared: test.answer */ SELECT ${n}::int + 40 AS answer`)).toEqual({ answer: 40 + n });
      }
      await connection.one(sql.type(Answer)`SELECT ${2}::int AS answer`);
      const statements = await preparedOn(connection);
      expect(statements).toHaveLength(1);
      expect(statements[0]!.name).toMatch(/^test\.answer_[0-9a-f]{12}$/);
      expect(statements[0]!.statement).toContain('SELECT $1::int + 40 AS answer');
    });
  });

  it('gives each text of a marked statement its own name (a variant never clashes with another)', async () => {
    await db.pool.connect(async (connection) => {
      const ascending = await connection.any(sql.type(Answer)`/* prepared: test.variant */ SELECT g AS answer FROM generate_series(1, ${3}::int) AS g ORDER BY g ${sql.fragment`ASC`}`);
      const descending = await connection.any(sql.type(Answer)`/* prepared: test.variant */ SELECT g AS answer FROM generate_series(1, ${3}::int) AS g ORDER BY g ${sql.fragment`DESC`}`);
      expect(ascending.map((row) => row.answer)).toEqual([1, 2, 3]);
      expect(descending.map((row) => row.answer)).toEqual([3, 2, 1]);
      expect((await preparedOn(connection)).filter((row) => row.name.startsWith('test.variant_'))).toHaveLength(2);
    });
  });

  it('runs marked statements unnamed on a pool made without prepared statements (poolers that cannot track them)', async () => {
    const unprepared = await createDbPool(db.url, { maximumPoolSize: 1, preparedStatements: false });
    try {
      await unprepared.connect(async (connection) => {
        expect(await connection.one(sql.type(Answer)`/* prepared: test.unprepared */ SELECT ${1}::int AS answer`)).toEqual({ answer: 1 });
        expect(await preparedOn(connection)).toEqual([]);
      });
    } finally {
      await unprepared.end();
    }
  });

  it('names at most 128 texts per process; later ones run unnamed rather than grow every connection', async () => {
    await db.pool.connect(async (connection) => {
      for (let k = 0; k < 140; k++) {
        const alias = sql.identifier([`t${k}`]); // a different text each time
        expect(await connection.one(sql.type(Answer)`/* prepared: test.many */ SELECT ${k}::int AS answer FROM (SELECT 1) AS ${alias}`)).toEqual({ answer: k });
      }
      const statements = await preparedOn(connection);
      expect(statements.length).toBeGreaterThan(100);
      expect(statements.length).toBeLessThanOrEqual(128);
    });
  });
});
