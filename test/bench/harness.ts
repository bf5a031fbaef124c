/** Shared by the benchmark modules: a private database, timing and a small table printer. */
import { createTestDatabase, type TestDatabase } from '@ic/test-support';

export type BenchDatabase = TestDatabase;

/** A freshly created and migrated database of its own (on TEST_DATABASE_URL's server, else the local one), dropped by `drop()`. */
export function createBenchDatabase(): Promise<BenchDatabase> {
  return createTestDatabase();
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
