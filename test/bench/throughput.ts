/**
 * Streaming turns/s with an instant model: many conversations at once, each driving streamed turns back
 * to back through the single-process stack (deploy/dist/stack.js as a child process; BullMQ on Redis,
 * and the in-process queue), rounds alternating between the two. Per round, from the stack process
 * itself (probe.ts): CPU time, Postgres round trips and Redis round trips, divided by the turns done.
 * Afterwards every transcript is read back from Postgres: each conversation must hold exactly its
 * turns, in order, each answer replying to the full history before it (nothing lost or duplicated).
 * With BENCH_COMPARE_STACK another build of the stack (BullMQ) joins the alternation as `compared`.
 */
import { performance } from 'node:perf_hooks';
import OpenAI from 'openai';
import { sql } from '@ic/db';
import { createRedis, RedisKeys } from '@ic/queue';
import { createLogger } from '@ic/telemetry';
import { z } from 'zod';
import type { ProbeReading } from './probe';
import { cpuBetween, snapshotCpu, type MachineCpu } from './machine-cpu';
import { median, round2, roundOrders, verdict, type BenchOptions } from './harness';
import { stackKinds, startBenchUpstream, startStackPerQueue, tracedStacks, type BenchStack, type StackKind } from './services';

const FULL = { conversations: 48, roundMs: 5000, rounds: 3 };
const QUICK = { conversations: 2, roundMs: 300, rounds: 1 };
const TARGETS = { turnsPerSecond: 300, pgRoundTripsPerTurn: 8 };

export interface RoundFigures {
  turns: number;
  failed_turns: number;
  turns_per_second: number;
  cpu_ms_per_turn: number;
  pg_round_trips_per_turn: number;
  redis_round_trips_per_turn: number;
  redis_commands_per_turn: number;
  socket_writes_per_turn: number;
  /** WAL the whole Postgres cluster wrote over the round (pg_current_wal_lsn), per turn: what a turn costs the disk and every replica. */
  pg_wal_kb_per_turn: number;
  rss_mb: number;
  /** Redis memory one finished turn's event log (stream + fence hash) holds until it expires; BullMQ stacks only. */
  redis_event_log_kb_per_turn?: number;
  /** How long that log is kept after the turn ends (the largest expiry left on a sample of just-finished logs). */
  redis_event_log_kept_s?: number;
  /** Redis memory the event logs settle at when turns keep arriving at this round's rate: rate × kept × size. */
  redis_event_logs_mb_at_this_rate?: number;
  /** The whole machine over the round (Linux): how busy, and CPU ms per turn by process group. */
  machine_cpu?: MachineCpu;
}

/** What each conversation was sent, to check the transcripts against. */
export type Sent = Map<string, string[]>;

/**
 * One measured round: `conversations` fresh conversations drive streamed turns back to back for
 * `roundMs`; the stack's probe window spans exactly the round.
 */
