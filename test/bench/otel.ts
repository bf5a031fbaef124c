/**
 * What OpenTelemetry costs on the hot path: the same CRUD load (gateway) and the same streaming-turn
 * load (single-process stack, BullMQ) with the SDK off and on, in alternating rounds. "On" is the
 * service's own configuration with OTEL_EXPORTER_OTLP_ENDPOINT set (full tracing, its default sampler,
 * auto-instrumentation) exporting to a dummy OTLP/HTTP sink in the upstream process.
 */
import { createTestDatabase } from '@ic/test-support';
import { crudLoad, medianLoad, seedCrudFixture, type CrudOp, type LoadFigures } from './crud';
import { ratio, round2, verdict, type BenchOptions } from './harness';
import { startBenchGateway, startBenchStack, startBenchUpstream, type BenchServer, type BenchStack } from './services';
import { checkTranscripts, medianFigures, throughputRound, type RoundFigures, type Sent } from './throughput';

// A service runs for days: each side is warmed up (JIT, pools, caches) for a few seconds per load before
// any round counts, else the instrumented side's extra code is measured while it is still being compiled.
const FULL = { connections: 64, seconds: 2, rounds: 5, conversations: 48, roundMs: 3000, warmupSeconds: 3 };
const QUICK = { connections: 4, seconds: 0.3, rounds: 1, conversations: 2, roundMs: 300, warmupSeconds: 0.3 };
const CRUD_OPS: CrudOp[] = ['get', 'create'];
const TARGET_OVERHEAD = 0.1;

export async function run(options: BenchOptions): Promise<Record<string, unknown>> {
  const sizes = options.quick ? QUICK : FULL;
  const upstream = await startBenchUpstream();
  const db = await createTestDatabase();
  const servers: BenchServer[] = [];
  const stacks: BenchStack[] = [];
  try {
    const result: Record<string, unknown> = {
      method:
        'off = no OTEL_* variables; on = OTEL_EXPORTER_OTLP_ENDPOINT to a local dummy sink (the service\'s own sampler and instrumentation settings); ' +
        'alternating rounds; overhead = off/on throughput - 1; cpu ratio = on/off CPU per request or turn (the cost that shows when the process is CPU-bound; ' +
        'throughput alone hides it while something else, e.g. worker concurrency, is the limit); the verdict takes the larger of the two',
      targets: { overhead_max: TARGET_OVERHEAD },
    };
    const exportsBefore = await upstream.sinkExports();

    const fixture = await seedCrudFixture(db.pool);
    const gateways = {
      off: await startBenchGateway({ name: 'gateway-otel-off', databaseUrl: db.url }),
      on: await startBenchGateway({ name: 'gateway-otel-on', databaseUrl: db.url, otlpEndpoint: upstream.sink, profileDir: options.profileDir }),
    };
    servers.push(gateways.off, gateways.on);
    const crud: Record<string, unknown> = {};
    for (const op of CRUD_OPS) {
      for (const gateway of [gateways.off, gateways.on]) await crudLoad(gateway, fixture, op, sizes.warmupSeconds, sizes.connections);
      const rounds: Record<'off' | 'on', LoadFigures[]> = { off: [], on: [] };
      for (let round = 0; round < sizes.rounds; round++) {
        for (const mode of round % 2 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
          rounds[mode].push(await crudLoad(gateways[mode], fixture, op, sizes.seconds, sizes.connections));
        }
      }
      const off = medianLoad(rounds.off);
      const on = medianLoad(rounds.on);
      crud[op] = { off, on, overhead: round2(off.requests_per_second / on.requests_per_second - 1), cpu_ratio: ratio(on.cpu_us_per_request, off.cpu_us_per_request) };
    }
    result.gateway_crud = crud;
    for (const gateway of servers.splice(0)) await gateway.close();

    const turnStacks = {
      off: await startBenchStack({ name: 'stack-otel-off', queue: 'bullmq', modelBaseUrl: upstream.instant }),
      on: await startBenchStack({ name: 'stack-otel-on', queue: 'bullmq', modelBaseUrl: upstream.instant, otlpEndpoint: upstream.sink, profileDir: options.profileDir }),
    };
    stacks.push(turnStacks.off, turnStacks.on);
    const sent: Record<'off' | 'on', Sent> = { off: new Map(), on: new Map() };
    for (const mode of ['off', 'on'] as const) await throughputRound(turnStacks[mode], sizes.conversations, sizes.warmupSeconds * 1000, sent[mode]);
    const turnRounds: Record<'off' | 'on', RoundFigures[]> = { off: [], on: [] };
    for (let round = 0; round < sizes.rounds; round++) {
      for (const mode of round % 2 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
        turnRounds[mode].push(await throughputRound(turnStacks[mode], sizes.conversations, sizes.roundMs, sent[mode]));
      }
    }
    const off = medianFigures(turnRounds.off);
    const on = medianFigures(turnRounds.on);
    const problems = [...(await checkTranscripts(turnStacks.off, sent.off)).problems, ...(await checkTranscripts(turnStacks.on, sent.on)).problems];
    if (problems.length > 0) process.exitCode = 1;
    result.streaming_turns = {
      off,
      on,
      overhead: round2(off.turns_per_second / on.turns_per_second - 1),
      cpu_ratio: ratio(on.cpu_ms_per_turn, off.cpu_ms_per_turn),
      transcripts_ok: problems.length === 0,
    };
    result.sink_exports = (await upstream.sinkExports()) - exportsBefore;
    return result;
  } finally {
    await Promise.all(servers.map((server) => server.close()));
    await Promise.all(stacks.map((stack) => stack.close()));
    await db.drop();
    await upstream.close();
  }
}

type Overhead = { overhead: number; cpu_ratio: number };

export function summarize(result: Record<string, unknown>): string[] {
  const crud = result.gateway_crud as Record<string, Overhead>;
  const turns = result.streaming_turns as Overhead;
  const line = (what: string, figures: Overhead) =>
    `OpenTelemetry on vs off, ${what}: throughput overhead ${Math.round(figures.overhead * 100)} %, CPU per unit ×${figures.cpu_ratio} ` +
    `(target ≤ ${TARGET_OVERHEAD * 100} %: ${verdict(Math.max(figures.overhead, figures.cpu_ratio - 1) <= TARGET_OVERHEAD)})`;
  return [...Object.entries(crud).map(([op, figures]) => line(`gateway ${op}`, figures)), line('streaming turns (BullMQ)', turns), `OTLP exports received by the sink: ${result.sink_exports}`];
}
