import type { RunOutcome } from '@ic/db';
import { abortableDelay, ModelError, type ModelAdapter, type ModelEvent, type ModelRequest } from '@ic/model';
import { RetryLater, type JobContext, type QueueBackend } from '@ic/queue';
import type { JobPayload, RunRow, Usage } from '@ic/schemas';
import { turnMetrics, withSpan, type Logger } from '@ic/telemetry';
import { OutputAssembler } from './events';
import { truncateHistory, type HistoryLoader } from './history';
import type { RunLifecycle, TurnHistory } from './run-lifecycle';

export interface TurnProcessorDeps {
  backend: QueueBackend;
  lifecycle: RunLifecycle;
  model: ModelAdapter;
  resolveModel: (publicName: string) => string;
  history: HistoryLoader;
  logger: Logger;
  /** Context budget (estimated tokens) that `truncation: "auto"` trims history to. */
  contextTokens: number;
  /** Waits before each silent retry of a model call that failed before it produced anything (default 0.5 s, 1 s, 2 s). */
  modelRetryDelaysMs?: readonly number[];
  /**
   * How long an attempt may spend waiting out the upstream's rate limit before a throttled answer
   * counts as an ordinary failure (MODEL_BACKOFF_BUDGET_MS; default 120 s). What is left of it also
   * bounds a call's wait in the adapter's line for the upstream's request and token limits.
   */
  modelBackoffBudgetMs?: number;
}

const CANCELLED: RunOutcome = { status: 'cancelled', outputCount: 0, usage: null, error: null, incompleteDetails: null };

/**
 * Attempts (across job retries, stalled re-deliveries and sweeps) after which a run is failed instead
 * of tried again: a turn that keeps killing its workers must not do so forever.
 */
export const MAX_RUN_ATTEMPTS = 8;

/** While an earlier turn of the same conversation is unfinished, look again this soon. */
const ORDER_RECHECK_MS = 200;

const DEFAULT_MODEL_RETRY_DELAYS_MS = [500, 1000, 2000];
const DEFAULT_MODEL_BACKOFF_BUDGET_MS = 120_000;

/**
 * Executes one turn: begin an attempt (RunLifecycle), replay history to the model, turn its output
 * into events, and finish the run. Idempotent: a retried or duplicated job never adds items twice,
 * because only the attempt that owns the run can stamp it or write its events.
 */
export class TurnProcessor {
  private readonly inflight = new Map<string, AbortController>();
  private readonly stopListening: () => void;

  constructor(private readonly deps: TurnProcessorDeps) {
    this.stopListening = deps.backend.signals.onCancel((runId) => this.inflight.get(runId)?.abort());
  }

  close(): void {
    this.stopListening();
  }

  /** Turns this processor is handling now (the worker's saturation gauge). */
  get inFlight(): number {
    return this.inflight.size;
  }

  handle = async (payload: JobPayload<'turn.execute.v1'>, context: JobContext): Promise<void> => {
    const { runId } = payload;
    // Registered before the claim so a cancel published at any point from here on is seen.
    const controller = new AbortController();
    this.inflight.set(runId, controller);
    try {
      // The claim carries the history (only what this worker's cache lacks): one statement.
      const claimed = await this.deps.lifecycle.claim(runId, (id) => this.deps.history.claim(id, payload.conversationId ?? null));
      if (claimed.kind === 'wait') throw new RetryLater(ORDER_RECHECK_MS);
      if (claimed.kind === 'nothing') return;
      await this.executeTraced(claimed.run, claimed.history, controller, context);
    } finally {
      this.inflight.delete(runId);
    }
  };

  /**
   * Executes a run whose first attempt was claimed with its accept, in the accepting process. Resolves
   * `finished` when this attempt ended the run (or lost it to a newer attempt, which then owns it), and
   * `retry` when it failed in a way a new attempt should take over (a job would be retried then).
   */
  async runClaimed(run: RunRow, loadHistory: () => Promise<TurnHistory>): Promise<'finished' | 'retry'> {
    // Registered before anything waits, so a cancel sent as soon as the client has the run's id is seen.
    const controller = new AbortController();
    this.inflight.set(run.id, controller);
    try {
      await this.executeTraced(run, await loadHistory(), controller, { jobId: run.id, attempt: 1, isFinalAttempt: false });
      return 'finished';
    } catch (error) {
      if (!(error instanceof ModelError)) this.deps.logger.warn({ err: error, runId: run.id }, 'turn run by its accepting process failed (or its history could not be read); handing it to the queue');
      return 'retry';
    } finally {
      this.inflight.delete(run.id);
    }
  }

