import { EventEmitter } from 'node:events';
import { DelayedError, Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { BullMQOtel } from 'bullmq-otel';
import { jobCatalog, RunId, type JobName, type JobPayload } from '@ic/schemas';
import type { Logger } from '@ic/telemetry';
import { RedisKeys } from './keys';
import { createRedis, waitUntilReady, type Redis, type RedisTarget } from './redis';
import {
  PermanentFailure,
  RetryLater,
  type EnqueueOptions,
  type JobHandlers,
  type JobQueue,
  type QueueBackend,
  type RunEventLog,
  type RunSignals,
  StreamEvent,
  type WorkerHandle,
} from './types';

export interface BullmqBackendOptions extends RedisTarget {
  /** REDIS_PREFIX; key names are built by RedisKeys (hash-tagged for Redis Cluster). */
  prefix: string;
  logger: Logger;
  /** How long a worker's lock on a job lasts; a crashed worker's job is re-delivered after about this long. */
  lockDurationMs?: number;
  /** Cap on events kept per run stream. */
  maxEventsPerRun?: number;
}

const PENDING_STATES = new Set(['waiting', 'delayed', 'active', 'prioritized', 'waiting-children']);

export async function createBullmqBackend(options: BullmqBackendOptions): Promise<QueueBackend> {
  const { logger } = options;
  const keys = new RedisKeys(options.prefix);
  const target: RedisTarget = { url: options.url, clusterNodes: options.clusterNodes };
  const producer = createRedis(target, 'producer', logger);
  const subscriber = createRedis(target, 'subscriber', logger);
  const workerConnections: Redis[] = [];
  await Promise.all([waitUntilReady(producer), waitUntilReady(subscriber)]);

  // Carries trace context from the producer's span to the worker's (PRODUCER/CONSUMER spans) and records job metrics.
  const telemetry = new BullMQOtel({ tracerName: 'ingram-conversations', meterName: 'ingram-conversations', enableMetrics: true });
  const queues = new Map<string, Queue>();
  const queueFor = (name: string) => {
    let queue = queues.get(name);
    if (!queue) {
      queue = new Queue(name, { connection: producer, prefix: keys.queuePrefix(name), telemetry });
      queue.on('error', (error) => logger.warn({ err: error, queue: name }, 'queue error'));
      queues.set(name, queue);
    }
    return queue;
  };

  const jobQueue: JobQueue = {
    async enqueue<N extends JobName>(name: N, payload: JobPayload<N>, enqueueOptions: EnqueueOptions = {}) {
      const spec = jobCatalog[name];
      await queueFor(spec.queue).add(name, spec.schema.parse(payload), {
        jobId: enqueueOptions.jobId,
        delay: enqueueOptions.delayMs,
        attempts: spec.options.attempts,
        backoff: spec.options.backoff,
        // Completed jobs go at once so the same jobId can be enqueued again for a later pass;
        // failed ones stay a week as evidence.
        removeOnComplete: true,
        removeOnFail: { age: 7 * 24 * 3600, count: 10000 },
      });
    },
    async isPending(queue: string, jobId: string) {
      const job = await queueFor(queue).getJob(jobId);
      if (!job) return false;
      const state = await job.getState();
      if (PENDING_STATES.has(state)) return true;
      // A finished job would block re-adding the same id; clear it so the caller can enqueue again.
      await job.remove().catch(() => undefined);
      return false;
    },
    async countWaiting(queue: string) {
      const counts = await queueFor(queue).getJobCounts('waiting', 'delayed', 'prioritized');
      return Object.values(counts).reduce((sum, count) => sum + count, 0);
    },
  };

  const signals = new RedisSignals(producer, subscriber, keys);
  const events = new RedisEventLog(producer, subscriber, keys, options.maxEventsPerRun ?? 20000);
  subscriber.on('message', (channel: string, message: string) => {
    if (channel === signals.channel) signals.dispatch(message);
    else events.dispatch(channel);
  });
  await subscriber.subscribe(signals.channel);

  return {
    kind: 'bullmq',
    queue: jobQueue,
    events,
    signals,
    startWorker(queueName, handlers, workerOptions) {
      const connection = createRedis(target, 'worker', logger);
      workerConnections.push(connection);
      const lockDuration = options.lockDurationMs ?? 30000;
      const worker = new Worker(
        queueName,
        async (job: Job, token?: string) => {
          const name = job.name as JobName;
          const spec = jobCatalog[name];
          const handler = handlers[name] as ((payload: unknown, context: unknown) => Promise<void>) | undefined;
          if (!spec || !handler) throw new UnrecoverableError(`No handler for job '${job.name}' on queue '${queueName}'.`);
          const parsed = spec.schema.safeParse(job.data);
          if (!parsed.success) throw new UnrecoverableError(`Invalid payload for '${job.name}': ${parsed.error.message}`);
          const attempt = job.attemptsMade + 1;
          try {
            await handler(parsed.data, { jobId: job.id ?? '', attempt, isFinalAttempt: attempt >= (job.opts.attempts ?? 1) });
          } catch (error) {
            if (error instanceof RetryLater) {
              await job.moveToDelayed(Date.now() + error.delayMs, token);
              throw new DelayedError();
            }
            if (error instanceof PermanentFailure) throw new UnrecoverableError(error.message);
            throw error;
          }
        },
        { connection, prefix: keys.queuePrefix(queueName), telemetry, concurrency: workerOptions.concurrency, lockDuration, stalledInterval: lockDuration, maxStalledCount: 3 },
      );
      worker.on('error', (error) => logger.warn({ err: error, queue: queueName }, 'worker error'));
      worker.on('failed', (job, error) => {
        if (!(error instanceof DelayedError)) logger.warn({ err: error, job: job?.name, jobId: job?.id, attemptsMade: job?.attemptsMade }, 'job attempt failed');
      });
      return { close: () => worker.close() } satisfies WorkerHandle;
    },
    isAvailable() {
      return producer.status === 'ready';
    },
    async ping() {
      await producer.ping();
    },
    async close() {
      await Promise.allSettled([...queues.values()].map((queue) => queue.close()));
      await Promise.allSettled([producer.quit(), subscriber.quit(), ...workerConnections.map((connection) => connection.quit())]);
    },
  };
}

/**
 * Run events in a Redis Stream per run, with explicit ids `0-(sequence+1)` so "after sequence N" is a
 * range read. Readers wait on a per-run pub/sub notification instead of holding a blocking
 * connection each, so one API process can relay thousands of streams over two connections.
 */
class RedisEventLog implements RunEventLog {
  private readonly waiters = new EventEmitter().setMaxListeners(0);
  private readonly subscriptions = new Map<string, number>();
  private readonly subscribed = new Set<string>();

  constructor(
    private readonly redis: Redis,
    private readonly subscriber: Redis,
    private readonly keys: RedisKeys,
    private readonly maxEvents: number,
  ) {}

  private key(runId: string) {
    return this.keys.runEvents(runId);
  }
  private channel(runId: string) {
    return this.keys.runAppendedChannel(runId);
  }

  dispatch(channel: string): void {
    this.waiters.emit(channel);
  }

  async append(runId: string, events: readonly StreamEvent[]): Promise<void> {
    if (events.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const event of events) {
      pipeline.xadd(this.key(runId), 'MAXLEN', '~', String(this.maxEvents), `0-${event.sequence_number + 1}`, 'e', JSON.stringify(event));
    }
    pipeline.publish(this.channel(runId), '1');
    const results = (await pipeline.exec()) ?? [];
    const failed = results.find(([error]) => error);
    if (failed) throw failed[0]!;
  }

  async read(runId: string, afterSequence: number, blockMs: number): Promise<StreamEvent[]> {
    const channel = this.channel(runId);
    let woken = false;
    let wake: () => void = () => {
      woken = true;
    };
    const listener = () => wake();
    this.waiters.on(channel, listener);
    await this.retain(runId);
    try {
      const now = await this.range(runId, afterSequence);
      if (now.length > 0 || blockMs <= 0) return now;
      if (!woken) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, blockMs);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      return await this.range(runId, afterSequence);
    } finally {
      this.waiters.off(channel, listener);
      await this.release(runId);
    }
  }

  private async range(runId: string, afterSequence: number): Promise<StreamEvent[]> {
    const entries = await this.redis.xrange(this.key(runId), `(0-${afterSequence + 1}`, '+', 'COUNT', 1000);
    // Validated on the way out of Redis like every other payload we stored there.
    return entries.map(([, fields]) => StreamEvent.parse(JSON.parse(fields[1]!)));
  }

  private async retain(runId: string) {
    const count = this.subscriptions.get(runId) ?? 0;
    this.subscriptions.set(runId, count + 1);
    if (!this.subscribed.has(runId)) {
      this.subscribed.add(runId);
      await this.subscriber.subscribe(this.channel(runId));
    }
  }

  private async release(runId: string) {
    const count = (this.subscriptions.get(runId) ?? 1) - 1;
    if (count > 0) {
      this.subscriptions.set(runId, count);
      return;
    }
    this.subscriptions.delete(runId);
    // Unsubscribe a moment later: a relay reads in a loop and would otherwise resubscribe at once.
    setTimeout(() => {
      if (this.subscriptions.has(runId) || !this.subscribed.delete(runId)) return;
      void this.subscriber.unsubscribe(this.channel(runId)).catch(() => undefined);
    }, 2000).unref();
  }

  async lastSequence(runId: string): Promise<number> {
    const [last] = await this.redis.xrevrange(this.key(runId), '+', '-', 'COUNT', 1);
    if (!last) return -1;
    return Number(last[0].split('-')[1]) - 1;
  }

  async expire(runId: string, ttlSeconds: number): Promise<void> {
    await this.redis.expire(this.key(runId), ttlSeconds);
  }
}

class RedisSignals implements RunSignals {
  readonly channel: string;
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  constructor(
    private readonly redis: Redis,
    _subscriber: Redis,
    keys: RedisKeys,
  ) {
    this.channel = keys.cancelChannel();
  }

  dispatch(runId: string): void {
    if (RunId.safeParse(runId).success) this.emitter.emit('cancel', runId);
  }

  async publishCancel(runId: string): Promise<void> {
    await this.redis.publish(this.channel, runId);
  }

  onCancel(listener: (runId: string) => void): () => void {
    this.emitter.on('cancel', listener);
    return () => this.emitter.off('cancel', listener);
  }
}
