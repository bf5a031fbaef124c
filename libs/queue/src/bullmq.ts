import { EventEmitter } from 'node:events';
import { DelayedError, Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { bullmqTelemetry } from './bullmq-telemetry';
import { z } from 'zod';
import { jobCatalog, RunId, UpstreamHold, type JobName, type JobPayload } from '@ic/schemas';
import type { Logger } from '@ic/telemetry';
import { RedisKeys } from './keys';
import { createRedis, waitUntilReady, type Redis, type RedisTarget } from './redis';
import { RedisUpstreamLimits } from './upstream-limits';
import {
  PermanentFailure,
  RetryLater,
  type AppendOptions,
  type AppendResult,
  type AttemptAnnouncement,
  type BeginAttemptResult,
  type EnqueueOptions,
  type EventCursor,
  type FollowOptions,
  type JobQueue,
  type LoggedEvent,
  parseLoggedEvent,
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

  const telemetry = bullmqTelemetry();
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
    async postpone(queue: string, jobId: string, delayMs: number) {
      const job = await queueFor(queue).getJob(jobId);
      if (!job) return false;
      try {
        if (delayMs <= 0) await job.promote();
        else await job.changeDelay(delayMs);
        return true;
      } catch (error) {
        // BullMQ refuses a job that is not delayed (any more); a connection failure is the caller's to see.
        if (producer.status === 'ready') return false;
        throw error;
      }
    },
    async withdraw(queue: string, jobId: string) {
      return (await queueFor(queue).remove(jobId)) === 1;
    },
    async countWaiting(queue: string) {
      const counts = await queueFor(queue).getJobCounts('waiting', 'delayed', 'prioritized');
      return Object.values(counts).reduce((sum, count) => sum + count, 0);
    },
  };

  const signals = new RedisSignals(producer, logger, keys);
  const events = new RedisEventLog(producer, subscriber, keys, options.maxEventsPerRun ?? 20000);
  const signalChannels = new Set(signals.channels);
  subscriber.on('message', (channel: string, message: string) => {
    if (signalChannels.has(channel)) signals.dispatch(channel, message);
    else events.dispatch(channel, message);
  });
  await subscriber.subscribe(...signals.channels);

  return {
    kind: 'bullmq',
    queue: jobQueue,
    events,
    signals,
    upstreamLimits: new RedisUpstreamLimits(producer, keys),
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
 * A batch bigger than this is announced with a bare wake-up ('1') instead of travelling in the
 * PUBLISH itself (pub/sub copies each message to every subscriber, and in a cluster over the bus to
 * every node); its readers range-read it.
 */
const PUBLISHED_BATCH_MAX_BYTES = 65536;

/**
 * Where a run's log ends (`last`, -1 when empty; `tip`, its last entry) and the refusal of a closed
 * log, as both scripts below begin. KEYS: stream, meta.
 */
const LOG_TIP_LUA = `
local last = -1
local tip = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if tip then last = tonumber(string.match(tip[1], '%-(%d+)$')) - 1 end
if redis.call('HGET', KEYS[2], 'closed') then return {'closed', last} end
`;

/**
 * Appends a batch to a run's event log in one atomic step: refused (nothing written) when the log is
 * closed, when a later attempt has begun (worker appends only), or when the batch does not continue
 * the sequence exactly; otherwise every event is added, the log's expiry refreshed, a terminal batch
 * closes the log, and readers are woken with one PUBLISH that carries the batch itself
 * (newline-separated: first sequence number, then type and JSON per event; JSON text holds no raw
 * newline) so they need not read it back, or a bare '1' when it is too big.
 * KEYS: stream, meta hash. ARGV: mode ('attempt' | 'finished'), attempt, closes ('1'|'0'), ttl
 * seconds, max events, channel, first sequence, then (type, json) per event.
 */
const APPEND_EVENTS_LUA = `${LOG_TIP_LUA}
if ARGV[1] == 'attempt' and tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0') > tonumber(ARGV[2]) then return {'stale', last} end
local seq = tonumber(ARGV[7])
if seq ~= last + 1 then return {'gap', last} end
local size = 0
for i = 8, #ARGV, 2 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '0-' .. (seq + 1), 't', ARGV[i], 'e', ARGV[i + 1])
  size = size + #ARGV[i] + #ARGV[i + 1] + 2
  seq = seq + 1
end
redis.call('HSETNX', KEYS[2], 'attempt', '0')
if ARGV[3] == '1' then redis.call('HSET', KEYS[2], 'closed', '1') end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if size > ${PUBLISHED_BATCH_MAX_BYTES} then
  redis.call('PUBLISH', ARGV[6], '1')
else
  redis.call('PUBLISH', ARGV[6], ARGV[7] .. '\\n' .. table.concat(ARGV, '\\n', 8))
end
return {'ok', seq - 1}
`;

/**
 * Fences a run's log for a new attempt and appends its announcement in one atomic step: refused
 * (nothing written) when the log is closed or a later attempt began. Otherwise the attempt is recorded,
 * `response.created` is added to an empty log and `response.in_progress` unless the log ends with one,
 * then the attempt's first events, if it sent any, each numbered where the log ends (the script writes
 * the number into the JSON: the caller cannot know it), and readers are woken as by an append, with one
 * PUBLISH. Returns where the log then ends.
 * KEYS: stream, meta. ARGV: attempt, ttl seconds, max events, channel, then the announcement's JSON
 * after the sequence number, split where the response's status goes (see announcementTemplate: the
 * response is sent once, for both events), then (type, JSON after the sequence number) per first event.
 */
const BEGIN_ATTEMPT_LUA = `${LOG_TIP_LUA}
local lastType = ''
if tip then
  local fields = tip[2]
  for i = 1, #fields, 2 do if fields[i] == 't' then lastType = fields[i + 1] end end
end
if tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0') > tonumber(ARGV[1]) then return {'stale', last} end
redis.call('HSET', KEYS[2], 'attempt', ARGV[1])
local seq = last + 1
local published = {}
local size = 0
local function add(eventType, json)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '0-' .. (seq + 1), 't', eventType, 'e', json)
  published[#published + 1] = eventType
  published[#published + 1] = json
  size = size + #eventType + #json + 2
  seq = seq + 1
end
if last < 0 then add('response.created', '{"type":"response.created","sequence_number":' .. seq .. ARGV[5] .. '"queued"' .. ARGV[6]) end
if lastType ~= 'response.in_progress' then add('response.in_progress', '{"type":"response.in_progress","sequence_number":' .. seq .. ARGV[5] .. '"in_progress"' .. ARGV[6]) end
for i = 7, #ARGV, 2 do add(ARGV[i], '{"type":"' .. ARGV[i] .. '","sequence_number":' .. seq .. ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[2], ARGV[2])
if seq > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if size > ${PUBLISHED_BATCH_MAX_BYTES} then
  redis.call('PUBLISH', ARGV[4], '1')
elseif #published > 0 then
  redis.call('PUBLISH', ARGV[4], (last + 1) .. '\\n' .. table.concat(published, '\\n'))
end
return {'ok', seq - 1}
`;

/** Stands for the status while the announcement is serialised: NUL never gets past the API's input checks, so no text of a response holds it. */
const STATUS_SLOT = '\u0000';
const STATUS_SLOT_JSON = JSON.stringify(STATUS_SLOT);

/**
 * An attempt's announcement as the JSON text that continues `{"type":"…","sequence_number":N` for
 * `{ response }`, cut in two where the response's status goes, so that BEGIN_ATTEMPT_LUA, which numbers
 * the events and puts in each one's status, writes exactly `JSON.stringify({ type, sequence_number, response: { ...response, status } })`.
 */
export function announcementTemplate(response: Record<string, unknown>): [beforeStatus: string, afterStatus: string] {
  const json = JSON.stringify({ response: { ...response, status: STATUS_SLOT } });
  const at = json.indexOf(STATUS_SLOT_JSON);
  return [`,${json.slice(1, at)}`, json.slice(at + STATUS_SLOT_JSON.length)];
}

/**
 * An event's JSON after its sequence number, for a script that numbers it: `{"type":T,"sequence_number":N`
 * and this text make `JSON.stringify(event)` for any N. Events are built type first, number second
 * (EventSequencer), and event types are plain names that JSON writes without escapes.
 */
export function afterSequenceNumber(event: StreamEvent): string {
  const json = JSON.stringify(event);
  const head = `{"type":"${event.type}","sequence_number":${event.sequence_number}`;
  if (!json.startsWith(head)) throw new Error(`event ${event.type} is not serialised type first, sequence number second`);
  return json.slice(head.length);
}

type ScriptReply = [status: string, lastSequence: number | string];
interface EventLogCommands {
  icAppendRunEvents(stream: string, meta: string, ...args: Array<string | number>): Promise<ScriptReply>;
  icBeginRunAttempt(stream: string, meta: string, ...args: Array<string | number>): Promise<ScriptReply>;
}

/** One stream entry as Redis returns it, checked on the way out: its type and JSON are ours, the rest is not trusted. */
const StreamEntry = z.tuple([z.string().regex(/^0-\d+$/), z.tuple([z.literal('t'), z.string().min(1), z.literal('e'), z.string().startsWith('{')])]);

/**
 * A published batch (see APPEND_EVENTS_LUA), checked on the way in; null for a bare wake-up or
 * anything else (the readers then range-read the log, which is always right).
 */
export function decodePublishedBatch(message: string): LoggedEvent[] | null {
  const parts = message.split('\n');
  const first = Number(parts[0]);
  if (parts.length < 3 || parts.length % 2 === 0 || !Number.isInteger(first) || first < 0) return null;
  const events: LoggedEvent[] = [];
  for (let k = 1; k < parts.length; k += 2) {
    const type = parts[k]!;
    const json = parts[k + 1]!;
    if (type === '' || json[0] !== '{') return null;
    events.push({ type, sequence_number: first + (k - 1) / 2, json });
  }
  return events;
}

/** A reader keeps at most this many published events it has not taken yet; beyond that it range-reads instead. */
const CURSOR_BUFFER_MAX = 5000;
/** A run's wake-up channel stays subscribed this long after its last reader left (a relay reading in a loop, a resume). */
const CHANNEL_IDLE_MS = 2000;

interface RunChannel {
  readonly name: string;
  readonly cursors: Set<RedisCursor>;
  /** The SUBSCRIBE, shared by every reader of the run; null before it is sent or after it failed. */
  subscribed: Promise<void> | null;
  /** When its last reader left (0 while it has readers). */
  idleSince: number;
}

/** Channels named in one SUBSCRIBE or UNSUBSCRIBE at most. */
const MAX_CHANNELS_PER_COMMAND = 1000;

/**
 * Run events in a Redis Stream per run, with explicit ids `0-(sequence+1)` so "after sequence N" is a
 * range read, plus a small hash beside it (current attempt, closed). Readers follow a run through
 * cursors that share one subscription per run and process; appended batches arrive in the PUBLISH
 * itself, so a live relay does not read the stream back. One API process relays thousands of streams
 * over two connections.
 */
class RedisEventLog implements RunEventLog {
  private readonly channels = new Map<string, RunChannel>();
  /** Channels to subscribe with the next SUBSCRIBE, and the promise every one of them waits on. */
  private pendingSubscribe: { names: string[]; sent: Promise<void> } | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
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
    // Messages published while the subscriber was reconnecting are lost: every reader reads the log again.
    subscriber.on('ready', () => {
      for (const channel of this.channels.values()) for (const cursor of channel.cursors) cursor.receive(null);
    });
  }

  private key(runId: string) {
    return this.keys.runEvents(runId);
  }
  private metaKey(runId: string) {
    return this.keys.runLog(runId);
  }

  /** A message on a run's channel: handed to every reader of the run in this process, decoded once. */
  dispatch(channel: string, message: string): void {
    const entry = this.channels.get(channel);
    if (!entry || entry.cursors.size === 0) return;
    const batch = decodePublishedBatch(message);
    for (const cursor of entry.cursors) cursor.receive(batch);
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
      this.keys.runAppendedChannel(runId),
      first.sequence_number,
    ];
    for (const event of events) args.push(event.type, JSON.stringify(event));
    const [status, last] = await this.commands.icAppendRunEvents(this.key(runId), this.metaKey(runId), ...args);
    const lastSequence = Number(last);
    if (status === 'ok') return { ok: true, lastSequence };
    return { ok: false, reason: status as 'stale' | 'closed' | 'gap', lastSequence };
  }

  async beginAttempt(runId: string, attempt: number, ttlSeconds: number, announcement: AttemptAnnouncement): Promise<BeginAttemptResult> {
    const args: Array<string | number> = [attempt, ttlSeconds, this.maxEvents, this.keys.runAppendedChannel(runId), ...announcementTemplate(announcement.response)];
    for (const event of announcement.firstEvents ?? []) args.push(event.type, afterSequenceNumber(event));
    const [status, last] = await this.commands.icBeginRunAttempt(this.key(runId), this.metaKey(runId), ...args);
    const lastSequence = Number(last);
    if (status === 'ok') return { ok: true, lastSequence };
    return { ok: false, reason: status as 'stale' | 'closed', lastSequence };
  }

  async read(runId: string, afterSequence: number, blockMs: number, limit = 1000): Promise<StreamEvent[]> {
    if (blockMs <= 0) return (await this.range(runId, afterSequence, limit)).map(parseLoggedEvent);
    const cursor = this.follow(runId, afterSequence);
    try {
      return (await cursor.next(blockMs, limit)).map(parseLoggedEvent);
    } finally {
      cursor.close();
    }
  }

  follow(runId: string, afterSequence: number, options: FollowOptions = {}): EventCursor {
    const name = this.keys.runAppendedChannel(runId);
    let channel = this.channels.get(name);
    if (!channel) {
      channel = { name, cursors: new Set(), subscribed: null, idleSince: 0 };
      this.channels.set(name, channel);
    }
    channel.idleSince = 0;
    const cursor = new RedisCursor(this, channel, runId, afterSequence, options.fresh === true);
    channel.cursors.add(cursor);
    void this.subscription(channel).catch(() => undefined);
    return cursor;
  }

  /** The run's SUBSCRIBE, sent once and shared; sent again if it failed (Redis was down). */
  subscription(channel: RunChannel): Promise<void> {
    if (!channel.subscribed) {
      const subscribed = this.subscribeSoon(channel.name);
      channel.subscribed = subscribed;
      subscribed.catch(() => {
        if (channel.subscribed === subscribed) channel.subscribed = null;
      });
    }
    return channel.subscribed;
  }

  /**
   * Channels asked for while the event loop handles one round of I/O leave in one SUBSCRIBE. The
   * subscriber connection does not pipeline by itself (its replies are pushes), so each run's SUBSCRIBE
   * was a socket write of its own, and one more for Redis's confirmation: under load, a write per
   * turn. The wait is a setImmediate, hidden behind the accept statement the relay waits for anyway.
   */
  private subscribeSoon(name: string): Promise<void> {
    if (!this.pendingSubscribe) {
      const names: string[] = [];
      const sent = new Promise((resolve) => setImmediate(resolve)).then(async () => {
        this.pendingSubscribe = null;
        const parts: Array<Promise<unknown>> = [];
        for (let k = 0; k < names.length; k += MAX_CHANNELS_PER_COMMAND) parts.push(this.subscriber.subscribe(...names.slice(k, k + MAX_CHANNELS_PER_COMMAND)));
        await Promise.all(parts);
      });
      this.pendingSubscribe = { names, sent };
    }
    this.pendingSubscribe.names.push(name);
    return this.pendingSubscribe.sent;
  }

  /** A reader left; a channel without readers is unsubscribed a little later, together with the others gone idle. */
  detach(channel: RunChannel, cursor: RedisCursor): void {
    if (!channel.cursors.delete(cursor) || channel.cursors.size > 0) return;
    channel.idleSince = Date.now();
    this.idleTimer ??= setInterval(() => this.unsubscribeIdle(), CHANNEL_IDLE_MS / 2).unref();
  }

  private unsubscribeIdle(): void {
    const cutoff = Date.now() - CHANNEL_IDLE_MS;
    const idle: string[] = [];
    let waiting = false;
    for (const channel of this.channels.values()) {
      if (channel.cursors.size > 0) continue;
      if (channel.idleSince > cutoff) {
        waiting = true;
        continue;
      }
      this.channels.delete(channel.name);
      if (channel.subscribed) idle.push(channel.name);
    }
    // One UNSUBSCRIBE for every channel gone idle, not one per reader.
    for (let k = 0; k < idle.length; k += MAX_CHANNELS_PER_COMMAND) void this.subscriber.unsubscribe(...idle.slice(k, k + MAX_CHANNELS_PER_COMMAND)).catch(() => undefined);
    if (!waiting && this.idleTimer) {
      clearInterval(this.idleTimer);
      this.idleTimer = null;
    }
  }

  async range(runId: string, afterSequence: number, limit: number): Promise<LoggedEvent[]> {
    const entries = await this.redis.xrange(this.key(runId), `(0-${afterSequence + 1}`, '+', 'COUNT', limit);
    // Validated once, on the way out of Redis, like every other payload we stored there.
    return entries.map((entry) => {
      const [id, [, type, , json]] = StreamEntry.parse(entry);
      return { type, sequence_number: Number(id.slice(2)) - 1, json };
    });
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

/**
 * One reader of a run. Published batches are buffered as they arrive; `next` takes them while they
 * continue the cursor's position exactly, and range-reads the stream when they do not (a gap: a batch
 * too big to publish, messages lost while the subscriber reconnected), at the start (unless the run is
 * fresh) and after a quiet wait (a lost wake-up).
 */
class RedisCursor implements EventCursor {
  position: number;
  private buffered: LoggedEvent[] = [];
  private mustRange: boolean;
  private wake: (() => void) | null = null;
  private closed = false;

  constructor(
    private readonly log: RedisEventLog,
    private readonly channel: RunChannel,
    private readonly runId: string,
    afterSequence: number,
    fresh: boolean,
  ) {
    this.position = afterSequence;
    this.mustRange = !fresh;
  }

  ready(): Promise<void> {
    return this.log.subscription(this.channel);
  }

  /** A published batch, or null: something was appended that the stream must be read for. */
  receive(batch: LoggedEvent[] | null): void {
    if (batch === null || this.buffered.length + batch.length > CURSOR_BUFFER_MAX) {
      this.buffered = [];
      this.mustRange = true;
    } else {
      for (const event of batch) this.buffered.push(event);
    }
    this.wake?.();
  }

  async next(blockMs: number, limit = 1000, options: { quietExpected?: boolean } = {}): Promise<LoggedEvent[]> {
    if (this.closed) return [];
    await this.ready();
    const deadline = Date.now() + blockMs;
    for (;;) {
      const events = await this.collect(limit);
      if (events.length > 0 || this.closed) return events;
      // Something arrived while the stream was being read: look at it before sleeping.
      if (this.mustRange || this.buffered.length > 0) continue;
      const remaining = deadline - Date.now();
      if (remaining <= 0) return [];
      const woken = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          this.wake = null;
          resolve(false);
        }, remaining);
        this.wake = () => {
          clearTimeout(timer);
          this.wake = null;
          resolve(true);
        };
      });
      if (!woken) {
        // A short wait that was expected to be quiet: a lost wake-up is caught by a later, longer one.
        if (options.quietExpected) return [];
        // Quiet for the whole wait: read the stream once more, in case a wake-up was lost.
        this.mustRange = true;
      }
    }
  }

  private async collect(limit: number): Promise<LoggedEvent[]> {
    if (!this.mustRange) {
      const taken = this.takeBuffered(limit);
      if (taken) return taken;
      this.mustRange = true;
    }
    this.mustRange = false;
    const events = await this.log.range(this.runId, this.position, limit);
    const last = events[events.length - 1];
    if (last) this.position = last.sequence_number;
    return events;
  }

  /** The buffered events that continue the position exactly; null when they skip some (read the stream). */
  private takeBuffered(limit: number): LoggedEvent[] | null {
    const buffered = this.buffered;
    let start = 0;
    while (start < buffered.length && buffered[start]!.sequence_number <= this.position) start++;
    if (start === buffered.length) {
      this.buffered = [];
      return [];
    }
    if (buffered[start]!.sequence_number !== this.position + 1) {
      this.buffered = [];
      return null;
    }
    let end = start + 1;
    while (end < buffered.length && end - start < limit && buffered[end]!.sequence_number === buffered[end - 1]!.sequence_number + 1) end++;
    const taken = buffered.slice(start, end);
    this.buffered = buffered.slice(end);
    this.position = taken[taken.length - 1]!.sequence_number;
    return taken;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.buffered = [];
    this.wake?.();
    this.log.detach(this.channel, this);
  }
}

