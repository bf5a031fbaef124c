import { createHash } from 'node:crypto';
import { UniqueIntegrityConstraintViolationError } from 'slonik';
import { createItemsRepo, createRunsRepo, type AcceptResult, type DatabasePool } from '@ic/db';
import { isDependencyUnavailable } from '@ic/http';
import { parseLoggedEvent, type EventCursor, type LoggedEvent, type QueueBackend } from '@ic/queue';
import {
  apiError,
  ConversationId,
  inputItemId,
  ItemId,
  newId,
  normaliseInput,
  RunId,
  TERMINAL_STATUSES,
  toItemList,
  UNSUPPORTED_RESPONSE_PARAMS,
  defaultRunParams,
  presentItem,
  type CreateResponseBody,
  type ItemReference,
  type RunParams,
  type RunRow,
  type SmithRow,
  type StoredItem,
} from '@ic/schemas';
import { turnMetrics, type Logger } from '@ic/telemetry';
import { isTerminalEvent } from './events';
import { presentOutputItems, presentResponse, type ResponseObject } from './presenter';
import type { EagerTurns } from './eager-turns';
import type { RunLifecycle } from './run-lifecycle';
import type { TurnScheduler } from './scheduler';

/** `queue` (default): a turn that arrives while another runs waits its turn. `reject`: OpenAI's conversation_locked. */
export type BusyMode = 'queue' | 'reject';

export interface AcceptOptions {
  idempotencyKey: string | null;
  busyMode: BusyMode;
  /** X-Stainless-Retry-Count: ≥ 1 means the openai client is re-sending a request it got no answer to. */
  clientRetryCount: number;
  /**
   * The caller will relay the new run's events: a cursor on its log is opened (subscribed) while the
   * accept statement runs, so the relay starts without a round trip of its own.
   */
  follow?: boolean;
}

export interface TurnsServiceDeps {
  pool: DatabasePool;
  backend: QueueBackend;
  scheduler: TurnScheduler;
  lifecycle: RunLifecycle;
  logger: Logger;
  retryDedupWindowMs: number;
  /**
   * A non-streaming request whose run was committed keeps waiting through Postgres/Redis failures this
   * long (default 30 s, so a short outage still ends in the finished response), then answers with the
   * run as last known, like a background response.
   */
  waitOutageGraceMs?: number;
}

/**
 * How often a waiting request double-checks Postgres while following a run's events (a safety net
 * for a lost event; the log itself says when the run ends). Not at the start: the caller has just
 * written or read the run.
 */
const POSTGRES_RECHECK_MS = 5000;
const DEFAULT_WAIT_OUTAGE_GRACE_MS = 30000;
/** How long an accept whose statement failed on a broken connection keeps asking whether it committed. */
const ACCEPT_DOUBT_RESOLVE_MS = 10000;

const responseNotFound = (id: string) => apiError('not_found', { resource: 'Response', id }, { param: 'response_id' });

/** The API side of a turn: validate, write durably, enqueue; read runs back; cancel; delete. */
export class TurnsService {
  private eager: EagerTurns | null = null;

  constructor(private readonly deps: TurnsServiceDeps) {}

  /** This process also executes turns: head turns it accepts are claimed in the accept and run here. */
  runAcceptedTurnsWith(eager: EagerTurns): void {
    this.eager = eager;
  }

  /** Those turns go through the queue again (unless a newer runner took over). */
  stopRunningAcceptedTurns(eager: EagerTurns): void {
    if (this.eager === eager) this.eager = null;
  }

