/**
 * A burst of turns against a model upstream with a requests-per-second limit (OpenAI's RPM limit in
 * miniature: a 429 with `retry-after-ms` once the window is full). Counts the turns that complete and
 * fail, the 429s the upstream had to answer, and how long the burst took against the least the limit
 * allows. The single-process stack with BullMQ, then the same stack with worker processes beside it
 * (the deployed shape of several worker pods, which must share what the upstream told one of them);
 * with BENCH_COMPARE_STACK another build (e.g. the one before a change) runs the same bursts in
 * alternating rounds as `compared`, with its own build's workers. The limited upstream runs in this
 * process: the figures here are counts and wall time, not CPU.
 */
import { performance } from 'node:perf_hooks';
import OpenAI from 'openai';
import { startFakeUpstream } from '@ic/test-support';
import { median, percentile, round2, roundOrders, type BenchOptions } from './harness';
import { comparedRoot, comparedStackScript, startBenchStack, startBenchWorkers, type BenchStack } from './services';

const FULL = { turns: 200, requestsPerWindow: 10, windowMs: 1000, rounds: 2, extraWorkers: 3, otherModelTurns: 5, otherModelAfterMs: 2000, answerMs: 1000, promptChars: 2000, maxOutputTokens: 100 };
const QUICK = { turns: 6, requestsPerWindow: 2, windowMs: 300, rounds: 1, extraWorkers: 1, otherModelTurns: 2, otherModelAfterMs: 100, answerMs: 50, promptChars: 200, maxOutputTokens: 16 };

/** The `tokens` limit's burst turns: a prompt of `promptChars` characters and `max_output_tokens`, so each call needs tokens ≈ promptChars ÷ 4 + maxOutputTokens. */
const tokenCharge = (sizes: typeof FULL) => Math.ceil(sizes.promptChars / 4) + sizes.maxOutputTokens;

/**
 * The limits the bursts meet, one after the other: a sliding window whose 429 says when to come back
 * (`retry-after-ms`, as Azure OpenAI does); OpenAI's own, a bucket refilled evenly whose every answer
 * says what is left (`x-ratelimit-*`), with answers that take `answerMs` as a model's do; and OpenAI's
 * token limit (tokens per minute), the same bucket in tokens, which a burst of long prompts meets first:
 * its request limit is 100× what the burst needs, its token limit admits `requestsPerWindow` of the
 * burst's calls per window.
 */
type LimitStyle = 'window' | 'bucket' | 'tokens';

interface BurstFigures {
  completed: number;
  failed: number;
  /** Failure codes of the turns that did not complete, with how many each (in the medians: summed over every round). */
  failures: Record<string, number>;
  upstream_requests: number;
  upstream_429s: number;
  seconds_to_last_answer: number;
  turn_seconds_p50: number;
  turn_seconds_p99: number;
  /**
   * Turns on another model, sent one after another while the burst's model is at its limit: the
   * upstream meters each model apart, so they should not wait for the burst (median, slowest).
   */
  other_model_turn_seconds_p50: number;
  other_model_turn_seconds_max: number;
  other_model_failed: number;
}

/** The model the burst does not use; the fake upstream keeps a separate window for it. */
const OTHER_MODEL = 'bench-other-model';

async function otherModelTurns(client: OpenAI, count: number, afterMs: number): Promise<{ seconds: number[]; failed: number }> {
  await new Promise((resolve) => setTimeout(resolve, afterMs));
  const seconds: number[] = [];
  let failed = 0;
  for (let turn = 0; turn < count; turn++) {
    const started = performance.now();
    const response = await client.responses.create({ model: OTHER_MODEL, input: 'meanwhile' }).catch(() => null);
    seconds.push((performance.now() - started) / 1000); // a failure's time counts too
    if (response?.status !== 'completed') failed++;
  }
  return { seconds, failed };
}

async function burst(stack: BenchStack, sizes: typeof FULL, style: LimitStyle): Promise<Omit<BurstFigures, 'upstream_requests' | 'upstream_429s'>> {
  const turns = sizes.turns;
  const request = style === 'tokens' ? { input: `burst ${'x'.repeat(sizes.promptChars - 6)}`, max_output_tokens: sizes.maxOutputTokens } : { input: 'burst' };
  const client = new OpenAI({ apiKey: stack.smithToken, baseURL: stack.baseURL, maxRetries: 0, timeout: 600_000 });
  const started = performance.now();
  const meanwhile = otherModelTurns(client, sizes.otherModelTurns, sizes.otherModelAfterMs);
  const outcomes = await Promise.all(
    Array.from({ length: turns }, async () => {
      const turnStarted = performance.now();
      const outcome = await client.responses.create({ model: '', ...request }).then(
        (response) => (response.status === 'completed' ? 'completed' : `${response.status}: ${response.error?.code ?? 'no error code'}`),
        (error: unknown) => (error instanceof OpenAI.APIError ? `${error.status}: ${error.code ?? error.type ?? error.message}` : String(error)),
      );
      return { outcome, seconds: (performance.now() - turnStarted) / 1000 };
    }),
  );
  const failures = sumCounts(outcomes.filter(({ outcome }) => outcome !== 'completed').map(({ outcome }) => ({ [outcome]: 1 })));
  const seconds = outcomes.map((outcome) => outcome.seconds);
  const other = await meanwhile;
  return {
    completed: outcomes.filter((outcome) => outcome.outcome === 'completed').length,
    failed: outcomes.filter((outcome) => outcome.outcome !== 'completed').length,
    failures,
    seconds_to_last_answer: round2((performance.now() - started) / 1000),
    turn_seconds_p50: round2(percentile(seconds, 0.5)),
    turn_seconds_p99: round2(percentile(seconds, 0.99)),
    other_model_turn_seconds_p50: round2(percentile(other.seconds, 0.5)),
    other_model_turn_seconds_max: round2(Math.max(...other.seconds)),
    other_model_failed: other.failed,
  };
}

