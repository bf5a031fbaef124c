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

/**
 * The orders in which alternating rounds visit `sides`: a Williams design, so that over a whole cycle
 * every side runs in every position and directly after every other side equally often. A plain
 * rotation (a b c, b c a, c a b) always puts the same side after the same other one, and what a side
 * leaves behind (Redis expiring a round's event logs, Postgres vacuuming its writes) then always
 * lands on the same successor: in a self-comparison (the same build as `compared`) the rotation
 * gave `compared` 9–28 % more turns/s than `bullmq` in each of three runs.
 */
export function balancedOrders<T>(sides: readonly T[]): T[][] {
  const n = sides.length;
  if (n <= 1) return [sides.slice()];
  // First row 0, 1, n-1, 2, n-2, …; the others shift it. For an odd count the mirrored rows complete the balance.
  const base: number[] = [0];
  for (let low = 1, high = n - 1; base.length < n; low++, high--) {
    base.push(low);
    if (base.length < n) base.push(high);
  }
  const rows = Array.from({ length: n }, (_, shift) => base.map((index) => (index + shift) % n));
  const all = n % 2 === 0 ? rows : [...rows, ...rows.map((row) => row.slice().reverse())];
  return all.map((row) => row.map((index) => sides[index]!));
}

/**
 * The order of each alternating round: at least `rounds` of them, rounded up to whole cycles of
 * balancedOrders (with `quick`, exactly `rounds`: the smoke test measures nothing).
 */
export function roundOrders<T>(sides: readonly T[], rounds: number, quick = false): T[][] {
  const orders = balancedOrders(sides);
  const count = quick ? rounds : Math.ceil(rounds / orders.length) * orders.length;
  return Array.from({ length: count }, (_, round) => orders[round % orders.length]!);
}