export async function throughputRound(stack: BenchStack, conversations: number, roundMs: number, sent: Sent, upstreamPid?: number): Promise<RoundFigures> {
  const client = new OpenAI({ apiKey: stack.smithToken, baseURL: stack.baseURL, maxRetries: 0 });
  const ids = await Promise.all(Array.from({ length: conversations }, () => client.conversations.create().then((c) => c.id)));
  let turns = 0;
  let failed = 0;
  await stack.child.reset();
  const pids = { stack: stack.child.process.pid, load_generator: process.pid, upstream: upstreamPid };
  const walBefore = await walPosition(stack);
  const cpuBefore = snapshotCpu(pids);
  const started = performance.now();
  const deadline = started + roundMs;
  await Promise.all(
    ids.map(async (id, index) => {
      const inputs: string[] = [];
      sent.set(id, inputs);
      while (performance.now() < deadline) {
        const input = `c${index} t${inputs.length}`;
        const stream = await client.responses.create({ model: '', conversation: id, input, stream: true });
        let status = 'unfinished';
        for await (const event of stream) {
          if (event.type === 'response.completed' || event.type === 'response.failed' || event.type === 'response.incomplete') status = event.response.status ?? event.type;
        }
        if (status === 'completed') {
          inputs.push(input);
          turns++;
        } else {
          failed++;
          break; // a failed turn adds nothing to the transcript; stop this conversation so the check stays exact
        }
      }
    }),
  );
  const elapsed = performance.now() - started;
  const machineCpu = cpuBetween(cpuBefore, snapshotCpu(pids), turns);
  const walBytes = (await walPosition(stack)) - walBefore;
  const reading: ProbeReading = await stack.child.read();
  const per = (value: number) => round2(value / Math.max(1, turns));
  const turnsPerSecond = round2((turns / elapsed) * 1000);
  const eventLogs = stack.redis ? await sampleEventLogs(stack.redis) : null;
  return {
    turns,
    failed_turns: failed,
    turns_per_second: turnsPerSecond,
    cpu_ms_per_turn: per(reading.cpu_ms),
    pg_round_trips_per_turn: per(reading.pg_queries),
    redis_round_trips_per_turn: per(reading.redis_round_trips),
    redis_commands_per_turn: per(reading.redis_commands),
    socket_writes_per_turn: per(reading.socket_writes),
    pg_wal_kb_per_turn: per(walBytes / 1024),
    rss_mb: reading.rss_mb,
    ...(eventLogs
      ? {
          redis_event_log_kb_per_turn: eventLogs.kbPerRun,
          redis_event_log_kept_s: eventLogs.keptSeconds,
          redis_event_logs_mb_at_this_rate: round2((turnsPerSecond * eventLogs.keptSeconds * eventLogs.kbPerRun) / 1024),
        }
      : {}),
    ...(machineCpu ? { machine_cpu: machineCpu } : {}),
  };
}

/**
 * The event logs a stack left in Redis, read right after a round: MEMORY USAGE of a sample of runs'
 * stream + fence hash (all finished: every client has read its turn to the end), and the longest
 * expiry left on them, which for logs closed moments ago is how long a finished log is kept.
 */
async function sampleEventLogs(target: { url: string; prefix: string }): Promise<{ kbPerRun: number; keptSeconds: number } | null> {
  const keys = new RedisKeys(target.prefix);
  const redis = createRedis(target.url, 'worker', createLogger('bench', 'silent'));
  try {
    const runIds: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', keys.runEvents('run_*'), 'COUNT', 1000);
      for (const key of found) runIds.push(/\{(run_[^}]+)\}/.exec(key)![1]!);
      cursor = next;
    } while (cursor !== '0' && runIds.length < EVENT_LOG_SAMPLE);
    const pipeline = redis.pipeline();
    for (const runId of runIds.slice(0, EVENT_LOG_SAMPLE)) {
      pipeline.memory('USAGE', keys.runEvents(runId), 'SAMPLES', 0).memory('USAGE', keys.runLog(runId), 'SAMPLES', 0).ttl(keys.runEvents(runId));
    }
    const replies = ((await pipeline.exec()) ?? []).map(([error, value]) => {
      if (error) throw error;
      return value === null ? null : Number(value);
    });
    let bytes = 0;
    let logs = 0;
    let keptSeconds = 0;
    for (let k = 0; k < replies.length; k += 3) {
      const [stream, fence, ttl] = [replies[k], replies[k + 1], replies[k + 2]];
      // A log from an earlier round may expire between the scan and the read: it is not an empty one.
      if (stream === null || stream === undefined || fence === null || fence === undefined) continue;
      bytes += stream + fence;
      logs++;
      keptSeconds = Math.max(keptSeconds, ttl ?? 0);
    }
    return logs === 0 ? null : { kbPerRun: round2(bytes / logs / 1024), keptSeconds };
  } finally {
    await redis.quit();
  }
}
const EVENT_LOG_SAMPLE = 200;

