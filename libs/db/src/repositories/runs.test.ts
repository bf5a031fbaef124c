import { assistantMessage, createTestDatabase, plainTurns, seedTenant, seedTranscript, turnToAccept, userMessage, type TestDatabase } from '@ic/test-support';
import { defaultRunParams, newId, outputItemId, type ConversationRow, type SmithRow, type StoredItem } from '@ic/schemas';
import { z } from 'zod';
import { jsonb, sql, type DatabasePool } from '../pool';
import { createConversationsRepo } from './conversations';
import { createItemsRepo } from './items';
import { createRunsRepo, type RunOutcome, type TurnToAccept } from './runs';

let db: TestDatabase;
let pool: DatabasePool;
let smith: SmithRow;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = db.pool;
  ({ smith } = await seedTenant(pool));
});
afterAll(() => db.drop());

const newConversation = (owner: SmithRow = smith): Promise<ConversationRow> =>
  createConversationsRepo(pool).insert({ id: newId('conversation'), tenantId: owner.tenant_id, smithId: owner.id, title: null, metadata: {} });

const turn = (conversationId: string | null, text: string, overrides: Partial<TurnToAccept> = {}): TurnToAccept => turnToAccept(smith, conversationId, text, overrides);

async function acceptRun(next: TurnToAccept) {
  const result = await createRunsRepo(pool).accept(next);
  if (result.outcome !== 'accepted') throw new Error(`not accepted: ${result.outcome}`);
  return result;
}

const COMPLETED: RunOutcome = { status: 'completed', outputCount: 1, usage: null, error: null, incompleteDetails: null };
const answer = (runId: string, text: string) => [{ id: outputItemId(runId, 0), body: assistantMessage(text) as StoredItem }];

async function claimed(runId: string) {
  const result = await createRunsRepo(pool).claimWithHistory(runId, null);
  if (result.outcome !== 'claimed') throw new Error(`not claimed: ${result.outcome}`);
  return result;
}

const lastRunSeq = (conversationId: string) =>
  pool.oneFirst(sql.type(z.object({ last_run_seq: z.number() }))`SELECT last_run_seq FROM conversations WHERE id = ${conversationId}`);