  private executeTraced(run: RunRow, history: TurnHistory, controller: AbortController, context: JobContext): Promise<void> {
    return withSpan('turn.execute', { 'ic.run_id': run.id, 'ic.attempt': run.attempt }, () => this.execute(run, history, controller, context));
  }

  private async execute(run: RunRow, history: TurnHistory, controller: AbortController, context: JobContext): Promise<void> {
    const { lifecycle, logger } = this.deps;
    const pickedUpAt = Date.now();
    if (run.attempt === 1) turnMetrics().queueWait.record((pickedUpAt - run.created_at) / 1000);

    const cancelled = run.cancel_requested_at !== null || controller.signal.aborted;
    const exhausted = run.attempt > MAX_RUN_ATTEMPTS;
    // The attempt's fence and announcement go with its first output (or alone if the model is slow).
    const log = lifecycle.openAttempt(run);
    // A newer attempt took the run over (this one lost its lock): stop the model call.
    log.onStale(() => controller.abort());

    if (cancelled) {
      await lifecycle.finish(log, CANCELLED, []);
      return;
    }
    if (exhausted) {
      turnMetrics().attemptsExhausted.add(1);
      logger.error({ runId: run.id, attempts: run.attempt - 1 }, 'giving up on a turn that keeps failing');
      const message = `The turn could not be completed after ${MAX_RUN_ATTEMPTS} attempts.`;
      await lifecycle.finish(log, { status: 'failed', outputCount: 0, usage: null, error: { code: 'server_error', message }, incompleteDetails: null }, []);
      return;
    }

    const assembler = new OutputAssembler(run.id, log.events);
    const backoffBudgetMs = this.deps.modelBackoffBudgetMs ?? DEFAULT_MODEL_BACKOFF_BUDGET_MS;
    const retryDelays = this.deps.modelRetryDelaysMs ?? DEFAULT_MODEL_RETRY_DELAYS_MS;
    let firstThrottledAt: number | undefined;
    let done: Extract<ModelEvent, { type: 'done' }> | undefined;
    let firstToken = true;
    for (let retry = 0; ; ) {
      try {
        // A silent retry replays the same history: nothing can be stamped before this turn.
        // What is left of the budget bounds a wait in the adapter's line for the upstream's rate limits too.
        const budgetLeftMs = Math.max(0, backoffBudgetMs - (firstThrottledAt === undefined ? 0 : Date.now() - firstThrottledAt));
        const events = this.deps.model.stream(this.modelRequest(run, history, controller.signal, budgetLeftMs));
        for await (const event of events) {
          if (event.type === 'done') {
            done = event;
            continue;
          }
          if (firstToken) {
            turnMetrics().firstToken.record((Date.now() - pickedUpAt) / 1000);
            firstToken = false;
          }
          assembler.accept(event);
          const writing = log.nudge();
          if (writing) await writing;
        }
        if (controller.signal.aborted) throw new ModelError('The response was cancelled.', 'cancelled', false);
        if (!done) throw new ModelError('The model stream ended without finishing.', 'upstream_error', true);
        break;
      } catch (error) {
        if (controller.signal.aborted) {
          // Cancelled, or a newer attempt owns the run (then finish discards this one).
          await lifecycle.finish(log, CANCELLED, []);
          return;
        }
        // Our own failures (database, bugs) are logged in full but shown to the caller only in general terms.
        if (!(error instanceof ModelError)) logger.error({ err: error, runId: run.id, attempt: run.attempt }, 'turn failed');
        const modelError = error instanceof ModelError ? error : new ModelError('The server had an error while processing this turn.', 'upstream_error', true);
        if (modelError.throttled && !assembler.producedAnything) {
          firstThrottledAt ??= Date.now();
          const waitedMs = Date.now() - firstThrottledAt;
          if (waitedMs + (modelError.retryAfterMs ?? 0) <= backoffBudgetMs) {
            // A rate limit, not a failure: call again without spending a retry. The adapter holds the
            // call (with every other of this process) until the upstream's wait is over.
            logger.debug({ runId: run.id, attempt: run.attempt, waitMs: modelError.retryAfterMs, waitedMs }, 'model upstream rate-limited the call; waiting it out');
            continue;
          }
        }
        const scheduled = retryDelays[retry++];
        // The upstream's own Retry-After, when longer than our schedule: retrying sooner only earns another 429.
        const delay = scheduled === undefined ? undefined : Math.max(scheduled, modelError.retryAfterMs ?? 0);
        if (modelError.retryable && !assembler.producedAnything && delay !== undefined) {
          // Nothing was shown to the client yet: retry within this attempt, silently.
          logger.warn({ runId: run.id, attempt: run.attempt, retry, delayMs: delay, code: modelError.code, detail: modelError.detail }, 'model call failed before any output; retrying');
          if (await sleepUnlessAborted(delay, controller.signal)) continue;
          await lifecycle.finish(log, CANCELLED, []);
          return;
        }
        if (modelError.retryable && assembler.producedAnything && !context.isFinalAttempt) {
          // Output was streamed: a new attempt (which resets the client's snapshot) starts over.
          logger.warn({ runId: run.id, attempt: run.attempt, code: modelError.code, detail: modelError.detail }, 'turn attempt failed mid-stream; retrying as a new attempt');
          log.detach();
          throw modelError;
        }
        // The run shows callers the public message only; operators get the upstream's address and causes here.
        logger.warn({ runId: run.id, attempt: run.attempt, code: modelError.code, detail: modelError.detail }, 'turn failed');
        await lifecycle.finish(log, { status: 'failed', outputCount: 0, usage: null, error: { code: publicErrorCode(modelError), message: modelError.message }, incompleteDetails: null }, []);
        return;
      }
    }

    const incompleteReason = done.finishReason === 'length' ? 'max_output_tokens' : done.finishReason === 'content_filter' ? 'content_filter' : null;
    const outputs = assembler.finish(incompleteReason ? 'incomplete' : 'completed');
    const usage: Usage = {
      input_tokens: done.usage.inputTokens,
      input_tokens_details: { cached_tokens: done.usage.cachedTokens },
      output_tokens: done.usage.outputTokens,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: done.usage.inputTokens + done.usage.outputTokens,
    };
    const stamped = await lifecycle.finish(
      log,
      {
        status: incompleteReason ? 'incomplete' : 'completed',
        outputCount: outputs.length,
        usage,
        error: null,
        incompleteDetails: incompleteReason ? { reason: incompleteReason } : null,
      },
      outputs,
    );
    if (stamped && run.conversation_id) {
      this.deps.history.recordStamped(run.conversation_id, stamped.firstPosition, [...history.input, ...outputs.map((output) => output.body)]);
    }
    turnMetrics().duration.record((Date.now() - pickedUpAt) / 1000);
    const model = this.deps.resolveModel(run.model);
    turnMetrics().modelTokens.add(usage.input_tokens, { direction: 'input', model });
    turnMetrics().modelTokens.add(usage.output_tokens, { direction: 'output', model });
  }