/** The cluster's current WAL write position in bytes. */
async function walPosition(stack: BenchStack): Promise<number> {
  return stack.db.pool.oneFirst(sql.type(z.object({ bytes: z.number() }))`SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS bytes`);
}

const TranscriptRow = z.object({ conversation_id: z.string(), position: z.number(), role: z.string().nullable(), text: z.string().nullable() });

/** Reads every conversation's transcript back and compares it with what was sent; returns the problems found. */
export async function checkTranscripts(stack: BenchStack, sent: Sent): Promise<{ conversations: number; turns: number; items: number; problems: string[] }> {
  const rows = await stack.db.pool.any(sql.type(TranscriptRow)`
    SELECT conversation_id, position, body->>'role' AS role, body->'content'->0->>'text' AS text
    FROM items WHERE conversation_id IS NOT NULL ORDER BY conversation_id, position`);
  const byConversation = new Map<string, Array<z.infer<typeof TranscriptRow>>>();
  for (const row of rows) byConversation.set(row.conversation_id, [...(byConversation.get(row.conversation_id) ?? []), row]);
  const problems: string[] = [];
  let turns = 0;
  for (const [id, inputs] of sent) {
    turns += inputs.length;
    const items = byConversation.get(id) ?? [];
    if (items.length !== inputs.length * 2) problems.push(`${id}: ${items.length} items for ${inputs.length} turns`);
    inputs.forEach((input, turn) => {
      const [question, answer] = [items[2 * turn], items[2 * turn + 1]];
      if (question?.position !== 2 * turn || question.role !== 'user' || question.text !== input) {
        problems.push(`${id}: position ${2 * turn} is ${JSON.stringify(question)}, expected the user's "${input}"`);
      }
      // The fake model names how many messages it got and quotes the last one: the full history, then this input.
      const expected = `Fake reply to ${2 * turn + 1} messages. Last: "${input}".`;
      if (answer?.role !== 'assistant' || answer.text !== expected) problems.push(`${id}: answer ${turn} is ${JSON.stringify(answer?.text)}, expected ${JSON.stringify(expected)}`);
    });
  }
  return { conversations: sent.size, turns, items: rows.length, problems: problems.slice(0, 10) };
}

export async function run(options: BenchOptions): Promise<Record<string, unknown>> {
  const sizes = options.quick ? QUICK : FULL;
  const upstream = await startBenchUpstream();
  const stacks: Partial<Record<StackKind, BenchStack>> = {};
  const kinds = stackKinds();
  try {
    await startStackPerQueue(stacks, upstream.instant, options.profileDir, tracedStacks() ? upstream.sink : undefined);
    const rounds = Object.fromEntries(kinds.map((kind) => [kind, []])) as unknown as Record<StackKind, RoundFigures[]>;
    const sent = Object.fromEntries(kinds.map((kind) => [kind, new Map()])) as unknown as Record<StackKind, Sent>;
    // A short warm-up per stack (JIT, pools), not recorded.
    if (!options.quick) {
      for (const kind of kinds) await throughputRound(stacks[kind]!, sizes.conversations, 1000, sent[kind], upstream.child.process.pid);
    }
    // Balanced orders (harness.ts), so machine noise and each stack's after-effects hit every stack alike.
    for (const order of roundOrders(kinds, sizes.rounds, options.quick)) {
      for (const kind of order) {
        rounds[kind].push(await throughputRound(stacks[kind]!, sizes.conversations, sizes.roundMs, sent[kind], upstream.child.process.pid));
      }
    }
    const result: Record<string, unknown> = {
      method:
        'conversations drive streamed turns back to back (openai client) for a fixed time per round; per-turn figures are the stack process\'s own ' +
        '(probe: process.cpuUsage; pg Client.prototype.query calls; ioredis commands sent alone + pipelines/MULTI flushed, each one round trip) ' +
        'over the round divided by completed turns; pg_wal_kb_per_turn: WAL the Postgres cluster wrote over the round (pg_current_wal_lsn) per turn; medians over rounds; transcripts checked in Postgres afterwards. machine_cpu: the whole ' +
        'machine over the round from /proc (busy share of all cores; CPU ms per turn of the stack, this load generator, the upstream, every ' +
        'postgres and redis-server process, and the rest)',
      traced: tracedStacks() ? 'every stack exports traces (default sampler) to a dummy OTLP sink (BENCH_TRACED=1)' : false,
      conversations: sizes.conversations,
      round_ms: sizes.roundMs,
      targets: { turns_per_second_bullmq: TARGETS.turnsPerSecond, pg_round_trips_per_turn: TARGETS.pgRoundTripsPerTurn },
    };
    for (const queue of kinds) {
      const check = await checkTranscripts(stacks[queue]!, sent[queue]);
      result[queue] = { ...medianFigures(rounds[queue]), rounds: rounds[queue].length, transcript_check: { ...check, ok: check.problems.length === 0 } };
      if (check.problems.length > 0) process.exitCode = 1;
    }
    return result;
  } finally {
    await Promise.all(Object.values(stacks).map((stack) => stack.close()));
    await upstream.close();
  }
}

