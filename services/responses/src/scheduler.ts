import { createRunsRepo, type DatabasePool } from '@ic/db';
import type { QueueBackend } from '@ic/queue';
import { turnMetrics, type Logger } from '@ic/telemetry';

export const TURN_QUEUE = 'turns';

/**
 * Decides which run may execute next. Only the oldest unfinished run of a conversation is ever
 * enqueued, and stamping a run enqueues the next one, so turns run strictly in acceptance order
 * without polling. Job ids are run ids, so enqueueing twice is harmless.
 */
export class TurnScheduler {
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweeping = false;

  constructor(
    private readonly pool: DatabasePool,
    private readonly backend: QueueBackend,
    private readonly logger: Logger,
  ) {}

  async enqueueRun(runId: string): Promise<void> {
    await this.backend.queue.enqueue('turn.execute.v1', { runId }, { jobId: runId });
  }

  /** Enqueues the conversation's head run, if any. */
  async kickConversation(conversationId: string): Promise<void> {
    const head = await createRunsRepo(this.pool).headOfConversation(conversationId);
    if (head) await this.enqueueRun(head.id);
  }

  async schedule(run: { id: string; conversation_id: string | null }): Promise<void> {
    if (run.conversation_id) await this.kickConversation(run.conversation_id);
    else await this.enqueueRun(run.id);
  }

  /**
   * Postgres is the source of truth: a run that was accepted but has no live job (Redis lost it, or
   * the enqueue after commit failed) is enqueued again. Safe to run in every replica.
   */
  startSweeper(intervalMs: number, minAgeMs: number): void {
    this.sweepTimer = setInterval(() => void this.sweepOnce(minAgeMs), intervalMs);
    this.sweepTimer.unref();
  }

  async sweepOnce(minAgeMs: number): Promise<number> {
    if (this.sweeping) return 0;
    this.sweeping = true;
    let requeued = 0;
    try {
      const runIds = await createRunsRepo(this.pool).listRunnableOlderThan(minAgeMs, 200);
      for (const runId of runIds) {
        if (await this.backend.queue.isPending(TURN_QUEUE, runId)) continue;
        await this.enqueueRun(runId);
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
