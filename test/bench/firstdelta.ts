/**
 * First-delta overhead: time to the first text delta of a streamed turn through the service, minus the
 * same fake upstream (7 words, 5 ms apart) called directly, at 1, 8 and 32 concurrent streams (each in a
 * conversation of its own), with BullMQ on Redis and with the in-process queue. Driven with the `openai`
 * client, as a user would. Rounds alternate direct / BullMQ stack / in-process stack (in balanced orders,
 * harness.ts) so machine noise hits all three alike; percentiles are over every stream of every round.
 * The stacks (deploy/dist/stack.js), the upstream and this load generator are three processes. Every path
 * is warmed up first (WARM_UP), so the figures are of a service that has compiled its hot code.
 * With BENCH_COMPARE_STACK another build of the stack (BullMQ) joins the alternation as `compared`.
 */
import { performance } from 'node:perf_hooks';
import OpenAI from 'openai';
import { PACED_DELAY_MS, PACED_REPLY, percentile, round2, roundOrders, verdict, type BenchOptions } from './harness';
import { stackKinds, startBenchUpstream, startStackPerQueue, type BenchStack, type StackKind } from './services';

const FULL = { levels: [1, 8, 32], roundsAt: { 1: 40, 8: 10, 32: 5 } as Record<number, number> };
const QUICK = { levels: [1, 2], roundsAt: { 1: 2, 2: 1 } as Record<number, number> };
const TARGETS = { p50At1: 5, p50At32: 20, p99At32: 60 };
/**
 * Turns each path runs before anything is timed. A deployed service has long since compiled its hot code;
 * a stack fresh from its start has not: its CPU per turn at one stream falls by half over its first few
 * hundred turns as V8 optimises, and the first-delta figures measured the interpreter as much as the service.
 */
const WARM_UP = { turns: 480, concurrency: 8 };

type Path = 'direct' | StackKind;

interface Percentiles {
  p50_ms: number;
  p99_ms: number;
}
const percentilesOf = (samples: number[]): Percentiles => ({ p50_ms: round2(percentile(samples, 0.5)), p99_ms: round2(percentile(samples, 0.99)) });

/** One streamed turn through the service; resolves with ms to its first output_text.delta once the stream has ended. */
async function throughService(client: OpenAI, conversation: string): Promise<number> {
  const started = performance.now();
  const stream = await client.responses.create({ model: '', conversation, input: 'first delta please', stream: true });
  let first = 0;
  let text = '';
  let completed = false;
  for await (const event of stream) {
    if (event.type === 'response.output_text.delta') {
      if (first === 0) first = performance.now() - started;
      text += event.delta;
    } else if (event.type === 'response.completed') completed = true;
  }
  if (!completed || text !== PACED_REPLY) throw new Error(`stream ended ${completed ? 'completed' : 'unfinished'} with text ${JSON.stringify(text)}`);
  return first;
}

async function direct(client: OpenAI): Promise<number> {
  const started = performance.now();
  const stream = await client.chat.completions.create({ model: 'bench', messages: [{ role: 'user', content: 'first delta please' }], stream: true });
  let first = 0;
  for await (const chunk of stream) {
    if (first === 0 && chunk.choices[0]?.delta.content) first = performance.now() - started;
  }
  return first;
}

