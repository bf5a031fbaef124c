import IORedis, { Cluster, type ClusterNode, type RedisOptions } from 'ioredis';
import type { Logger } from '@ic/telemetry';
import { instrumentRedisCommands } from './redis-metrics';

/** A standalone Redis or a Redis Cluster client; both speak the same commands. */
export type Redis = IORedis | Cluster;

/** Where Redis is: REDIS_URL, or REDIS_CLUSTER_NODES (seed nodes; REDIS_URL then only adds credentials and TLS). */
export interface RedisTarget {
  url?: string;
  clusterNodes?: readonly string[];
}

export const isClusterTarget = (target: RedisTarget): boolean => (target.clusterNodes?.length ?? 0) > 0;

/**
 * Every Redis client comes from here. `role` picks the failure behaviour: producers fail fast so the
 * API can answer 503 instead of hanging, while workers and subscribers wait out a Redis restart.
 */
export function createRedis(target: RedisTarget | string, role: 'producer' | 'worker' | 'subscriber', logger: Logger): Redis {
  const { url, clusterNodes } = typeof target === 'string' ? { url: target, clusterNodes: [] } : target;
  const roleOptions = role === 'producer' ? { maxRetriesPerRequest: 1 } : { maxRetriesPerRequest: null };
  const connection: RedisOptions = {
    enableReadyCheck: true,
    connectTimeout: 5000,
    // Reconnect when a failover leaves us talking to a replica.
    reconnectOnError: (error) => error.message.startsWith('READONLY'),
    ...roleOptions,
    // Commands a producer issues in the same tick (many turns' appends, enqueues, rate-limit checks)
    // leave in one socket write. Not for workers and subscribers: their blocking reads must go alone.
    enableAutoPipelining: role === 'producer',
  };
  const retryStrategy = (times: number) => Math.min(times * 200, 2000);
  let client: Redis;
  if (clusterNodes && clusterNodes.length > 0) {
    client = new Cluster(clusterNodes.map(parseNode), {
      redisOptions: { ...connection, ...credentialsFrom(url) },
      clusterRetryStrategy: retryStrategy,
      enableOfflineQueue: role !== 'producer',
      enableAutoPipelining: role === 'producer',
      enableReadyCheck: true,
      // Reads go to masters: run event streams are read right after they are written.
      scaleReads: 'master',
    });
  } else {
    if (!url) throw new Error('REDIS_URL or REDIS_CLUSTER_NODES is required');
    client = new IORedis(url, { ...connection, lazyConnect: false, retryStrategy, ...(role === 'producer' ? { enableOfflineQueue: false } : {}) });
  }
  client.on('error', (error) => logger.warn({ err: error, role }, 'redis error'));
  instrumentRedisCommands(client);
  return client;
}

function parseNode(node: string): ClusterNode {
  const at = node.lastIndexOf(':');
  return { host: node.slice(0, at), port: Number(node.slice(at + 1)) };
}

/** Username, password and TLS from a redis:// or rediss:// URL, for every node of a cluster. */
function credentialsFrom(url: string | undefined): Pick<RedisOptions, 'username' | 'password' | 'tls'> {
  if (!url) return {};
  const parsed = new URL(url);
  return {
    ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    ...(parsed.protocol === 'rediss:' ? { tls: {} } : {}),
  };
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
