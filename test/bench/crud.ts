/**
 * Conversation CRUD through the api-gateway (services/api-gateway/dist/main.js, configured as deployed)
 * vs a bare Express + pg server running the same SQL on the same database (servers/baseline.ts), at 64
 * connections. Both servers are child processes; autocannon runs here, in the load-generator process,
 * and is the only thing this process does while a round runs. Rounds alternate gateway and baseline
 * (which goes first alternates too) per operation; figures are medians over rounds.
 * BENCH_COMPARE_GATEWAY=/path/to/other/services/api-gateway/dist/main.js adds another build of the
 * gateway (e.g. the commit before a change) to the same alternation, reported as `compared`.
 */
import autocannon from 'autocannon';
import { seedTenant, createTestDatabase } from '@ic/test-support';
import { createConversationsRepo } from '@ic/db';
import { newId } from '@ic/schemas';
import { median, ratio, round2, roundOrders, verdict, type BenchOptions } from './harness';
import { startBaseline, startBenchGateway, type BenchServer } from './services';

// Many short rounds rather than a few long ones: on a shared machine the median of alternating rounds is steadier.
const FULL = { connections: 64, seconds: 2, rounds: 5, warmupSeconds: 1 };
const QUICK = { connections: 4, seconds: 0.2, rounds: 1, warmupSeconds: 0 };
const TARGETS = { throughputRatio: 0.7, p99Ratio: 1.5 };

export type CrudOp = 'get' | 'list' | 'create';
export const CRUD_OPS: CrudOp[] = ['get', 'list', 'create'];

export interface CrudFixture {
  token: string;
  conversationId: string;
}

export interface LoadFigures {
  requests_per_second: number;
  latency_p50_ms: number;
  latency_p99_ms: number;
  non_2xx: number;
  errors: number;
  cpu_us_per_request: number;
  pg_round_trips_per_request: number;
  socket_writes_per_request: number;
}

/** autocannon against one server for `seconds`; the server's probe window spans the run. */
/** `seconds` of load; below one second, a fixed 100 requests instead (autocannon counts time in whole seconds). */
export async function crudLoad(server: BenchServer, fixture: CrudFixture, op: CrudOp, seconds: number, connections: number): Promise<LoadFigures> {
  const headers = { authorization: `Bearer ${fixture.token}`, 'content-type': 'application/json' };
  const request =
    op === 'get'
      ? { url: `${server.origin}/v1/conversations/${fixture.conversationId}`, method: 'GET' as const }
      : op === 'list'
        ? { url: `${server.origin}/v1/conversations?limit=20`, method: 'GET' as const }
        : { url: `${server.origin}/v1/conversations`, method: 'POST' as const, body: '{"title":"bench","metadata":{"source":"bench"}}' };
  await server.child.reset();
  const result = await autocannon({ ...request, headers, connections, ...(seconds >= 1 ? { duration: seconds } : { amount: 100 }) });
  const reading = await server.child.read();
  const ok = result['2xx'];
  return {
    requests_per_second: round2(ok / result.duration),
    latency_p50_ms: result.latency.p50,
    latency_p99_ms: result.latency.p99,
    non_2xx: result.non2xx,
    errors: result.errors,
    cpu_us_per_request: Math.round((reading.cpu_ms * 1000) / Math.max(1, ok)),
    pg_round_trips_per_request: round2(reading.pg_queries / Math.max(1, ok)),
    socket_writes_per_request: round2(reading.socket_writes / Math.max(1, ok)),
  };
}

/** A tenant, a smith with 50 conversations (so list(20) pages are full), and its token. */
export async function seedCrudFixture(pool: Parameters<typeof seedTenant>[0]): Promise<CrudFixture> {
  const seeded = await seedTenant(pool);
  const conversations = createConversationsRepo(pool);
  let conversationId = '';
  for (let k = 0; k < 50; k++) {
    const row = await conversations.insert({ id: newId('conversation'), tenantId: seeded.tenant.id, smithId: seeded.smith.id, title: `Conversation ${k}`, metadata: { k: String(k) } });
    conversationId = row.id;
  }
  return { token: seeded.smithToken, conversationId };
}

export function medianLoad(rounds: LoadFigures[]): LoadFigures {
  const keys = Object.keys(rounds[0]!) as Array<keyof LoadFigures>;
  return Object.fromEntries(keys.map((key) => [key, round2(median(rounds.map((round) => round[key])))])) as unknown as LoadFigures;
}

