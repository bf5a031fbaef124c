import { EventEmitter } from 'node:events';
import { DelayedError, Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { BullMQOtel } from 'bullmq-otel';
import { z } from 'zod';
import { jobCatalog, RunId, type JobName, type JobPayload } from '@ic/schemas';
import type { Logger } from '@ic/telemetry';
import { RedisKeys } from './keys';
import { createRedis, waitUntilReady, type Redis, type RedisTarget } from './redis';
import {
  PermanentFailure,
  RetryLater,
  type AppendOptions,
  type AppendResult,
  type BeginAttemptResult,
  type EnqueueOptions,
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
 * Appends a batch to a run's event log in one atomic step: refused (nothing written) when the log is
 * closed, when a later attempt has begun (worker appends only), or when the batch does not continue
 * the sequence exactly; otherwise every event is added, the log's expiry refreshed, a terminal batch
 * closes the log, and readers are woken with one PUBLISH.
 * KEYS: stream, meta hash. ARGV: mode ('attempt' | 'finished'), attempt, closes ('1'|'0'), ttl
 * seconds, max events, channel, first sequence, then (type, json) per event.
 */
const APPEND_EVENTS_LUA = `
local last = -1
local tip = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if tip[1] then last = tonumber(string.match(tip[1][1], '%-(%d+)$')) - 1 end
if redis.call('HGET', KEYS[2], 'closed') then return {'closed', last} end
if ARGV[1] == 'attempt' and tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0') > tonumber(ARGV[2]) then return {'stale', last} end
local seq = tonumber(ARGV[7])
if seq ~= last + 1 then return {'gap', last} end
for i = 8, #ARGV, 2 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '0-' .. (seq + 1), 't', ARGV[i], 'e', ARGV[i + 1])
  seq = seq + 1
end
redis.call('HSETNX', KEYS[2], 'attempt', '0')
if ARGV[3] == '1' then redis.call('HSET', KEYS[2], 'closed', '1') end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[6], '1')
return {'ok', seq - 1}
`;

/**
 * Fences a run's log for a new attempt: refused when the log is closed or a later attempt began.
 * Returns where the log ends and the type of its last event. KEYS: stream, meta. ARGV: attempt, ttl.
 */
const BEGIN_ATTEMPT_LUA = `
local last, lastType = -1, ''
local tip = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if tip[1] then
  last = tonumber(string.match(tip[1][1], '%-(%d+)$')) - 1
  local fields = tip[1][2]
  for i = 1, #fields, 2 do if fields[i] == 't' then lastType = fields[i + 1] end end
end
if redis.call('HGET', KEYS[2], 'closed') then return {'closed', last, lastType} end
if tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0') > tonumber(ARGV[1]) then return {'stale', last, lastType} end
redis.call('HSET', KEYS[2], 'attempt', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if last >= 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {'ok', last, lastType}
`;

type ScriptReply = [string, number | string, string?];
interface EventLogCommands {
  icAppendRunEvents(stream: string, meta: string, ...args: Array<string | number>): Promise<ScriptReply>;
  icBeginRunAttempt(stream: string, meta: string, attempt: number, ttlSeconds: number): Promise<ScriptReply>;
}

/** One stream entry as Redis returns it, checked on the way out: its type and JSON are ours, the rest is not trusted. */
const StreamEntryFields = z.array(z.string());

/**
 * Run events in a Redis Stream per run, with explicit ids `0-(sequence+1)` so "after sequence N" is a
 * range read, plus a small hash beside it (current attempt, closed). Readers wait on a per-run pub/sub
 * notification instead of holding a blocking connection each, so one API process can relay thousands
 * of streams over two connections.
 */
class RedisEventLog implements RunEventLog {
  private readonly waiters = new EventEmitter().setMaxListeners(0);
  private readonly subscriptions = new Map<string, number>();
  /** The SUBSCRIBE of each run's channel, shared: every reader waits until it is active before its first range read. */
  private readonly subscribed = new Map<string, Promise<unknown>>();
  private readonly commands: EventLogCommands;

  constructor(
    private readonly redis: Redis,
    private readonly subscriber: Redis,
    private readonly keys: RedisKeys,
    private readonly maxEvents: number,
  ) {
    redis.defineCommand('icAppendRunEvents', { numberOfKeys: 2, lua: APPEND_EVENTS_LUA });
    redis.defineCommand('icBeginRunAttempt', { numberOfKeys: 2, lua: BEGIN_ATTEMPT_LUA });
    this.commands = redis as unknown as EventLogCommands;
  }

  private key(runId: string) {
    return this.keys.runEvents(runId);
  }
  private metaKey(runId: string) {
    return this.keys.runLog(runId);
  }
  private channel(runId: string) {
    return this.keys.runAppendedChannel(runId);
  }

  dispatch(channel: string): void {
    this.waiters.emit(channel);
  }

  async append(runId: string, events: readonly StreamEvent[], options: AppendOptions): Promise<AppendResult> {
    const first = events[0];
    if (!first) return { ok: true, lastSequence: await this.lastSequence(runId) };
    const args: Array<string | number> = [
      'attempt' in options.authority ? 'attempt' : 'finished',
      'attempt' in options.authority ? options.authority.attempt : 0,
      options.closes ? '1' : '0',
      options.ttlSeconds,
      this.maxEvents,
      this.channel(runId),
      first.sequence_number,
    ];
    for (const event of events) args.push(event.type, JSON.stringify(event));
    const [status, last] = await this.commands.icAppendRunEvents(this.key(runId), this.metaKey(runId), ...args);
    const lastSequence = Number(last);
    if (status === 'ok') return { ok: true, lastSequence };
    return { ok: false, reason: status as 'stale' | 'closed' | 'gap', lastSequence };
  }

  async beginAttempt(runId: string, attempt: number, ttlSeconds: number): Promise<BeginAttemptResult> {
    const [status, last, lastType] = await this.commands.icBeginRunAttempt(this.key(runId), this.metaKey(runId), attempt, ttlSeconds);
    const lastSequence = Number(last);
    if (status === 'ok') return { ok: true, lastSequence, lastType: lastType || null };
    return { ok: false, reason: status as 'stale' | 'closed', lastSequence };
  }

  async read(runId: string, afterSequence: number, blockMs: number, limit = 1000): Promise<StreamEvent[]> {
    const channel = this.channel(runId);
    let woken = false;
    let wake: () => void = () => {
      woken = true;
    };
    const listener = () => wake();
    this.waiters.on(channel, listener);
    await this.retain(runId);
    try {
      const now = await this.range(runId, afterSequence, limit);
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
      return await this.range(runId, afterSequence, limit);
    } finally {
      this.waiters.off(channel, listener);
      await this.release(runId);
    }
  }

  private async range(runId: string, afterSequence: number, limit: number): Promise<StreamEvent[]> {
    const entries = await this.redis.xrange(this.key(runId), `(0-${afterSequence + 1}`, '+', 'COUNT', limit);
    // Validated once, on the way out of Redis, like every other payload we stored there.
    return entries.map(([, rawFields]) => {
      const fields = StreamEntryFields.parse(rawFields);
      const json = fields[fields.indexOf('e') + 1];
      return StreamEvent.parse(JSON.parse(json ?? 'null'));
    });
  }

  private async retain(runId: string) {
    const count = this.subscriptions.get(runId) ?? 0;
    this.subscriptions.set(runId, count + 1);
    // A second reader of the same run (another client on the same response, a waiter beside a relay) must
    // not range-read before the subscription is active either: a wake-up published in between would be
    // lost, and it would sleep until its keep-alive timeout.
    let subscription = this.subscribed.get(runId);
    if (!subscription) {
      subscription = this.subscriber.subscribe(this.channel(runId));
      this.subscribed.set(runId, subscription);
      subscription.catch(() => {
        if (this.subscribed.get(runId) === subscription) this.subscribed.delete(runId);
      });
    }
    await subscription;
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
    await this.redis.multi().expire(this.key(runId), ttlSeconds).expire(this.metaKey(runId), ttlSeconds).exec();
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
