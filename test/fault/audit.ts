/**
 * The fault suite's verdict on a run, read from Postgres (the source of truth), the run event logs in
 * Redis, replays through the API, and what each client saw. Every count here must be 0.
 */
import { sql } from '@ic/db';
import { createRedis, RedisKeys } from '@ic/queue';
import { createLogger } from '@ic/telemetry';
import { TERMINAL_STATUSES } from '@ic/schemas';
import { z } from 'zod';
import type { FaultTopology } from './topology';
import type { SeenEvent, TurnRecord } from './load';

export interface FaultCounts {
  /** Accepted (committed) turns whose run is not `completed` once the faults have healed. */
  neverCompleted: number;
  /** A turn run twice, a transcript position used twice or skipped, an output stored twice or not at all. */
  duplicated: number;
  /** Streams (live, or replayed after the run finished) that ended without a terminal or error event. */
  streamsWithoutTerminal: number;
  /** Requests answered 5xx/429/408/409 (or not at all) although their turn had been committed. */
  retryableAfterCommit: number;
  /** A client's final response (finalResponse() or the JSON body) that differs from what Postgres stamped. */
  finalMismatch: number;
  /** Event logs (in Redis, or replayed) with gaps, two terminals, events after the terminal, or interleaved attempts. */
  badEventLogs: number;
}

export interface AuditResult {
  counts: FaultCounts;
  turns: number;
  committed: number;
  refused: number;
  streamsChecked: number;
  /** Live streams that ended with an `error` event (allowed; their runs are then checked by replay). */
  streamErrorEvents: number;
  /** One line per problem found, for the failure message. */
  problems: string[];
}

export interface AuditOptions {
  /** How long committed runs get to finish once the faults have healed. */
  settleTimeoutMs: number;
  /** Every text the fake model can answer with: a stamped output that is none of them was duplicated or mixed up. */
  possibleReplies: string[];
}

interface Stamped {
  id: string;
  status: string;
  text: string;
  outputIds: string[];
}

const TERMINAL_EVENTS = new Set(['response.completed', 'response.incomplete', 'response.failed']);
const RETRYABLE = (status: number | null) => status === null || status === 408 || status === 409 || status === 429 || status >= 500;

const RunRow = z.object({ id: z.string(), conversation_id: z.string().nullable(), conversation_seq: z.number().nullable(), status: z.string(), input_count: z.number(), output_count: z.number() });
const InputRow = z.object({ run_id: z.string(), marker: z.string().nullable() });
const ItemRow = z.object({ id: z.string(), run_id: z.string(), direction: z.string(), conversation_id: z.string().nullable(), position: z.number().nullable(), ordinal: z.number(), body: z.unknown() });

function messageText(body: unknown): string {
  const content = (body as { content?: Array<{ type?: string; text?: string }> }).content ?? [];
  return content.filter((part) => part.type === 'output_text').map((part) => part.text ?? '').join('');
}

/**
 * Checks one run's event sequence: contiguous sequence numbers from 0, exactly one
 * terminal event and nothing after it, the terminal's status as stamped, and the attempt that
 * finished (everything after the last `response.in_progress`) telling exactly the stamped text.
 * A stored log may be `partial` (its tail is rebuilt from Postgres when relayed): then it may stop
 * before its terminal event, but what it holds must still be a consistent beginning of the run.
 */
export function eventLogProblems(events: readonly SeenEvent[], stamped: Stamped, where: string, options: { partial?: boolean } = {}): string[] {
  const problems: string[] = [];
  if (events.length === 0) return [`${where}: no events`];
  const first = events[0]!.sequence_number;
  if (first !== 0) problems.push(`${where}: starts at sequence ${first}`);
  const gap = events.findIndex((event, index) => event.sequence_number !== first + index);
  if (gap >= 0) problems.push(`${where}: sequence ${events[gap]!.sequence_number} at position ${gap} (expected ${first + gap})`);
  const terminals = events.filter((event) => TERMINAL_EVENTS.has(event.type) || event.type === 'error');
  const last = events.at(-1)!;
  const ended = TERMINAL_EVENTS.has(last.type);
  if (terminals.length > 1 || (terminals.length === 1 && !ended)) {
    problems.push(`${where}: terminal events ${terminals.map((event) => `${event.sequence_number}:${event.type}`).join(', ')} in ${events.length} events (last ${last.sequence_number}:${last.type})`);
  } else if (!ended && !options.partial) problems.push(`${where}: ends with ${last.sequence_number}:${last.type}`);
  if (ended && last.response?.status !== stamped.status) problems.push(`${where}: terminal says ${last.response?.status}, Postgres ${stamped.status}`);
  if (stamped.status === 'completed' || stamped.status === 'incomplete') {
    const lastAttempt = events.map((event) => event.type).lastIndexOf('response.in_progress');
    const text = events.slice(lastAttempt + 1).filter((event) => event.type === 'response.output_text.delta').map((event) => event.delta ?? '').join('');
    // Cut short, the last attempt must have been telling the stamped answer (the fake model is deterministic per scenario).
    const consistent = ended || !options.partial ? text === stamped.text : stamped.text.startsWith(text);
    if (!consistent) {
      problems.push(`${where}: deltas of the last attempt say ${JSON.stringify(text.slice(0, 120))}, Postgres ${JSON.stringify(stamped.text.slice(0, 120))}`);
    }
  }
  return problems;
}

