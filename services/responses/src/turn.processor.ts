import type { RunOutcome } from '@ic/db';
import { ModelError, type ModelAdapter, type ModelEvent } from '@ic/model';
import { RetryLater, type JobContext, type QueueBackend } from '@ic/queue';
import type { JobPayload, RunRow, StoredItem, Usage } from '@ic/schemas';
import { turnMetrics, withSpan, type Logger } from '@ic/telemetry';
import { OutputAssembler } from './events';
import { truncateHistory, type HistoryLoader } from './history';
import type { AttemptLog, RunLifecycle } from './run-lifecycle';

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

  handle = async (payload: JobPayload<'turn.execute.v1'>, context: JobContext): Promise<void> => {
    const { runId } = payload;
    // Registered before the claim so a cancel published at any point from here on is seen.
    const controller = new AbortController();
    this.inflight.set(runId, controller);
    try {
      let historyLoad: Promise<{ prior: StoredItem[]; input: StoredItem[] }> | null = null;
      // The history read overlaps the event bookkeeping: it sits on the path to the first token.
      const begun = await this.deps.lifecycle.begin(runId, (run) => {
        historyLoad = this.deps.history.forRun(run);
        historyLoad.catch(() => undefined); // awaited (and its failure handled) below unless the turn ends first
      });
      if (begun.kind === 'wait') throw new RetryLater(ORDER_RECHECK_MS);
      if (begun.kind === 'nothing') return;
      // A newer attempt took the run over (this one lost its lock): stop the model call.
      begun.log.onStale(() => controller.abort());
      const load = historyLoad ?? this.deps.history.forRun(begun.run);
      await withSpan('turn.execute', { 'ic.run_id': begun.run.id, 'ic.attempt': begun.run.attempt }, () => this.execute(begun.run, begun.log, load, controller, context));
    } finally {
      this.inflight.delete(runId);
    }
  };

  private async execute(
    run: RunRow,
    log: AttemptLog,
    historyLoad: Promise<{ prior: StoredItem[]; input: StoredItem[] }>,
    controller: AbortController,
    context: JobContext,
  ): Promise<void> {
    const { lifecycle, logger } = this.deps;
    const pickedUpAt = Date.now();
    if (run.attempt === 1) turnMetrics().queueWait.record((pickedUpAt - run.created_at) / 1000);

    if (run.cancel_requested_at !== null || controller.signal.aborted) {
      await lifecycle.finish(log, CANCELLED, []);
      return;
    }
    if (run.attempt > MAX_RUN_ATTEMPTS) {
      turnMetrics().attemptsExhausted.add(1);
      logger.error({ runId: run.id, attempts: run.attempt - 1 }, 'giving up on a turn that keeps failing');
      const message = `The turn could not be completed after ${MAX_RUN_ATTEMPTS} attempts.`;
      await lifecycle.finish(log, { status: 'failed', outputCount: 0, usage: null, error: { code: 'server_error', message }, incompleteDetails: null }, []);
      return;
    }

    const assembler = new OutputAssembler(run.id, log.events);
    const retryDelays = this.deps.modelRetryDelaysMs ?? DEFAULT_MODEL_RETRY_DELAYS_MS;
    let done: Extract<ModelEvent, { type: 'done' }> | undefined;
    let input: StoredItem[] = [];
    let firstToken = true;
    for (let retry = 0; ; retry++) {
      try {
        const history = retry === 0 ? await historyLoad : await this.deps.history.forRun(run);
        input = history.input;
        let prior = history.prior;
        if (run.params.truncation === 'auto') {
          const budget = this.deps.contextTokens - (run.params.max_output_tokens ?? 0);
          const { kept, dropped } = truncateHistory(prior, input, budget);
          if (dropped > 0) logger.debug({ runId: run.id, dropped }, 'truncated history to fit the context budget');
          prior = kept;
        }
        for await (const event of this.deps.model.stream({
          model: this.deps.resolveModel(run.model),
          instructions: run.instructions,
          items: [...prior, ...input],
          params: run.params,
          signal: controller.signal,
        })) {
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
        const delay = retryDelays[retry];
        if (modelError.retryable && !assembler.producedAnything && delay !== undefined) {
          // Nothing was shown to the client yet: retry within this attempt, silently.
          logger.warn({ runId: run.id, attempt: run.attempt, retry: retry + 1, code: modelError.code }, 'model call failed before any output; retrying');
          if (await sleepUnlessAborted(delay, controller.signal)) continue;
          await lifecycle.finish(log, CANCELLED, []);
          return;
        }
        if (modelError.retryable && assembler.producedAnything && !context.isFinalAttempt) {
          // Output was streamed: a new attempt (which resets the client's snapshot) starts over.
          logger.warn({ runId: run.id, attempt: run.attempt, code: modelError.code }, 'turn attempt failed mid-stream; retrying as a new attempt');
          log.detach();
          throw modelError;
        }
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
      this.deps.history.recordStamped(run.conversation_id, stamped.firstPosition, [...input, ...outputs.map((output) => output.body)]);
    }
    turnMetrics().duration.record((Date.now() - pickedUpAt) / 1000);
  }
}

/** Resolves true after `ms`, or false at once when the signal aborts. */
function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
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
