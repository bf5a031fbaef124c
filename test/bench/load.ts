/**
 * Load: many conversations driving turns at once through the BullMQ path with an instant model.
 * Reports throughput and latency percentiles, and checks that no turn was lost or duplicated.
 */
import { performance } from 'node:perf_hooks';
import { sql } from '@ic/db';
import { z } from 'zod';
import { startTurnStack } from '@ic/test-support';

const CONVERSATIONS = Number(process.env.BENCH_LOAD_CONVERSATIONS ?? 40);
const TURNS_EACH = Number(process.env.BENCH_LOAD_TURNS ?? 10);
const WORKER_CONCURRENCY = Number(process.env.BENCH_LOAD_WORKER_CONCURRENCY ?? 16);

const percentile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
const round = (value: number) => Math.round(value * 100) / 100;

export async function run(): Promise<Record<string, unknown>> {
  const stack = await startTurnStack({ upstream: { reply: 'ok', tokenDelayMs: 0 }, tokenCacheTtlMs: 5000, workerConcurrency: WORKER_CONCURRENCY });
  try {
    const client = stack.client();
    const conversations = await Promise.all(Array.from({ length: CONVERSATIONS }, () => client.conversations.create()));
    const latencies: number[] = [];
    const started = performance.now();
    await Promise.all(
      conversations.map(async (conversation) => {
        for (let turn = 0; turn < TURNS_EACH; turn++) {
          const t0 = performance.now();
          const response = await client.responses.create({ model: '', conversation: conversation.id, input: `turn ${turn}` });
          latencies.push(performance.now() - t0);
          if (response.status !== 'completed') throw new Error(`turn ended ${response.status}`);
        }
      }),
    );
    const elapsed = performance.now() - started;
    const items = await stack.db.pool.oneFirst(sql.type(z.object({ n: z.number() }))`SELECT count(*)::int AS n FROM items WHERE conversation_id IS NOT NULL`);
    const expected = CONVERSATIONS * TURNS_EACH * 2;
    if (items !== expected) throw new Error(`transcripts hold ${items} items, expected ${expected}`);
    const sorted = [...latencies].sort((a, b) => a - b);
    const result = {
      conversations: CONVERSATIONS,
      turns_each: TURNS_EACH,
      worker_concurrency: WORKER_CONCURRENCY,
      turns_total: latencies.length,
      elapsed_ms: Math.round(elapsed),
      turns_per_second: round((latencies.length / elapsed) * 1000),
      latency_ms: { p50: round(percentile(sorted, 0.5)), p95: round(percentile(sorted, 0.95)), p99: round(percentile(sorted, 0.99)), max: round(sorted.at(-1)!) },
      transcript_items: items,
    };
    process.stderr.write(`\nload: ${result.turns_total} turns in ${result.elapsed_ms} ms = ${result.turns_per_second}/s; p50 ${result.latency_ms.p50} ms, p95 ${result.latency_ms.p95} ms, p99 ${result.latency_ms.p99} ms\n`);
    return result;
  } finally {
    await stack.close();
  }
}
