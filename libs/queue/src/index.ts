import type { Logger } from '@ic/telemetry';
import { createBullmqBackend } from './bullmq';
import { createInProcessBackend } from './memory';
import type { QueueBackend } from './types';

export * from './types';
export { createRedis, isClusterTarget, waitUntilReady, type Redis, type RedisTarget } from './redis';
export { RedisKeys } from './keys';
export { createInProcessBackend, MemoryEventLog } from './memory';
export { createBullmqBackend } from './bullmq';

/** BullMQ on Redis (or a Redis Cluster) when one is configured; otherwise the in-process queue (embedded default, one process). */
export async function createQueueBackend(options: { redisUrl?: string; clusterNodes?: readonly string[]; prefix: string; logger: Logger; lockDurationMs?: number }): Promise<QueueBackend> {
  if (options.redisUrl || options.clusterNodes?.length) {
    return createBullmqBackend({ url: options.redisUrl, clusterNodes: options.clusterNodes, prefix: options.prefix, logger: options.logger, lockDurationMs: options.lockDurationMs });
  }
  return createInProcessBackend(options.logger);
}
