import { z } from 'zod';
import type { JobName, JobPayload, UpstreamHold, UpstreamLimitStore } from '@ic/schemas';

/** One Responses streaming event as stored and relayed; `sequence_number` counts from 0 per run. */
export const StreamEvent = z.object({ type: z.string().min(1), sequence_number: z.number().int().min(0) }).passthrough();
export type StreamEvent = z.infer<typeof StreamEvent>;

export interface EnqueueOptions {
  /** Deterministic id: enqueueing the same id while that job exists is a no-op. */
  jobId?: string;
  delayMs?: number;
}

/** Producer side of the job queues. Fails fast (throws) when the backend is unreachable. */
export interface JobQueue {
  enqueue<N extends JobName>(name: N, payload: JobPayload<N>, options?: EnqueueOptions): Promise<void>;
  /** Whether a job with this id is waiting, delayed or running (false when missing, completed or failed). */
  isPending(queue: string, jobId: string): Promise<boolean>;
  /** Jobs of a queue not yet picked up (waiting, delayed, prioritized): the backlog autoscaling reads. */
  countWaiting(queue: string): Promise<number>;
  /**
   * Moves a delayed job's due time to `delayMs` from now (0: due at once). False when the job is not
   * delayed (missing, waiting, running or finished): nothing changes then.
   */
  postpone(queue: string, jobId: string, delayMs: number): Promise<boolean>;
  /** Removes the job unless it is running (then false, and it stays). A missing job counts as removed. */
  withdraw(queue: string, jobId: string): Promise<boolean>;
}

export interface JobContext {
  jobId: string;
  /** 1 for the first attempt. */
  attempt: number;
  /** No retry follows if this attempt throws. */
  isFinalAttempt: boolean;
}

export type JobHandler<N extends JobName> = (payload: JobPayload<N>, context: JobContext) => Promise<void>;
export type JobHandlers = { [N in JobName]?: JobHandler<N> };

/** Thrown by a handler to run the same job again after `delayMs` without spending an attempt. */
export class RetryLater extends Error {
  override name = 'RetryLater';
  constructor(readonly delayMs: number) {
    super(`retry in ${delayMs} ms`);
  }
}

/** Thrown by a handler for failures another attempt cannot fix. */
export class PermanentFailure extends Error {
  override name = 'PermanentFailure';
}

export interface WorkerHandle {
  /** Stops taking jobs and waits for running ones to finish. */
  close(): Promise<void>;
}

/** Who may append to a run's event log (see RunEventLog.append). */
export type AppendAuthority =
  /** A worker attempt: refused once a later attempt has begun (beginAttempt with a higher number). */
  | { attempt: number }
  /** Postgres says the run is finished; the writer completes the log from the committed row. */
  | { finished: true };

export type AppendResult =
  | { ok: true; lastSequence: number }
  /**
   * Nothing was written. `stale`: a later attempt owns the log. `closed`: it already ends with a
   * terminal event. `gap`: the first event does not follow the log's last (`lastSequence`) directly.
   */
  | { ok: false; reason: 'stale' | 'closed' | 'gap'; lastSequence: number };

/**
 * What an attempt shows as it begins: `response` as `response.in_progress` carries it (status
 * `in_progress`), written unless the log already ends with one (an attempt that showed nothing is
 * retried silently), and as `response.created` (status `queued`), written only into an empty log (the
 * API process usually wrote it first). The log numbers both where it ends.
 */
export interface AttemptAnnouncement {
  response: Record<string, unknown>;
  /**
   * The attempt's first events, appended right after the announcement in the same atomic step and
   * numbered on from it (their own `sequence_number`s are ignored): a worker that begins an attempt
   * with its first output pays one Redis call and one wake-up of the readers, not two.
   */
  firstEvents?: readonly StreamEvent[];
}

/** `lastSequence`: where the log ends, after the announcement when the attempt began. */
export type BeginAttemptResult = { ok: true; lastSequence: number } | { ok: false; reason: 'stale' | 'closed'; lastSequence: number };

export interface AppendOptions {
  authority: AppendAuthority;
  /** The batch ends with the run's terminal event: the log takes no further appends. */
  closes: boolean;
  /** Every append (re)sets the log's expiry to this many seconds from now, so every log expires. */
  ttlSeconds: number;
}