  /**
   * Writes the run (queued, or claimed for this process when it runs the turns it accepts) and its
   * input items in one statement before anything is acknowledged, then enqueues (or starts) it. A
   * failure after the commit is never reported as a retryable status: the sweeper picks the run up,
   * so the client's automatic retry cannot create a second turn.
   */
  async accept(smith: SmithRow, body: CreateResponseBody, options: AcceptOptions): Promise<{ run: RunRow; replayed: boolean; cursor?: EventCursor }> {
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

    // A reused Idempotency-Key is recognised by the accept statement itself.
    if (!options.idempotencyKey && options.clientRetryCount > 0 && this.deps.retryDedupWindowMs > 0) {
      const original = await runs.findRecentByRequestHash(smith.id, requestHash, Date.now() - this.deps.retryDedupWindowMs);
      if (original) return { run: original, replayed: true };
    }

    const input = await this.resolveItemReferences(smith, normaliseInput(body.input));
    const runId = newId('run');
    // Subscribed beside the statement; handed over only for the run this request created.
    let cursor: EventCursor | undefined = options.follow ? this.deps.backend.events.follow(runId, -1, { fresh: true }) : undefined;
    // A slot for running the turn here, if this process also executes turns and has room: given back
    // (finally) unless the accept claimed the turn and it started.
    let eagerSlot = this.eager?.reserve() ? this.eager : null;
    try {
      const accepted = await this.acceptStatement(smith, body, options, runId, conversationId, input, requestHash, eagerSlot !== null);
      if (accepted.replayed) return accepted;
      if (accepted.claimed && eagerSlot) {
        // Started before anything else waits: the model call goes out while the log and the lease are written.
        eagerSlot.start(accepted.run, input, accepted.transcriptLength);
        eagerSlot = null;
      }
      // The first append (response.created) must find the subscription active, or the cursor would miss
      // it; without one (Redis blinked) the relay opens its own cursor, which reads the log first.
      if (cursor && !(await cursor.ready().then(() => true, () => false))) {
        cursor.close();
        cursor = undefined;
      }
      turnMetrics().accepted.add(1);
      await this.announce(accepted.run, accepted.isHead, accepted.claimed);
      const result = { run: accepted.run, replayed: false, cursor };
      cursor = undefined;
      return result;
    } finally {
      eagerSlot?.release();
      cursor?.close();
    }
  }

  /** The accept statement and what its outcome means; throws the client's error for refusals. */
  private async acceptStatement(
    smith: SmithRow,
    body: CreateResponseBody,
    options: AcceptOptions,
    runId: string,
    conversationId: string | null,
    input: StoredItem[],
    requestHash: string,
    claimIfHead: boolean,
  ): Promise<{ run: RunRow; replayed: true } | { run: RunRow; replayed: false; isHead: boolean; claimed: boolean; transcriptLength: number | null }> {
    const runs = createRunsRepo(this.deps.pool);
    let accepted: AcceptResult;
    try {
      // One statement, atomic on its own: turn number, busy check, run and input items.
      accepted = await runs.accept({
        id: runId,
        tenantId: smith.tenant_id,
        smithId: smith.id,
        conversationId,
        previousResponseId: body.previous_response_id ?? null,
        model: body.model || smith.default_model,
        instructions: body.instructions ?? null,
        params: runParams(body),
        inputCount: input.length,
        idempotencyKey: options.idempotencyKey,
        requestHash,
        busyMode: options.busyMode,
        input: input.map((item, index) => ({ id: inputItemId(runId, index), body: item })),
        claimIfHead,
      });
    } catch (error) {
      if (error instanceof UniqueIntegrityConstraintViolationError && options.idempotencyKey) {
        const existing = await runs.findByIdempotencyKey(smith.id, options.idempotencyKey);
        if (existing) return { run: this.sameRequestOrConflict(existing, requestHash), replayed: true };
      }
      // The connection broke around the statement (e.g. an admin shutdown, 57P01): it may have committed
      // before the reply was lost. A 503 tells the client nothing was saved, so make sure first.
      const committed = isDependencyUnavailable(error) ? await this.findAfterCommitInDoubt(runId) : null;
      if (!committed) throw error;
      this.deps.logger.warn({ err: error, runId }, 'accept statement failed after it committed; answering with the run');
      // Claimed or not, nobody runs it yet: `announce` schedules it, and a worker claims the next attempt.
      return { run: committed, replayed: false, isHead: false, claimed: false, transcriptLength: null };
    }
    switch (accepted.outcome) {
      case 'replayed':
        return { run: this.sameRequestOrConflict(accepted.run, requestHash), replayed: true };
      case 'conversation_not_found':
        throw apiError('not_found', { resource: 'Conversation', id: conversationId ?? '' }, { param: 'conversation' });
      case 'conversation_locked':
        throw apiError('conversation_locked');
      case 'previous_response_not_found':
        throw apiError('previous_response_not_found', { id: body.previous_response_id ?? '' });
      case 'previous_response_in_progress':
        throw apiError('previous_response_in_progress', { id: body.previous_response_id ?? '', status: accepted.previousStatus ?? 'open' });
    }
    // Claimed with the accept: the run's first attempt is this process's to run.
    const claimed = claimIfHead && accepted.run.status === 'in_progress';
    return { run: accepted.run, replayed: false, isHead: accepted.isHead, claimed, transcriptLength: accepted.transcriptLength };
  }

