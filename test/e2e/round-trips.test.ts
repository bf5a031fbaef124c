import OpenAI from 'openai';
import { recordPgStatements, startTurnStack, type StatementRecorder, type TurnStack } from '@ic/test-support';

/**
 * What a turn costs in Postgres round trips (one statement = one round trip), counted at the pg
 * client: the accept, the worker (claim with history, stamp) and the relay. The issue's budget is 8
 * per turn in total; the breakdown is printed so a change shows what it added.
 */
describe('Postgres round trips per turn (BullMQ, fake upstream)', () => {
  let stack: TurnStack;
  let client: OpenAI;
  let recorder: StatementRecorder;

  beforeAll(async () => {
    // Token lookups are cached, as deployed; titled conversations keep the titler out of the count. A relay
    // whose log stays quiet for a keep-alive interval asks Postgres whether the run ended (the safety net
    // for lost events): a long interval keeps that net out of the hot path's count on a slow machine.
    stack = await startTurnStack({ upstream: { reply: 'fine thanks', tokenDelayMs: 0 }, inProcessWorker: false, tokenCacheTtlMs: 60000, keepAliveMs: 30000 });
    client = stack.client();
  });
  afterAll(async () => {
    recorder?.stop();
    await stack.close();
  });

  /** Statements sent until the run's terminal event is in its log (the stamp's follow-ups included). */
  async function untilFinished(runId: string): Promise<string[]> {
    for (;;) {
      const events = await stack.backend.events.read(runId, -1, 1000);
      if (events.some((event) => event.type === 'response.completed')) break;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    return recorder.take();
  }

  it('accepts in one statement and runs a turn in three in total through the queue, in two when the accepting process runs it', async () => {
    const conversation = await client.conversations.create({ title: 'counted' } as never);
    await client.conversations.retrieve(conversation.id); // token cache warm
    recorder = recordPgStatements();

    const background = await client.responses.create({ model: '', conversation: conversation.id, input: 'hello', background: true });
    const accept = recorder.take();
    const worker = stack.startWorker();
    const work = await untilFinished(background.id);

    const sync = await client.responses.create({ model: '', conversation: conversation.id, input: 'again' });
    expect(sync.status).toBe('completed');
    const syncTurn = await untilFinished(sync.id);

    const stream = await client.responses.create({ model: '', conversation: conversation.id, input: 'and again', stream: true });
    let streamedId = '';
    for await (const event of stream) if (event.type === 'response.completed') streamedId = event.response.id;
    const streamTurn = await untilFinished(streamedId);
    await worker.close();

    const short = (statements: string[]) => statements.map((text) => text.slice(0, 60));
    process.stderr.write(`${JSON.stringify({ accept: short(accept), worker: short(work), sync: short(syncTurn), stream: short(streamTurn) }, null, 2)}\n`);
    expect(accept).toHaveLength(1);
    expect(work).toHaveLength(2);
    for (const turn of [syncTurn, streamTurn]) {
      expect(turn.length).toBeLessThanOrEqual(8);
      expect(turn.filter((text) => /^(START TRANSACTION|BEGIN|COMMIT)/i.test(text))).toEqual([]);
    }
    // No worker ran when the background turn was accepted: the queue's path, claim and stamp.
    expect(work.map(statementLabel)).toEqual(['runs.claim', 'runs.stamp']);
    // With a worker in the process, the accept claims the turn and the process runs it: no claim of its own.
    expect(syncTurn.map(statementLabel)).toEqual(['runs.accept', 'runs.stamp']);
    expect(streamTurn.map(statementLabel)).toEqual(['runs.accept', 'runs.stamp']);
  });

  it('keeps a turn queued behind a running one within budget (its kick comes from the stamp)', async () => {
    // The first turn runs in the accepting process; the second waits for it and goes through the queue.
    stack.upstream.set({ reply: 'slow', firstTokenDelayMs: 300 });
    const conversation = await client.conversations.create({ title: 'busy' } as never);
    recorder.take();
    const worker = stack.startWorker();
    const first = await client.responses.create({ model: '', conversation: conversation.id, input: 'one', background: true });
    const second = await client.responses.create({ model: '', conversation: conversation.id, input: 'two', background: true });
    const statements = [...(await untilFinished(first.id)), ...(await untilFinished(second.id))];
    await worker.close();
    expect((await client.responses.retrieve(second.id)).status).toBe('completed');
    process.stderr.write(`${JSON.stringify(statements.map((text) => text.slice(0, 60)), null, 2)}\n`);
    // 2 accepts, the second turn's claim, 2 stamps, and the head check the queued turn's accept makes after its commit.
    expect(statements.length).toBeLessThanOrEqual(6);
    expect(statements.map(statementLabel).filter((label) => label === 'runs.claim')).toHaveLength(1);
  });
});

/** A prepared statement's label (`/* prepared: runs.accept *\/`), else its first words. */
function statementLabel(text: string): string {
  return /^\/\* prepared: ([\w.]+) \*\//.exec(text)?.[1] ?? text.slice(0, 40);
}