/**
 * An event as its log holds it: the JSON text exactly as appended, with its type and number beside it,
 * so a relay writes it out without parsing and re-serialising it. `parseLoggedEvent` gives the object.
 */
export interface LoggedEvent {
  type: string;
  sequence_number: number;
  json: string;
}

export const parseLoggedEvent = (event: LoggedEvent): StreamEvent => StreamEvent.parse(JSON.parse(event.json));

/**
 * One reader's position in a run's log. All cursors of a run in a process share one wake-up
 * subscription; appended batches usually arrive with the wake-up itself, so a live reader costs no
 * extra Redis round trip per batch.
 */
export interface EventCursor {
  /** The sequence number of the last event returned (the position given to `follow` until then). */
  readonly position: number;
  /** Resolves once the cursor hears every append as it happens (its wake-up subscription is active). */
  ready(): Promise<void>;
  /**
   * The events after the cursor, in order and contiguous (at most `limit`, default 1000), waiting up
   * to `blockMs` for some when there are none; an empty array means nothing came (or the cursor was
   * closed). Advances the cursor past what it returns. A wait that hears nothing makes the next read
   * check the log itself (a wake-up may have been lost), unless `quietExpected` says silence is the
   * likely outcome of this wait (a short one).
   */
  next(blockMs: number, limit?: number, options?: { quietExpected?: boolean }): Promise<LoggedEvent[]>;
  /** Stops following: a pending `next` resolves (empty) at once. */
  close(): void;
}

export interface FollowOptions {
  /**
   * The run did not exist before this call (its id was just minted): once `ready()` resolves, every
   * append is seen as it happens, so the first `next` need not read the log first.
   */
  fresh?: boolean;
}

/**
 * The append-only event log of each run, read by position. Each append is atomic and checked: the
 * batch must continue the log's sequence numbers exactly, the log must not be closed, and a worker's
 * append must come from the attempt that began last — so a stale attempt (a worker that woke after
 * its lock expired) can never interleave its events with the current one's. Readers follow from any
 * position (live relay, resume with starting_after, waiting for the end).
 */
export interface RunEventLog {
  append(runId: string, events: readonly StreamEvent[], options: AppendOptions): Promise<AppendResult>;
  /**
   * Fences the log for `attempt` (refused, writing nothing, if a later attempt already began or the log
   * is closed) and appends its announcement and `firstEvents`, numbered where the log ends, in the same
   * atomic step; tells where the log then ends, so the attempt can continue its numbering.
   */
  beginAttempt(runId: string, attempt: number, ttlSeconds: number, announcement: AttemptAnnouncement): Promise<BeginAttemptResult>;
  /** Events with sequence_number > afterSequence (at most `limit`, default 1000); waits up to `blockMs` when there are none yet. */
  read(runId: string, afterSequence: number, blockMs: number, limit?: number): Promise<StreamEvent[]>;
  /** A reader that follows the log from after `afterSequence` (live relays, waits for the end). */
  follow(runId: string, afterSequence: number, options?: FollowOptions): EventCursor;
  lastSequence(runId: string): Promise<number>;
  /** Keeps the run's events for `ttlSeconds` more, then drops them. */
  expire(runId: string, ttlSeconds: number): Promise<void>;
}

/**
 * Cross-process notifications: a run should stop (cancel); the model upstream asked one process to
 * back off (UpstreamHold, which every process calling that upstream honours: libs/model UpstreamHoldPeers).
 */
export interface RunSignals {
  publishCancel(runId: string): Promise<void>;
  onCancel(listener: (runId: string) => void): () => void;
  publishUpstreamHold(hold: UpstreamHold): Promise<void>;
  onUpstreamHold(listener: (hold: UpstreamHold) => void): () => void;
}

export interface QueueBackend {
  readonly kind: 'bullmq' | 'in-process';
  readonly queue: JobQueue;
  readonly events: RunEventLog;
  readonly signals: RunSignals;
  /** One mirror of each model's rate limits for every process (Redis); absent in-process, where the adapter's own mirror is the only one. */
  readonly upstreamLimits?: UpstreamLimitStore;
  startWorker(queue: string, handlers: JobHandlers, options: { concurrency: number }): WorkerHandle;
  /** False while the producer connection is down: enqueueing now would fail, so callers refuse work up front. */
  isAvailable(): boolean;
  ping(): Promise<void>;
  close(): Promise<void>;
}
