/**
 * `npm run bench [-- SUITE…] [--runs N] [--quick] [--profile DIR]`
 *
 * Runs the benchmark suites (all by default, in the order below) against the local PostgreSQL and
 * Redis (fresh databases and key prefixes, removed afterwards) and prints one JSON document on stdout,
 * then one human-readable line per figure on stderr.
 *   --runs N       repeat each suite N times; the JSON holds the median of every figure plus each run
 *   --quick        tiny sizes: proves the harness works, measures nothing (the jest smoke test uses it)
 *   --profile DIR  the processes under test run with `node --cpu-prof` and write their profiles to DIR
 *   --out FILE     also write the JSON document to FILE (npm prints its own banner on stdout; or use `npm run -s bench`)
 *                  (summarise one with `node test/dist/bench/profile-top.js FILE`)
 * A suite is a module exporting `run(options)` and `summarize(result)`; list it in SUITES.
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as crud from './crud';
import * as firstdelta from './firstdelta';
import { median, round2, type BenchOptions } from './harness';
import * as otel from './otel';
import * as pagination from './pagination';
import * as search from './search';
import * as throughput from './throughput';
import * as turns from './turns';
import * as slowTurns from './slow-turns';
import * as upstreamLimit from './upstream-limit';

export interface Suite {
  run(options: BenchOptions): Promise<Record<string, unknown>>;
  summarize(result: Record<string, unknown>): string[];
}

export const SUITES: Record<string, Suite> = { firstdelta, throughput, crud, otel, turns, pagination, search, 'slow-turns': slowTurns, 'upstream-limit': upstreamLimit };

export interface BenchArgs {
  suites: string[];
  runs: number;
  quick: boolean;
  profileDir?: string;
  outFile?: string;
}

export function parseArgs(argv: readonly string[]): BenchArgs {
  const args: BenchArgs = { suites: [], runs: 1, quick: false };
  for (let k = 0; k < argv.length; k++) {
    const arg = argv[k]!;
    const value = () => {
      const next = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[++k];
      if (next === undefined) throw new Error(`${arg} needs a value`);
      return next;
    };
    if (arg === '--runs' || arg.startsWith('--runs=')) args.runs = Number(value());
    else if (arg === '--quick') args.quick = true;
    else if (arg === '--profile' || arg.startsWith('--profile=')) args.profileDir = path.resolve(value());
    else if (arg === '--out' || arg.startsWith('--out=')) args.outFile = path.resolve(value());
    else if (arg.startsWith('-')) throw new Error(`Unknown option ${arg}`);
    else args.suites.push(arg);
  }
  if (!Number.isInteger(args.runs) || args.runs < 1) throw new Error('--runs takes a whole number ≥ 1');
  const unknown = args.suites.filter((name) => !(name in SUITES));
  if (unknown.length > 0) throw new Error(`Unknown suite ${unknown.join(', ')}; available: ${Object.keys(SUITES).join(', ')}`);
  if (args.suites.length === 0) args.suites = Object.keys(SUITES);
  return args;
}

/** The median of every number across runs, keeping the shape of the first run (strings, booleans: all must agree or the first wins; `ok`s must all hold). */
export function medianOfRuns(runs: unknown[]): unknown {
  const first = runs[0];
  if (typeof first === 'number') return round2(median(runs.filter((run): run is number => typeof run === 'number')));
  if (typeof first === 'boolean') return runs.every((run) => run === true);
  if (first && typeof first === 'object' && !Array.isArray(first)) {
    return Object.fromEntries(Object.keys(first).map((key) => [key, medianOfRuns(runs.map((run) => (run as Record<string, unknown>)?.[key]))]));
  }
  return first;
}

export async function runBenchmarks(args: BenchArgs): Promise<{ results: Record<string, unknown>; summary: string[] }> {
  const results: Record<string, unknown> = {};
  const summary: string[] = [];
  for (const name of args.suites) {
    const suite = SUITES[name]!;
    const runs: Array<Record<string, unknown>> = [];
    for (let k = 0; k < args.runs; k++) {
      process.stderr.write(`bench ${name}${args.runs > 1 ? ` (run ${k + 1}/${args.runs})` : ''}…\n`);
      const started = Date.now();
      const result = await suite.run({ quick: args.quick, profileDir: args.profileDir });
      runs.push({ ...result, seconds: Math.round((Date.now() - started) / 1000) });
    }
    const combined = args.runs === 1 ? runs[0]! : { median_of_runs: args.runs, ...(medianOfRuns(runs) as Record<string, unknown>), each_run: runs };
    results[name] = combined;
    summary.push(...suite.summarize(combined).map((line) => `${name}: ${line}`));
  }
  return { results, summary };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const { results, summary } = await runBenchmarks(args);
  const document = `${JSON.stringify({ machine: machine(), runs: args.runs, quick: args.quick, ...results }, null, 2)}\n`;
  process.stdout.write(document);
  if (args.outFile) writeFileSync(args.outFile, document);
  process.stderr.write(`\n${summary.join('\n')}\n`);
}

function machine() {
  return { cpus: os.cpus().length, load_average_1m: round2(os.loadavg()[0]!), node: process.version };
}

if (require.main === module) {
  main().then(
    // Children and pools are closed; exit even if a stray handle (e.g. an idle keep-alive socket) lingers.
    () => process.exit(process.exitCode ?? 0),
    (error: unknown) => {
      process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    },
  );
}
