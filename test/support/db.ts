import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { createDbPool, type DatabasePool } from '@ic/db';

export interface TestDatabase {
  url: string;
  pool: DatabasePool;
  /** Closes the pool and drops the database. */
  drop(): Promise<void>;
}

/** A fresh database cloned from the migrated template built in global setup: one per test file. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const adminUrl = process.env.IC_TEST_ADMIN_URL;
  const template = process.env.IC_TEST_TEMPLATE_DB;
  if (!adminUrl || !template) throw new Error('Run tests through jest (global setup prepares the template database).');
  // Named after the jest parent pid so global teardown can sweep leftovers from crashed files.
  const name = `ic_test_${process.ppid}_${randomBytes(4).toString('hex')}`;
  const admin = new Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${template}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
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
