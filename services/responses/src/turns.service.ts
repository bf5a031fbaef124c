import { createHash } from 'node:crypto';
import { UniqueIntegrityConstraintViolationError } from 'slonik';
import { createConversationsRepo, createItemsRepo, createRunsRepo, type DatabasePool } from '@ic/db';
import type { QueueBackend, StreamEvent } from '@ic/queue';
import {
  apiError,
  ConversationId,
  inputItemId,
  newId,
  normaliseInput,
  RunId,
  TERMINAL_STATUSES,
  toItemList,
  UNSUPPORTED_RESPONSE_PARAMS,
  defaultRunParams,
  presentItem,
  type CreateResponseBody,
  type RunParams,
  type RunRow,
  type SmithRow,
} from '@ic/schemas';
import { turnMetrics, type Logger } from '@ic/telemetry';
import { EventSequencer, isTerminalEvent, rebuildEvents, terminalEventType } from './events';
import { presentOutputItems, presentResponse, type ResponseObject } from './presenter';
import type { TurnScheduler } from './scheduler';

/** `queue` (default): a turn that arrives while another runs waits its turn. `reject`: OpenAI's conversation_locked. */
export type BusyMode = 'queue' | 'reject';

export interface AcceptOptions {
  idempotencyKey: string | null;
  busyMode: BusyMode;
  /** X-Stainless-Retry-Count: ≥ 1 means the openai client is re-sending a request it got no answer to. */
  clientRetryCount: number;
}

export interface TurnsServiceDeps {
  pool: DatabasePool;
  backend: QueueBackend;
  scheduler: TurnScheduler;
  logger: Logger;
  retryDedupWindowMs: number;
  eventsTtlSeconds: number;
}

/** How often a waiting request double-checks Postgres while following a run's events. */
const POSTGRES_RECHECK_MS = 2000;

const responseNotFound = (id: string) => apiError('not_found', { resource: 'Response', id }, { param: 'response_id' });

/** The API side of a turn: validate, write durably, enqueue; read runs back; cancel; delete. */
export class TurnsService {
  constructor(private readonly deps: TurnsServiceDeps) {}

  /**
   * Writes the run (queued) and its input items in one transaction before anything is acknowledged,
   * then enqueues. A failure after the commit is never reported as a retryable status: the sweeper
   * picks the run up, so the client's automatic retry cannot create a second turn.
   */
  async accept(smith: SmithRow, body: CreateResponseBody, options: AcceptOptions): Promise<{ run: RunRow; replayed: boolean }> {
    for (const rule of UNSUPPORTED_RESPONSE_PARAMS) {
      if (rule.when(body)) throw apiError('unsupported_parameter', { param: rule.param, why: rule.why });
    }
    if (body.conversation != null && body.previous_response_id != null) {
      throw apiError('invalid_request', { message: 'previous_response_id cannot be used together with conversation; the conversation already carries the history.' }, { param: 'previous_response_id' });
    }
    const conversationId = body.conversation == null ? null : typeof body.conversation === 'string' ? body.conversation : body.conversation.id;
    if (conversationId !== null && !ConversationId.safeParse(conversationId).success) {
      throw apiError('invalid_value', { param: 'conversation', reason: `'${conversationId}'. Expected a conversation id that begins with 'cnv_'` });
    }
    if (body.previous_response_id != null && !RunId.safeParse(body.previous_response_id).success) {
      throw apiError('invalid_value', { param: 'previous_response_id', reason: `'${body.previous_response_id}'. Expected a response id that begins with 'run_'` });
    }
    if (!this.deps.backend.isAvailable()) {
      // Refused before anything is written, so the client's automatic retry is safe.
      throw apiError('queue_unavailable');
    }
    const requestHash = createHash('sha256').update(JSON.stringify({ smith: smith.id, body })).digest('hex');
    const runs = createRunsRepo(this.deps.pool);

    if (options.idempotencyKey) {
      const existing = await runs.findByIdempotencyKey(smith.id, options.idempotencyKey);
      if (existing) return { run: this.sameRequestOrConflict(existing, requestHash), replayed: true };
    } else if (options.clientRetryCount > 0 && this.deps.retryDedupWindowMs > 0) {
      const original = await runs.findRecentByRequestHash(smith.id, requestHash, Date.now() - this.deps.retryDedupWindowMs);
      if (original) return { run: original, replayed: true };
    }

    const input = normaliseInput(body.input);
    const runId = newId('run');
    let run: RunRow;
    try {
      run = await this.deps.pool.transaction(async (tx) => {
        const txRuns = createRunsRepo(tx);
        let conversationSeq: number | null = null;
        if (conversationId !== null) {
          conversationSeq = await createConversationsRepo(tx).takeNextRunSeq(smith.id, conversationId);
          if (conversationSeq === null) throw apiError('not_found', { resource: 'Conversation', id: conversationId }, { param: 'conversation' });
          if (options.busyMode === 'reject' && (await txRuns.hasOpenRun(conversationId))) {
            throw apiError('conversation_locked');
          }
        }
        if (body.previous_response_id != null) {
          const previous = await txRuns.findForSmith(smith.id, body.previous_response_id);
          if (!previous || previous.status === 'failed' || previous.status === 'cancelled') {
            throw apiError('previous_response_not_found', { id: body.previous_response_id });
          }
          if (!TERMINAL_STATUSES.includes(previous.status)) {
            throw apiError('previous_response_in_progress', { id: previous.id, status: previous.status });
          }
        }
        const inserted = await txRuns.insert({
          id: runId,
          tenantId: smith.tenant_id,
          smithId: smith.id,
          conversationId,
          conversationSeq,
          previousResponseId: body.previous_response_id ?? null,
          model: body.model || smith.default_model,
          instructions: body.instructions ?? null,
          params: runParams(body),
          inputCount: input.length,
          idempotencyKey: options.idempotencyKey,
          requestHash,
        });
        await createItemsRepo(tx).insertMany(
          input.map((item, index) => ({ id: inputItemId(runId, index), runId, direction: 'input' as const, ordinal: index, conversationId: null, position: null, body: item })),
        );
        return inserted;
      });
    } catch (error) {
      if (error instanceof UniqueIntegrityConstraintViolationError && options.idempotencyKey) {
        const existing = await runs.findByIdempotencyKey(smith.id, options.idempotencyKey);
        if (existing) return { run: this.sameRequestOrConflict(existing, requestHash), replayed: true };
      }
      throw error;
    }
    turnMetrics().accepted.add(1);
    await this.announce(run);
    return { run, replayed: false };
  }

