import { EventEmitter } from 'node:events';
import { jobCatalog, type JobName, type JobPayload, type UpstreamHold } from '@ic/schemas';
import type { Logger } from '@ic/telemetry';
import {
  RetryLater,
  PermanentFailure,
  type AppendOptions,
  type AppendResult,
  type AttemptAnnouncement,
  type BeginAttemptResult,
  type EnqueueOptions,
  type EventCursor,
  type JobHandlers,
  type JobQueue,
  type LoggedEvent,
  type QueueBackend,
  type RunEventLog,
  type RunSignals,
  type StreamEvent,
  type WorkerHandle,
} from './types';

interface PendingJob {
  id: string;
  name: JobName;
  payload: unknown;
  attempt: number;
  state: 'waiting' | 'delayed' | 'active';
  /** While delayed: the timer that makes it due. */
  timer?: NodeJS.Timeout;
}

/**
 * The embedded default: the same interfaces and processors as the BullMQ backend, in one process and
 * without Redis. Jobs do not survive a restart; the sweeper re-enqueues unfinished runs from Postgres.
 */
export function createInProcessBackend(logger: Logger): QueueBackend {
  const jobs = new Map<string, PendingJob>();
  const ready: PendingJob[] = [];
  const workers = new Map<string, { handlers: JobHandlers; concurrency: number; running: number; closed: boolean; idle: Array<() => void> }>();
  const timers = new Set<NodeJS.Timeout>();
  let sequence = 0;

  const pump = (queueName: string) => {
    const worker = workers.get(queueName);
    if (!worker || worker.closed) return;
    while (worker.running < worker.concurrency) {
      const index = ready.findIndex((job) => jobCatalog[job.name].queue === queueName);
      if (index < 0) break;
      const [job] = ready.splice(index, 1) as [PendingJob];
      job.state = 'active';
      worker.running += 1;
      void runJob(queueName, job).finally(() => {
        worker.running -= 1;
        if (worker.running === 0) worker.idle.splice(0).forEach((resolve) => resolve());
        pump(queueName);
      });
    }
  };

  const schedule = (job: PendingJob, delayMs: number) => {
    const queueName = jobCatalog[job.name].queue;
    if (delayMs <= 0) {
      job.state = 'waiting';
      ready.push(job);
      setImmediate(() => pump(queueName));
      return;
    }
    job.state = 'delayed';
    const timer = setTimeout(() => {
      timers.delete(timer);
      job.timer = undefined;
      job.state = 'waiting';
      ready.push(job);
      pump(queueName);
    }, delayMs);
    job.timer = timer;
    timers.add(timer);
  };

  /** Takes a delayed job off its timer (it is then in no list until scheduled again). */
  const undelay = (job: PendingJob) => {
    if (job.timer) {
      clearTimeout(job.timer);
      timers.delete(job.timer);
      job.timer = undefined;
    }
  };

  const runJob = async (queueName: string, job: PendingJob) => {
    const worker = workers.get(queueName)!;
    const handler = worker.handlers[job.name] as ((payload: unknown, context: unknown) => Promise<void>) | undefined;
    const spec = jobCatalog[job.name];
    const maxAttempts = spec.options.attempts;
    try {
      if (!handler) throw new PermanentFailure(`no handler for ${job.name}`);
      const payload = spec.schema.parse(job.payload);
      await handler(payload, { jobId: job.id, attempt: job.attempt, isFinalAttempt: job.attempt >= maxAttempts });
      jobs.delete(job.id);
    } catch (error) {
      if (error instanceof RetryLater) return schedule(job, error.delayMs);
      if (!(error instanceof PermanentFailure) && job.attempt < maxAttempts) {
        job.attempt += 1;
        return schedule(job, spec.options.backoff.delay * 2 ** (job.attempt - 2));
      }
      logger.error({ err: error, job: job.name, jobId: job.id }, 'job failed');
      jobs.delete(job.id);
    }
  };

  const queue: JobQueue = {
    async enqueue<N extends JobName>(name: N, payload: JobPayload<N>, options: EnqueueOptions = {}) {
      const id = options.jobId ?? `job-${++sequence}`;
      if (jobs.has(id)) return;
      const job: PendingJob = { id, name, payload: jobCatalog[name].schema.parse(payload), attempt: 1, state: 'waiting' };
      jobs.set(id, job);
      schedule(job, options.delayMs ?? 0);
    },
    async isPending(_queue: string, jobId: string) {
      return jobs.has(jobId);
    },
    async postpone(_queue: string, jobId: string, delayMs: number) {
      const job = jobs.get(jobId);
      if (!job || job.state !== 'delayed') return false;
      undelay(job);
      schedule(job, delayMs);
      return true;
    },
    async withdraw(_queue: string, jobId: string) {
      const job = jobs.get(jobId);
      if (!job) return true;
      if (job.state === 'active') return false;
      undelay(job);
      const index = ready.indexOf(job);
      if (index >= 0) ready.splice(index, 1);
      jobs.delete(jobId);
      return true;
    },
    async countWaiting(queueName: string) {
      let waiting = 0;
      for (const job of jobs.values()) if (job.state !== 'active' && jobCatalog[job.name].queue === queueName) waiting += 1;
      return waiting;
    },
  };

  return {
    kind: 'in-process',
    queue,
    events: new MemoryEventLog(),
    signals: new MemorySignals(),
    startWorker(queueName, handlers, options) {
      const worker = { handlers, concurrency: options.concurrency, running: 0, closed: false, idle: [] as Array<() => void> };
      workers.set(queueName, worker);
      setImmediate(() => pump(queueName));
      const handle: WorkerHandle = {
        close: async () => {
          worker.closed = true;
          if (worker.running > 0) await new Promise<void>((resolve) => worker.idle.push(resolve));
        },
      };
      return handle;
    },
    isAvailable() {
      return true;
    },
    async ping() {},
    async close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
    },
  };
}

