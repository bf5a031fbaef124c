import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const { Client } = require('pg');

export default async function globalTeardown() {
  const admin = new Client({ connectionString: process.env.IC_TEST_ADMIN_URL });
  await admin.connect();
  const { rows } = await admin.query(
    `SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2`,
    [process.env.IC_TEST_TEMPLATE_DB, `ic_test_${process.pid}_%`],
  );
  for (const { datname } of rows) await admin.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`);
  await admin.end();
  await globalThis.__IC_EMBEDDED_PG__?.stop();
  globalThis.__IC_REDIS__?.kill();
  await Promise.all((globalThis.__IC_CONTAINERS__ ?? []).map((container) => container.stop()));
}