describe('runs repository: accept', () => {
  it('inserts the run (queued, next turn number) and its input items in one statement; the first turn is the head', async () => {
    const conversation = await newConversation();
    const first = await acceptRun(turn(conversation.id, 'one'));
    const second = await acceptRun(turn(conversation.id, 'two'));
    expect([first.run.status, first.run.conversation_seq, first.isHead]).toEqual(['queued', 1, true]);
    expect([second.run.conversation_seq, second.isHead]).toEqual([2, false]);
    const inputs = await createItemsRepo(pool).listByRun(first.run.id);
    expect(inputs.map((item) => [item.id, item.direction, item.ordinal, item.position])).toEqual([[`${first.run.id}.i0`, 'input', 0, null]]);
  });

  it('claims the first attempt of a head or standalone turn when asked, with the transcript length it replays; a turn behind an open one stays queued', async () => {
    const conversation = await newConversation();
    const first = await acceptRun(turn(conversation.id, 'one', { claimIfHead: true }));
    expect([first.run.status, first.run.attempt, first.run.started_at !== null, first.isHead, first.transcriptLength]).toEqual(['in_progress', 1, true, true, 0]);
    const behind = await acceptRun(turn(conversation.id, 'two', { claimIfHead: true }));
    expect([behind.run.status, behind.run.attempt, behind.run.started_at, behind.isHead]).toEqual(['queued', 0, null, false]);
    // The claimed attempt owns the run as a worker's claim would: its stamp lands, a second claim waits for it.
    expect((await createRunsRepo(pool).claimWithHistory(behind.run.id, null)).outcome).toBe('waiting');
    expect(await createRunsRepo(pool).stamp({ run: first.run, outcome: COMPLETED, outputs: answer(first.run.id, 'hi') })).not.toBeNull();
    await claimed(behind.run.id);
    await createRunsRepo(pool).stamp({ run: { ...behind.run, attempt: 1 }, outcome: COMPLETED, outputs: answer(behind.run.id, 'again') });
    // Four items stamped (two turns of one input and one output): the next head replays exactly those.
    const third = await acceptRun(turn(conversation.id, 'three', { claimIfHead: true }));
    expect([third.run.status, third.transcriptLength]).toEqual(['in_progress', 4]);

    const standalone = await acceptRun(turn(null, 'alone', { claimIfHead: true }));
    expect([standalone.run.status, standalone.run.attempt, standalone.transcriptLength]).toEqual(['in_progress', 1, null]);
    // Not asked, or a previous_response_id turn (its chain is read by a worker's claim): queued.
    expect((await acceptRun(turn(null, 'plain'))).run.status).toBe('queued');
    await createRunsRepo(pool).stamp({ run: standalone.run, outcome: COMPLETED, outputs: answer(standalone.run.id, 'ok') });
    const chained = await acceptRun(turn(null, 'follow-up', { claimIfHead: true, previousResponseId: standalone.run.id }));
    expect([chained.run.status, chained.run.attempt]).toEqual(['queued', 0]);
  });

  it("locks neither the tenant's nor the smith's row: turns of one smith do not share a hot row", async () => {
    // A row lock (a foreign key's FOR KEY SHARE check included) stays in the row as its xmax after the commit.
    const lockers = () =>
      pool.one(sql.type(z.object({ tenant: z.string(), smith: z.string() }))`
        SELECT (SELECT xmax::text FROM tenants WHERE id = ${smith.tenant_id}) AS tenant, (SELECT xmax::text FROM smiths WHERE id = ${smith.id}) AS smith`);
    const before = await lockers();
    const conversation = await newConversation();
    const afterCreate = await lockers();
    await acceptRun(turn(conversation.id, 'no parent locks'));
    await acceptRun(turn(null, 'standalone, no parent locks either'));
    expect(await lockers()).toEqual(afterCreate);
    // Creating a conversation still checks (and locks) both: its foreign keys stay.
    expect(afterCreate).not.toEqual(before);
  });

  it('answers conversation_not_found for a missing, deleted or foreign conversation and writes nothing', async () => {
    const { smith: stranger } = await seedTenant(pool);
    const foreign = await newConversation(stranger);
    const deleted = await newConversation();
    await createConversationsRepo(pool).softDelete(smith.id, deleted.id);
    for (const conversationId of [newId('conversation'), deleted.id, foreign.id]) {
      const attempt = turn(conversationId, 'hello');
      expect(await createRunsRepo(pool).accept(attempt)).toEqual({ outcome: 'conversation_not_found', previousStatus: null });
      expect(await createRunsRepo(pool).find(attempt.id)).toBeNull();
    }
    expect(await lastRunSeq(foreign.id)).toBe(0);
  });

  it('refuses in reject mode while a run is open, without taking a turn number', async () => {
    const conversation = await newConversation();
    await acceptRun(turn(conversation.id, 'one'));
    const refused = turn(conversation.id, 'two', { busyMode: 'reject' });
    expect(await createRunsRepo(pool).accept(refused)).toEqual({ outcome: 'conversation_locked', previousStatus: null });
    expect(await createRunsRepo(pool).find(refused.id)).toBeNull();
    expect(await createItemsRepo(pool).listByRun(refused.id)).toEqual([]);
    expect(await lastRunSeq(conversation.id)).toBe(1);
  });

  it('lets exactly one of many concurrent reject-mode turns in', async () => {
    const conversation = await newConversation();
    const results = await Promise.all(Array.from({ length: 6 }, (_, k) => createRunsRepo(pool).accept(turn(conversation.id, `t${k}`, { busyMode: 'reject' }))));
    expect(results.filter((result) => result.outcome === 'accepted')).toHaveLength(1);
    expect(results.filter((result) => result.outcome === 'conversation_locked')).toHaveLength(5);
    expect(await lastRunSeq(conversation.id)).toBe(1);
  });

  it('gives concurrent queue-mode turns distinct consecutive turn numbers and exactly one head', async () => {
    const conversation = await newConversation();
    const results = await Promise.all(Array.from({ length: 8 }, (_, k) => acceptRun(turn(conversation.id, `t${k}`))));
    expect(results.map((result) => result.run.conversation_seq).sort((a, b) => a! - b!)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // Only the first may call itself the head; the others saw it (or could not tell) and ask again after the commit.
    const heads = results.filter((result) => result.isHead).map((result) => result.run.conversation_seq);
    expect(heads.length === 0 || (heads.length === 1 && heads[0] === 1)).toBe(true);
  });

  it('returns the existing run for a reused Idempotency-Key and writes nothing', async () => {
    const conversation = await newConversation();
    const first = await acceptRun(turn(conversation.id, 'one', { idempotencyKey: 'key-1' }));
    const again = turn(conversation.id, 'one', { idempotencyKey: 'key-1' });
    const replay = await createRunsRepo(pool).accept(again);
    expect(replay).toMatchObject({ outcome: 'replayed', run: { id: first.run.id } });
    expect(await createRunsRepo(pool).find(again.id)).toBeNull();
    expect(await lastRunSeq(conversation.id)).toBe(1);
  });

  it('fails on the unique index when the same Idempotency-Key races, leaving one run', async () => {
    const conversation = await newConversation();
    const settled = await Promise.allSettled(Array.from({ length: 4 }, (_, k) => createRunsRepo(pool).accept(turn(conversation.id, `t${k}`, { idempotencyKey: 'race-key' }))));
    const outcomes = settled.map((result) => (result.status === 'fulfilled' ? result.value.outcome : 'unique_violation'));
    expect(outcomes.filter((outcome) => outcome === 'accepted')).toHaveLength(1);
    expect(outcomes.every((outcome) => ['accepted', 'replayed', 'unique_violation'].includes(outcome))).toBe(true);
    const runs = await pool.anyFirst(sql.type(z.object({ id: z.string() }))`SELECT id FROM runs WHERE smith_id = ${smith.id} AND idempotency_key = 'race-key'`);
    expect(runs).toHaveLength(1);
  });

  it('checks previous_response_id: finished chains are accepted, open or failed ones refused', async () => {
    const standalone = await acceptRun(turn(null, 'first'));
    expect(standalone.isHead).toBe(true);
    const open = await createRunsRepo(pool).accept(turn(null, 'second', { previousResponseId: standalone.run.id }));
    expect(open).toEqual({ outcome: 'previous_response_in_progress', previousStatus: 'queued' });
    const missing = await createRunsRepo(pool).accept(turn(null, 'second', { previousResponseId: newId('run') }));
    expect(missing).toEqual({ outcome: 'previous_response_not_found', previousStatus: null });

    const { run } = await claimed(standalone.run.id);
    await createRunsRepo(pool).stamp({ run, outcome: COMPLETED, outputs: answer(run.id, 'hi') });
    const chained = await acceptRun(turn(null, 'second', { previousResponseId: standalone.run.id }));
    expect(chained.run.previous_response_id).toBe(standalone.run.id);
  });
});

describe('runs repository: params', () => {
  const storedParams = (id: string) => pool.oneFirst(sql.type(z.object({ params: z.record(z.unknown()) }))`SELECT params FROM runs WHERE id = ${id}`);

  it('stores only the parameters that differ from the baseline and reads them back whole', async () => {
    const repo = createRunsRepo(pool);
    const plain = await acceptRun(turn(null, 'plain'));
    expect(await storedParams(plain.run.id)).toEqual({});
    expect(plain.run.params).toEqual(defaultRunParams());

    const params = defaultRunParams({ temperature: 0.5, store: false, metadata: { topic: 'x' }, text: { format: { type: 'json_object' }, verbosity: 'medium' } });
    const tuned = await acceptRun(turn(null, 'tuned', { params }));
    expect(await storedParams(tuned.run.id)).toEqual({ temperature: 0.5, store: false, metadata: { topic: 'x' }, text: { format: { type: 'json_object' }, verbosity: 'medium' } });
    expect(tuned.run.params).toEqual(params);
    expect((await repo.find(tuned.run.id))?.params).toEqual(params);
    const { run } = await claimed(tuned.run.id);
    expect(run.params).toEqual(params);
    // The stamp reads `store` through the baseline too: a store: false standalone run is hidden once answered, a plain one kept.
    expect((await repo.stamp({ run, outcome: COMPLETED, outputs: answer(run.id, 'y') }))?.run.params).toEqual(params);
    const plainClaim = await claimed(plain.run.id);
    await repo.stamp({ run: plainClaim.run, outcome: COMPLETED, outputs: answer(plain.run.id, 'y') });
    const hidden = await pool.anyFirst(sql.type(z.object({ id: z.string() }))`SELECT id FROM runs WHERE id IN (${tuned.run.id}, ${plain.run.id}) AND deleted_at IS NOT NULL`);
    expect(hidden).toEqual([tuned.run.id]);
  });

  it('reads a row stored whole (written before the baseline) unchanged', async () => {
    const { run } = await acceptRun(turn(null, 'old row'));
    const whole = defaultRunParams({ top_p: 0.9 });
    await pool.query(sql.unsafe`UPDATE runs SET params = ${jsonb(whole)} WHERE id = ${run.id}`);
    expect((await createRunsRepo(pool).find(run.id))?.params).toEqual(whole);
  });
});

describe('runs repository: claimWithHistory', () => {
  it('claims the head and returns its input and the transcript after the cached position; a later turn waits', async () => {
    const conversation = await newConversation();
    const seeded = await seedTranscript(pool, conversation, plainTurns(3));
    const head = await acceptRun(turn(conversation.id, 'now'));
    const later = await acceptRun(turn(conversation.id, 'later'));

    expect(await createRunsRepo(pool).claimWithHistory(later.run.id, null)).toMatchObject({ outcome: 'waiting', run: { id: later.run.id, status: 'queued', attempt: 0 } });
    const claim = await createRunsRepo(pool).claimWithHistory(head.run.id, { conversationId: conversation.id, afterPosition: 3 });
    if (claim.outcome !== 'claimed') throw new Error(claim.outcome);
    expect([claim.run.status, claim.run.attempt]).toEqual(['in_progress', 1]);
    expect(claim.input).toEqual([userMessage('now')]);
    expect(claim.transcriptAfter).toEqual(seeded.slice(4).map((item) => ({ position: item.position, body: item.body })));
    expect(claim.chain).toBeNull();

    // A cache hint for another conversation is ignored: the whole transcript comes back.
    const reclaim = await createRunsRepo(pool).claimWithHistory(head.run.id, { conversationId: newId('conversation'), afterPosition: 3 });
    if (reclaim.outcome !== 'claimed') throw new Error(reclaim.outcome);
    expect(reclaim.run.attempt).toBe(2);
    expect(reclaim.transcriptAfter).toHaveLength(seeded.length);
  });

  it('writes no column that an index of runs reads, so Postgres can claim in place (a HOT update)', async () => {
    // What the claim sets, and every column named in an index of runs (its keys, expressions and predicate).
    const claimWrites = ['status', 'attempt', 'started_at'];
    const definitions = await pool.anyFirst(sql.type(z.object({ definition: z.string() }))`
      SELECT pg_get_indexdef(indexrelid) AS definition FROM pg_index WHERE indrelid = 'runs'::regclass`);
    expect(definitions.length).toBeGreaterThan(0);
    const reading = definitions.flatMap((definition) => claimWrites.filter((column) => new RegExp(`\\b${column}\\b`).test(definition)).map((column) => `${column} in ${definition}`));
    expect(reading).toEqual([]);
  });

  it('holds completed_at to the status: set exactly when the run is no longer queued or in progress', async () => {
    const conversation = await newConversation();
    const { run } = await acceptRun(turn(conversation.id, 'x'));
    const setRow = (status: string, completed: boolean) =>
      pool.query(sql.unsafe`UPDATE runs SET status = ${status}, completed_at = CASE WHEN ${completed} THEN now() END WHERE id = ${run.id}`);
    await expect(setRow('completed', false)).rejects.toThrow(/runs_open_until_completed/);
    await expect(setRow('in_progress', true)).rejects.toThrow(/runs_open_until_completed/);
    await setRow('in_progress', false);
    await setRow('cancelled', true);
    expect(await createRunsRepo(pool).headOfConversation(conversation.id)).toBeNull();
  });

  it('reports a finished run (with its row) or a missing one', async () => {
    expect(await createRunsRepo(pool).claimWithHistory(newId('run'), null)).toEqual({ outcome: 'missing' });
    const conversation = await newConversation();
    const { run } = await claimed((await acceptRun(turn(conversation.id, 'x'))).run.id);
    await createRunsRepo(pool).stamp({ run, outcome: COMPLETED, outputs: answer(run.id, 'y') });
    expect(await createRunsRepo(pool).claimWithHistory(run.id, null)).toMatchObject({ outcome: 'finished', run: { id: run.id, status: 'completed', attempt: 1 } });
  });

  it('returns a previous_response_id chain oldest run first', async () => {
    const first = await claimed((await acceptRun(turn(null, 'a'))).run.id);
    await createRunsRepo(pool).stamp({ run: first.run, outcome: COMPLETED, outputs: answer(first.run.id, 'A') });
    const second = await claimed((await acceptRun(turn(null, 'b', { previousResponseId: first.run.id }))).run.id);
    await createRunsRepo(pool).stamp({ run: second.run, outcome: COMPLETED, outputs: answer(second.run.id, 'B') });
    const third = await claimed((await acceptRun(turn(null, 'c', { previousResponseId: second.run.id }))).run.id);
    expect(third.chain).toEqual([userMessage('a'), assistantMessage('A'), userMessage('b'), assistantMessage('B')]);
    expect(third.transcriptAfter).toBeNull();
    expect(third.input).toEqual([userMessage('c')]);
  });
});

describe('runs repository: stamp', () => {
  it('finishes the run, puts inputs and outputs into the transcript, and names the next run', async () => {
    const conversation = await newConversation();
    await seedTranscript(pool, conversation, plainTurns(1));
    const head = await acceptRun(turn(conversation.id, 'q'));
    const next = await acceptRun(turn(conversation.id, 'q2'));
    const { run } = await claimed(head.run.id);
    const before = await createConversationsRepo(pool).find(conversation.id);
    const stamped = await createRunsRepo(pool).stamp({ run, outcome: COMPLETED, outputs: answer(run.id, 'a') });

    expect(stamped).toMatchObject({ run: { id: run.id, status: 'completed', output_count: 1 }, firstPosition: 2, untitled: true, nextRunId: next.run.id, nextRunUnknown: false });
    const items = await createItemsRepo(pool).listByRun(run.id);
    expect(items.map((item) => [item.id, item.direction, item.ordinal, item.conversation_id, item.position])).toEqual([
      [`${run.id}.i0`, 'input', 0, conversation.id, 2],
      [`${run.id}.o`, 'output', 1, conversation.id, 3],
    ]);
    const after = await createConversationsRepo(pool).find(conversation.id);
    expect(after!.updated_at).toBeGreaterThanOrEqual(before!.updated_at);
  });

  it('writes nothing for a stale attempt', async () => {
    const conversation = await newConversation();
    const head = await acceptRun(turn(conversation.id, 'q'));
    const stale = await claimed(head.run.id);
    const current = await claimed(head.run.id);
    expect(await createRunsRepo(pool).stamp({ run: stale.run, outcome: COMPLETED, outputs: answer(head.run.id, 'stale') })).toBeNull();
    expect(await createItemsRepo(pool).listByRun(head.run.id)).toHaveLength(1);
    expect((await createRunsRepo(pool).find(head.run.id))!.status).toBe('in_progress');
    const counters = await pool.one(sql.type(z.object({ item_count: z.number(), updated_at: z.number() }))`SELECT item_count, updated_at FROM conversations WHERE id = ${conversation.id}`);
    expect(counters.item_count).toBe(0);

    const stamped = await createRunsRepo(pool).stamp({ run: current.run, outcome: COMPLETED, outputs: answer(head.run.id, 'current') });
    expect(stamped).toMatchObject({ firstPosition: 0, nextRunId: null });
    // Stamping the same attempt twice is a no-op too.
    expect(await createRunsRepo(pool).stamp({ run: current.run, outcome: COMPLETED, outputs: answer(head.run.id, 'again') })).toBeNull();
    expect((await createItemsRepo(pool).listByRun(head.run.id)).map((item) => item.position)).toEqual([0, 1]);
  });

  it('adds nothing to the transcript and leaves updated_at alone for failed runs, but still names the next run', async () => {
    const conversation = await newConversation();
    const head = await acceptRun(turn(conversation.id, 'q'));
    const next = await acceptRun(turn(conversation.id, 'q2'));
    const { run } = await claimed(head.run.id);
    const before = await createConversationsRepo(pool).find(conversation.id);
    const stamped = await createRunsRepo(pool).stamp({
      run,
      outcome: { status: 'failed', outputCount: 0, usage: null, error: { code: 'server_error', message: 'boom' }, incompleteDetails: null },
      outputs: [],
    });
    expect(stamped).toMatchObject({ run: { status: 'failed', error: { code: 'server_error' } }, firstPosition: null, nextRunId: next.run.id });
    expect((await createItemsRepo(pool).listByRun(run.id)).map((item) => item.position)).toEqual([null]);
    expect(await createConversationsRepo(pool).find(conversation.id)).toEqual(before);
  });

  it('keeps positions contiguous per conversation under concurrent stamps of different conversations', async () => {
    const conversations = await Promise.all(Array.from({ length: 6 }, () => newConversation()));
    for (let round = 0; round < 4; round++) {
      await Promise.all(
        conversations.map(async (conversation, k) => {
          const { run } = await claimed((await acceptRun(turn(conversation.id, `c${k} r${round}`))).run.id);
          const outputs = [
            { id: outputItemId(run.id, 0), body: assistantMessage(`c${k} r${round} a`) as StoredItem },
            { id: outputItemId(run.id, 1), body: assistantMessage(`c${k} r${round} b`) as StoredItem },
          ];
          await createRunsRepo(pool).stamp({ run, outcome: { ...COMPLETED, outputCount: 2 }, outputs });
        }),
      );
    }
    for (const [k, conversation] of conversations.entries()) {
      const page = await createItemsRepo(pool).listConversationPage(conversation.id, { order: 'asc', limit: 100 });
      expect(page.map((item) => item.position)).toEqual(Array.from({ length: 12 }, (_, position) => position));
      expect(page.map((item) => JSON.stringify(item.body)).every((body) => body.includes(`c${k} `))).toBe(true);
    }
  });

  it('reports a turn accepted while the stamp waited for the conversation lock as unknown', async () => {
    const conversation = await newConversation();
    const head = await acceptRun(turn(conversation.id, 'q'));
    const { run } = await claimed(head.run.id);
    // Hold the conversation's row lock with an accepted-but-uncommitted turn, then stamp concurrently.
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let lateRunId = '';
    const acceptInTransaction = pool.transaction(async (tx) => {
      const late = await createRunsRepo(tx).accept(turn(conversation.id, 'late'));
      if (late.outcome !== 'accepted') throw new Error(late.outcome);
      lateRunId = late.run.id;
      await held;
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const stamping = createRunsRepo(pool).stamp({ run, outcome: COMPLETED, outputs: answer(run.id, 'a') });
    await new Promise((resolve) => setTimeout(resolve, 100));
    release();
    await acceptInTransaction;
    const stamped = await stamping;
    // Either the stamp saw the late turn, or it says it could not have.
    expect(stamped!.nextRunId === lateRunId || stamped!.nextRunUnknown).toBe(true);
    expect((await createRunsRepo(pool).headOfConversation(conversation.id))?.id).toBe(lateRunId);
  });
});
