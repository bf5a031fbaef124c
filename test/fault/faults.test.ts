/**
 * The fault suite: the services as separate processes on a private PostgreSQL cluster and a private
 * Redis server, under client load, while workers are killed or paused and the databases go away.
 * After each scenario the audit (audit.ts) must count zero lost, duplicated, truncated or wrongly
 * answered turns. `npm test` runs the short profile; `npm run test:faults` the full one
 * (FAULT_PROFILE=full). FAULT_KILLS, FAULT_KILLS_PER_TURN, FAULT_OUTAGES, FAULT_OUTAGE_MS, FAULT_PAUSES
 * and FAULT_CLIENTS override either profile. Each scenario prints one `FAULT_SUMMARY {…}` JSON line.
 */
import {
  eventually,
  startFakeUpstream,
  startPrivatePostgres,
  startPrivateRedis,
  type FakeUpstream,
  type PostgresStopMode,
  type PrivatePostgres,
  type PrivateRedis,
  type ServiceProcess,
} from '@ic/test-support';
import { sql } from '@ic/db';
import { z } from 'zod';
import { auditFaultRun, type AuditResult } from './audit';
import { TurnLoad, type TurnRecord } from './load';
import { FaultTopology } from './topology';

const FULL = process.env.FAULT_PROFILE === 'full';
const setting = (name: string, short: number, full: number) => {
  const value = process.env[name];
  return value === undefined || value === '' ? (FULL ? full : short) : Number(value);
};
const KILLS = setting('FAULT_KILLS', 2, 24);
const OUTAGES = setting('FAULT_OUTAGES', 1, 3);
const OUTAGE_MS = setting('FAULT_OUTAGE_MS', 2000, 5000);
const PAUSES = setting('FAULT_PAUSES', 1, 3);
/** At most this many of the kills hit any one turn (MAX_RUN_ATTEMPTS is 8). */
const KILLS_PER_TURN = setting('FAULT_KILLS_PER_TURN', 3, 3);
const CLIENTS = setting('FAULT_CLIENTS', 3, 8);
const LOCK_MS = 2000;
const SCENARIO_TIMEOUT_MS = FULL ? 900000 : 240000;
/** Generous: a healed system settles in seconds, but this machine may be shared and slow. */
const PATIENCE_MS = 90000;

const REPLY = 'one two three four five six seven eight nine ten eleven twelve';
const LONG_REPLY = Array.from({ length: 40 }, (_, i) => `stale${i + 1}`).join(' ');
const SHORT_REPLY = 'fresh1 fresh2 fresh3 fresh4 fresh5 fresh6';

