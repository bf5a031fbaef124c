import { createRunsRepo, type DatabasePool } from '@ic/db';
import type { QueueBackend } from '@ic/queue';
import { turnMetrics, withoutTracing, type Logger } from '@ic/telemetry';

export const TURN_QUEUE = 'turns';

/** Open head runs one sweep checks. */
const SWEEP_PAGE = 200;

/**
 * Decides which run may execute next. Only the oldest unfinished run of a conversation is ever
 * enqueued, and stamping a run enqueues the next one, so turns run strictly in acceptance order
 * without polling. Job ids are run ids, so enqueueing twice is harmless.
 */
export class TurnScheduler {
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweeping = false;
  /** Where the next sweep continues (null: from the oldest). */
  private sweepCursor: { createdAt: number; id: string } | null = null;

  constructor(
    private readonly pool: DatabasePool,
    private readonly backend: QueueBackend,
    private readonly logger: Logger,
    /** Open head runs one sweep checks. */
    private readonly sweepPage = SWEEP_PAGE,
  ) {}

  /** Naming the run's conversation lets the worker's claim read only the transcript items its cache lacks. */
  async enqueueRun(runOrId: string | { id: string; conversation_id: string | null }, delayMs?: number): Promise<void> {
    const run = typeof runOrId === 'string' ? { id: runOrId, conversation_id: null } : runOrId;
    const payload = run.conversation_id ? { runId: run.id, conversationId: run.conversation_id } : { runId: run.id };
    await this.backend.queue.enqueue('turn.execute.v1', payload, { jobId: run.id, delayMs });
  }

  /**
   * A run this process executes itself (claimed with its accept) still gets its job, due only after
   * `leaseMs`: while it is pending the sweeper leaves the run alone, and if this process dies the job
   * comes due and a worker takes the run over as a new attempt. `renewLease` pushes it back while the
   * turn runs; `endLease` removes it once the run is finished, `handOver` makes it due at once.
   */
  enqueueLease(run: { id: string; conversation_id: string | null }, leaseMs: number): Promise<void> {
    return this.enqueueRun(run, leaseMs);
  }

  /** False when the lease had already come due (or is gone): another attempt may own the run now. */
  renewLease(runId: string, leaseMs: number): Promise<boolean> {
    return this.backend.queue.postpone(TURN_QUEUE, runId, leaseMs);
  }

  async endLease(runId: string): Promise<void> {
    await this.backend.queue.withdraw(TURN_QUEUE, runId);
  }

  async handOver(runId: string): Promise<void> {
    if (await this.backend.queue.postpone(TURN_QUEUE, runId, 0)) return;
    // No lease job (its enqueue failed, or it came due): queue the run the usual way.
    await this.enqueueRun(runId);
  }

  /** Enqueues the conversation's head run, if any. */
  async kickConversation(conversationId: string): Promise<void> {
    const head = await createRunsRepo(this.pool).headOfConversation(conversationId);
    if (head) await this.enqueueRun({ id: head.id, conversation_id: conversationId });
  }

  /** Enqueues a run that may be behind an unfinished turn of its conversation: only if it is the head by now. */
  async schedule(run: { id: string; conversation_id: string | null }): Promise<void> {
    if (run.conversation_id) await this.kickConversation(run.conversation_id);
    else await this.enqueueRun(run);
  }

  /**
   * Postgres is the source of truth: a run that was accepted but has no live job (Redis lost it, or
   * the enqueue after commit failed) is enqueued again. Safe to run in every replica.
   */
  startSweeper(intervalMs: number, minAgeMs: number): void {
    this.sweepTimer = setInterval(() => void this.sweepOnce(minAgeMs), intervalMs);
    this.sweepTimer.unref();
  }

  /**
   * Checks one page of open head runs (oldest first) and re-enqueues those without a live job. Each
   * sweep continues after the previous page and starts over at the end, so however many turns are
   * running (long model calls keep their runs open), every one is checked within a few sweeps, and
   * one sweep costs one Postgres query.
   */
  async sweepOnce(minAgeMs: number): Promise<number> {
    if (this.sweeping) return 0;
    this.sweeping = true;
    let requeued = 0;
    try {
      // The scan runs every few seconds in every API replica: traced only when it finds work (the enqueue).
      const heads = await withoutTracing(() => createRunsRepo(this.pool).listRunnableOlderThan(minAgeMs, this.sweepPage, this.sweepCursor));
      const last = heads.at(-1);
      this.sweepCursor = heads.length === this.sweepPage && last ? { createdAt: last.created_at, id: last.id } : null;
      const pending = await Promise.all(heads.map((run) => this.backend.queue.isPending(TURN_QUEUE, run.id)));
      for (const [index, run] of heads.entries()) {
        if (pending[index]) continue;
        await this.enqueueRun(run);
        requeued += 1;
      }
      if (requeued > 0) turnMetrics().sweeperRequeued.add(requeued);
      if (requeued > 0) this.logger.warn({ requeued }, 'sweeper re-enqueued runs that had no live job');
    } catch (error) {
      this.logger.warn({ err: error }, 'sweep failed');
    } finally {
      this.sweeping = false;
    }
    return requeued;
  }

  stopSweeper(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
  }
}