export async function run(options: BenchOptions): Promise<Record<string, unknown>> {
  const sizes = options.quick ? QUICK : FULL;
  const db = await createTestDatabase();
  const servers: BenchServer[] = [];
  try {
    const fixture = await seedCrudFixture(db.pool);
    const compareScript = process.env.BENCH_COMPARE_GATEWAY;
    const [gateway, baseline, compared] = await Promise.all([
      startBenchGateway({ name: 'gateway', databaseUrl: db.url, profileDir: options.profileDir }).then((server) => (servers.push(server), server)),
      startBaseline({ name: 'baseline', databaseUrl: db.url, profileDir: options.profileDir }).then((server) => (servers.push(server), server)),
      compareScript
        ? startBenchGateway({ name: 'compared', databaseUrl: db.url, profileDir: options.profileDir, script: compareScript }).then((server) => (servers.push(server), server))
        : undefined,
    ]);
    const contenders = compared ? [gateway, baseline, compared] : [gateway, baseline];
    const result: Record<string, unknown> = {
      method:
        `autocannon in the load-generator process, ${sizes.connections} connections, ${sizes.seconds} s per round, gateway and baseline in alternating rounds ` +
        '(each a child process); requests/s counts 2xx answers; medians over rounds; cpu and Postgres round trips are the server process\'s own (probe.ts)',
      connections: sizes.connections,
      seconds_per_round: sizes.seconds,
      rounds: sizes.rounds,
      targets: { throughput_ratio_min: TARGETS.throughputRatio, p99_ratio_max: TARGETS.p99Ratio },
    };
    for (const op of CRUD_OPS) {
      if (sizes.warmupSeconds > 0) for (const server of contenders) await crudLoad(server, fixture, op, sizes.warmupSeconds, sizes.connections);
      const rounds = new Map<BenchServer, LoadFigures[]>(contenders.map((server) => [server, []]));
      // Balanced orders (harness.ts): no contender always follows the same one.
      for (const order of roundOrders(contenders, sizes.rounds, options.quick)) {
        for (const server of order) {
          rounds.get(server)!.push(await crudLoad(server, fixture, op, sizes.seconds, sizes.connections));
        }
      }
      const ours = medianLoad(rounds.get(gateway)!);
      const theirs = medianLoad(rounds.get(baseline)!);
      result[op] = {
        gateway: ours,
        baseline: theirs,
        throughput_ratio: ratio(ours.requests_per_second, theirs.requests_per_second),
        p99_ratio: ratio(ours.latency_p99_ms, theirs.latency_p99_ms),
      };
      if (compared) {
        const before = medianLoad(rounds.get(compared)!);
        Object.assign(result[op] as object, {
          compared: { script: compareScript, ...before },
          compared_throughput_ratio: ratio(before.requests_per_second, theirs.requests_per_second),
          compared_p99_ratio: ratio(before.latency_p99_ms, theirs.latency_p99_ms),
        });
      }
    }
    return result;
  } finally {
    await Promise.all(servers.map((server) => server.close()));
    await db.drop();
  }
}

type OpResult = {
  gateway: LoadFigures;
  baseline: LoadFigures;
  throughput_ratio: number;
  p99_ratio: number;
  compared_throughput_ratio?: number;
  compared_p99_ratio?: number;
};

export function summarize(result: Record<string, unknown>): string[] {
  return CRUD_OPS.map((op) => {
    const figures = result[op] as OpResult;
    const ok = figures.throughput_ratio >= TARGETS.throughputRatio && figures.p99_ratio <= TARGETS.p99Ratio;
    const failures = figures.gateway.non_2xx + figures.baseline.non_2xx + figures.gateway.errors + figures.baseline.errors;
    return (
      `conversation ${op} at ${result.connections} connections: gateway ${figures.gateway.requests_per_second}/s p99 ${figures.gateway.latency_p99_ms} ms, ` +
      `baseline ${figures.baseline.requests_per_second}/s p99 ${figures.baseline.latency_p99_ms} ms; throughput ratio ${figures.throughput_ratio} ` +
      `(≥ ${TARGETS.throughputRatio}), p99 ratio ${figures.p99_ratio} (≤ ${TARGETS.p99Ratio}): ${verdict(ok)}` +
      (figures.compared_throughput_ratio !== undefined
        ? `; compared build: throughput ratio ${figures.compared_throughput_ratio}, p99 ratio ${figures.compared_p99_ratio}`
        : '') +
      (failures > 0 ? `; ${failures} non-2xx/errors!` : '')
    );
  });
}
