import IORedis, { type RedisOptions } from 'ioredis';
import type { Logger } from '@ic/telemetry';

export type Redis = IORedis;

/**
 * Every Redis client comes from here. `role` picks the failure behaviour: producers fail fast so the
 * API can answer 503 instead of hanging, while workers and subscribers wait out a Redis restart.
 */
export function createRedis(url: string, role: 'producer' | 'worker' | 'subscriber', logger: Logger): Redis {
  const options: RedisOptions = {
    lazyConnect: false,
    enableReadyCheck: true,
    connectTimeout: 5000,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    // Reconnect when a failover leaves us talking to a replica.
    reconnectOnError: (error) => error.message.startsWith('READONLY'),
    ...(role === 'producer' ? { enableOfflineQueue: false, maxRetriesPerRequest: 1 } : { maxRetriesPerRequest: null }),
  };
  const client = new IORedis(url, options);
  client.on('error', (error) => logger.warn({ err: error, role }, 'redis error'));
  return client;
}

/** Resolves once the client is ready (needed before a fail-fast producer can send anything). */
export async function waitUntilReady(client: Redis, timeoutMs = 10000): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      client.off('ready', onReady);
    };
    client.on('ready', onReady);
  });
}
