/**
 * Slow turns: one worker process holding many streaming turns whose model takes seconds to answer
 * (`npm run bench -- slow-turns`). Defaults: 1,000 turns, each in its own conversation, all started at
 * once, the fake upstream streaming 10 words over 10 s. The worker is the compiled service
 * (`RESPONSES_ROLE=worker`) as a child process with its default WORKER_CONCURRENCY and pool sizes;
 * the API, the fake upstream and the clients live in this process.
 *
 * Prints: turns, completed, duration, how long it took until every turn was streaming, and the worker's
 * memory (RSS, heap) before, at peak and after (after a full GC), plus the memory per in-flight turn
 * (peak minus before, over the turns). Checks every transcript (input + answer, once each).
 *   BENCH_SLOW_TURNS, BENCH_SLOW_ANSWER_MS, BENCH_SLOW_WORKER_CONCURRENCY override the defaults;
 *   BENCH_SLOW_WORKER_PROFILE_DIR writes the worker's CPU profile there.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Queue } from 'bullmq';
import { sql } from '@ic/db';
import { RedisKeys } from '@ic/queue';
import { derivedWorkerConcurrency, TURN_QUEUE } from '@ic/responses';
import { startTurnStack } from '@ic/test-support';
import { z } from 'zod';
import type { MemoryReading } from './memory-probe';

/** The repository root, from test/bench (sources under jest) or test/dist/bench (compiled). */
const ROOT = path.resolve(__dirname, path.basename(path.dirname(__dirname)) === 'dist' ? '../../..' : '../..');
const WORKER_MAIN = path.join(ROOT, 'services/responses/dist/main.js');
const MEMORY_PROBE = path.join(ROOT, 'test/dist/bench/memory-probe.js');
const WORDS = 10;

export interface SlowTurnsOptions {
  /** Tiny sizes: proves the harness works, measures nothing. */
  quick?: boolean;
}

function readMemory(worker: ChildProcess, gc = false): Promise<MemoryReading> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('worker did not answer the memory probe')), 10000);
    const onMessage = (message: { memory?: MemoryReading }) => {
      if (!message?.memory) return;
      clearTimeout(timer);
      worker.off('message', onMessage);
      resolve(message.memory);
    };
    worker.on('message', onMessage);
    worker.send({ memory: 'read', gc });
  });
}

/** Runs `task` over `items` with at most `limit` at a time. */
async function inBatches<T, R>(items: readonly T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const index = next++;
        results[index] = await task(items[index]!);
      }
    }),
  );
  return results;
}

function claimSpread(spans: ReadonlyArray<{ started_at: number | null }>): number {
  const starts = spans.map((span) => span.started_at).filter((at): at is number => at !== null);
  return starts.length === 0 ? 0 : Math.max(...starts) - Math.min(...starts);
}

/** The most intervals open at one instant. */
function maxOverlap(spans: ReadonlyArray<{ started_at: number | null; completed_at: number | null }>): number {
  const edges = spans
    .filter((span) => span.started_at !== null && span.completed_at !== null)
    .flatMap((span) => [
      [span.started_at!, 1],
      [span.completed_at!, -1],
    ])
    .sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!);
  let open = 0;
  let most = 0;
  for (const [, delta] of edges) {
    open += delta!;
    most = Math.max(most, open);
  }
  return most;
}

