import { createItemsRepo, createRunsRepo, type DatabasePool, type RunOutcome } from '@ic/db';
import type { QueueBackend, StreamEvent } from '@ic/queue';
import type { RunRow, StoredItem } from '@ic/schemas';
import { turnMetrics, type Logger } from '@ic/telemetry';
import { completeLog, EventSequencer, inProgressSnapshot, isTerminalEvent, rebuildEvents, terminalEventType } from './events';
import { DEFAULT_STREAM_HEAD_HOLD_MS, FINISHED_EVENTS_TTL_SECONDS } from './env';
import type { ClaimedTurn } from './history';
import { outputItemWithId, presentOutputItems, presentResponse, type ResponseObject } from './presenter';
import type { TurnScheduler } from './scheduler';

/**
 * Deltas wait at most this long in the worker before they are written, merged into one event per item:
 * one Redis call and one SSE frame per window instead of one per model token. The first output of a
 * turn, a new item (tool-call boundaries) and the end are written at once.
 */
export const DELTA_FLUSH_WINDOW_MS = 20;
/** …or until this many characters are waiting. */
export const DELTA_FLUSH_MAX_CHARS = 2048;
/** A failed append is tried again this soon (or with the next batch, whichever comes first). */
const APPEND_RETRY_MS = 250;
/**
 * An attempt is fenced and announced (`response.in_progress`) with its first output, in one Redis call,
 * if that output comes within ANNOUNCE_ALONE_AFTER_MS of the claim; otherwise the announcement goes
 * alone. A real model's first token takes far longer, so for most turns it goes alone, and while the
 * relay still holds the stream's head (DEFAULT_STREAM_HEAD_HOLD_MS, 25 ms from `response.created`) it
 * must reach the relay in time to leave with it in one write: then it goes by ANNOUNCE_BY_MS_AFTER_ACCEPT
 * after the accept (at 20 ms after the claim, a third of slow-model streams got the two in two writes).
 * A turn claimed later than the hold (a busy queue, a retry) waits the full window: there is no write
 * left to share, only a Redis call to save.
 */
export const ANNOUNCE_ALONE_AFTER_MS = 10;
export const ANNOUNCE_BY_MS_AFTER_ACCEPT = 15;

/** How long a claimed attempt waits for its first output before announcing itself alone. */
export function announceDelayMs(acceptedAt: number, now: number): number {
  const sinceAccept = now - acceptedAt;
  // Past the relay's (default) hold of response.created, or a clock that makes no sense: the full window.
  if (sinceAccept >= DEFAULT_STREAM_HEAD_HOLD_MS || sinceAccept < 0) return ANNOUNCE_ALONE_AFTER_MS;
  return Math.min(ANNOUNCE_ALONE_AFTER_MS, Math.max(0, ANNOUNCE_BY_MS_AFTER_ACCEPT - sinceAccept));
}

export interface RunLifecycleDeps {
  pool: DatabasePool;
  backend: QueueBackend;
  scheduler: TurnScheduler;
  logger: Logger;
  /** Every append sets the run's event log to expire this long after it. */
  eventsTtlSeconds: number;
  /**
   * The append that closes a log sets it to expire this long after it instead (capped at
   * eventsTtlSeconds; default FINISHED_EVENTS_TTL_SECONDS): a finished run's log only serves exact
   * resumes, and replays after it are rebuilt from Postgres.
   */
  finishedEventsTtlSeconds?: number;
}

/** After a stamp commits: what the worker does next (history cache, title). */
export interface StampedRun {
  run: RunRow;
  /** Transcript position of the run's first input item (completed/incomplete conversation runs), else -1. */
  firstPosition: number;
  /** The conversation has no title yet. */
  untitled: boolean;
  /** The conversation's next unfinished run as the stamp saw it… */
  nextRunId: string | null;
  /** …unless a turn was accepted while the stamp ran: then ask again after the commit. */
  nextRunUnknown: boolean;
}

/** What a claimed turn replays: the transcript before it and the turn's own input. */
export interface TurnHistory {
  prior: StoredItem[];
  input: StoredItem[];
}