/** FAULT_DEBUG=1 prints when each phase of a scenario ends. */
const phase = (name: string, since: number) => {
  if (process.env.FAULT_DEBUG) process.stderr.write(`[fault] ${name} at ${((Date.now() - since) / 1000).toFixed(1)} s\n`);
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The text the current attempt of a streamed turn has delivered so far. */
const attemptText = (record: TurnRecord) => {
  const start = record.events.map((event) => event.type).lastIndexOf('response.in_progress');
  return record.events.slice(start + 1).filter((event) => event.type === 'response.output_text.delta').map((event) => event.delta ?? '').join('');
};

const ZERO = { neverCompleted: 0, duplicated: 0, streamsWithoutTerminal: 0, retryableAfterCommit: 0, finalMismatch: 0, badEventLogs: 0 };

function report(scenario: string, faults: Record<string, number>, audit: AuditResult, startedAt: number): void {
  const summary = {
    scenario,
    profile: FULL ? 'full' : 'short',
    ...faults,
    turns: audit.turns,
    committed: audit.committed,
    refusedBeforeCommit: audit.refused,
    streamsChecked: audit.streamsChecked,
    streamErrorEvents: audit.streamErrorEvents,
    ...audit.counts,
    seconds: Math.round((Date.now() - startedAt) / 100) / 10,
  };
  process.stdout.write(`FAULT_SUMMARY ${JSON.stringify(summary)}\n`);
}

function expectClean(audit: AuditResult): void {
  expect({ counts: audit.counts, problems: audit.problems.slice(0, 25) }).toEqual({ counts: ZERO, problems: [] });
  expect(audit.committed).toBeGreaterThan(0);
}

describe('fault suite: real processes, private PostgreSQL and Redis', () => {
  let postgres: PrivatePostgres;
  let redis: PrivateRedis;
  let upstream: FakeUpstream;
  let topology: FaultTopology | undefined;
  let activeLoad: TurnLoad | undefined;

  beforeAll(async () => {
    [postgres, redis, upstream] = await Promise.all([startPrivatePostgres(), startPrivateRedis(), startFakeUpstream({ reply: REPLY, tokenDelayMs: 40 })]);
  }, 120000);

  afterEach(async () => {
    activeLoad?.halt();
    activeLoad = undefined;
    topology?.killAll();
    topology = undefined;
    upstream.reset();
  });

  afterAll(async () => {
    await upstream?.close();
    await redis?.destroy();
    await postgres?.destroy();
  }, 120000);

  /** Starts a topology under load, lets `inject` do its damage, heals, and audits. */
  async function underLoad(
    scenario: string,
    setup: { workers: number; modes: 'stream' | 'mixed' },
    inject: (load: TurnLoad, topology: FaultTopology) => Promise<Record<string, number>>,
  ): Promise<AuditResult> {
    const startedAt = Date.now();
    const current = await FaultTopology.start({ postgres, redis, upstream, workers: setup.workers, workerConcurrency: 3, lockDurationMs: LOCK_MS });
    topology = current;
    phase(`${scenario}: topology up`, startedAt);
    const conversationIds = await current.createConversations(CLIENTS);
    const turns = new TurnLoad({ responses: current.responses(), responsesURL: current.responsesURL, token: current.token, conversationIds, modes: setup.modes });
    activeLoad = turns;
    turns.start();
    await turns.turnsEnded(CLIENTS, PATIENCE_MS); // warmed up: every client has finished a turn
    phase(`${scenario}: warmed up`, startedAt);
    const faults = await inject(turns, current);
    phase(`${scenario}: faults injected`, startedAt);
    await turns.turnsEnded(CLIENTS, PATIENCE_MS); // and the healed system serves turns again
    phase(`${scenario}: serving again`, startedAt);
    await within(turns.stop(), PATIENCE_MS, 'the clients to finish their last turns');
    phase(`${scenario}: load stopped`, startedAt);
    const audit = await auditFaultRun(current, turns.records, { settleTimeoutMs: PATIENCE_MS, possibleReplies: [REPLY] });
    phase(`${scenario}: audited`, startedAt);
    const exits = await current.close();
    report(scenario, faults, audit, startedAt);
    expect(exits.map((exit) => exit.code)).toEqual(exits.map(() => 143)); // every survivor drains on SIGTERM
    return audit;
  }

  /** Waits until streaming and non-streaming turns are both in flight, a stream mid-answer. */
  async function busy(load: TurnLoad): Promise<void> {
    await within(load.nextDelta(), PATIENCE_MS, 'a streamed delta');
    await eventually(async () => {
      const inFlight = load.inFlight();
      return inFlight.some((record) => record.mode === 'sync') && inFlight.some((record) => record.mode === 'stream' && record.events.length > 0) ? true : undefined;
    }, PATIENCE_MS, 'streaming and non-streaming turns in flight');
  }

  it(`kill -9 of the worker mid-stream, ${KILLS} times, while clients stream`, async () => {
    let kills = 0;
    const audit = await underLoad('worker-kill', { workers: 1, modes: 'stream' }, async (load, current) => {
      let worker: ServiceProcess = current.workers[0]!;
      // Kills each turn lives through while in flight: a turn killed MAX_RUN_ATTEMPTS times is rightly
      // given up on as a poison turn, so no turn is exposed to more than KILLS_PER_TURN of them.
      const exposure = new Map<string, number>();
      const exposable = () => load.inFlight().every((record) => (exposure.get(record.marker) ?? 0) < KILLS_PER_TURN);
      for (let i = 0; i < KILLS; i++) {
        // Early in an answer, or at its last delta (just before the stamp and the terminal event).
        const atLastDelta = i % 2 === 1;
        const moment = atLastDelta ? 'a worker to stream the last delta of an answer' : 'a worker to stream a delta';
        await within(load.nextDelta((record) => exposable() && (!atLastDelta || attemptText(record) === REPLY)), PATIENCE_MS, moment);
        const inFlight = load.inFlight();
        const exit = await worker.kill();
        expect(exit.signal).toBe('SIGKILL');
        kills++;
        for (const record of inFlight) exposure.set(record.marker, (exposure.get(record.marker) ?? 0) + 1);
        worker = await current.spawnWorker();
      }
      return { kills };
    });
    expect(kills).toBe(KILLS);
    expectClean(audit);
  }, SCENARIO_TIMEOUT_MS);

  it(`Redis stopped for ${OUTAGE_MS} ms under load, ${OUTAGES} time(s)`, async () => {
    const audit = await underLoad('redis-outage', { workers: 2, modes: 'mixed' }, async (load) => {
      let outages = 0;
      for (let i = 0; i < OUTAGES; i++) {
        if (i > 0) await load.turnsEnded(CLIENTS, PATIENCE_MS);
        await busy(load);
        await redis.stop();
        outages++;
        await sleep(OUTAGE_MS);
        await redis.start();
      }
      return { outages, outageMs: OUTAGE_MS };
    });
    expectClean(audit);
  }, SCENARIO_TIMEOUT_MS);

  it(`PostgreSQL stopped for ${OUTAGE_MS} ms under load, ${OUTAGES} time(s)`, async () => {
    const audit = await underLoad('postgres-outage', { workers: 2, modes: 'mixed' }, async (load, current) => {
      let outages = 0;
      const modes: PostgresStopMode[] = ['fast', 'immediate'];
      for (let i = 0; i < OUTAGES; i++) {
        if (i > 0) await load.turnsEnded(CLIENTS, PATIENCE_MS);
        await busy(load);
        await current.releaseDb();
        await postgres.stop(modes[i % modes.length]!);
        outages++;
        await sleep(OUTAGE_MS);
        await postgres.start();
      }
      return { outages, outageMs: OUTAGE_MS };
    });
    expectClean(audit);
  }, SCENARIO_TIMEOUT_MS);

  it(`a worker paused past its lock (SIGSTOP) wakes after another finished the turn, ${PAUSES} time(s)`, async () => {
    const startedAt = Date.now();
    // The paused attempt's model answer is longer than its successor's, so its late events would land
    // after the successor's terminal event unless the stale attempt is kept out of the log.
    let requestsThisPause = 0;
    upstream.set({ reply: () => (requestsThisPause++ === 0 ? LONG_REPLY : SHORT_REPLY), tokenDelayMs: 60 });
    const current = await FaultTopology.start({ postgres, redis, upstream, workers: 1, workerConcurrency: 1, lockDurationMs: LOCK_MS });
    topology = current;
    const [conversationId] = await current.createConversations(1);
    const single = new TurnLoad({ responses: current.responses(), responsesURL: current.responsesURL, token: current.token, conversationIds: [conversationId!], modes: 'stream' });
    const pool = await current.db();
    const status = (runId: string) => pool.oneFirst(sql.type(z.object({ status: z.string() }))`SELECT status FROM runs WHERE id = ${runId}`);
    let pauses = 0;
    let paused: ServiceProcess = current.workers[0]!;
    const turns: TurnRecord[] = [];
    for (let i = 0; i < PAUSES; i++) {
      requestsThisPause = 0;
      const firstDelta = single.nextDelta();
      const turn = single.runTurn(conversationId!, 'stream');
      const record = await within(firstDelta, PATIENCE_MS, 'the first worker to stream');
      paused.signal('SIGSTOP');
      pauses++;
      // Another worker takes the turn over once the paused one's lock has expired, and finishes it.
      const rescuer = await current.spawnWorker({ concurrency: 1 });
      await eventually(async () => ((await status(record.runId!)) === 'completed' ? true : undefined), PATIENCE_MS, 'the rescuing worker to complete the turn');
      turns.push(await within(turn, PATIENCE_MS, 'the client stream to end'));
      // The stale attempt wakes, reads the rest of its (longer) answer and tries to write it; SIGTERM
      // then waits for that attempt to end, so everything it wrote is in place before the audit.
      paused.signal('SIGCONT');
      expect((await within(paused.stop(), PATIENCE_MS, 'the woken worker to drain')).code).toBe(143);
      paused = rescuer;
    }
    const audit = await auditFaultRun(current, single.records, { settleTimeoutMs: PATIENCE_MS, possibleReplies: [SHORT_REPLY] });
    const exits = await current.close();
    report('worker-pause', { pauses, lockMs: LOCK_MS }, audit, startedAt);
    expect(exits.map((exit) => exit.code)).toEqual([143, 143, 143]);
    // The client saw the rescuing attempt's answer, and so does the transcript (audited above).
    for (const turn of turns) expect(turn.final?.output_text).toBe(SHORT_REPLY);
    expectClean(audit);
  }, SCENARIO_TIMEOUT_MS);
});
