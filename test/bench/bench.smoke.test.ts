/**
 * The benchmark harness still works end to end at its smallest size (`--quick`): the stack, gateway,
 * baseline and upstream start as child processes, the probes answer, the transcript check runs.
 * It measures nothing: speed targets live in `npm run bench`, never in tests.
 */
import { balancedOrders, roundOrders } from './harness';
import { medianOfRuns, parseArgs, runBenchmarks } from './run';

jest.setTimeout(60000);

describe('npm run bench --quick', () => {
  it('runs the streaming-turn and CRUD suites and reports every figure', async () => {
    const { results, summary } = await runBenchmarks(parseArgs(['throughput', 'crud', '--quick']));
    const throughput = results.throughput as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    for (const queue of ['bullmq', 'inprocess']) {
      expect(throughput[queue].turns).toBeGreaterThan(0);
      expect(throughput[queue].failed_turns).toBe(0);
      expect(throughput[queue].transcript_check).toMatchObject({ ok: true, problems: [] });
      expect(throughput[queue].pg_round_trips_per_turn).toBeGreaterThan(0);
      expect(throughput[queue].cpu_ms_per_turn).toBeGreaterThan(0);
      // every turn commits rows, so the cluster's WAL must have moved
      expect(throughput[queue].pg_wal_kb_per_turn).toBeGreaterThan(0);
    }
    expect(throughput.bullmq.redis_round_trips_per_turn).toBeGreaterThan(0);
    expect(throughput.inprocess.redis_round_trips_per_turn).toBe(0);
    // finished logs are in Redis, kept for the finished expiry (the stack's default), not the in-flight one
    expect(throughput.bullmq.redis_event_log_kb_per_turn).toBeGreaterThan(0);
    expect(throughput.bullmq.redis_event_log_kept_s).toBeGreaterThan(0);
    expect(throughput.bullmq.redis_event_log_kept_s).toBeLessThanOrEqual(60);
    expect(throughput.inprocess.redis_event_log_kb_per_turn).toBeUndefined();

    const crud = results.crud as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    for (const op of ['get', 'list', 'create']) {
      for (const server of ['gateway', 'baseline']) {
        expect(crud[op][server].requests_per_second).toBeGreaterThan(0);
        expect(crud[op][server].non_2xx).toBe(0);
        expect(crud[op][server].pg_round_trips_per_request).toBeGreaterThanOrEqual(1);
      }
      expect(crud[op].throughput_ratio).toBeGreaterThan(0);
    }
    expect(summary.filter((line) => line.startsWith('crud: '))).toHaveLength(3);
    expect(summary.filter((line) => line.startsWith('throughput: '))).toHaveLength(2);
  });

  it('runs the title search suite with and without its index', async () => {
    const { results, summary } = await runBenchmarks(parseArgs(['search', '--quick']));
    const search = results.search as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    for (const name of ['rare_word', 'common_word', 'no_match', 'small_smith']) {
      expect(search[name].with_index_ms).toBeGreaterThan(0);
      expect(search[name].without_index_ms).toBeGreaterThan(0);
      expect(search[name].plan_without_index.uses_index).toBe(false);
      expect(search[name].plan_with_index.buffers).toBeGreaterThan(0);
    }
    expect(summary.filter((line) => line.startsWith('search: '))).toHaveLength(4);
  });

  it("runs the upstream-limit suite: a burst larger than the upstream's limit completes", async () => {
    const { results, summary } = await runBenchmarks(parseArgs(['upstream-limit', '--quick']));
    const limited = results['upstream-limit'] as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    // 6 turns against 2 requests per 300 ms: some must have been refused, and none may fail for it.
    expect(limited.bullmq).toMatchObject({ completed: 6, failed: 0 });
    expect(limited.bullmq.upstream_429s).toBeGreaterThan(0);
    expect(limited.bullmq.upstream_requests).toBe(6 + 2 + limited.bullmq.upstream_429s); // and the other model's 2
    expect(limited.bullmq.seconds_to_last_answer).toBeGreaterThanOrEqual(limited.least_seconds_the_limit_allows);
    expect(limited.bullmq.other_model_failed).toBe(0); // its own window: never refused
    expect(limited.bullmq.other_model_turn_seconds_p50).toBeGreaterThan(0);
    // The same with a worker process beside the stack.
    const several = limited.worker_processes;
    expect(several.processes).toBe(2);
    expect(several.bullmq).toMatchObject({ completed: 6, failed: 0 });
    expect(several.bullmq.upstream_requests).toBe(6 + 2 + several.bullmq.upstream_429s); // and the other model's 2
    expect(several.bullmq.seconds_to_last_answer).toBeGreaterThanOrEqual(limited.least_seconds_the_limit_allows);
    // OpenAI's request limit and its token limit, whose answers report them: the turns are paced to
    // them, on one process and two.
    for (const paced of [limited.openai_bucket, limited.openai_tokens]) {
      for (const figures of [paced.bullmq, paced.worker_processes.bullmq]) {
        expect(figures).toMatchObject({ completed: 6, failed: 0, other_model_failed: 0 });
        expect(figures.upstream_requests).toBe(6 + 2 + figures.upstream_429s);
        expect(figures.seconds_to_last_answer).toBeGreaterThanOrEqual(paced.least_seconds_the_limit_allows);
      }
    }
    expect(limited.openai_tokens.limit).toMatchObject({ tokens: expect.any(Number) });
    expect(summary.filter((line) => line.startsWith('upstream-limit: '))).toHaveLength(6);
  });

  it('takes the median of each figure across runs', () => {
    expect(medianOfRuns([{ a: 1, b: { c: 10, ok: true } }, { a: 5, b: { c: 30, ok: true } }, { a: 2, b: { c: 20, ok: false } }])).toEqual({
      a: 2,
      b: { c: 20, ok: false },
    });
  });

  it('alternates sides so that over a cycle each runs in every position and after every other equally often', () => {
    for (let n = 2; n <= 6; n++) {
      const sides = Array.from({ length: n }, (_, k) => `s${k}`);
      const orders = balancedOrders(sides);
      expect(orders).toHaveLength(n % 2 === 0 ? n : 2 * n);
      const positions = new Map<string, number>();
      const follows = new Map<string, number>();
      for (const order of orders) {
        expect([...order].sort()).toEqual(sides);
        order.forEach((side, position) => positions.set(`${side}@${position}`, (positions.get(`${side}@${position}`) ?? 0) + 1));
        for (let k = 1; k < n; k++) follows.set(`${order[k - 1]}>${order[k]}`, (follows.get(`${order[k - 1]}>${order[k]}`) ?? 0) + 1);
      }
      expect(positions.size).toBe(n * n);
      expect(new Set(positions.values()).size).toBe(1);
      expect(follows.size).toBe(n * (n - 1));
      expect(new Set(follows.values()).size).toBe(1);
    }
    // Whole cycles, except in the smoke test's quick mode.
    expect(roundOrders(['a', 'b', 'c'], 5)).toEqual([...balancedOrders(['a', 'b', 'c'])]);
    expect(roundOrders(['a', 'b', 'c', 'd'], 40)).toHaveLength(40);
    expect(roundOrders(['a', 'b'], 3)).toEqual([['a', 'b'], ['b', 'a'], ['a', 'b'], ['b', 'a']]);
    expect(roundOrders(['a', 'b', 'c'], 1, true)).toEqual([['a', 'b', 'c']]);
  });

  it('refuses unknown suites and options', () => {
    expect(() => parseArgs(['nope'])).toThrow(/Unknown suite nope/);
    expect(() => parseArgs(['--fast'])).toThrow(/Unknown option/);
    expect(parseArgs(['crud', '--runs', '3'])).toMatchObject({ suites: ['crud'], runs: 3, quick: false });
    expect(parseArgs([]).suites).toEqual(['firstdelta', 'throughput', 'crud', 'otel', 'turns', 'pagination', 'search', 'slow-turns', 'upstream-limit']);
  });
});
