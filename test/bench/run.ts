/**
 * Runs the benchmarks (`npm run bench`, or `npm run bench -- pagination` for some of them) and prints
 * their results as one JSON object on stdout; each module prints its own table on stderr.
 * To add one: write a module exporting `run(): Promise<Record<string, unknown>>` and list it here.
 */
import * as pagination from './pagination';
import * as load from './load';
import * as turns from './turns';
import * as slowTurns from './slow-turns';

type Bench = () => Promise<Record<string, unknown>>;

export const BENCHES: Record<string, Bench> = {
  pagination: pagination.run,
  turns: turns.run,
  load: load.run,
  'slow-turns': () => slowTurns.run(),
};

async function main(): Promise<void> {
  const requested = process.argv.slice(2);
  const unknown = requested.filter((name) => !(name in BENCHES));
  if (unknown.length > 0) throw new Error(`Unknown bench ${unknown.join(', ')}; available: ${Object.keys(BENCHES).join(', ')}`);
  const names = requested.length > 0 ? requested : Object.keys(BENCHES);
  const results: Record<string, unknown> = {};
  for (const name of names) {
    process.stderr.write(`bench ${name}…\n`);
    results[name] = await BENCHES[name]!();
  }
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