function sumCounts(counts: ReadonlyArray<Record<string, number>>): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const count of counts) for (const [key, value] of Object.entries(count)) sums[key] = (sums[key] ?? 0) + value;
  return sums;
}

function medianBurst(rounds: BurstFigures[]): BurstFigures {
  const numeric = (key: Exclude<keyof BurstFigures, 'failures'>) => round2(median(rounds.map((round) => round[key])));
  return {
    completed: numeric('completed'),
    failed: numeric('failed'),
    failures: sumCounts(rounds.map((round) => round.failures)),
    upstream_requests: numeric('upstream_requests'),
    upstream_429s: numeric('upstream_429s'),
    seconds_to_last_answer: numeric('seconds_to_last_answer'),
    turn_seconds_p50: numeric('turn_seconds_p50'),
    turn_seconds_p99: numeric('turn_seconds_p99'),
    other_model_turn_seconds_p50: numeric('other_model_turn_seconds_p50'),
    other_model_turn_seconds_max: numeric('other_model_turn_seconds_max'),
    other_model_failed: numeric('other_model_failed'),
  };
}

/** BENCH_UPSTREAM_LIMITS=window, =bucket or =tokens (or a comma-separated list) runs only those limits' bursts (all by default). */
export async function run(options: BenchOptions): Promise<Record<string, unknown>> {
  const sizes = options.quick ? QUICK : FULL;
  const only = process.env.BENCH_UPSTREAM_LIMITS?.split(',').map((style) => style.trim());
  const runs = (style: LimitStyle) => !only || only.includes(style);
  const window = runs('window') ? await runLimit(options, sizes, 'window') : {};
  const bucket = runs('bucket') ? await runLimit(options, sizes, 'bucket') : undefined;
  const tokens = runs('tokens') ? await runLimit(options, sizes, 'tokens') : undefined;
  return { ...window, ...(bucket ? { openai_bucket: bucket } : {}), ...(tokens ? { openai_tokens: tokens } : {}) };
}

