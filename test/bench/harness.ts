/** Shared by the benchmark modules: a private database, timing and a small table printer. */
import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { createDbPool, migrate, type DatabasePool } from '@ic/db';

export interface BenchDatabase {
  url: string;
  pool: DatabasePool;
  /** Closes the pool and drops the database. */
  drop(): Promise<void>;
}

/** The server the bench creates its database on: DATABASE_URL, TEST_DATABASE_URL or the local PostgreSQL. */
export function adminUrl(): string {
  return process.env.DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
}

/** A freshly created and migrated database of its own, dropped by `drop()`. */
export async function createBenchDatabase(label: string): Promise<BenchDatabase> {
  const admin = adminUrl();
  const name = `ic_bench_${label}_${process.pid}_${randomBytes(3).toString('hex')}`;
  const client = new Client({ connectionString: admin });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(admin);
  url.pathname = `/${name}`;
  const drop = async () => {
    const dropper = new Client({ connectionString: admin });
    await dropper.connect();
    try {
      await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    } finally {
      await dropper.end();
    }
  };
  try {
    await migrate(url.toString());
    const pool = await createDbPool(url.toString(), { maximumPoolSize: 10 });
    return {
      url: url.toString(),
      pool,
      drop: async () => {
        await pool.end();
        await drop();
      },
    };
  } catch (error) {
    await drop();
    throw error;
  }
}

export interface Timing {
  median_ms: number;
  p90_ms: number;
  min_ms: number;
  samples: number;
}

const round = (ms: number) => Math.round(ms * 100) / 100;

/** Runs `warmup` untimed calls, then `samples` sequential timed calls. */
export async function time(work: () => Promise<void>, samples = 30, warmup = 5): Promise<Timing> {
  for (let k = 0; k < warmup; k++) await work();
  const durations: number[] = [];
  for (let k = 0; k < samples; k++) {
    const start = performance.now();
    await work();
    durations.push(performance.now() - start);
  }
  durations.sort((a, b) => a - b);
  const at = (q: number) => durations[Math.min(durations.length - 1, Math.floor(q * durations.length))]!;
  const median = durations.length % 2 ? at(0.5) : (durations[durations.length / 2 - 1]! + durations[durations.length / 2]!) / 2;
  return { median_ms: round(median), p90_ms: round(at(0.9)), min_ms: round(durations[0]!), samples };
}

/** A small aligned table on stderr, so stdout stays machine-readable. */
export function printTable(title: string, rows: Array<Record<string, string | number>>): void {
  if (rows.length === 0) return;
  const columns = Object.keys(rows[0]!);
  const widths = columns.map((column) => Math.max(column.length, ...rows.map((row) => String(row[column]).length)));
  const line = (cells: string[]) => cells.map((cell, k) => (k === 0 ? cell.padEnd(widths[k]!) : cell.padStart(widths[k]!))).join('  ');
  process.stderr.write(`\n${title}\n${line(columns)}\n${line(widths.map((width) => '-'.repeat(width)))}\n`);
  for (const row of rows) process.stderr.write(`${line(columns.map((column) => String(row[column])))}\n`);
  process.stderr.write('\n');
}