export type ClaimResult =
  | { kind: 'claimed'; run: RunRow; history: TurnHistory }
  /** An earlier turn of the conversation is unfinished: try again shortly. */
  | { kind: 'wait' }
  /** Nothing to run: finished (its event log was completed if it needed it), gone, or a later attempt owns it. */
  | { kind: 'nothing' };

/**
 * The one home of a run's lifecycle. Every transition — queued (accept), queued → in_progress
 * (claim), in_progress → completed | incomplete | failed | cancelled (stamp), queued → cancelled — is
 * written here together with the events that announce it. Postgres decides each transition; the
 * event log follows it:
 *
 * - the terminal event is built from the row the stamp committed (and the items it stored), and is
 *   appended in the same atomic batch as the …done events, closing the log;
 * - whoever finds a finished run whose log lacks that ending (a relay, a replay, a redelivered job)
 *   completes the log from Postgres (`finishLog`), so a stream always ends with the run's terminal
 *   event as Postgres has it;
 * - a worker's appends are fenced by attempt, so an attempt that lost its lock cannot write into the
 *   log of the attempt that replaced it.
 */
export class RunLifecycle {
  constructor(private readonly deps: RunLifecycleDeps) {}

  private get ttl(): number {
    return this.deps.eventsTtlSeconds;
  }

  private get finishedTtl(): number {
    return Math.min(this.deps.finishedEventsTtlSeconds ?? FINISHED_EVENTS_TTL_SECONDS, this.deps.eventsTtlSeconds);
  }

  /** After the accept transaction committed: the log starts with `response.created` (status queued). */
  async announceQueued(run: RunRow): Promise<void> {
    const sequencer = new EventSequencer(0);
    sequencer.emit('response.created', { response: presentResponse(run, []) });
    // A worker that got there first (attempt ≥ 1) already wrote it: the refusal is harmless.
    await this.deps.backend.events.append(run.id, sequencer.take(), { authority: { attempt: 0 }, closes: false, ttlSeconds: this.ttl });
  }

  /**
   * queued → in_progress for a new attempt: one statement, the claim and the history the turn replays.
   * The event log follows with the attempt's first write (`openAttempt`).
   */
  async claim(runId: string, claim: (runId: string) => Promise<ClaimedTurn>): Promise<ClaimResult> {
    const claimed = await claim(runId);
    if (claimed.outcome === 'waiting') return { kind: 'wait' };
    if (claimed.outcome !== 'claimed') {
      // A redelivered job of a finished run: its log may have lost its ending (the worker died or
      // Redis failed between the stamp and the terminal event), so complete it now.
      if (claimed.outcome === 'finished') {
        await this.finishLog(claimed.run).catch((error: unknown) => this.deps.logger.warn({ err: error, runId }, 'could not complete the event log of a finished run'));
      }
      return { kind: 'nothing' };
    }
    const { run, prior, input } = claimed;
    return { kind: 'claimed', run, history: { prior, input } };
  }

  /**
   * The event log of a claimed attempt. Its first write fences the log for the attempt and announces
   * it — `response.created` if the log is empty, `response.in_progress` unless the log already ends
   * with one (an attempt that showed nothing is retried silently) — together with the attempt's first
   * output, in one Redis call; nothing of the attempt is written before it.
   */
  openAttempt(run: RunRow): AttemptLog {
    return new AttemptLog(run, inProgressSnapshot(presentResponse(run, [])), this.deps.backend, this.deps.logger, { live: this.ttl, finished: this.finishedTtl });
  }

