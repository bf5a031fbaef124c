/**
 * What OpenTelemetry costs on the hot path: the same CRUD load (gateway) and the same streaming-turn
 * load (single-process stack, BullMQ) with the SDK off and on, in alternating rounds. "On" is the
 * service's own configuration with OTEL_EXPORTER_OTLP_ENDPOINT set (full tracing, its default sampler
 * `ic_tail`, auto-instrumentation) exporting to a dummy OTLP/HTTP sink in the upstream process.
 * "Head-sampled" is the same with the standard OTEL_TRACES_SAMPLER=parentbased_traceidratio at 0.1,
 * the cheaper setting an operator can choose: it shows what `ic_tail`'s recording of every span (so a
 * failing or slow trace is exported whole) costs on top. "With metrics" adds the Prometheus metrics the
 * dashboards read (OTEL_PROMETHEUS_PORT) to "on": what a deployment with both pays.
 */
import { createTestDatabase } from '@ic/test-support';
import { crudLoad, medianLoad, seedCrudFixture, type CrudOp, type LoadFigures } from './crud';
import { ratio, round2, roundOrders, verdict, type BenchOptions } from './harness';
import { startBenchGateway, startBenchStack, startBenchUpstream, type BenchServer, type BenchStack } from './services';
import { checkTranscripts, medianFigures, throughputRound, type RoundFigures, type Sent } from './throughput';

// A service runs for days: each side is warmed up (JIT, pools, caches) for a few seconds per load before
// any round counts, else the instrumented side's extra code is measured while it is still being compiled.
// Four rounds of each mode: with four modes, balanced orders come in cycles of four (harness.ts).
const FULL = { connections: 64, seconds: 2, rounds: 4, conversations: 48, roundMs: 3000, warmupSeconds: 3 };
const QUICK = { connections: 4, seconds: 0.3, rounds: 1, conversations: 2, roundMs: 300, warmupSeconds: 0.3 };
const CRUD_OPS: CrudOp[] = ['get', 'create'];
const TARGET_OVERHEAD = 0.1;

/**
 * off: no SDK; on: the service's defaults; head_sampled: parentbased_traceidratio 0.1; with_metrics:
 * the defaults plus Prometheus metrics (OTEL_PROMETHEUS_PORT, what the chart's metrics.enabled sets).
 */