export function medianFigures(rounds: RoundFigures[]): RoundFigures {
  const keys = (Object.keys(rounds[0]!) as Array<keyof RoundFigures>).filter((key) => key !== 'machine_cpu');
  const figures = Object.fromEntries(keys.map((key) => [key, round2(median(rounds.map((round) => round[key] as number)))])) as unknown as RoundFigures;
  const machine = rounds.flatMap((round) => (round.machine_cpu ? [round.machine_cpu] : []));
  if (machine.length === rounds.length && machine.length > 0) {
    const groups = Object.keys(machine[0]!.ms_per_unit);
    figures.machine_cpu = {
      machine_busy: round2(median(machine.map((reading) => reading.machine_busy))),
      ms_per_unit: Object.fromEntries(groups.map((group) => [group, round2(median(machine.map((reading) => reading.ms_per_unit[group] ?? 0)))])),
    };
  }
  return figures;
}

type QueueResult = RoundFigures & { transcript_check: { ok: boolean; turns: number; problems: string[] } };

export function summarize(result: Record<string, unknown>): string[] {
  return (['bullmq', 'inprocess', 'compared'] as const).filter((queue) => result[queue]).map((queue) => {
    const figures = result[queue] as QueueResult;
    const target = queue === 'bullmq' ? ` (target ≥ ${TARGETS.turnsPerSecond}: ${verdict(figures.turns_per_second >= TARGETS.turnsPerSecond)})` : '';
    return (
      `streaming turns/s, ${queue}, ${result.conversations} conversations: ${figures.turns_per_second}${target}; ` +
      `CPU ${figures.cpu_ms_per_turn} ms/turn, Postgres ${figures.pg_round_trips_per_turn} round trips/turn (target ≤ ${TARGETS.pgRoundTripsPerTurn}: ${verdict(figures.pg_round_trips_per_turn <= TARGETS.pgRoundTripsPerTurn)}), ` +
      `Redis ${figures.redis_round_trips_per_turn} round trips/turn (${figures.redis_commands_per_turn} commands), Postgres WAL ${figures.pg_wal_kb_per_turn} KB/turn; ` +
      (figures.redis_event_log_kb_per_turn !== undefined
        ? `event logs ${figures.redis_event_log_kb_per_turn} KB/turn kept ${figures.redis_event_log_kept_s} s: ${figures.redis_event_logs_mb_at_this_rate} MB of Redis at this rate; `
        : '') +
      (figures.machine_cpu
        ? `machine ${Math.round(figures.machine_cpu.machine_busy * 100)} % busy, CPU ms/turn by process: ${Object.entries(figures.machine_cpu.ms_per_unit)
            .map(([group, ms]) => `${group} ${ms}`)
            .join(', ')}; `
        : '') +
      `transcripts ${figures.transcript_check.ok ? 'intact' : `BROKEN: ${figures.transcript_check.problems[0]}`}`
    );
  });
}
