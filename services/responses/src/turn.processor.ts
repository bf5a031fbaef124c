import { createConversationsRepo, createItemsRepo, createRunsRepo, type DatabasePool, type RunOutcome } from '@ic/db';
import { ModelError, type ModelAdapter, type ModelEvent } from '@ic/model';
import { RetryLater, type JobContext, type QueueBackend } from '@ic/queue';
import { TERMINAL_STATUSES, type JobPayload, type RunRow, type StoredItem, type Usage } from '@ic/schemas';
import { turnMetrics, withSpan, type Logger } from '@ic/telemetry';
import { EventSequencer, OutputAssembler, terminalEventType } from './events';
import { truncateHistory, type HistoryLoader } from './history';
import { outputItemWithId, presentResponse } from './presenter';
import type { TurnScheduler } from './scheduler';

export interface TurnProcessorDeps {
  pool: DatabasePool;
  backend: QueueBackend;
  model: ModelAdapter;
  resolveModel: (publicName: string) => string;
  history: HistoryLoader;
  scheduler: TurnScheduler;
  logger: Logger;
  eventsTtlSeconds: number;
  /** Context budget (estimated tokens) that `truncation: "auto"` trims history to. */
  contextTokens: number;
}

/** Another attempt finished this run first; this attempt's result is discarded. */
class StaleAttempt extends Error {}

const CANCELLED: RunOutcome = { status: 'cancelled', outputCount: 0, usage: null, error: null, incompleteDetails: null };

/**
 * Attempts (across job retries, stalled re-deliveries and sweeps) after which a run is failed instead
 * of tried again: a turn that keeps killing its workers must not do so forever.
 */
export const MAX_RUN_ATTEMPTS = 8;

/** While an earlier turn of the same conversation is unfinished, look again this soon. */
const ORDER_RECHECK_MS = 200;