export async function auditFaultRun(topology: FaultTopology, records: readonly TurnRecord[], options: AuditOptions): Promise<AuditResult> {
  const pool = await topology.db();
  const problems: string[] = [];
  const counts: FaultCounts = { neverCompleted: 0, duplicated: 0, streamsWithoutTerminal: 0, retryableAfterCommit: 0, finalMismatch: 0, badEventLogs: 0 };
  let streamsChecked = 0;
  const note = (count: keyof FaultCounts, problem: string) => {
    counts[count]++;
    problems.push(`${count}: ${problem}`);
  };

  // Which turns were committed: each turn's input carries its marker.
  const inputs = await pool.any(sql.type(InputRow)`SELECT run_id, body->'content'->0->>'text' AS marker FROM items WHERE direction = 'input'`);
  const runsByMarker = new Map<string, Set<string>>();
  for (const input of inputs) {
    if (input.marker === null) continue;
    const runs = runsByMarker.get(input.marker) ?? new Set<string>();
    runs.add(input.run_id);
    runsByMarker.set(input.marker, runs);
  }
  const committedRunIds = [...new Set(records.flatMap((record) => [...(runsByMarker.get(record.marker) ?? [])]))];

  // Let every committed run finish (workers retry, the sweeper re-enqueues lost jobs).
  const deadline = Date.now() + options.settleTimeoutMs;
  for (;;) {
    const open = await pool.anyFirst(sql.type(z.object({ id: z.string() }))`
      SELECT id FROM runs WHERE status <> ALL(${sql.array([...TERMINAL_STATUSES], 'text')})`);
    if (open.length === 0 || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }

  const runs = new Map((await pool.any(sql.type(RunRow)`SELECT id, conversation_id, conversation_seq, status, input_count, output_count FROM runs`)).map((run) => [run.id, run]));
  const items = await pool.any(sql.type(ItemRow)`SELECT id, run_id, direction, conversation_id, position, ordinal, body FROM items ORDER BY run_id, ordinal`);
  const stamped = new Map<string, Stamped>();
  for (const run of runs.values()) {
    const outputs = items.filter((item) => item.run_id === run.id && item.direction === 'output');
    stamped.set(run.id, { id: run.id, status: run.status, text: outputs.map((item) => messageText(item.body)).join(''), outputIds: outputs.map((item) => item.id) });
  }

  // 1. Accepted turns that never complete.
  for (const runId of committedRunIds) {
    const run = runs.get(runId)!;
    if (run.status !== 'completed') note('neverCompleted', `${runId} is ${run.status}`);
  }

  // 2. Duplicates: a turn committed twice, transcript positions, outputs.
  for (const record of records) {
    const found = runsByMarker.get(record.marker);
    if (found && found.size > 1) note('duplicated', `turn ${record.marker} was committed as ${found.size} runs: ${[...found].join(', ')}`);
    if (found && record.runId && !found.has(record.runId)) note('duplicated', `client saw run ${record.runId} for turn ${record.marker}, Postgres has ${[...found].join(', ')}`);
  }
  const byConversation = new Map<string, Array<z.infer<typeof ItemRow>>>();
  for (const item of items) {
    if (item.conversation_id === null || item.position === null) continue;
    byConversation.set(item.conversation_id, [...(byConversation.get(item.conversation_id) ?? []), item]);
  }
  for (const [conversationId, transcript] of byConversation) {
    transcript.sort((a, b) => a.position! - b.position!);
    transcript.forEach((item, index) => {
      if (item.position !== index) note('duplicated', `${conversationId}: item ${item.id} at position ${item.position}, expected ${index}`);
    });
    const runOrder = [...new Set(transcript.map((item) => item.run_id))].map((id) => runs.get(id)!);
    runOrder.forEach((run, index) => {
      if (index > 0 && run.conversation_seq! <= runOrder[index - 1]!.conversation_seq!) note('duplicated', `${conversationId}: run ${run.id} is out of turn order in the transcript`);
    });
  }
  for (const run of runs.values()) {
    const own = items.filter((item) => item.run_id === run.id);
    const inTranscript = own.filter((item) => item.position !== null);
    const outputs = own.filter((item) => item.direction === 'output');
    const addsToTranscript = run.status === 'completed' || run.status === 'incomplete';
    if (outputs.length !== (addsToTranscript ? run.output_count : 0)) note('duplicated', `${run.id} (${run.status}) has ${outputs.length} output items, output_count ${run.output_count}`);
    if (run.conversation_id && inTranscript.length !== (addsToTranscript ? run.input_count + run.output_count : 0)) {
      note('duplicated', `${run.id} (${run.status}) has ${inTranscript.length} items in the transcript`);
    }
    const text = stamped.get(run.id)!.text;
    if (addsToTranscript && !options.possibleReplies.includes(text)) note('duplicated', `${run.id} stamped an output the model never gave: ${JSON.stringify(text.slice(0, 160))}`);
  }

  // 3 and 4. What each client saw.
  for (const record of records) {
    const committed = [...(runsByMarker.get(record.marker) ?? [])];
    const run = committed.length > 0 ? stamped.get(committed[0]!) : undefined;
    if (record.mode === 'stream') {
      if (record.events.length > 0) streamsChecked++;
      if (record.ending === 'eof') note('streamsWithoutTerminal', `live stream of ${record.runId ?? record.marker} ended after ${record.events.at(-1)?.sequence_number}:${record.events.at(-1)?.type}`);
      // The API process is never hurt here, so a connection it drops mid-stream is a stream cut short too.
      if (record.ending === 'dropped') note('streamsWithoutTerminal', `live stream of ${record.runId ?? record.marker} was cut after ${record.events.at(-1)?.sequence_number}:${record.events.at(-1)?.type}: ${record.failure}`);
      if (record.ending === 'terminal' && run) {
        for (const problem of eventLogProblems(record.events, run, `live stream of ${run.id}`)) note('badEventLogs', problem);
      }
    }
    if (run && record.ending === 'refused' && RETRYABLE(record.httpStatus)) {
      note('retryableAfterCommit', `${record.mode} turn ${run.id} (committed) was answered ${record.httpStatus ?? 'with no response'}: ${record.failure}`);
    }
    if (record.mode === 'stream' && record.ending === 'terminal' && record.final === null) note('finalMismatch', `finalResponse() of ${run?.id ?? record.marker} failed: ${record.failure}`);
    if (record.final && run && TERMINAL_STATUSES.includes(record.final.status as (typeof TERMINAL_STATUSES)[number])) {
      const seen = record.final;
      if (seen.id !== run.id || seen.status !== run.status || seen.output_text !== run.text || seen.outputIds.join() !== run.outputIds.join()) {
        note('finalMismatch', `${record.mode} client got ${JSON.stringify({ ...seen, output_text: seen.output_text.slice(0, 80) })}, Postgres stamped ${JSON.stringify({ ...run, text: run.text.slice(0, 80) })}`);
      }
    }
  }

  // 5. Every committed run replayed through the API (as a client resuming after an error event or a
  // dropped connection would), and its event log as stored in Redis.
  const responses = topology.responses();
  const events = await topology.eventLog();
  const redis = createRedis(topology.options.redis.url, 'worker', createLogger('fault-audit', 'silent'));
  for (const runId of committedRunIds) {
    const run = stamped.get(runId)!;
    const replayed: SeenEvent[] = [];
    let final: Stamped | undefined;
    try {
      const stream = responses.responses.stream({ response_id: runId });
      for await (const event of stream) {
        const seen = event as unknown as SeenEvent;
        replayed.push({ type: seen.type, sequence_number: seen.sequence_number, response: seen.response, delta: seen.delta });
      }
      const response = await stream.finalResponse();
      final = { id: response.id, status: response.status ?? '', text: response.output_text, outputIds: response.output.map((item) => item.id ?? '') };
    } catch (error) {
      note('badEventLogs', `replay of ${runId} failed: ${(error as Error).message}`);
    }
    streamsChecked++;
    const last = replayed.at(-1);
    if (!last || !(TERMINAL_EVENTS.has(last.type) || last.type === 'error')) note('streamsWithoutTerminal', `replay of ${runId} ended after ${last?.sequence_number}:${last?.type}`);
    else for (const problem of eventLogProblems(replayed, run, `replay of ${runId}`)) note('badEventLogs', problem);
    if (final && (final.status !== run.status || final.text !== run.text || final.outputIds.join() !== run.outputIds.join())) {
      note('finalMismatch', `replay finalResponse() of ${runId} is ${final.status} ${JSON.stringify(final.text.slice(0, 80))}, Postgres ${run.status} ${JSON.stringify(run.text.slice(0, 80))}`);
    }
    const stored = (await events.read(runId, -1, 0)) as unknown as SeenEvent[];
    if (stored.length > 0) {
      streamsChecked++;
      for (const problem of eventLogProblems(stored, run, `event log of ${runId} in Redis`, { partial: true })) note('badEventLogs', problem);
      // A finished run's log must expire; -2 (no such key) while `stored` was just read would mean the name is wrong.
      const ttl = await redis.pttl(new RedisKeys(topology.prefix).runEvents(runId));
      if (ttl === -2) note('badEventLogs', `event log of ${runId} not found under its key name`);
      if (ttl === -1) note('badEventLogs', `event log of ${runId} in Redis never expires`);
    }
  }
  await redis.quit();

  return {
    counts,
    turns: records.length,
    committed: committedRunIds.length,
    refused: records.filter((record) => (runsByMarker.get(record.marker)?.size ?? 0) === 0).length,
    streamsChecked,
    streamErrorEvents: records.filter((record) => record.ending === 'error-event').length,
    problems,
  };
}
