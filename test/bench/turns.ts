/**
 * Turn-path benchmark (BullMQ on the local Redis, a fresh Postgres database, the fake upstream as an
 * instant model):
 *  - latency of a turn at turn 1 vs turn 500 of one conversation (history replay must stay linear);
 *  - time to the first streamed delta through the queue vs calling the upstream directly.
 */
import { performance } from 'node:perf_hooks';
import OpenAI from 'openai';
import { startTurnStack } from '@ic/test-support';

const TURNS = Number(process.env.BENCH_TURNS ?? 500);
const WINDOW = 10;
const TTFD_SAMPLES = 30;

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
};
const p95 = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length * 0.95)]!;
const ms = (value: number) => Math.round(value * 100) / 100;

export async function run(): Promise<Record<string, unknown>> {
  const stack = await startTurnStack({ upstream: { reply: 'ok', tokenDelayMs: 0 }, tokenCacheTtlMs: 5000 });
  try {
    const client = stack.client();

    // 1. One conversation, TURNS sequential non-streaming turns.
    const conversation = await client.conversations.create();
    const latencies: number[] = [];
    for (let turn = 1; turn <= TURNS; turn++) {
      const started = performance.now();
      const response = await client.responses.create({ model: '', conversation: conversation.id, input: `message ${turn}` });
      latencies.push(performance.now() - started);
      if (response.status !== 'completed') throw new Error(`turn ${turn} ended ${response.status}`);
    }
    const lastRequest = stack.upstream.requests.at(-1)!;
    if (lastRequest.messages.length !== 2 * TURNS - 1) throw new Error(`turn ${TURNS} replayed ${lastRequest.messages.length} messages`);

    // 2. Time to first delta: through our API (accept → queue → worker → upstream → Redis stream → SSE)
    //    vs the same upstream called directly with the openai client.
    stack.upstream.set({ reply: 'one two three four five six', tokenDelayMs: 5 });
    const viaService: number[] = [];
    for (let sample = 0; sample < TTFD_SAMPLES; sample++) {
      const fresh = await client.conversations.create();
      const started = performance.now();
      const stream = await client.responses.create({ model: '', conversation: fresh.id, input: 'first delta please', stream: true });
      let first = 0;
      for await (const event of stream) {
        if (event.type === 'response.output_text.delta' && first === 0) first = performance.now() - started;
      }
      viaService.push(first);
    }
    const upstream = new OpenAI({ apiKey: 'x', baseURL: stack.upstream.baseURL, maxRetries: 0 });
    const direct: number[] = [];
    for (let sample = 0; sample < TTFD_SAMPLES; sample++) {
      const started = performance.now();
      const stream = await upstream.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'first delta please' }], stream: true });
      let first = 0;
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta.content && first === 0) first = performance.now() - started;
      }
      direct.push(first);
    }

    const result = {
      turns: TURNS,
      turn_latency_ms: {
        [`turns_1_to_${WINDOW}_median`]: ms(median(latencies.slice(0, WINDOW))),
        turn_1: ms(latencies[0]!),
        [`turns_${TURNS - WINDOW + 1}_to_${TURNS}_median`]: ms(median(latencies.slice(-WINDOW))),
        [`turn_${TURNS}`]: ms(latencies.at(-1)!),
        all_p95: ms(p95(latencies)),
      },
      messages_replayed_at_last_turn: lastRequest.messages.length,
      time_to_first_delta_ms: {
        through_service_median: ms(median(viaService)),
        through_service_p95: ms(p95(viaService)),
        direct_upstream_median: ms(median(direct)),
        direct_upstream_p95: ms(p95(direct)),
        added_by_service_median: ms(median(viaService) - median(direct)),
      },
    };
    return result;
  } finally {
    await stack.close();
  }
}

if (require.main === module) {
  run().then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      process.exit(0);
    },
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
}