  /**
   * Replaces each `item_reference` with a copy of the item it names, so the run's input is stored (and
   * later replayed) as ordinary items and the worker never sees a reference. Only items this smith can
   * read resolve; an unknown id and another smith's id get the same 400, so nothing leaks.
   */
  private async resolveItemReferences(smith: SmithRow, input: Array<StoredItem | ItemReference>): Promise<StoredItem[]> {
    const ids = input.flatMap((item) => (item.type === 'item_reference' && ItemId.safeParse(item.id).success ? [item.id] : []));
    const found = new Map<string, StoredItem>();
    if (ids.length > 0) {
      for (const row of await createItemsRepo(this.deps.pool).findReadableBodies(smith.id, ids)) found.set(row.id, row.body);
    }
    return input.map((item, index) => {
      if (item.type !== 'item_reference') return item;
      const body = found.get(item.id);
      if (!body) throw apiError('item_not_found', { id: item.id }, { param: `input[${index}].id` });
      return body;
    });
  }

  private sameRequestOrConflict(existing: RunRow, requestHash: string): RunRow {
    if (existing.request_hash !== requestHash) {
      throw apiError('idempotency_key_reused');
    }
    return existing;
  }

  /**
   * The run, if the accept statement committed although its caller saw an error; null when it did not
   * (or Postgres stayed out of reach for ACCEPT_DOUBT_RESOLVE_MS: then the openai client's retry with
   * the same body is still matched to the original run by its request hash, see `accept`).
   */
  private async findAfterCommitInDoubt(runId: string): Promise<RunRow | null> {
    const deadline = Date.now() + ACCEPT_DOUBT_RESOLVE_MS;
    for (let delay = 100; ; delay = Math.min(delay * 2, 1000)) {
      try {
        return await createRunsRepo(this.deps.pool).find(runId);
      } catch {
        if (Date.now() + delay > deadline) return null;
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  /**
   * Starts the run's event log with response.created and enqueues it; failures are left to the sweeper.
   * A run claimed with its accept needs neither: its attempt's first write starts the log (created,
   * in_progress and its first output in one append, within ANNOUNCE_BY_MS_AFTER_ACCEPT, sooner than
   * the relay would hold a lone response.created), and EagerTurns enqueues its lease job.
   */
  private async announce(run: RunRow, isHead: boolean, claimed: boolean): Promise<void> {
    if (claimed) return;
    try {
      // Side by side, not one after the other: the append is sent first on the same connection, so a worker
      // almost always finds response.created in the log; if it gets there first (a cluster node, a retry) it
      // writes response.created itself and this append is refused, harmlessly.
      // A run behind an unfinished turn is enqueued by that turn's stamp; the scheduler re-checks the head then.
      await Promise.all([this.deps.lifecycle.announceQueued(run), isHead ? this.deps.scheduler.enqueueRun(run) : this.deps.scheduler.schedule(run)]);
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
   * The answer to a non-streaming request whose run is committed: the finished response, or — when the
   * wait times out, the client left, or Postgres/Redis keep failing — the run as last known (its id and
   * status, like a background response). Never throws: once the run is committed, no answer may be a
   * status the client retries (that would run the turn twice).
   */
  async answerCommitted(run: RunRow, timeoutMs: number, isCancelled: () => boolean = () => false): Promise<ResponseObject> {
    let lastKnown: RunRow = run;
    try {
      const final = await this.waitUntilFinished(run.id, timeoutMs, isCancelled, (status) => {
        lastKnown = { ...lastKnown, status };
      });
      if (final) return final;
      return await this.presentById(run.id);
    } catch (error) {
      this.deps.logger.warn({ err: error, runId: run.id }, 'answering a committed run as last known: its outcome could not be read');
      return presentResponse(lastKnown, []);
    }
  }

  /**
   * Waits until the run is finished (or `timeoutMs` passes) by following its event log, checking
   * Postgres now and then so a lost event never strands the caller. Returns the final response when
   * the terminal event carried it (null otherwise: read it from Postgres). Rides out short Postgres or
   * Redis failures; throws once they have lasted `waitOutageGraceMs` without a break.
   */
  async waitUntilFinished(
    runId: string,
    timeoutMs: number,
    isCancelled: () => boolean = () => false,
    onStatus: (status: RunRow['status']) => void = () => undefined,
  ): Promise<ResponseObject | null> {
    const deadline = Date.now() + timeoutMs;
    const runs = createRunsRepo(this.deps.pool);
    const cursor = this.deps.backend.events.follow(runId, -1);
    let checkedAt = Date.now();
    let failingSince: number | null = null;
    const failed = async (error: unknown) => {
      failingSince ??= Date.now();
      if (Date.now() - failingSince >= (this.deps.waitOutageGraceMs ?? DEFAULT_WAIT_OUTAGE_GRACE_MS)) throw error;
      await new Promise((resolve) => setTimeout(resolve, 500));
    };
    try {
      while (Date.now() < deadline && !isCancelled()) {
        // The event log says when the run ends; Postgres is asked only now and then, in case an event was lost.
        if (Date.now() - checkedAt >= POSTGRES_RECHECK_MS) {
          try {
            const run = await runs.find(runId);
            failingSince = null;
            if (!run || TERMINAL_STATUSES.includes(run.status)) return null;
            onStatus(run.status);
            checkedAt = Date.now();
          } catch (error) {
            await failed(error);
            continue;
          }
        }
        let events: LoggedEvent[] = [];
        try {
          events = await cursor.next(Math.min(POSTGRES_RECHECK_MS, Math.max(0, deadline - Date.now())));
          failingSince = null;
        } catch (error) {
          checkedAt = 0;
          await failed(error);
        }
        for (const event of events) {
          if (event.type === 'response.in_progress') onStatus('in_progress');
          // The terminal event carries the response as stamped, built from the committed row (parsed only here).
          if (isTerminalEvent(event)) return (parseLoggedEvent(event).response as ResponseObject | undefined) ?? null;
        }
      }
      return null;
    } finally {
      cursor.close();
    }
  }

  /** A cursor on the run's event log, after `afterSequence`. */
  follow(runId: string, afterSequence: number): EventCursor {
    return this.deps.backend.events.follow(runId, afterSequence);
  }

  /**
   * The next events for a relay's cursor, waiting up to `blockMs`. When the log stayed quiet that long
   * and Postgres says the run is finished, the rest comes from RunLifecycle.eventsToEnd: the log as it
   * is if it has its ending, completed from Postgres if not, rebuilt from Postgres if it expired.
   * `quietExpected` skips that question for a short wait whose silence is expected (the relay
   * holding the stream's head): such a wait is only `quiet`.
   */
  async eventsAfter(run: RunRow, cursor: EventCursor, blockMs: number, options: { quietExpected?: boolean } = {}): Promise<{ events: LoggedEvent[]; finished: boolean; quiet: boolean }> {
    const events = await cursor.next(blockMs, undefined, { quietExpected: options.quietExpected });
    if (events.length > 0) return { events, finished: events.some(isTerminalEvent), quiet: false };
    if (options.quietExpected) return { events: [], finished: false, quiet: true };
    const latest = await createRunsRepo(this.deps.pool).find(run.id);
    if (!latest || !TERMINAL_STATUSES.includes(latest.status)) return { events: [], finished: false, quiet: true };
    const rest = await this.deps.lifecycle.eventsToEnd(latest, cursor.position);
    return { events: rest.map((event) => ({ type: event.type, sequence_number: event.sequence_number, json: JSON.stringify(event) })), finished: true, quiet: false };
  }

  /** Cancels a queued or running turn. Any turn may be cancelled here, not only background ones. */
  async cancel(smith: SmithRow, id: string): Promise<ResponseObject> {
    const run = await this.requireRun(smith, id);
    if (run.status === 'cancelled') return this.present(run);
    if (TERMINAL_STATUSES.includes(run.status)) {
      throw apiError('response_not_cancellable', { status: run.status });
    }
    const runs = createRunsRepo(this.deps.pool);
    const cancelledWhileQueued = await this.deps.lifecycle.cancelQueued(run.id);
    if (cancelledWhileQueued) return this.present(cancelledWhileQueued);
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
