import type { Logger } from '@ic/telemetry';
import { createBullmqBackend } from './bullmq';
import { createInProcessBackend } from './memory';
import type { QueueBackend } from './types';

export * from './types';
export { createRedis, waitUntilReady } from './redis';
export { createInProcessBackend, MemoryEventLog } from './memory';
export { createBullmqBackend } from './bullmq';

/** BullMQ on Redis when REDIS_URL is set; otherwise the in-process queue (embedded default, one process). */
export async function createQueueBackend(options: { redisUrl?: string; prefix: string; logger: Logger; lockDurationMs?: number }): Promise<QueueBackend> {
  if (options.redisUrl) return createBullmqBackend({ redisUrl: options.redisUrl, prefix: options.prefix, logger: options.logger, lockDurationMs: options.lockDurationMs });
  return createInProcessBackend(options.logger);
}