class RedisSignals implements RunSignals {
  readonly channel: string;
  readonly upstreamHoldChannel: string;
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  constructor(
    private readonly redis: Redis,
    private readonly logger: Logger,
    keys: RedisKeys,
  ) {
    this.channel = keys.cancelChannel();
    this.upstreamHoldChannel = keys.upstreamHoldChannel();
  }

  get channels(): string[] {
    return [this.channel, this.upstreamHoldChannel];
  }

  dispatch(channel: string, message: string): void {
    if (channel === this.channel) {
      if (RunId.safeParse(message).success) this.emitter.emit('cancel', message);
      return;
    }
    const hold = parseUpstreamHold(message);
    if (hold) this.emitter.emit('upstream-hold', hold);
    else this.logger.warn({ channel }, 'ignored a malformed upstream hold');
  }

  async publishCancel(runId: string): Promise<void> {
    await this.redis.publish(this.channel, runId);
  }

  onCancel(listener: (runId: string) => void): () => void {
    this.emitter.on('cancel', listener);
    return () => this.emitter.off('cancel', listener);
  }

  async publishUpstreamHold(hold: UpstreamHold): Promise<void> {
    await this.redis.publish(this.upstreamHoldChannel, JSON.stringify(UpstreamHold.parse(hold)));
  }

  onUpstreamHold(listener: (hold: UpstreamHold) => void): () => void {
    this.emitter.on('upstream-hold', listener);
    return () => this.emitter.off('upstream-hold', listener);
  }
}

function parseUpstreamHold(message: string): UpstreamHold | null {
  try {
    const parsed = UpstreamHold.safeParse(JSON.parse(message));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