/**
 * Executes one turn: claim the run, replay history to the model, relay its events, and stamp the
 * result in one transaction. Idempotent: a retried or duplicated job never adds items twice, because
 * the stamp only lands for the attempt that owns the run.
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
    const runs = createRunsRepo(this.deps.pool);
    // Registered before the claim so a cancel published at any point from here on is seen.
    const controller = new AbortController();
    this.inflight.set(runId, controller);
    try {
      const run = await runs.claim(runId);
      if (!run) {
        const current = await runs.find(runId);
        // Not finished, so an earlier turn of its conversation is still running: look again shortly.
        if (current && !TERMINAL_STATUSES.includes(current.status)) throw new RetryLater(ORDER_RECHECK_MS);
        return;
      }
      await withSpan('turn.execute', { 'ic.run_id': run.id, 'ic.attempt': run.attempt }, () => this.execute(run, controller, context));
    } finally {
      this.inflight.delete(runId);
    }
  };

  private async execute(run: RunRow, controller: AbortController, context: JobContext): Promise<void> {
    const { backend, logger } = this.deps;
    const pickedUpAt = Date.now();
    if (run.attempt === 1) turnMetrics().queueWait.record((pickedUpAt - run.created_at) / 1000);
    // The history read overlaps the event bookkeeping below: it sits on the path to the first token.
    const historyLoad = this.deps.history.forRun(run);
    historyLoad.catch(() => undefined); // awaited (and its failure handled) below unless the turn ends first
    const lastSequence = await backend.events.lastSequence(run.id);
    const sequencer = new EventSequencer(lastSequence + 1);
    const snapshot = { ...presentResponse(run, []), status: 'in_progress' as const };
    if (lastSequence < 0) sequencer.emit('response.created', { response: { ...snapshot, status: 'queued' } });
    // Also sent again on a retried attempt: it resets a client's snapshot, so the new attempt's items line up.
    sequencer.emit('response.in_progress', { response: snapshot });
    await this.flush(run.id, sequencer);

    if (run.cancel_requested_at !== null || controller.signal.aborted) {
      await this.stamp(run, sequencer, CANCELLED, [], []);
      return;
    }
    if (run.attempt > MAX_RUN_ATTEMPTS) {
      logger.error({ runId: run.id, attempts: run.attempt - 1 }, 'giving up on a turn that keeps failing');
      const message = `The turn could not be completed after ${MAX_RUN_ATTEMPTS} attempts.`;
      await this.stamp(run, sequencer, { status: 'failed', outputCount: 0, usage: null, error: { code: 'server_error', message }, incompleteDetails: null }, [], []);
      return;
    }

    const assembler = new OutputAssembler(run.id, sequencer);
    let done: Extract<ModelEvent, { type: 'done' }> | undefined;
    let input: StoredItem[] = [];
    try {
      const history = await historyLoad;
      input = history.input;
      let prior = history.prior;
      if (run.params.truncation === 'auto') {
        const budget = this.deps.contextTokens - (run.params.max_output_tokens ?? 0);
        const { kept, dropped } = truncateHistory(prior, input, budget);
        if (dropped > 0) logger.debug({ runId: run.id, dropped }, 'truncated history to fit the context budget');
        prior = kept;
      }
      const items = [...prior, ...input];
      let firstToken = true;
      for await (const event of this.deps.model.stream({
        model: this.deps.resolveModel(run.model),
        instructions: run.instructions,
        items,
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
        await this.flush(run.id, sequencer);
      }
      if (controller.signal.aborted) throw new ModelError('The response was cancelled.', 'cancelled', false);
      if (!done) throw new ModelError('The model stream ended without finishing.', 'upstream_error', true);
    } catch (error) {
      if (controller.signal.aborted) {
        await this.stamp(run, sequencer, CANCELLED, [], []);
        return;
      }
      // Our own failures (database, bugs) are logged in full but shown to the caller only in general terms.
      if (!(error instanceof ModelError)) logger.error({ err: error, runId: run.id, attempt: run.attempt }, 'turn failed');
      const modelError = error instanceof ModelError ? error : new ModelError('The server had an error while processing this turn.', 'upstream_error', true);
      if (modelError.retryable && !context.isFinalAttempt) {
        logger.warn({ runId: run.id, attempt: run.attempt, code: modelError.code }, 'turn attempt failed; retrying');
        throw modelError;
      }
      await this.stamp(run, sequencer, { status: 'failed', outputCount: 0, usage: null, error: { code: publicErrorCode(modelError), message: modelError.message }, incompleteDetails: null }, [], []);
      return;
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
    await this.stamp(
      run,
      sequencer,
      {
        status: incompleteReason ? 'incomplete' : 'completed',
        outputCount: outputs.length,
        usage,
        error: null,
        incompleteDetails: incompleteReason ? { reason: incompleteReason } : null,
      },
      input,
      outputs,
    );
    turnMetrics().duration.record((Date.now() - pickedUpAt) / 1000);
    const model = this.deps.resolveModel(run.model);
    turnMetrics().modelTokens.add(usage.input_tokens, { direction: 'input', model });
    turnMetrics().modelTokens.add(usage.output_tokens, { direction: 'output', model });
  }

  /**
   * One transaction: finish the run (only if this attempt still owns it), then — for completed and
   * incomplete runs — put its input and output items into the transcript and bump updated_at.
   */
  private async stamp(
    run: RunRow,
    sequencer: EventSequencer,
    outcome: RunOutcome,
    input: readonly StoredItem[],
    outputs: Array<{ id: string; body: StoredItem }>,
  ): Promise<void> {
    const { pool, backend, logger } = this.deps;
    const addsToTranscript = outcome.status === 'completed' || outcome.status === 'incomplete';
    let firstPosition = -1;
    let untitled = false;
    let finished: RunRow;
    try {
      finished = await pool.transaction(async (tx) => {
        const owned = await createRunsRepo(tx).finish(run.id, run.attempt, outcome);
        if (!owned) throw new StaleAttempt();
        if (!addsToTranscript) return owned;
        const items = createItemsRepo(tx);
        if (run.conversation_id) {
          ({ first: firstPosition, untitled } = await createConversationsRepo(tx).reservePositions(run.conversation_id, run.input_count + outputs.length));
          await items.attachInputsToConversation(run.id, run.conversation_id, firstPosition);
        }
        await items.insertMany(
          outputs.map((output, index) => ({
            id: output.id,
            runId: run.id,
            direction: 'output' as const,
            ordinal: run.input_count + index,
            conversationId: run.conversation_id,
            position: run.conversation_id ? firstPosition + run.input_count + index : null,
            body: output.body,
          })),
        );
        return owned;
      });
    } catch (error) {
      if (error instanceof StaleAttempt) {
        logger.info({ runId: run.id, attempt: run.attempt }, 'another attempt already stamped this run; discarding');
        return;
      }
      throw error;
    }
    turnMetrics().finished.add(1, { status: outcome.status });

    if (run.conversation_id && addsToTranscript) {
      this.deps.history.recordStamped(run.conversation_id, firstPosition, [...input, ...outputs.map((output) => output.body)]);
    }
    const response = presentResponse(finished, outputs.map((output) => outputItemWithId(output.id, output.body)));
    sequencer.emit(terminalEventType(finished.status), { response });
    await this.flush(run.id, sequencer);
    await backend.events.expire(run.id, this.deps.eventsTtlSeconds).catch(() => undefined);

    if (run.conversation_id) {
      await this.deps.scheduler.kickConversation(run.conversation_id);
      if (outcome.status === 'completed' && untitled) await this.requestTitle(run.conversation_id);
    }
  }

  /** Keyed by conversation, so a burst of turns asks for one title; the titler re-checks before writing. */
  private async requestTitle(conversationId: string): Promise<void> {
    await this.deps.backend.queue.enqueue('titler.generate.v1', { conversationId }, { jobId: `title-${conversationId}` });
  }

  private async flush(runId: string, sequencer: EventSequencer): Promise<void> {
    const events = sequencer.take();
    if (events.length === 0) return;
    try {
      await this.deps.backend.events.append(runId, events);
    } catch (error) {
      // Live streaming is best effort; the stamped run in Postgres is the truth and replay rebuilds from it.
      this.deps.logger.warn({ err: error, runId }, 'could not publish run events');
    }
  }
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