  private sameRequestOrConflict(existing: RunRow, requestHash: string): RunRow {
    if (existing.request_hash !== requestHash) {
      throw apiError('idempotency_key_reused');
    }
    return existing;
  }

  /** Starts the run's event log with response.created and enqueues it; failures are left to the sweeper. */
  private async announce(run: RunRow): Promise<void> {
    const sequencer = new EventSequencer(0);
    sequencer.emit('response.created', { response: presentResponse(run, []) });
    try {
      await this.deps.backend.events.append(run.id, sequencer.take());
      await this.deps.scheduler.schedule(run);
    } catch (error) {
      this.deps.logger.warn({ err: error, runId: run.id }, 'run committed but not enqueued; the sweeper will pick it up');
    }
  }

  async get(smith: SmithRow, id: string): Promise<ResponseObject> {
    const run = await this.requireRun(smith, id);
    return this.present(run);
  }

  async present(run: RunRow): Promise<ResponseObject> {
    const rows = TERMINAL_STATUSES.includes(run.status) ? await createItemsRepo(this.deps.pool).listByRun(run.id) : [];
    return presentResponse(run, presentOutputItems(rows));
  }

  /** Loads a run by id whatever its storage state (a store:false run is readable only by its own request). */
  async presentById(runId: string): Promise<ResponseObject> {
    const run = await createRunsRepo(this.deps.pool).find(runId);
    if (!run) throw responseNotFound(runId);
    return this.present(run);
  }

  async requireRun(smith: SmithRow, id: string): Promise<RunRow> {
    if (!RunId.safeParse(id).success) throw responseNotFound(id);
    const run = await createRunsRepo(this.deps.pool).findForSmith(smith.id, id);
    if (!run) throw responseNotFound(id);
    return run;
  }

