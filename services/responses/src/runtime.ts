import type { Router } from 'express';
import type { Authenticator } from '@ic/auth';
import type { RateLimits } from '@ic/http';
import type { DatabasePool } from '@ic/db';
import type { ModelAdapter } from '@ic/model';
import type { QueueBackend, WorkerHandle } from '@ic/queue';
import type { Logger } from '@ic/telemetry';
import { EagerTurns } from './eager-turns';
import { HistoryLoader } from './history';
import { responsesRouter } from './responses.routes';
import { RunLifecycle } from './run-lifecycle';
import { TURN_QUEUE, TurnScheduler } from './scheduler';
import { TurnProcessor } from './turn.processor';
import { TurnsService } from './turns.service';

export interface ResponsesRuntimeDeps {
  pool: DatabasePool;
  backend: QueueBackend;
  authenticator: Authenticator;
  logger: Logger;
  model: ModelAdapter;
  resolveModel: (publicName: string) => string;
  eventsTtlSeconds: number;
  /** A finished run's event log expires this long after its closing append (RunLifecycle's default when absent). */
  finishedEventsTtlSeconds?: number;
  keepAliveMs: number;
  /** STREAM_HEAD_HOLD_MS (the relay's default when absent). */
  streamHeadHoldMs?: number;
  syncWaitMs: number;
  retryDedupWindowMs: number;
  /** Context budget (estimated tokens) for `truncation: "auto"`. */
  contextTokens: number;
  /** MODEL_BACKOFF_BUDGET_MS: how long a turn attempt may wait out the upstream's rate limit (TurnProcessor's default when absent). */
  modelBackoffBudgetMs?: number;
  rateLimits?: RateLimits;
  /** Item budget of each worker's history cache. */
  historyCacheItems?: number;
  /** How long a committed non-streaming request waits through Postgres/Redis failures (default 30 s). */
  waitOutageGraceMs?: number;
}

/** The responses service's parts, wired once; roles pick which of them run (HTTP API, turn workers, sweeper). */
export class ResponsesRuntime {
  readonly scheduler: TurnScheduler;
  readonly service: TurnsService;
  readonly lifecycle: RunLifecycle;
  private readonly http: ReturnType<typeof responsesRouter>;

  constructor(private readonly deps: ResponsesRuntimeDeps) {
    this.scheduler = new TurnScheduler(deps.pool, deps.backend, deps.logger);
    this.lifecycle = new RunLifecycle({
      pool: deps.pool,
      backend: deps.backend,
      scheduler: this.scheduler,
      logger: deps.logger,
      eventsTtlSeconds: deps.eventsTtlSeconds,
      finishedEventsTtlSeconds: deps.finishedEventsTtlSeconds,
    });
    this.service = new TurnsService({
      pool: deps.pool,
      backend: deps.backend,
      scheduler: this.scheduler,
      lifecycle: this.lifecycle,
      logger: deps.logger,
      retryDedupWindowMs: deps.retryDedupWindowMs,
      waitOutageGraceMs: deps.waitOutageGraceMs,
    });
    this.http = responsesRouter(this.service, deps.authenticator, {
      keepAliveMs: deps.keepAliveMs,
      streamHeadHoldMs: deps.streamHeadHoldMs,
      syncWaitMs: deps.syncWaitMs,
      logger: deps.logger,
      rateLimits: deps.rateLimits,
    });
  }

  router(): Router {
    return this.http.router;
  }

  /** Ends open SSE relays so an HTTP server can close; the runs themselves continue. */
  closeStreams(): void {
    this.http.closeStreams();
  }

  /**
   * Starts executing turns; `close()` on the handle stops intake and waits for running turns.
   * `eagerLeaseMs`: this process's API also runs the head turns it accepts itself (EagerTurns), each
   * covered by a queue job due after this lease; absent, every turn goes through the queue.
   */
  startWorker(concurrency: number, options: { eagerLeaseMs?: number } = {}): WorkerHandle & { inFlight(): number } {
    const history = new HistoryLoader(this.deps.pool, this.deps.historyCacheItems);
    const processor = new TurnProcessor({
      backend: this.deps.backend,
      lifecycle: this.lifecycle,
      model: this.deps.model,
      resolveModel: this.deps.resolveModel,
      history,
      logger: this.deps.logger,
      contextTokens: this.deps.contextTokens,
      modelBackoffBudgetMs: this.deps.modelBackoffBudgetMs,
    });
    const eager =
      options.eagerLeaseMs === undefined
        ? null
        : new EagerTurns({ processor, history, scheduler: this.scheduler, logger: this.deps.logger, capacity: concurrency, leaseMs: options.eagerLeaseMs });
    if (eager) this.service.runAcceptedTurnsWith(eager);
    const worker = this.deps.backend.startWorker(TURN_QUEUE, { 'turn.execute.v1': processor.handle }, { concurrency });
    return {
      close: async () => {
        if (eager) this.service.stopRunningAcceptedTurns(eager);
        await Promise.all([worker.close(), eager?.close()]);
        processor.close();
        // Kept-alive upstream connections would hold the process open after the last turn.
        this.deps.model.close?.();
      },
      inFlight: () => processor.inFlight,
    };
  }
}
