import { createRunsRepo, type DatabasePool } from '@ic/db';
import type { QueueBackend } from '@ic/queue';
import { observeGauges, withoutTracing, type Logger } from '@ic/telemetry';
import { TURN_QUEUE } from './scheduler';

/**
 * Queue health, read at scrape time by the API processes (which also run the sweeper): one Redis
 * count and one query over the open runs per scrape, nothing on the turn path. Every API replica
 * reports the same values, so dashboards and autoscalers take max() across pods.
 */
export function observeQueueGauges(deps: { pool: DatabasePool; backend: QueueBackend; stuckAfterMs: number; logger: Logger }): void {
  let stats: Promise<{ oldest_queued_age_seconds: number; stuck: number } | undefined> | undefined;
  // Both Postgres gauges come from one query; the first callback of a scrape starts it, the second reuses it.
  const openRunStats = () =>
    (stats ??= withoutTracing(() => createRunsRepo(deps.pool).openRunStats(deps.stuckAfterMs))
      .catch((error: unknown) => {
        deps.logger.warn({ err: error }, 'queue gauges: reading open runs failed');
        return undefined;
      })
      .finally(() => setTimeout(() => (stats = undefined), 1000).unref()));
  observeGauges({
    ic_turns_waiting: {
      description: 'Turns queued and not yet picked up by a worker (waiting + delayed jobs)',
      read: () =>
        withoutTracing(() => deps.backend.queue.countWaiting(TURN_QUEUE)).catch((error: unknown) => {
          deps.logger.warn({ err: error }, 'queue gauges: counting waiting turns failed');
          return undefined;
        }),
    },
    ic_turn_oldest_waiting_age_seconds: {
      description: 'Age of the oldest run not yet claimed by a worker (0 when none)',
      unit: 's',
      read: async () => (await openRunStats())?.oldest_queued_age_seconds,
    },
    ic_runs_stuck: {
      description: 'Runs in progress for longer than RUN_STUCK_AFTER_MS',
      read: async () => (await openRunStats())?.stuck,
    },
  });
}

/** Saturation of one worker process: turns running now against its configured slots. */
export function observeWorkerGauges(deps: { inFlight: () => number; concurrency: number }): void {
  observeGauges({
    ic_worker_turns_in_flight: { description: 'Turns this worker process is executing', read: deps.inFlight },
    ic_worker_concurrency: { description: 'Turns this worker process may execute at once (WORKER_CONCURRENCY)', read: () => deps.concurrency },
  });
}
