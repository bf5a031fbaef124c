import { createRedis, RedisKeys, type StreamEvent } from '@ic/queue';
import { createLogger } from '@ic/telemetry';
import { eventually, startTurnStack, type TurnStack } from '@ic/test-support';
import { FINISHED_EVENTS_TTL_SECONDS } from './env';
import { OutputAssembler } from './events';
import { ANNOUNCE_ALONE_AFTER_MS, ANNOUNCE_BY_MS_AFTER_ACCEPT, announceDelayMs } from './run-lifecycle';
import { HistoryLoader } from './history';

type Delta = StreamEvent & { delta: string };
const isTextDelta = (event: StreamEvent): event is Delta => event.type === 'response.output_text.delta';
const textOf = (events: readonly StreamEvent[]) => events.filter(isTextDelta).map((event) => event.delta).join('');
const expectContiguous = (events: ReadonlyArray<{ sequence_number: number }>) =>
  expect(events.map((event) => event.sequence_number)).toEqual(events.map((_, index) => events[0]!.sequence_number + index));

describe('run lifecycle: one ending per stream, fenced attempts (BullMQ on Redis, fake upstream)', () => {
  let stack: TurnStack;
  const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'worker', createLogger('test', 'silent'));
  const streamKey = (runId: string) => new RedisKeys(stack.prefix).runEvents(runId);
  const logKey = (runId: string) => new RedisKeys(stack.prefix).runLog(runId);
  const readLog = (runId: string) => stack.backend.events.read(runId, -1, 0);

  beforeAll(async () => {
    // No worker by default: each test starts one when it wants turns to run by themselves.
    stack = await startTurnStack({ inProcessWorker: false });
  });
  afterAll(async () => {
    await stack.close();
    await redis.quit();
  });
  beforeEach(() => stack.upstream.reset());

  /** What a worker does to begin an attempt: the claim, then the attempt's event log, fenced (as its first output or its timer would). */
  async function begin(runId: string) {
    const { lifecycle } = stack.runtime;
    const claimed = await lifecycle.claim(runId, (id) => new HistoryLoader(stack.db.pool, 0).claim(id, null));
    if (claimed.kind !== 'claimed') return claimed;
    const log = lifecycle.openAttempt(claimed.run);
    await log.fence();
    return { kind: 'started' as const, run: claimed.run, log };
  }

  /** As if the worker died (or Redis failed) between the stamp and its terminal events: the log loses its last `count` entries. */
  async function cutLogEnding(runId: string, count: number): Promise<void> {
    // Rewritten rather than XDEL'd: a stream remembers its highest id even after deletes.
    const entries = await redis.xrange(streamKey(runId), '-', '+');
    const ttl = await redis.ttl(streamKey(runId));
    await redis.del(streamKey(runId));
    for (const [id, fields] of entries.slice(0, -count)) await redis.xadd(streamKey(runId), id, ...fields);
    await redis.expire(streamKey(runId), ttl);
    await redis.hdel(logKey(runId), 'closed');
  }

  it("refuses a stale attempt's events once a newer attempt of the same run has begun", async () => {
    const client = stack.client();
    const accepted = await client.responses.create({ model: '', input: 'two workers', background: true });
    const { lifecycle } = stack.runtime;

    const first = await begin(accepted.id);
    if (first.kind !== 'started') throw new Error('first attempt did not start');
    let firstToldStale = false;
    first.log.onStale(() => {
      firstToldStale = true;
    });
    const firstOutput = new OutputAssembler(accepted.id, first.log.events);
    firstOutput.accept({ type: 'text_delta', delta: 'from the stale ' });
    await first.log.flush();

    // The first worker pauses past its lock; BullMQ hands the job to another worker, which claims attempt 2.
    const second = await begin(accepted.id);
    if (second.kind !== 'started') throw new Error('second attempt did not start');
    expect(second.run.attempt).toBe(2);

    // The first worker wakes up and carries on: its writes are refused, and it is told to stop.
    firstOutput.accept({ type: 'text_delta', delta: 'attempt, interleaved' });
    await first.log.flush();
    expect(first.log.state).toBe('stale');
    expect(firstToldStale).toBe(true);
    const staleAppend = await stack.backend.events.append(accepted.id, [{ type: 'response.output_text.delta', sequence_number: 999 }], {
      authority: { attempt: 1 },
      closes: false,
      ttlSeconds: 60,
    });
    expect(staleAppend).toMatchObject({ ok: false });

    const secondOutput = new OutputAssembler(accepted.id, second.log.events);
    secondOutput.accept({ type: 'text_delta', delta: 'the current answer' });
    await second.log.flush();
    const stamped = await lifecycle.finish(second.log, { status: 'completed', outputCount: 1, usage: null, error: null, incompleteDetails: null }, secondOutput.finish('completed'));
    expect(stamped?.run.status).toBe('completed');
    // The stale attempt cannot stamp either.
    expect(await lifecycle.finish(first.log, { status: 'completed', outputCount: 1, usage: null, error: null, incompleteDetails: null }, firstOutput.finish('completed'))).toBeNull();

    const log = await readLog(accepted.id);
    expectContiguous(log);
    const secondStart = log.map((event) => event.type).lastIndexOf('response.in_progress');
    expect(textOf(log.slice(0, secondStart))).toBe('from the stale ');
    expect(textOf(log.slice(secondStart))).toBe('the current answer');
    expect(log.at(-1)).toMatchObject({ type: 'response.completed', response: { status: 'completed', output: [{ content: [{ text: 'the current answer' }] }] } });
    // What a client replaying the run gets: the current attempt's answer, status as stamped.
    const replayed = await client.responses.stream({ response_id: accepted.id }).finalResponse();
    expect(replayed.status).toBe('completed');
    expect(replayed.output_text).toBe('the current answer');
  });

  it('ends a replayed or resumed stream of a finished run with its terminal event even when the log lost its ending', async () => {
    const worker = stack.startWorker();
    try {
      stack.upstream.set({ reply: 'one two three four five six seven eight nine ten', tokenDelayMs: 2 });
      const client = stack.client();
      const conversation = await client.conversations.create();
      const done = await client.responses.create({ model: '', conversation: conversation.id, input: 'count' });
      expect(done.status).toBe('completed');
      const original = await readLog(done.id);
      // Lose the terminal event, the …done events and the last delta(s).
      await cutLogEnding(done.id, 5);
      const truncated = await readLog(done.id);
      expect(truncated.at(-1)?.type).toBe('response.output_text.delta');

      const replay = await client.responses.retrieve(done.id, { stream: true });
      const events: StreamEvent[] = [];
      for await (const event of replay) events.push(event as unknown as StreamEvent);
      expectContiguous(events);
      expect(events[0]?.sequence_number).toBe(0);
      expect(events.at(-1)).toMatchObject({ type: 'response.completed', response: { id: done.id, status: 'completed' } });
      expect(textOf(events)).toBe('one two three four five six seven eight nine ten');
      expect(events.map((event) => event.type).slice(-4)).toEqual(['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed']);
      // Written back: the log now ends as the original did.
      const repaired = await readLog(done.id);
      expect(repaired.at(-1)?.type).toBe('response.completed');
      expect(repaired.length).toBeLessThanOrEqual(original.length + 1);

      // A resume from the middle, and the openai client's own helper, end the same way.
      await cutLogEnding(done.id, 3);
      const resumed = await client.responses.retrieve(done.id, { stream: true, starting_after: 2 });
      const rest: StreamEvent[] = [];
      for await (const event of resumed) rest.push(event as unknown as StreamEvent);
      expect(rest[0]?.sequence_number).toBe(3);
      expect(rest.at(-1)?.type).toBe('response.completed');
      await cutLogEnding(done.id, 4);
      const final = await client.responses.stream({ response_id: done.id }).finalResponse();
      expect(final.status).toBe('completed');
      expect(final.output_text).toBe('one two three four five six seven eight nine ten');
    } finally {
      await worker.close();
    }
  });

  it('has a redelivered job of a finished run write the missing ending of its log', async () => {
    const worker = stack.startWorker();
    try {
      stack.upstream.set({ reply: 'finished already', tokenDelayMs: 0 });
      const client = stack.client();
      const done = await client.responses.create({ model: '', input: 'once' });
      await cutLogEnding(done.id, 4);
      expect((await readLog(done.id)).at(-1)?.type).not.toBe('response.completed');

      await stack.runtime.scheduler.enqueueRun(done.id); // BullMQ re-delivers the job (stall, sweep…)
      const log = await eventually(async () => {
        const events = await readLog(done.id);
        return events.at(-1)?.type === 'response.completed' ? events : undefined;
      }, 10000, 'the redelivered job to complete the log');
      expectContiguous(log);
      expect(log.at(-1)).toMatchObject({ response: { status: 'completed', output: [{ content: [{ text: 'finished already' }] }] } });
      expect(textOf(log)).toBe('finished already');
      expect(stack.upstream.requests).toHaveLength(1); // the model is not called again
    } finally {
      await worker.close();
    }
  });

  it('rebuilds the stream of a run whose log is gone: whole for a replay, with a reset for a reader part-way through', async () => {
    const worker = stack.startWorker();
    try {
      stack.upstream.set({ reply: 'gone from redis', tokenDelayMs: 0 });
      const client = stack.client();
      const done = await client.responses.create({ model: '', input: 'forget me' });
      await redis.del(streamKey(done.id), logKey(done.id));

      const replay: StreamEvent[] = [];
      for await (const event of await client.responses.retrieve(done.id, { stream: true })) replay.push(event as unknown as StreamEvent);
      expect(replay[0]).toMatchObject({ type: 'response.created', sequence_number: 0 });
      expectContiguous(replay);
      expect(textOf(replay)).toBe('gone from redis');
      expect(replay.at(-1)?.type).toBe('response.completed');

      const resumed: StreamEvent[] = [];
      for await (const event of await client.responses.retrieve(done.id, { stream: true, starting_after: 4 })) resumed.push(event as unknown as StreamEvent);
      expect(resumed[0]).toMatchObject({ type: 'response.in_progress', sequence_number: 5 });
      expectContiguous(resumed);
      expect(textOf(resumed)).toBe('gone from redis');
      expect(resumed.at(-1)).toMatchObject({ type: 'response.completed', response: { status: 'completed' } });
    } finally {
      await worker.close();
    }
  });

  it('gives every event log an expiry from its first write, before the run finishes', async () => {
    const client = stack.client();
    const queued = await client.responses.create({ model: '', input: 'nobody runs me yet', background: true });
    const ttl = await redis.ttl(streamKey(queued.id));
    expect(ttl).toBeGreaterThan(FINISHED_EVENTS_TTL_SECONDS); // still the in-flight expiry
    expect(ttl).toBeLessThanOrEqual(120); // the stack's RUN_EVENTS_TTL_SECONDS
    expect((await client.responses.cancel(queued.id)).status).toBe('cancelled');
    expect((await readLog(queued.id)).at(-1)).toMatchObject({ type: 'response.failed', response: { status: 'cancelled' } });
  });

  it("keeps a finished run's log for the shorter finished expiry, whoever closes it", async () => {
    const client = stack.client();
    const expiries = async (runId: string) => [await redis.ttl(streamKey(runId)), await redis.ttl(logKey(runId))];
    // Closed by the API: a queued run cancelled (its ending is completed from Postgres).
    const cancelled = await client.responses.create({ model: '', input: 'cancel me', background: true });
    for (const ttl of await expiries(cancelled.id)) expect(ttl).toBeGreaterThan(FINISHED_EVENTS_TTL_SECONDS);
    await client.responses.cancel(cancelled.id);
    for (const ttl of await expiries(cancelled.id)) {
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(FINISHED_EVENTS_TTL_SECONDS);
    }
    // Closed by the worker's stamp.
    const worker = stack.startWorker();
    try {
      stack.upstream.set({ reply: 'done soon', tokenDelayMs: 0 });
      const done = await client.responses.create({ model: '', input: 'finish me' });
      expect(done.status).toBe('completed');
      await eventually(async () => ((await readLog(done.id)).at(-1)?.type === 'response.completed' ? true : undefined), 5000, 'the closing append');
      for (const ttl of await expiries(done.id)) {
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(FINISHED_EVENTS_TTL_SECONDS);
      }
    } finally {
      await worker.close();
    }
  });

  it('shows one response.in_progress while the upstream fails and is retried within the attempt', async () => {
    const worker = stack.startWorker();
    try {
      stack.upstream.set({ reply: 'third time lucky', tokenDelayMs: 0 });
      stack.upstream.failNext(503, 2);
      const client = stack.client();
      const seen: StreamEvent[] = [];
      const stream = client.responses.stream({ model: '', input: 'flaky' });
      stream.on('event', (event) => seen.push(event as unknown as StreamEvent));
      const final = await stream.finalResponse();
      expect(final.status).toBe('completed');
      expect(final.output_text).toBe('third time lucky');
      expect(stack.upstream.requests).toHaveLength(3);
      expect(seen.filter((event) => event.type === 'response.in_progress')).toHaveLength(1);
      expectContiguous(seen);

      // A turn that keeps failing shows one in_progress and then its failure.
      stack.upstream.reset();
      stack.upstream.failNext(503, 10);
      const failing: StreamEvent[] = [];
      const failed = client.responses.stream({ model: '', input: 'always down' });
      failed.on('event', (event) => failing.push(event as unknown as StreamEvent));
      await failed.finalResponse().catch(() => undefined);
      expect(failing.map((event) => event.type)).toEqual(['response.created', 'response.in_progress', 'response.failed']);
      expect(failing.at(-1)).toMatchObject({ response: { status: 'failed', error: { code: 'server_error' } } });
    } finally {
      await worker.close();
    }
  }, 20000);

  it('announces an attempt with its first output in one wake-up, or on its own while the model is slow', async () => {
    // What the run's readers are woken with: each PUBLISH of its log (first sequence number, then type and JSON per event).
    const listener = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'worker', createLogger('test', 'silent'));
    const batches: string[][] = [];
    listener.on('pmessage', (_pattern: string, _channel: string, message: string) => batches.push(message.split('\n').filter((_, index) => index % 2 === 1)));
    await listener.psubscribe(new RedisKeys(stack.prefix).runAppendedChannel('*'));
    const worker = stack.startWorker();
    try {
      const client = stack.client();
      const typesSeen = async (input: string) => {
        batches.length = 0;
        const seen: string[] = [];
        const stream = client.responses.stream({ model: '', input });
        stream.on('event', (event) => seen.push(event.type));
        expect((await stream.finalResponse()).status).toBe('completed');
        return seen;
      };

      stack.upstream.set({ reply: 'quick answer', tokenDelayMs: 0 });
      // Whether the first output beats the announcement window is timing; on a loaded machine a turn
      // may miss it, so a few turns get the chance. A fence of its own (the design before) never merges.
      // (Run by the accepting process, the log's first write is the attempt's: response.created leads it.)
      const mergedFast = async () => {
        await typesSeen('fast model');
        const announced = batches.find((batch) => batch.includes('response.in_progress')) ?? [];
        return announced[announced.indexOf('response.in_progress') + 1] === 'response.output_item.added';
      };
      let merged = false;
      for (let turn = 0; turn < 5 && !merged; turn += 1) merged = await mergedFast();
      expect(merged).toBe(true);

      stack.upstream.set({ reply: 'slow answer', tokenDelayMs: 0, firstTokenDelayMs: 400 });
      const seen = await typesSeen('slow model');
      const announcedSlow = batches.find((batch) => batch.includes('response.in_progress')) ?? [];
      expect(announcedSlow.at(-1)).toBe('response.in_progress');
      expect(announcedSlow.filter((type) => type !== 'response.created' && type !== 'response.in_progress')).toEqual([]);
      expect(seen.slice(0, 3)).toEqual(['response.created', 'response.in_progress', 'response.output_item.added']);
    } finally {
      await worker.close();
      await listener.quit();
    }
  });

  it('coalesces model tokens into fewer delta events carrying exactly the same text', async () => {
    const worker = stack.startWorker();
    try {
      const words = Array.from({ length: 300 }, (_, index) => `w${index}`).join(' ');
      stack.upstream.set({ reply: words, tokenDelayMs: 0 });
      const client = stack.client();
      const seen: StreamEvent[] = [];
      const stream = client.responses.stream({ model: '', input: 'a lot of words' });
      stream.on('event', (event) => seen.push(event as unknown as StreamEvent));
      const final = await stream.finalResponse();
      expect(final.output_text).toBe(words);
      expect(textOf(seen)).toBe(words);
      expectContiguous(seen);
      // 300 model chunks (one per word) become far fewer events; the first token went out on its own.
      const deltas = seen.filter(isTextDelta);
      expect(deltas.length).toBeLessThan(100);
      expect(deltas[0]!.delta.trim()).toBe('w0');
    } finally {
      await worker.close();
    }
  });
});