  /** What the model is asked: the history (trimmed to the context budget with `truncation: "auto"`) and the turn's input. */
  private modelRequest(run: RunRow, history: TurnHistory, signal: AbortSignal, maxRateLimitWaitMs: number): ModelRequest {
    let prior = history.prior;
    if (run.params.truncation === 'auto') {
      const budget = this.deps.contextTokens - (run.params.max_output_tokens ?? 0);
      const { kept, dropped } = truncateHistory(prior, history.input, budget);
      if (dropped > 0) this.deps.logger.debug({ runId: run.id, dropped }, 'truncated history to fit the context budget');
      prior = kept;
    }
    return { model: this.deps.resolveModel(run.model), instructions: run.instructions, items: [...prior, ...history.input], params: run.params, signal, maxRateLimitWaitMs };
  }
}

const ABORTED = new Error('aborted');

/** Resolves true after `ms`, or false at once when the signal aborts. */
function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<boolean> {
  return abortableDelay(ms, signal, () => ABORTED).then(
    () => true,
    (error: unknown) => {
      if (error === ABORTED) return false;
      throw error;
    },
  );
}

/** Error codes on a failed Response, from OpenAI's ResponseErrorCode where one fits. */
function publicErrorCode(error: ModelError): string {
  switch (error.code) {
    case 'rate_limit_exceeded':
      return 'rate_limit_exceeded';
    case 'model_not_found':
      return 'model_not_found';
    case 'upstream_bad_request':
      return 'invalid_prompt';
    default:
      return 'server_error';
  }
}