  /**
   * in_progress → terminal: the stamp (one transaction, only while this attempt owns the run), then the
   * log's ending — the attempt's last events, the …done events and the terminal event built from the
   * committed row — in one atomic append that closes the log. Null when another attempt owns the run.
   */
  async finish(
    attempt: AttemptLog,
    outcome: RunOutcome,
    outputs: ReadonlyArray<{ id: string; body: StoredItem }>,
  ): Promise<StampedRun | null> {
    const { run } = attempt;
    await attempt.drain();
    if (attempt.state === 'stale') return this.discardStale(run);
    const stamped = await this.stamp(run, outcome, outputs);
    if (!stamped) {
      attempt.detach();
      return this.discardStale(run);
    }
    turnMetrics().finished.add(1, { status: outcome.status });
    const response = presentResponse(
      stamped.run,
      outputs.map((output) => outputItemWithId(output.id, output.body)),
    );
    await attempt.close(response, () => this.finishLog(stamped.run, response));
    if (run.conversation_id) {
      // The stamp named the next run; only a turn accepted while it ran needs asking for again.
      if (stamped.nextRunUnknown) await this.deps.scheduler.kickConversation(run.conversation_id);
      else if (stamped.nextRunId) await this.deps.scheduler.enqueueRun({ id: stamped.nextRunId, conversation_id: run.conversation_id });
      if (stamped.run.status === 'completed' && stamped.untitled) await this.requestTitle(run.conversation_id);
    }
    return stamped;
  }

  private discardStale(run: RunRow): null {
    turnMetrics().staleAttempts.add(1);
    this.deps.logger.info({ runId: run.id, attempt: run.attempt }, 'another attempt owns this run; discarding this one');
    return null;
  }

  /** queued → cancelled, for a run no worker has claimed. Null when it is not queued any more. */
  async cancelQueued(runId: string): Promise<RunRow | null> {
    const cancelled = await createRunsRepo(this.deps.pool).cancelIfQueued(runId);
    if (!cancelled) return null;
    try {
      await this.finishLog(cancelled, presentResponse(cancelled, []));
      if (cancelled.conversation_id) await this.deps.scheduler.kickConversation(cancelled.conversation_id);
    } catch (error) {
      this.deps.logger.warn({ err: error, runId }, 'cancelled run could not be announced; readers complete its log from Postgres');
    }
    return cancelled;
  }

  /**
   * The stamp, in one statement: finish the run only while `run.attempt` owns it, then — for
   * completed and incomplete runs — give its input and output items their transcript positions and
   * bump the conversation's updated_at; it also names the conversation's next run. Null when another
   * attempt owns the run.
   */
  private async stamp(run: RunRow, outcome: RunOutcome, outputs: ReadonlyArray<{ id: string; body: StoredItem }>): Promise<StampedRun | null> {
    const stamped = await createRunsRepo(this.deps.pool).stamp({ run, outcome, outputs });
    if (!stamped) return null;
    return { ...stamped, firstPosition: stamped.firstPosition ?? -1 };
  }

  /** The response of a finished run as Postgres has it (row + stored output items). */
  async presentFinished(run: RunRow): Promise<ResponseObject> {
    const rows = await createItemsRepo(this.deps.pool).listByRun(run.id);
    return presentResponse(run, presentOutputItems(rows));
  }

  /**
   * Makes sure a finished run's event log ends with its terminal event: if it lacks the ending, the
   * missing tail (…done events as needed and the terminal event, from Postgres) is appended,
   * continuing its sequence numbers. Returns the complete log, or null when there is none (expired).
   */
  async finishLog(run: RunRow, known?: ResponseObject): Promise<StreamEvent[] | null> {
    const response = known ?? (await this.presentFinished(run));
    for (let tries = 0; tries < 3; tries++) {
      const log = await this.readLog(run.id);
      const last = log[log.length - 1];
      if (!last) return null;
      if (isTerminalEvent(last)) return log;
      const sequencer = new EventSequencer(last.sequence_number + 1);
      completeLog(log, response, sequencer);
      const tail = sequencer.take();
      const result = await this.deps.backend.events.append(run.id, tail, { authority: { finished: true }, closes: true, ttlSeconds: this.finishedTtl });
      if (result.ok) {
        this.deps.logger.info({ runId: run.id, appended: tail.length }, 'completed the event log of a finished run from Postgres');
        return [...log, ...tail];
      }
      // Someone appended meanwhile (most likely the stamping worker's own ending): read again.
    }
    throw new Error(`The event log of ${run.id} kept changing while it was being completed.`);
  }

