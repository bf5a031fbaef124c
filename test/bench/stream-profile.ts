/**
 * A quick streaming load for CPU profiles of the event path (not part of `npm run bench`):
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof test/dist/bench/stream-profile.js
 * CONVERSATIONS conversations each stream TURNS turns at once (BullMQ on Redis, fake upstream that
 * streams WORDS words TOKEN_DELAY_MS apart); prints turns/s, deltas seen and process CPU per turn.
 */
import { performance } from 'node:perf_hooks';
import { startTurnStack } from '@ic/test-support';

const CONVERSATIONS = Number(process.env.PROFILE_CONVERSATIONS ?? 32);
const TURNS = Number(process.env.PROFILE_TURNS ?? 10);
const WORDS = Number(process.env.PROFILE_WORDS ?? 60);
const TOKEN_DELAY_MS = Number(process.env.PROFILE_TOKEN_DELAY_MS ?? 2);

async function main(): Promise<void> {
  const reply = Array.from({ length: WORDS }, (_, index) => `word${index}`).join(' ');
  const stack = await startTurnStack({ upstream: { reply, tokenDelayMs: TOKEN_DELAY_MS }, tokenCacheTtlMs: 5000, workerConcurrency: 64 });
  try {
    const client = stack.client();
    const conversations = await Promise.all(Array.from({ length: CONVERSATIONS }, () => client.conversations.create()));
    let deltas = 0;
    const cpu = process.cpuUsage();
    const started = performance.now();
    await Promise.all(
      conversations.map(async (conversation) => {
        for (let turn = 0; turn < TURNS; turn++) {
          const stream = client.responses.stream({ model: '', conversation: conversation.id, input: `turn ${turn}` });
          stream.on('response.output_text.delta', () => deltas++);
          const final = await stream.finalResponse();
          if (final.status !== 'completed' || final.output_text !== reply) throw new Error(`turn ended ${final.status} with other text`);
        }
      }),
    );
    const elapsedMs = performance.now() - started;
    const used = process.cpuUsage(cpu);
    const turns = CONVERSATIONS * TURNS;
    process.stdout.write(
      `${JSON.stringify({ turns, turnsPerSecond: Math.round((turns / elapsedMs) * 1000), deltaEventsPerTurn: Math.round(deltas / turns), cpuMsPerTurn: Math.round(((used.user + used.system) / 1000 / turns) * 100) / 100 })}\n`,
    );
  } finally {
    await stack.close();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${String(error)}\n`);
  process.exit(1);
});