interface MemoryLog {
  events: StreamEvent[];
  /** The same events as readers get them: serialised once, at append. */
  logged: LoggedEvent[];
  attempt: number;
  closed: boolean;
  expiry: NodeJS.Timeout | null;
}

/** The in-process event log, with the same append rules as the Redis one (see RunEventLog). */
export class MemoryEventLog implements RunEventLog {
  private readonly logs = new Map<string, MemoryLog>();
  private readonly appended = new EventEmitter().setMaxListeners(0);

  private log(runId: string): MemoryLog {
    let log = this.logs.get(runId);
    if (!log) {
      log = { events: [], logged: [], attempt: 0, closed: false, expiry: null };
      this.logs.set(runId, log);
    }
    return log;
  }

  private last(runId: string): number {
    const events = this.logs.get(runId)?.events;
    return events && events.length > 0 ? events[events.length - 1]!.sequence_number : -1;
  }

  private refresh(runId: string, log: MemoryLog, ttlSeconds: number) {
    if (log.expiry) clearTimeout(log.expiry);
    log.expiry = setTimeout(() => this.logs.delete(runId), ttlSeconds * 1000).unref();
  }

  async append(runId: string, events: readonly StreamEvent[], options: AppendOptions): Promise<AppendResult> {
    const lastSequence = this.last(runId);
    const first = events[0];
    if (!first) return { ok: true, lastSequence };
    const log = this.log(runId);
    if (log.closed) return { ok: false, reason: 'closed', lastSequence };
    if ('attempt' in options.authority && log.attempt > options.authority.attempt) return { ok: false, reason: 'stale', lastSequence };
    if (first.sequence_number !== lastSequence + 1) return { ok: false, reason: 'gap', lastSequence };
    if (options.closes) log.closed = true;
    this.write(runId, log, events, options.ttlSeconds);
    return { ok: true, lastSequence: lastSequence + events.length };
  }