  /**
   * Waits until the run is finished (or `timeoutMs` passes) by following its event log, checking
   * Postgres now and then so a lost event never strands the caller. Returns the final response when
   * the terminal event carried it (null otherwise: read it from Postgres).
   */
  async waitUntilFinished(runId: string, timeoutMs: number, isCancelled: () => boolean = () => false): Promise<ResponseObject | null> {
    const deadline = Date.now() + timeoutMs;
    const runs = createRunsRepo(this.deps.pool);
    let after = -1;
    let checkedAt = 0;
    while (Date.now() < deadline && !isCancelled()) {
      // The event log says when the run ends; Postgres is asked only now and then, in case an event was lost.
      if (Date.now() - checkedAt >= POSTGRES_RECHECK_MS) {
        const run = await runs.find(runId);
        if (!run || TERMINAL_STATUSES.includes(run.status)) return null;
        checkedAt = Date.now();
      }
      let events: StreamEvent[] = [];
      try {
        events = await this.deps.backend.events.read(runId, after, Math.min(POSTGRES_RECHECK_MS, Math.max(0, deadline - Date.now())));
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 500));
        checkedAt = 0;
      }
      for (const event of events) {
        after = event.sequence_number;
        // The terminal event carries the response as stamped, built after the commit.
        if (isTerminalEvent(event)) return (event.response as ResponseObject | undefined) ?? null;
      }
    }
    return null;
  }

  /**
   * The events to relay after `afterSequence`, waiting up to `blockMs`. When the live log is gone
   * (expired, or Redis lost it) and the run is finished, the stream is rebuilt from Postgres.
   */
  async eventsAfter(run: RunRow, afterSequence: number, blockMs: number): Promise<{ events: StreamEvent[]; finished: boolean }> {
    const events = await this.deps.backend.events.read(run.id, afterSequence, blockMs);
    if (events.length > 0) return { events, finished: events.some(isTerminalEvent) };
    const latest = await createRunsRepo(this.deps.pool).find(run.id);
    if (!latest || !TERMINAL_STATUSES.includes(latest.status)) return { events: [], finished: false };
    // Finished: anything still in the log would have been returned above unless it raced the stamp.
    const late = await this.deps.backend.events.read(run.id, afterSequence, 0);
    if (late.length > 0) return { events: late, finished: late.some(isTerminalEvent) };
    if ((await this.deps.backend.events.lastSequence(run.id)) >= 0) return { events: [], finished: true };
    const rows = await createItemsRepo(this.deps.pool).listByRun(run.id);
    const rebuilt = rebuildEvents(presentResponse(latest, presentOutputItems(rows)), rows.filter((row) => row.direction === 'output'));
    return { events: rebuilt.filter((event) => event.sequence_number > afterSequence), finished: true };
  }

  /** Cancels a queued or running turn. Any turn may be cancelled here, not only background ones. */
  async cancel(smith: SmithRow, id: string): Promise<ResponseObject> {
    const run = await this.requireRun(smith, id);
    if (run.status === 'cancelled') return this.present(run);
    if (TERMINAL_STATUSES.includes(run.status)) {
      throw apiError('response_not_cancellable', { status: run.status });
    }
    const runs = createRunsRepo(this.deps.pool);
    const cancelledWhileQueued = await runs.cancelIfQueued(run.id);
    if (cancelledWhileQueued) {
      const response = await this.present(cancelledWhileQueued);
      try {
        const sequencer = new EventSequencer((await this.deps.backend.events.lastSequence(run.id)) + 1);
        sequencer.emit(terminalEventType('cancelled'), { response });
        await this.deps.backend.events.append(run.id, sequencer.take());
        await this.deps.backend.events.expire(run.id, this.deps.eventsTtlSeconds);
        if (run.conversation_id) await this.deps.scheduler.kickConversation(run.conversation_id);
      } catch (error) {
        this.deps.logger.warn({ err: error, runId: run.id }, 'cancelled run could not be announced');
      }
      return response;
    }
    await runs.requestCancel(run.id);
    await this.deps.backend.signals.publishCancel(run.id);
    await this.waitUntilFinished(run.id, 10000);
    return this.present((await runs.find(run.id))!);
  }

  async delete(smith: SmithRow, id: string): Promise<{ id: string; object: 'response'; deleted: true }> {
    const run = await this.requireRun(smith, id);
    if (!TERMINAL_STATUSES.includes(run.status)) {
      throw apiError('response_in_progress', { id, status: run.status });
    }
    await createRunsRepo(this.deps.pool).softDelete(smith.id, id);
    return { id, object: 'response', deleted: true };
  }

  async listInputItems(smith: SmithRow, id: string, query: { limit: number; order: 'asc' | 'desc'; after?: string }) {
    const run = await this.requireRun(smith, id);
    const items = createItemsRepo(this.deps.pool);
    let afterKey: number | undefined;
    if (query.after) {
      const anchor = await items.findInRun(run.id, query.after);
      if (!anchor || anchor.direction !== 'input') throw apiError('invalid_after', { kind: 'input item', after: query.after, within: `response '${id}'` });
      afterKey = anchor.ordinal;
    }
    const rows = await items.listRunPage(run.id, 'input', { order: query.order, limit: query.limit, afterKey });
    return toItemList(rows.slice(0, query.limit).map(presentItem), rows.length > query.limit);
  }
}

function runParams(body: CreateResponseBody): RunParams {
  const defaults = defaultRunParams();
  return {
    temperature: body.temperature ?? defaults.temperature,
    top_p: body.top_p ?? defaults.top_p,
    max_output_tokens: body.max_output_tokens ?? defaults.max_output_tokens,
    tools: (body.tools as Array<Record<string, unknown>> | null | undefined) ?? defaults.tools,
    tool_choice: body.tool_choice ?? defaults.tool_choice,
    parallel_tool_calls: body.parallel_tool_calls ?? defaults.parallel_tool_calls,
    text: { ...defaults.text, ...(body.text?.format ? { format: body.text.format } : {}), ...(body.text?.verbosity ? { verbosity: body.text.verbosity } : {}) },
    reasoning: { ...defaults.reasoning, ...(body.reasoning?.effort ? { effort: body.reasoning.effort } : {}) },
    metadata: body.metadata ?? defaults.metadata,
    user: body.user ?? defaults.user,
    safety_identifier: body.safety_identifier ?? defaults.safety_identifier,
    store: body.store ?? defaults.store,
    background: body.background ?? defaults.background,
    truncation: body.truncation ?? defaults.truncation,
  };
}