describe('announceDelayMs: how long an attempt waits for its first output before announcing itself alone', () => {
  it('waits the full window unless that would miss the write the relay holds response.created for', () => {
    const acceptedAt = 1_000_000;
    // Claimed at once: the window; claimed a little later: only until 15 ms after the accept.
    expect(announceDelayMs(acceptedAt, acceptedAt)).toBe(ANNOUNCE_ALONE_AFTER_MS);
    expect(announceDelayMs(acceptedAt, acceptedAt + 8)).toBe(ANNOUNCE_BY_MS_AFTER_ACCEPT - 8);
    expect(announceDelayMs(acceptedAt, acceptedAt + 15)).toBe(0);
    expect(announceDelayMs(acceptedAt, acceptedAt + 24)).toBe(0);
    // The relay's hold is over (a busy queue, a retried attempt): nothing to share, so the full window.
    expect(announceDelayMs(acceptedAt, acceptedAt + 25)).toBe(ANNOUNCE_ALONE_AFTER_MS);
    expect(announceDelayMs(acceptedAt, acceptedAt + 60_000)).toBe(ANNOUNCE_ALONE_AFTER_MS);
    // A worker clock behind Postgres's: never longer than the window.
    expect(announceDelayMs(acceptedAt, acceptedAt - 5_000)).toBe(ANNOUNCE_ALONE_AFTER_MS);
  });
});