const MODES = ['off', 'on', 'head_sampled', 'with_metrics'] as const;
type Mode = (typeof MODES)[number];
const TRACED_MODES = ['on', 'head_sampled', 'with_metrics'] as const;
const SAMPLER_ENV: Record<Mode, Record<string, string | undefined>> = {
  off: {},
  on: { OTEL_TRACES_SAMPLER: undefined, OTEL_TRACES_SAMPLER_ARG: undefined },
  head_sampled: { OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.1' },
  // Port 0: the exporter listens where the OS says; nothing scrapes it, so this is the recording cost.
  with_metrics: { OTEL_TRACES_SAMPLER: undefined, OTEL_TRACES_SAMPLER_ARG: undefined, OTEL_PROMETHEUS_PORT: '0' },
};

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
        'head_sampled = the same with OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.1; ' +
        'with_metrics = on plus Prometheus metrics (OTEL_PROMETHEUS_PORT, not scraped); ' +
        'alternating rounds (balanced orders: every mode after every other equally often); overhead = off/on throughput - 1; cpu ratio = on/off CPU per request or turn (the cost that shows when the process is CPU-bound; ' +
        'throughput alone hides it while something else, e.g. worker concurrency, is the limit); the verdict takes the larger of the two',
      targets: { overhead_max: TARGET_OVERHEAD },
    };
    const exportsBefore = await upstream.sinkExports();
    const tracing = (mode: Mode) => (mode === 'off' ? {} : { otlpEndpoint: upstream.sink, env: SAMPLER_ENV[mode] });

    const fixture = await seedCrudFixture(db.pool);
    const gateways = {} as Record<Mode, BenchServer>;
    for (const mode of MODES) {
      gateways[mode] = await startBenchGateway({ name: `gateway-otel-${mode}`, databaseUrl: db.url, ...tracing(mode), profileDir: mode === 'on' ? options.profileDir : undefined });
      servers.push(gateways[mode]);
    }
    const crud: Record<string, unknown> = {};
    for (const op of CRUD_OPS) {
      for (const mode of MODES) await crudLoad(gateways[mode], fixture, op, sizes.warmupSeconds, sizes.connections);
      const rounds: Record<Mode, LoadFigures[]> = { off: [], on: [], head_sampled: [], with_metrics: [] };
      // Balanced orders (harness.ts): no mode always follows the same one.
      for (const order of roundOrders(MODES, sizes.rounds, options.quick)) {
        for (const mode of order) rounds[mode].push(await crudLoad(gateways[mode], fixture, op, sizes.seconds, sizes.connections));
      }
      const off = medianLoad(rounds.off);
      crud[op] = againstOff(off, (mode) => {
        const figures = medianLoad(rounds[mode]);
        return { figures, overhead: round2(off.requests_per_second / figures.requests_per_second - 1), cpu_ratio: ratio(figures.cpu_us_per_request, off.cpu_us_per_request) };
      });
    }
    result.gateway_crud = crud;
    for (const gateway of servers.splice(0)) await gateway.close();

    const turnStacks = {} as Record<Mode, BenchStack>;
    for (const mode of MODES) {
      turnStacks[mode] = await startBenchStack({ name: `stack-otel-${mode}`, queue: 'bullmq', modelBaseUrl: upstream.instant, ...tracing(mode), profileDir: mode === 'on' ? options.profileDir : undefined });
      stacks.push(turnStacks[mode]);
    }
    const sent: Record<Mode, Sent> = { off: new Map(), on: new Map(), head_sampled: new Map(), with_metrics: new Map() };
    for (const mode of MODES) await throughputRound(turnStacks[mode], sizes.conversations, sizes.warmupSeconds * 1000, sent[mode]);
    const turnRounds: Record<Mode, RoundFigures[]> = { off: [], on: [], head_sampled: [], with_metrics: [] };
    for (const order of roundOrders(MODES, sizes.rounds, options.quick)) {
      for (const mode of order) turnRounds[mode].push(await throughputRound(turnStacks[mode], sizes.conversations, sizes.roundMs, sent[mode]));
    }
    const off = medianFigures(turnRounds.off);
    const turns = againstOff(off, (mode) => {
      const figures = medianFigures(turnRounds[mode]);
      return { figures, overhead: round2(off.turns_per_second / figures.turns_per_second - 1), cpu_ratio: ratio(figures.cpu_ms_per_turn, off.cpu_ms_per_turn) };
    });
    const problems: string[] = [];
    for (const mode of MODES) problems.push(...(await checkTranscripts(turnStacks[mode], sent[mode])).problems);
    if (problems.length > 0) process.exitCode = 1;
    result.streaming_turns = { ...turns, transcripts_ok: problems.length === 0 };
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
type TracedMode = (typeof TRACED_MODES)[number];

/** One load's JSON: `off`, then `on`'s figures and ratios at the top (the verdict's), the other traced modes nested. */
function againstOff<F extends object>(off: F, measure: (mode: TracedMode) => Overhead & { figures: F }) {
  const [on, head, withMetrics] = TRACED_MODES.map(measure);
  const nested = (mode: Overhead & { figures: F }) => ({ ...mode.figures, overhead: mode.overhead, cpu_ratio: mode.cpu_ratio });
  return { off, on: on!.figures, overhead: on!.overhead, cpu_ratio: on!.cpu_ratio, head_sampled: nested(head!), with_metrics: nested(withMetrics!) };
}
type Measured = Overhead & { head_sampled: Overhead; with_metrics: Overhead };

export function summarize(result: Record<string, unknown>): string[] {
  const crud = result.gateway_crud as Record<string, Measured>;
  const turns = result.streaming_turns as Measured;
  const figures = (measured: Overhead) => `throughput overhead ${Math.round(measured.overhead * 100)} %, CPU per unit ×${measured.cpu_ratio}`;
  const line = (what: string, measured: Measured) =>
    `OpenTelemetry on vs off, ${what}: ${figures(measured)} ` +
    `(target ≤ ${TARGET_OVERHEAD * 100} %: ${verdict(Math.max(measured.overhead, measured.cpu_ratio - 1) <= TARGET_OVERHEAD)}); ` +
    `head-sampled at 10 %: ${figures(measured.head_sampled)}; with Prometheus metrics too: ${figures(measured.with_metrics)}`;
  return [...Object.entries(crud).map(([op, measured]) => line(`gateway ${op}`, measured)), line('streaming turns (BullMQ)', turns), `OTLP exports received by the sink: ${result.sink_exports}`];
}