export async function run(options: BenchOptions): Promise<Record<string, unknown>> {
  const sizes = options.quick ? QUICK : FULL;
  const upstream = await startBenchUpstream();
  const stacks: Partial<Record<StackKind, BenchStack>> = {};
  const kinds = stackKinds();
  const paths: Path[] = ['direct', ...kinds];
  try {
    await startStackPerQueue(stacks, upstream.paced, options.profileDir);
    const clients = { direct: new OpenAI({ apiKey: 'bench', baseURL: upstream.paced, maxRetries: 0 }) } as Record<Path, OpenAI>;
    for (const kind of kinds) clients[kind] = new OpenAI({ apiKey: stacks[kind]!.smithToken, baseURL: stacks[kind]!.baseURL, maxRetries: 0 });
    if (!options.quick) {
      for (const path of paths) {
        for (let done = 0; done < WARM_UP.turns; done += WARM_UP.concurrency) {
          await Promise.all(
            Array.from({ length: WARM_UP.concurrency }, async () =>
              path === 'direct' ? direct(clients.direct) : throughService(clients[path], (await clients[path].conversations.create()).id),
            ),
          );
        }
      }
    }
    const levels: Record<string, unknown> = {};
    for (const concurrency of sizes.levels) {
      const orders = roundOrders(paths, sizes.roundsAt[concurrency]!, options.quick);
      const rounds = orders.length;
      // Fresh conversations for every stream (warm-up round included), created before any timing.
      const conversations = {} as Record<StackKind, string[]>;
      for (const queue of kinds) {
        const ids: string[] = [];
        for (let k = 0; k < (rounds + 1) * concurrency; k++) ids.push((await clients[queue].conversations.create()).id);
        conversations[queue] = ids;
      }
      const samples = Object.fromEntries(paths.map((path) => [path, []])) as unknown as Record<Path, number[]>;
      const once = (path: Path) =>
        Promise.all(
          Array.from({ length: concurrency }, () => (path === 'direct' ? direct(clients.direct) : throughService(clients[path], conversations[path].pop()!))),
        );
      for (const path of paths) await once(path); // warm-up, not recorded
      for (const order of orders) {
        for (const path of order) {
          samples[path].push(...(await once(path)));
        }
      }
      const directPercentiles = percentilesOf(samples.direct);
      const viaQueue = (queue: StackKind) => {
        const service = percentilesOf(samples[queue]);
        return {
          service,
          overhead: { p50_ms: round2(service.p50_ms - directPercentiles.p50_ms), p99_ms: round2(service.p99_ms - directPercentiles.p99_ms) },
        };
      };
      levels[`concurrency_${concurrency}`] = {
        streams_per_path: samples.direct.length,
        direct: directPercentiles,
        ...Object.fromEntries(kinds.map((kind) => [kind, viaQueue(kind)])),
      };
    }
    return {
      method:
        'ms from request start to the first output_text.delta (service, openai client, streaming, fresh conversation each) or first content chunk (direct); ' +
        'overhead = service percentile minus direct percentile; rounds alternate direct/BullMQ/in-process in balanced orders (each after every other equally often); ' +
        `timed after ${WARM_UP.turns} warm-up turns per path (${WARM_UP.concurrency} at a time), as a deployed service is warm`,
      upstream: { words: PACED_REPLY.split(' ').length, delay_ms: PACED_DELAY_MS },
      targets: { overhead_p50_ms_at_1: TARGETS.p50At1, overhead_p50_ms_at_32: TARGETS.p50At32, overhead_p99_ms_at_32: TARGETS.p99At32 },
      ...levels,
    };
  } finally {
    await Promise.all(Object.values(stacks).map((stack) => stack.close()));
    await upstream.close();
  }
}

type Level = { direct: Percentiles } & Partial<Record<StackKind, { overhead: Percentiles }>>;

export function summarize(result: Record<string, unknown>): string[] {
  const lines: string[] = [];
  for (const [key, value] of Object.entries(result)) {
    if (!key.startsWith('concurrency_')) continue;
    const concurrency = Number(key.slice('concurrency_'.length));
    const level = value as Level;
    for (const queue of ['bullmq', 'inprocess', 'compared'] as const) {
      const figures = level[queue];
      if (!figures) continue;
      const { p50_ms: p50, p99_ms: p99 } = figures.overhead;
      const target =
        queue === 'compared'
          ? ' (the compared build, BullMQ)'
          : concurrency === 1
          ? ` (target p50 ≤ ${TARGETS.p50At1}: ${verdict(p50 <= TARGETS.p50At1)})`
          : concurrency === 32
            ? ` (target p50 ≤ ${TARGETS.p50At32}, p99 ≤ ${TARGETS.p99At32}: ${verdict(p50 <= TARGETS.p50At32 && p99 <= TARGETS.p99At32)})`
            : '';
      lines.push(`first-delta overhead, ${queue}, ${concurrency} stream(s): p50 ${p50} ms, p99 ${p99} ms; direct p50 ${level.direct.p50_ms} ms${target}`);
    }
  }
  return lines;
}