  /**
   * The events of a finished run after `afterSequence`, ending with its terminal event: from its log
   * (completed first if needed), or rebuilt from Postgres when the log is gone. A reader that was
   * already part-way (afterSequence ≥ 0) through a log that is gone gets a `response.in_progress`
   * reset and the items whole, numbered on from its position, since what it saw cannot be matched.
   */
  async eventsToEnd(run: RunRow, afterSequence: number): Promise<StreamEvent[]> {
    const response = await this.presentFinished(run);
    const log = await this.finishLog(run, response);
    if (log) return log.filter((event) => event.sequence_number > afterSequence);
    if (afterSequence < 0) return rebuildEvents(response);
    const sequencer = new EventSequencer(afterSequence + 1);
    completeLog([], response, sequencer);
    return sequencer.take();
  }

  private async readLog(runId: string): Promise<StreamEvent[]> {
    const log: StreamEvent[] = [];
    for (;;) {
      const page = await this.deps.backend.events.read(runId, log.length > 0 ? log[log.length - 1]!.sequence_number : -1, 0, 1000);
      log.push(...page);
      if (page.length < 1000) return log;
    }
  }

  /** Keyed by conversation, so a burst of turns asks for one title; the titler re-checks before writing. */
  private async requestTitle(conversationId: string): Promise<void> {
    await this.deps.backend.queue.enqueue('titler.generate.v1', { conversationId }, { jobId: `title-${conversationId}` });
  }
}

/**
 * The event log as one attempt writes it. Its first write fences the log for the attempt and
 * announces it, with the attempt's first output (or alone, when the output is not there by
 * ANNOUNCE_BY_MS_AFTER_ACCEPT), and tells where the log ends; the rest is numbered on from there and appended under the
 * fence, with deltas held for a short window (DELTA_FLUSH_WINDOW_MS) so they leave in batches. A failed
 * write keeps its events for the next flush; a refusal stops live writing: of the fence (the log was
 * closed or fenced by a state Postgres does not have — Postgres gave this attempt the run, so it runs
 * without live events), `stale` (a newer attempt began — the worker stops), `gap`/`closed` (the log
 * moved on without us). The stamp later completes the log from Postgres where it can.
 */
export class AttemptLog {
  state: 'live' | 'stale' | 'detached' = 'live';
  /** The numbers of the events taken before the fence are placeholders: the fencing write numbers them where the log ends. */
  readonly events = new EventSequencer(0);
  private fenced = false;
  private chain: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private announceTimer: NodeJS.Timeout | null;
  private failing = false;
  private readonly staleListeners: Array<() => void> = [];

  constructor(
    readonly run: RunRow,
    /** The response `response.in_progress` carries. */
    private readonly announcement: Record<string, unknown>,
    private readonly backend: QueueBackend,
    private readonly logger: Logger,
    private readonly ttlSeconds: { live: number; finished: number },
  ) {
    // From the accept (Postgres's clock): a skewed clock only moves it within 0…ANNOUNCE_ALONE_AFTER_MS.
    this.announceTimer = setTimeout(() => {
      this.announceTimer = null;
      void this.flush();
    }, announceDelayMs(run.created_at, Date.now()));
  }

  /** Fences the log for this attempt now (with whatever is pending), unless that is done or under way. */
  fence(): Promise<void> {
    return this.fenced || this.state !== 'live' ? this.chain : this.flush();
  }

  onStale(listener: () => void): void {
    this.staleListeners.push(listener);
  }

