import { sql } from '@ic/db';
import { TURN_QUEUE } from '@ic/responses';
import { z } from 'zod';
import { assistantMessage, eventually, seedTranscript, startTurnStack, userMessage, type TurnStack } from '@ic/test-support';

const LEASE_MS = 900;

const attemptOf = (stack: TurnStack, runId: string) => stack.db.pool.oneFirst(sql.type(z.object({ attempt: z.number() }))`SELECT attempt FROM runs WHERE id = ${runId}`);

/**
 * Turns run by the process that accepted them (EagerTurns, a role `all` process): claimed by the accept
 * statement, covered by a lease job in the queue while they run, and handed to the queue when the
 * attempt cannot finish them.
 */
describe('turns run by their accepting process (BullMQ on Redis, fake upstream)', () => {
  let stack: TurnStack;

  beforeAll(async () => {
    stack = await startTurnStack({ lockDurationMs: LEASE_MS, upstream: { reply: 'one two three', tokenDelayMs: 0 } });
  });
  afterAll(() => stack.close());
  afterEach(() => stack.upstream.reset());

  it('keeps a lease job pending while the turn runs, renews it past its length, and removes it when the run is finished', async () => {
    // Each word a third of the lease apart: the turn outlives its lease three times over.
    stack.upstream.set({ reply: 'slow words that outlast the lease', tokenDelayMs: LEASE_MS / 2 });
    const client = stack.client();
    const conversation = await client.conversations.create();
    const started = await client.responses.create({ model: '', conversation: conversation.id, input: 'take a while', background: true });
    expect(started.status).toBe('in_progress');
    await stack.upstream.waitForRequests(1);
    expect(await stack.backend.queue.isPending(TURN_QUEUE, started.id)).toBe(true);
    // The sweeper finds a live job for the open run and leaves it alone.
    expect(await stack.runtime.scheduler.sweepOnce(0)).toBe(0);

    const done = await eventually(async () => {
      const response = await client.responses.retrieve(started.id);
      return response.status === 'completed' ? response : undefined;
    }, 20000, 'the slow turn to complete');
    expect(done.output_text).toBe('slow words that outlast the lease');
    // Renewed while it ran: no worker took it over, so the model was called once, by attempt 1.
    expect(stack.upstream.requests).toHaveLength(1);
    expect(await attemptOf(stack, started.id)).toBe(1);
    await eventually(async () => ((await stack.backend.queue.isPending(TURN_QUEUE, started.id)) ? undefined : true), 5000, 'the lease job to be removed');
  });

  it('cancels a turn it runs as soon as the client has its id, and removes its lease', async () => {
    stack.upstream.set({ reply: 'never shown', firstTokenDelayMs: 3000 });
    const client = stack.client();
    const conversation = await client.conversations.create();
    const started = await client.responses.create({ model: '', conversation: conversation.id, input: 'never mind', background: true });
    expect((await client.responses.cancel(started.id)).status).toBe('cancelled');
    const settled = await eventually(async () => {
      const response = await client.responses.retrieve(started.id);
      return response.status === 'cancelled' ? response : undefined;
    }, 5000, 'the cancel to land');
    expect(settled.output).toEqual([]);
    expect((await client.conversations.items.list(conversation.id)).data).toEqual([]);
    expect(await attemptOf(stack, started.id)).toBe(1);
    await eventually(async () => ((await stack.backend.queue.isPending(TURN_QUEUE, started.id)) ? undefined : true), 5000, 'the lease job to be removed');
  });

  it('hands a turn that failed mid-stream to the queue at once, where a worker retries it as a new attempt', async () => {
    const client = stack.client();
    const conversation = await client.conversations.create();
    // Attempt 1 (this process) loses its upstream after the first word; attempt 2 (a queue job) answers.
    stack.upstream.dropConnectionNext(2);
    const response = await client.responses.create({ model: '', conversation: conversation.id, input: 'try again' });
    expect(response.status).toBe('completed');
    expect(response.output_text).toBe('one two three');
    expect(await attemptOf(stack, response.id)).toBe(2);
    const items = (await client.conversations.items.list(conversation.id)).data;
    expect(items.map((item) => item.id)).toEqual([`${response.id}.i0`, `${response.id}.o`]);
  });

  it('replays the transcript from its cache, or reads from Postgres what the cache lacks, without a claim', async () => {
    const client = stack.client();
    const created = await client.conversations.create();
    const conversation = await stack.db.pool.one(sql.type(z.object({ id: z.string(), tenant_id: z.string(), smith_id: z.string() }))`
      SELECT id, tenant_id, smith_id FROM conversations WHERE id = ${created.id}`);
    const say = async (input: string) => {
      expect((await client.responses.create({ model: '', conversation: conversation.id, input })).status).toBe('completed');
      return stack.upstream.requests.at(-1)!.messages.map((message) => `${message.role}:${String(message.content)}`);
    };
    // Written behind this process's back (as another replica's turns would be): nothing of it is cached.
    await seedTranscript(stack.db.pool, conversation, [{ input: [userMessage('elsewhere')], output: [assistantMessage('noted')] }]);
    expect(await say('first')).toEqual(['user:elsewhere', 'assistant:noted', 'user:first']);
    expect(await say('second')).toEqual(['user:elsewhere', 'assistant:noted', 'user:first', 'assistant:one two three', 'user:second']);
    // The cache is now behind by one turn written elsewhere: only that turn is read.
    await seedTranscript(stack.db.pool, conversation, [{ input: [userMessage('again elsewhere')], output: [assistantMessage('ok')] }]);
    expect(await say('third')).toEqual([
      'user:elsewhere', 'assistant:noted', 'user:first', 'assistant:one two three', 'user:second', 'assistant:one two three',
      'user:again elsewhere', 'assistant:ok', 'user:third',
    ]);
    // Claimed by the accept statement itself (started in its transaction), never by a claim of its own.
    const runs = await stack.db.pool.any(sql.type(z.object({ attempt: z.number(), claimed_by_accept: z.boolean() }))`
      SELECT attempt, started_at = created_at AS claimed_by_accept FROM runs WHERE conversation_id = ${conversation.id} AND model <> 'dev-echo'`);
    expect(runs).toEqual(Array.from({ length: 3 }, () => ({ attempt: 1, claimed_by_accept: true })));
  });

  it('drains its running turns when its worker closes (SIGTERM), and takes no new ones meanwhile', async () => {
    stack.upstream.set({ reply: 'finish me before you go', tokenDelayMs: 60 });
    const client = stack.client();
    const conversation = await client.conversations.create();
    // The newest worker runs the turns this stack accepts (last in this file: afterwards none does).
    const worker = stack.startWorker();
    const started = await client.responses.create({ model: '', conversation: conversation.id, input: 'draining', background: true });
    expect(started.status).toBe('in_progress');
    await stack.upstream.waitForRequests(1);
    const closing = worker.close();
    // Accepted while it drains: through the queue (the stack's first worker claims it), not eagerly.
    const later = await client.responses.create({ model: '', conversation: (await client.conversations.create()).id, input: 'after', background: true });
    expect(later.status).toBe('queued');
    await closing;
    const drained = await client.responses.retrieve(started.id);
    expect(drained.status).toBe('completed');
    expect(drained.output_text).toBe('finish me before you go');
    expect(await attemptOf(stack, started.id)).toBe(1);
  });

});
