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

/** What every suite is given by run.ts. */
export interface BenchOptions {
  /** Tiny sizes: proves the harness works (the jest smoke test), measures nothing. */
  quick: boolean;
  /** Children run with `--cpu-prof` into this directory. */
  profileDir?: string;
}

/** The fake upstream the first-delta figures use: 7 words, 5 ms apart. */
export const PACED_REPLY = 'one two three four five six seven';
export const PACED_DELAY_MS = 5;

export interface UpstreamReady {
  upstream: 'ready';
  /** Chat Completions base URL streaming PACED_REPLY. */
  paced: string;
  /** Chat Completions base URL answering at once (the default fake reply). */
  instant: string;
  /** A dummy OTLP/HTTP receiver. */
  sink: string;
}
export const isUpstreamReady = (message: unknown): message is UpstreamReady => (message as UpstreamReady)?.upstream === 'ready';

/** Nearest-rank percentile (q in 0..1) of unsorted values. */
export function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
export const median = (values: readonly number[]): number => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};
export const round2 = (value: number): number => Math.round(value * 100) / 100;
export const ratio = (a: number, b: number): number => round2(a / b);

/** `value (target)` with a pass/fail mark, for the summary lines. */
export function verdict(ok: boolean): string {
  return ok ? 'ok' : 'MISSED';
}