  /**
   * Call after emitting: writes now when the batch carries structure (a new item, a lifecycle event —
   * so the first token goes out at once) or enough text, otherwise within the flush window. The
   * returned promise (when writing now) applies backpressure to the model stream.
   */
  nudge(): Promise<void> | null {
    if (this.events.size === 0) return null;
    if (this.events.holdsStructure || this.events.deltaChars >= DELTA_FLUSH_MAX_CHARS) return this.flush();
    this.timer ??= setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, DELTA_FLUSH_WINDOW_MS);
    return null;
  }

  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.chain = this.chain.then(() => this.appendPending());
    return this.chain;
  }

  /**
   * Waits for writes in flight, fencing the log first if no write did (a turn that ends without output);
   * what is pending after the fence stays for `close`, so the ending is one atomic batch.
   */
  async drain(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    // The fence's write joins the chain (or is already in it): waiting on it waits for every write.
    await this.fence();
  }

  detach(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.announceTimer) clearTimeout(this.announceTimer);
    this.timer = null;
    this.announceTimer = null;
    if (this.state === 'live') this.state = 'detached';
  }

  /**
   * Appends what is pending plus the terminal event for `response` and closes the log; if that cannot
   * be done in order (the log moved on, or Redis kept failing), `complete` finishes it from Postgres.
   */
  async close(response: ResponseObject, complete: () => Promise<unknown>): Promise<void> {
    await this.drain();
    // Unfenced only if Redis refused every try: then nothing of this attempt may be written.
    if (this.state === 'live' && this.fenced) {
      this.events.emit(terminalEventType(response.status as RunRow['status']), { response });
      const batch = this.events.take();
      for (let tries = 0; tries < 4; tries++) {
        try {
          const result = await this.backend.events.append(this.run.id, batch, { authority: { attempt: this.run.attempt }, closes: true, ttlSeconds: this.ttlSeconds.finished });
          if (result.ok || result.reason === 'closed') return;
          break;
        } catch (error) {
          if (tries === 3) this.logger.warn({ err: error, runId: this.run.id }, 'could not write the end of the event log; completing it from Postgres');
          else await new Promise((resolve) => setTimeout(resolve, 100 * 4 ** tries));
        }
      }
    }
    this.events.take();
    // A retry timer set by a failed write must not write after the ending.
    this.detach();
    // Best effort: whoever reads the log next (relay, replay, redelivered job) completes it the same way.
    await complete().catch((error: unknown) => this.logger.warn({ err: error, runId: this.run.id }, 'event log left without its ending for now; readers complete it from Postgres'));
  }

  private async appendPending(): Promise<void> {
    if (this.state !== 'live') {
      this.events.take();
      return;
    }
    const batch = this.events.take();
    if (!this.fenced) return this.fenceWith(batch);
    if (batch.length === 0) return;
    try {
      const result = await this.backend.events.append(this.run.id, batch, { authority: { attempt: this.run.attempt }, closes: false, ttlSeconds: this.ttlSeconds.live });
      this.failing = false;
      if (result.ok) return;
      if (result.reason === 'stale' || result.reason === 'closed') {
        // A newer attempt owns the run, or the run already ended: this attempt's work is moot.
        this.state = 'stale';
        this.logger.info({ runId: this.run.id, attempt: this.run.attempt }, 'a newer attempt owns the event log; stopping this one');
        for (const listener of this.staleListeners) listener();
      } else {
        this.state = 'detached';
        this.logger.warn({ runId: this.run.id, attempt: this.run.attempt, reason: result.reason, lastSequence: result.lastSequence }, 'event log moved on; live events stop, the stamp completes it');
      }
    } catch (error) {
      this.keepForRetry(batch, error);
    }
  }

  private async fenceWith(batch: StreamEvent[]): Promise<void> {
    if (this.announceTimer) {
      clearTimeout(this.announceTimer);
      this.announceTimer = null;
    }
    try {
      const result = await this.backend.events.beginAttempt(this.run.id, this.run.attempt, this.ttlSeconds.live, { response: this.announcement, firstEvents: batch });
      this.fenced = true;
      this.failing = false;
      if (result.ok) {
        this.events.continueAt(result.lastSequence + 1);
        return;
      }
      this.state = 'detached';
      this.logger.warn({ runId: this.run.id, attempt: this.run.attempt, reason: result.reason }, 'event log refused a new attempt; running it without live events');
    } catch (error) {
      this.keepForRetry(batch, error);
    }
  }

  /** Redis is unreachable: keep the events (merged with what follows) for the next flush. */
  private keepForRetry(batch: readonly StreamEvent[], error: unknown): void {
    this.events.giveBack(batch);
    if (!this.failing) this.logger.warn({ err: error, runId: this.run.id }, 'could not append run events; retrying with the next batch');
    this.failing = true;
    this.timer ??= setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, APPEND_RETRY_MS);
  }
}
