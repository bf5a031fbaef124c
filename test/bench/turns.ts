/**
 * History replay stays linear: one conversation, N sequential non-streaming turns (BullMQ on the local
 * Redis, a fresh database, the fake upstream as an instant model, all in this process), and the latency
 * of the last turns vs the first ones. Target: turn 500 ≤ 1.2× turn 1 (medians of 10-turn windows).
 */
import { performance } from 'node:perf_hooks';
import { startTurnStack } from '@ic/test-support';
import { median, ratio, round2, verdict, type BenchOptions } from './harness';

const WINDOW = 10;
const TARGET_RATIO = 1.2;

export async function run(options: BenchOptions): Promise<Record<string, unknown>> {
  const turns = options.quick ? 4 : Number(process.env.BENCH_TURNS ?? 500);
  const window = Math.min(WINDOW, Math.floor(turns / 2));
  const stack = await startTurnStack({ upstream: { reply: 'ok', tokenDelayMs: 0 }, tokenCacheTtlMs: 5000 });
  try {
    const client = stack.client();
    const conversation = await client.conversations.create();
    const latencies: number[] = [];
    for (let turn = 1; turn <= turns; turn++) {
      const started = performance.now();
      const response = await client.responses.create({ model: '', conversation: conversation.id, input: `message ${turn}` });
      latencies.push(performance.now() - started);
      if (response.status !== 'completed') throw new Error(`turn ${turn} ended ${response.status}`);
    }
    const lastRequest = stack.upstream.requests.at(-1)!;
    if (lastRequest.messages.length !== 2 * turns - 1) throw new Error(`turn ${turns} replayed ${lastRequest.messages.length} messages`);
    const first = median(latencies.slice(0, window));
    const last = median(latencies.slice(-window));
    return {
      turns,
      [`turns_1_to_${window}_median_ms`]: round2(first),
      [`turns_${turns - window + 1}_to_${turns}_median_ms`]: round2(last),
      turn_1_ms: round2(latencies[0]!),
      [`turn_${turns}_ms`]: round2(latencies.at(-1)!),
      last_to_first_ratio: ratio(last, first),
      target_ratio_max: TARGET_RATIO,
      messages_replayed_at_last_turn: lastRequest.messages.length,
    };
  } finally {
    await stack.close();
  }
}

export function summarize(result: Record<string, unknown>): string[] {
  const value = result.last_to_first_ratio as number;
  return [`turn ${result.turns} vs turn 1 latency (10-turn medians): ×${value} (target ≤ ${TARGET_RATIO}: ${verdict(value <= TARGET_RATIO)})`];
}