/** Runs at most `limit` of the given tasks at a time. */
function limiter(limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async (task) => {
    if (running >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await task();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}

export async function run(options: SlowTurnsOptions = {}): Promise<Record<string, unknown>> {
  const turns = options.quick ? 20 : Number(process.env.BENCH_SLOW_TURNS ?? 1000);
  const answerMs = options.quick ? 1000 : Number(process.env.BENCH_SLOW_ANSWER_MS ?? 10000);
  const reply = Array.from({ length: WORDS }, (_, k) => `word${k}`).join(' ');
  // The role chunk, one chunk per word, then the usage chunk: the answer takes about answerMs.
  const stack = await startTurnStack({
    upstream: { reply, tokenDelayMs: Math.round(answerMs / (WORDS + 1)) },
    inProcessWorker: false,
    tokenCacheTtlMs: 60000,
    keepAliveMs: 15000,
  });
  const workerEnv: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    RESPONSES_ROLE: 'worker',
    DATABASE_URL: stack.db.url,
    REDIS_URL: stack.redisUrl,
    REDIS_PREFIX: stack.prefix,
    MODEL_BASE_URL: stack.upstream.baseURL,
    MODEL_API_KEY: 'bench-upstream-key',
    HEALTH_PORT: '0',
    LOG_LEVEL: 'warn',
    ...(process.env.BENCH_SLOW_WORKER_CONCURRENCY ? { WORKER_CONCURRENCY: process.env.BENCH_SLOW_WORKER_CONCURRENCY } : {}),
  };
  const profile = process.env.BENCH_SLOW_WORKER_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_SLOW_WORKER_PROFILE_DIR}`] : [];
  const worker = fork(WORKER_MAIN, [], { execArgv: ['--expose-gc', '-r', MEMORY_PROBE, ...profile], env: workerEnv, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const exited = new Promise<number | null>((resolve) => worker.once('exit', (code) => resolve(code)));
  try {
    const client = stack.client(undefined, { timeout: answerMs * 20 + 60000 });
    // Warm the worker (connections, code paths) with one turn before measuring.
    const warm = await client.conversations.create({ title: 'warm-up' } as never);
    await client.responses.create({ model: '', conversation: warm.id, input: 'warm up' });
    const conversations = await inBatches(Array.from({ length: turns }, (_, k) => k), 32, (k) => client.conversations.create({ title: `slow ${k}` } as never));
    const before = await readMemory(worker, true);

    let peak: MemoryReading = before;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const reading = await readMemory(worker);
        peak = {
          rss_mb: Math.max(peak.rss_mb, reading.rss_mb),
          heap_used_mb: Math.max(peak.heap_used_mb, reading.heap_used_mb),
          external_mb: Math.max(peak.external_mb, reading.external_mb),
          rss_peak_mb: reading.rss_peak_mb,
          cpu_ms: reading.cpu_ms,
          heap_limit_mb: reading.heap_limit_mb,
        };
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    })();

    // Every turn is accepted (its stream open, waiting) while the queue is paused, then released at
    // once: the worker, not the API's accept rate, decides how many turns run together.
    // The worker's own key names (hash-tagged `prefix:{turns}`): pausing `prefix:turns` would pause a
    // queue nobody reads, and the turns would start while they were still being accepted.
    const turnQueue = new Queue(TURN_QUEUE, { connection: { url: stack.redisUrl } as never, prefix: new RedisKeys(stack.prefix).queuePrefix(TURN_QUEUE) });
    await turnQueue.pause();
    const connecting = limiter(32);
    const firstDeltaAt: number[] = [];
    let releasedAt = 0;
    let accepted = 0;
    let allAccepted: () => void = () => undefined;
    const acceptedAll = new Promise<void>((resolve) => {
      allAccepted = resolve;
    });
    const countAccepted = () => {
      accepted += 1;
      if (accepted === turns) allAccepted();
    };
    const streams = Promise.all(
      conversations.map(async (conversation, k) => {
        try {
          // Connections are opened a few dozen at a time (a burst of 1,000 connects overflows the listen
          // backlog of this one test process); the streams then all wait at once.
          const stream = await connecting(() => client.responses.create({ model: '', conversation: conversation.id, input: `slow question ${k}`, stream: true }));
          countAccepted();
          let text = '';
          let status = 'no terminal event';
          for await (const event of stream) {
            // A new attempt (the previous one lost its lock) resets the client's snapshot.
            if (event.type === 'response.in_progress') text = '';
            if (event.type === 'response.output_text.delta') {
              if (text === '') firstDeltaAt.push(performance.now() - releasedAt);
              text += event.delta;
            } else if (event.type === 'response.completed' || event.type === 'response.failed' || event.type === 'response.incomplete') {
              status = event.response.status ?? event.type;
            }
          }
          if (status === 'completed' && text === reply) return true;
          process.stderr.write(`slow turn ${k}: ${status}, text ${JSON.stringify(text.slice(0, 200))}\n`);
          return false;
        } catch (error) {
          countAccepted();
          const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : '';
          process.stderr.write(`slow turn ${k}: ${error instanceof Error ? error.message : String(error)}${cause}\n`);
          return false;
        }
      }),
    );
    await acceptedAll;
    releasedAt = performance.now();
    await turnQueue.resume();
    const outcomes = await streams;
    const durationMs = performance.now() - releasedAt;
    await turnQueue.close();
    sampling = false;
    await sampler;
    const after = await readMemory(worker, true);

    const completed = outcomes.filter(Boolean).length;
    const items = await stack.db.pool.oneFirst(sql.type(z.object({ n: z.number() }))`
      SELECT count(*)::int AS n FROM items WHERE conversation_id = ANY(${sql.array(conversations.map((conversation) => conversation.id), 'text')})`);
    const spans = await stack.db.pool.any(sql.type(z.object({ started_at: z.number().nullable(), completed_at: z.number().nullable(), attempt: z.number() }))`
      SELECT started_at, completed_at, attempt FROM runs WHERE conversation_id = ANY(${sql.array(conversations.map((conversation) => conversation.id), 'text')})`);
    firstDeltaAt.sort((a, b) => a - b);
    // Sampled peak, not VmHWM: that also remembers start-up spikes.
    const inflightPeakMb = peak.rss_mb - before.rss_mb;
    const result = {
      turns,
      completed,
      transcripts_ok: items === turns * 2,
      answer_ms: answerMs,
      // Unless overridden, what the worker derived from its heap limit.
      worker_concurrency: process.env.BENCH_SLOW_WORKER_CONCURRENCY ? Number(process.env.BENCH_SLOW_WORKER_CONCURRENCY) : derivedWorkerConcurrency(before.heap_limit_mb * 1024 * 1024),
      worker_heap_limit_mb: before.heap_limit_mb,
      duration_ms: Math.round(durationMs),
      // Since the queue was released: when the last turn streamed its first word (all in flight at once
      // if this is well under answer_ms).
      last_first_delta_ms: Math.round(firstDeltaAt.at(-1) ?? Number.NaN),
      // From the runs table: the most turns running (claimed, not yet stamped) at the same moment.
      max_concurrent_turns: maxOverlap(spans),
      // How long the worker took to claim every released turn.
      claim_spread_ms: claimSpread(spans),
      // Turns that needed more than one attempt (a lock lost to a stall re-delivers the job).
      turns_with_retried_attempts: spans.filter((span) => span.attempt > 1).length,
      worker_cpu_ms_per_turn: Math.round(((after.cpu_ms - before.cpu_ms) / turns) * 100) / 100,
      worker_memory_mb: { before, peak, after },
      worker_rss_per_inflight_turn_kb: Math.round((inflightPeakMb * 1024) / turns),
      worker_heap_per_inflight_turn_kb: Math.round(((peak.heap_used_mb - before.heap_used_mb) * 1024) / turns),
      ok: completed === turns && items === turns * 2,
    };
    return result;
  } finally {
    worker.kill('SIGTERM');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 30000))]);
    if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGKILL');
    await stack.close();
  }
}

export function summarize(result: Record<string, unknown>): string[] {
  const memory = result.worker_memory_mb as { before: MemoryReading; peak: MemoryReading; after: MemoryReading };
  return [
    `slow turns: ${String(result.completed)}/${String(result.turns)} completed in ${String(result.duration_ms)} ms after release (answer ${String(result.answer_ms)} ms, ${String(result.max_concurrent_turns)} at once, last first delta at ${String(result.last_first_delta_ms)} ms, all claimed within ${String(result.claim_spread_ms)} ms)`,
    `slow turns: worker concurrency ${String(result.worker_concurrency)} (heap limit ${String(result.worker_heap_limit_mb)} MB), CPU ${String(result.worker_cpu_ms_per_turn)} ms per turn`,
    `slow turns: worker RSS ${memory.before.rss_mb} → peak ${memory.peak.rss_mb} → ${memory.after.rss_mb} MB, heap ${memory.before.heap_used_mb} → ${memory.peak.heap_used_mb} → ${memory.after.heap_used_mb} MB; ≈ ${String(result.worker_rss_per_inflight_turn_kb)} KB RSS per in-flight turn`,
  ];
}

if (require.main === module) {
  run().then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      for (const line of summarize(result)) process.stderr.write(`${line}\n`);
      process.exit(0);
    },
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
}
