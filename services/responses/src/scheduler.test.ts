import { createRunsRepo, sql } from '@ic/db';
import { createInProcessBackend, type QueueBackend } from '@ic/queue';
import type { SmithRow } from '@ic/schemas';
import { createLogger } from '@ic/telemetry';
import { createTestDatabase, seedTenant, turnToAccept, type TestDatabase } from '@ic/test-support';
import { TurnScheduler } from './scheduler';

let db: TestDatabase;
let smith: SmithRow;
let backend: QueueBackend;
beforeAll(async () => {
  db = await createTestDatabase();
  ({ smith } = await seedTenant(db.pool));
  backend = createInProcessBackend(createLogger('test', 'silent'));
});
afterAll(async () => {
  await backend.close();
  await db.drop();
});

async function acceptStandalone(): Promise<string> {
  const turn = turnToAccept(smith, null, 'lost');
  const accepted = await createRunsRepo(db.pool).accept(turn);
  if (accepted.outcome !== 'accepted') throw new Error(accepted.outcome);
  return turn.id;
}

describe('TurnScheduler sweeper', () => {
  it('pages through every open run across sweeps (one query each) and re-enqueues only those without a job', async () => {
    const lost = [];
    for (let k = 0; k < 5; k++) lost.push(await acceptStandalone());
    // Distinct creation times, oldest first, so the page order is the acceptance order.
    for (const [k, id] of lost.entries()) await db.pool.query(sql.unsafe`UPDATE runs SET created_at = now() - make_interval(secs => ${60 - k}) WHERE id = ${id}`);
    const scheduler = new TurnScheduler(db.pool, backend, createLogger('test', 'silent'), 2);

    expect(await scheduler.sweepOnce(1000)).toBe(2);
    expect(await backend.queue.isPending('turns', lost[0]!)).toBe(true);
    expect(await backend.queue.isPending('turns', lost[2]!)).toBe(false);
    expect(await scheduler.sweepOnce(1000)).toBe(2);
    expect(await scheduler.sweepOnce(1000)).toBe(1);
    for (const id of lost) expect(await backend.queue.isPending('turns', id)).toBe(true);
    // Back at the start: everything has a job now, so nothing is enqueued twice.
    for (let sweep = 0; sweep < 3; sweep++) expect(await scheduler.sweepOnce(1000)).toBe(0);
  });
});