async function runLimit(options: BenchOptions, sizes: typeof FULL, style: LimitStyle): Promise<Record<string, unknown>> {
  const tokensPerWindow = sizes.requestsPerWindow * tokenCharge(sizes);
  const upstream = await startFakeUpstream({
    tokenDelayMs: 0,
    rateLimit:
      style === 'tokens'
        ? { requests: sizes.requestsPerWindow * 100, windowMs: sizes.windowMs, style: 'bucket', tokens: tokensPerWindow }
        : { requests: sizes.requestsPerWindow, windowMs: sizes.windowMs, style },
    ...(style === 'window' ? {} : { answerDelayMs: sizes.answerMs }),
  });
  const stacks: BenchStack[] = [];
  try {
    const compareScript = comparedStackScript();
    const [ours, compared] = await Promise.all([
      startBenchStack({ name: 'stack-bullmq', queue: 'bullmq', modelBaseUrl: upstream.baseURL, profileDir: options.profileDir }).then((stack) => (stacks.push(stack), stack)),
      compareScript
        ? startBenchStack({ name: 'stack-compared', queue: 'bullmq', modelBaseUrl: upstream.baseURL, profileDir: options.profileDir, script: compareScript }).then((stack) => (stacks.push(stack), stack))
        : undefined,
    ]);
    const sides = compared ? [ours, compared] : [ours];
    const measure = async () => {
      const rounds = new Map<BenchStack, BurstFigures[]>(sides.map((stack) => [stack, []]));
      for (const order of roundOrders(sides, sizes.rounds, options.quick)) {
        for (const stack of order) {
          upstream.reset(); // an empty window and fresh counts for each burst
          // The window the previous burst filled must have passed, so each burst starts from a full allowance.
          await new Promise((resolve) => setTimeout(resolve, sizes.windowMs));
          const figures = await burst(stack, sizes, style);
          rounds.get(stack)!.push({ ...figures, upstream_requests: upstream.requests.length, upstream_429s: upstream.throttledCount });
        }
      }
      return rounds;
    };
    const single = await measure();
    // The same bursts with worker processes beside each stack: turns spread over several processes.
    const workers = await Promise.all(
      sides.map((stack) => startBenchWorkers(stack, sizes.extraWorkers, { modelBaseUrl: upstream.baseURL, root: stack === compared ? comparedRoot(compareScript!) : undefined })),
    );
    let several: Map<BenchStack, BurstFigures[]>;
    try {
      several = await measure();
    } finally {
      await Promise.all(workers.map((pool) => pool.close()));
    }
    const windows = Math.ceil(sizes.turns / sizes.requestsPerWindow);
    return {
      method:
        `${sizes.turns} non-streaming turns sent at once (openai client, no client retries) against an upstream admitting ` +
        `${sizes.requestsPerWindow} requests per ${sizes.windowMs} ms per model ` +
        (style === 'window'
          ? '(sliding window; a 429 with retry-after-ms beyond it), '
          : style === 'bucket'
            ? `(OpenAI's bucket, refilled evenly; x-ratelimit-* headers on every answer, a 429 with nothing else; answers take ${sizes.answerMs} ms), `
            : `(100× that in requests, but ${tokensPerWindow} tokens per ${sizes.windowMs} ms: OpenAI's buckets, refilled evenly, x-ratelimit-* headers for both ` +
              `on every answer, a 429 with nothing else; each burst turn has a ${sizes.promptChars}-character prompt and max_output_tokens ${sizes.maxOutputTokens}, ` +
              `so the upstream reserves ${tokenCharge(sizes)} tokens for each call; answers take ${sizes.answerMs} ms), `) +
        `with ${sizes.otherModelTurns} turns on another model sent one after another from ${sizes.otherModelAfterMs} ms into it; ` +
        `then the same with ${sizes.extraWorkers} worker processes beside the stack; medians over rounds`,
      turns: sizes.turns,
      limit: style === 'tokens' ? { requests: sizes.requestsPerWindow * 100, tokens: tokensPerWindow, window_ms: sizes.windowMs } : { requests: sizes.requestsPerWindow, window_ms: sizes.windowMs },
      // A full bucket admits `requests` at once, then one per window/requests: the same least time as the window's.
      // (The token limit admits as many of the burst's calls per window.)
      least_seconds_the_limit_allows: round2(((windows - 1) * sizes.windowMs) / 1000 + (style === 'window' ? 0 : sizes.answerMs / 1000)),
      bullmq: medianBurst(single.get(ours)!),
      ...(compared ? { compared: medianBurst(single.get(compared)!) } : {}),
      worker_processes: {
        processes: sizes.extraWorkers + 1,
        bullmq: medianBurst(several.get(ours)!),
        ...(compared ? { compared: medianBurst(several.get(compared)!) } : {}),
      },
    };
  } finally {
    await Promise.all(stacks.map((stack) => stack.close()));
    await upstream.close();
  }
}

export function summarize(result: Record<string, unknown>): string[] {
  const least = result.least_seconds_the_limit_allows as number;
  type LimitResult = Record<string, unknown> & { turns: number; least_seconds_the_limit_allows: number; worker_processes: Record<string, unknown> & { processes: number } };
  const bucket = result.openai_bucket as LimitResult | undefined;
  const tokens = result.openai_tokens as LimitResult | undefined;
  const turns = (result.turns ?? bucket?.turns ?? tokens?.turns) as number;
  const several = result.worker_processes as (Record<string, unknown> & { processes: number }) | undefined;
  const lines = (figuresOf: Record<string, unknown>, shape: string, limitAllows = least) =>
    (['bullmq', 'compared'] as const).flatMap((side) => {
      const figures = figuresOf[side] as BurstFigures | undefined;
      if (!figures) return [];
      return [
        `${side}, ${shape}: ${figures.completed}/${turns} turns completed under the upstream's limit (${figures.failed} failed), ` +
          `${figures.upstream_429s} 429s, last answer after ${figures.seconds_to_last_answer} s (the limit allows ${limitAllows} s); ` +
          `another model's turns meanwhile ${figures.other_model_turn_seconds_p50} s (slowest ${figures.other_model_turn_seconds_max} s)`,
      ];
    });
  return [
    ...lines(result, 'one process'),
    ...(several ? lines(several, `${several.processes} worker processes`) : []),
    ...(
      [
        [bucket, "OpenAI's bucket"],
        [tokens, "OpenAI's token limit"],
      ] as const
    ).flatMap(([limited, name]) =>
      limited
        ? [
            ...lines(limited, `${name}, one process`, limited.least_seconds_the_limit_allows),
            ...lines(limited.worker_processes, `${name}, ${limited.worker_processes.processes} worker processes`, limited.least_seconds_the_limit_allows),
          ]
        : [],
    ),
  ];
}