  /** Adds checked events (their JSON as a reader gets it), refreshes the expiry and wakes the readers. */
  private write(runId: string, log: MemoryLog, events: readonly StreamEvent[], ttlSeconds: number): void {
    for (const event of events) {
      log.events.push(event);
      log.logged.push({ type: event.type, sequence_number: event.sequence_number, json: JSON.stringify(event) });
    }
    this.refresh(runId, log, ttlSeconds);
    if (events.length > 0) this.appended.emit(runId);
  }

  async beginAttempt(runId: string, attempt: number, ttlSeconds: number, announcement: AttemptAnnouncement): Promise<BeginAttemptResult> {
    const lastSequence = this.last(runId);
    const log = this.log(runId);
    if (log.closed) return { ok: false, reason: 'closed', lastSequence };
    if (log.attempt > attempt) return { ok: false, reason: 'stale', lastSequence };
    log.attempt = attempt;
    const announced: StreamEvent[] = [];
    const { response } = announcement;
    if (lastSequence < 0) announced.push({ type: 'response.created', sequence_number: 0, response: { ...response, status: 'queued' } });
    if (log.events.at(-1)?.type !== 'response.in_progress') announced.push({ type: 'response.in_progress', sequence_number: lastSequence + announced.length + 1, response: { ...response, status: 'in_progress' } });
    for (const event of announcement.firstEvents ?? []) announced.push({ ...event, sequence_number: lastSequence + announced.length + 1 });
    this.write(runId, log, announced, ttlSeconds);
    return { ok: true, lastSequence: lastSequence + announced.length };
  }

  async read(runId: string, afterSequence: number, blockMs: number, limit = 1000): Promise<StreamEvent[]> {
    const available = () => {
      const events = this.logs.get(runId)?.events ?? [];
      const start = events.findIndex((event) => event.sequence_number > afterSequence);
      return start < 0 ? [] : events.slice(start, start + limit);
    };
    const now = available();
    if (now.length > 0 || blockMs <= 0) return now;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.appended.off(runId, done);
        resolve();
      };
      const timer = setTimeout(done, blockMs);
      this.appended.on(runId, done);
    });
    return available();
  }

  follow(runId: string, afterSequence: number): EventCursor {
    let position = afterSequence;
    let closed = false;
    let wake: (() => void) | null = null;
    const take = (limit: number) => {
      const logged = this.logs.get(runId)?.logged ?? [];
      let start = logged.length;
      while (start > 0 && logged[start - 1]!.sequence_number > position) start--;
      const events = logged.slice(start, start + limit);
      const last = events[events.length - 1];
      if (last) position = last.sequence_number;
      return events;
    };
    return {
      get position() {
        return position;
      },
      ready: async () => undefined,
      next: async (blockMs: number, limit = 1000) => {
        const now = closed ? [] : take(limit);
        if (now.length > 0 || blockMs <= 0 || closed) return now;
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            this.appended.off(runId, done);
            wake = null;
            resolve();
          };
          const timer = setTimeout(done, blockMs);
          this.appended.on(runId, done);
          wake = done;
        });
        return closed ? [] : take(limit);
      },
      close: () => {
        closed = true;
        wake?.();
      },
    };
  }

  async lastSequence(runId: string): Promise<number> {
    return this.last(runId);
  }

  async expire(runId: string, ttlSeconds: number): Promise<void> {
    const log = this.logs.get(runId);
    if (log) this.refresh(runId, log, ttlSeconds);
  }
}

class MemorySignals implements RunSignals {
  private readonly emitter = new EventEmitter().setMaxListeners(0);
  async publishCancel(runId: string): Promise<void> {
    this.emitter.emit('cancel', runId);
  }
  onCancel(listener: (runId: string) => void): () => void {
    this.emitter.on('cancel', listener);
    return () => this.emitter.off('cancel', listener);
  }
  async publishUpstreamHold(hold: UpstreamHold): Promise<void> {
    this.emitter.emit('upstream-hold', hold);
  }
  onUpstreamHold(listener: (hold: UpstreamHold) => void): () => void {
    this.emitter.on('upstream-hold', listener);
    return () => this.emitter.off('upstream-hold', listener);
  }
}
