import { z } from 'zod';
import type { JobName, JobPayload } from '@ic/schemas';

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

/**
 * The append-only event log of each run, read by position. Workers append; the responses service
 * reads from any position (live relay, resume with starting_after, waiting for the end).
 */
export interface RunEventLog {
  append(runId: string, events: readonly StreamEvent[]): Promise<void>;
  /** Events with sequence_number > afterSequence; waits up to `blockMs` when there are none yet. */
  read(runId: string, afterSequence: number, blockMs: number): Promise<StreamEvent[]>;
  lastSequence(runId: string): Promise<number>;
  /** Keeps a finished run's events for `ttlSeconds` more, then drops them. */
  expire(runId: string, ttlSeconds: number): Promise<void>;
}

/** Cross-process notification that a run should stop (cancel). */
export interface RunSignals {
  publishCancel(runId: string): Promise<void>;
  onCancel(listener: (runId: string) => void): () => void;
}

export interface QueueBackend {
  readonly kind: 'bullmq' | 'in-process';
  readonly queue: JobQueue;
  readonly events: RunEventLog;
  readonly signals: RunSignals;
  startWorker(queue: string, handlers: JobHandlers, options: { concurrency: number }): WorkerHandle;
  /** False while the producer connection is down: enqueueing now would fail, so callers refuse work up front. */
  isAvailable(): boolean;
  ping(): Promise<void>;
  close(): Promise<void>;
}
