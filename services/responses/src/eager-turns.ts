import type { RunRow, StoredItem } from '@ic/schemas';
import type { Logger } from '@ic/telemetry';
import type { HistoryLoader } from './history';
import type { TurnScheduler } from './scheduler';
import type { TurnProcessor } from './turn.processor';

export interface EagerTurnsDeps {
  processor: TurnProcessor;
  history: HistoryLoader;
  scheduler: TurnScheduler;
  logger: Logger;
  /** Turns this process runs for its own accepts at once (its worker's concurrency). */
  capacity: number;
  /** How long the queue waits before another worker may take over a turn this process went quiet on. */
  leaseMs: number;
}

/**
 * Runs turns in the process that accepted them ("eager start", as Temporal starts workflows on the
 * worker that asked): a process that is both API and worker claims a head turn's first attempt in the
 * accept statement itself and calls the model at once, instead of a round trip through the queue, a
 * job pickup and a claim statement of its own. The run stays just as recoverable: its queue job is
 * enqueued with a lease delay (renewed while the turn runs), so if this process dies the job comes due
 * and a worker claims the run as a new attempt, fenced in Postgres and in the event log like any
 * stalled job.
 */
export class EagerTurns {
  private readonly running = new Set<Promise<void>>();
  private reserved = 0;
  private closed = false;

  constructor(private readonly deps: EagerTurnsDeps) {}

  /** Takes a slot for one accept that may claim its turn; give it back with `release` if it did not. */
  reserve(): boolean {
    const { capacity, processor } = this.deps;
    if (this.closed || this.running.size + this.reserved >= capacity || processor.inFlight >= capacity) return false;
    this.reserved += 1;
    return true;
  }

  release(): void {
    this.reserved -= 1;
  }

  /** Runs a turn claimed with its accept (consumes the reservation). The lease job is enqueued before anything waits. */
  start(run: RunRow, input: StoredItem[], transcriptLength: number | null): void {
    this.reserved -= 1;
    const turn = this.run(run, input, transcriptLength).finally(() => this.running.delete(turn));
    this.running.add(turn);
  }

  /** Takes no more turns and waits for the running ones. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.running]);
  }

  private async run(run: RunRow, input: StoredItem[], transcriptLength: number | null): Promise<void> {
    const { scheduler, logger, leaseMs } = this.deps;
    const leased = scheduler.enqueueLease(run, leaseMs).then(
      () => true,
      (error: unknown) => {
        logger.warn({ err: error, runId: run.id }, 'could not enqueue the lease of a turn run by its accepting process; the sweeper covers it');
        return false;
      },
    );
    const renewal = setInterval(() => {
      void scheduler.renewLease(run.id, leaseMs).then(
        (renewed) => {
          if (!renewed) logger.warn({ runId: run.id }, 'the lease of a turn run by its accepting process lapsed; a worker may take it over');
        },
        (error: unknown) => logger.warn({ err: error, runId: run.id }, 'could not renew the lease of a turn run by its accepting process'),
      );
    }, Math.max(1, Math.floor(leaseMs / 3)));
    renewal.unref();
    const { history } = this.deps;
    const loadHistory = async () => ({ prior: run.conversation_id ? await history.priorOfAccepted(run.conversation_id, transcriptLength ?? 0) : [], input });
    // Called before this function first waits: the turn is registered for cancels before the client has its id.
    const outcome = await this.deps.processor.runClaimed(run, loadHistory).finally(() => clearInterval(renewal));
    // In order on the same connection as the lease's enqueue, and never before it.
    await leased;
    const settle = outcome === 'finished' ? scheduler.endLease(run.id) : scheduler.handOver(run.id);
    await settle.catch((error: unknown) =>
      logger.warn({ err: error, runId: run.id, outcome }, 'could not settle the lease of a turn run by its accepting process; the queue or the sweeper will'),
    );
  }
}
