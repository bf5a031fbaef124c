import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { createDbPool, migrate, type DatabasePool } from '@ic/db';

export interface TestDatabase {
  url: string;
  pool: DatabasePool;
  /** Closes the pool and drops the database. */
  drop(): Promise<void>;
}

/**
 * A fresh database: under jest, cloned from the migrated template built in global setup (one per test
 * file); elsewhere (benchmarks), created on TEST_DATABASE_URL's server and migrated (with another
 * checkout's `migrationsDir` for a build being compared, so each build runs on its own schema).
 */
export async function createTestDatabase(options: { migrationsDir?: string } = {}): Promise<TestDatabase> {
  const adminUrl = process.env.IC_TEST_ADMIN_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const template = process.env.IC_TEST_TEMPLATE_DB;
  // Named after the jest parent pid so global teardown can sweep leftovers from crashed files.
  const name = `ic_test_${process.ppid}_${randomBytes(4).toString('hex')}`;
  const admin = new Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(template ? `CREATE DATABASE ${name} TEMPLATE ${template}` : `CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  if (!template) await migrate(url.toString(), options.migrationsDir);
  const pool = await createDbPool(url.toString(), { maximumPoolSize: 8 });
  return {
    url: url.toString(),
    pool,
    drop: async () => {
      await pool.end();
      const dropper = new Client({ connectionString: adminUrl });
      await dropper.connect();
      await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await dropper.end();
    },
  };
}
