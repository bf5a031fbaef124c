import { ConfigError } from '@ic/config';
import { getHeapStatistics } from 'node:v8';
import { DEFAULT_STREAM_HEAD_HOLD_MS, derivedWorkerConcurrency, HEAP_PER_INFLIGHT_TURN_BYTES, loadResponsesEnv, serviceNameForRole } from './env';

const base = { DATABASE_URL: 'postgres://ic@db/ic', REDIS_URL: 'redis://redis:6379' };

describe('responses env', () => {
  it('refuses to boot without a model upstream unless the development model is asked for', () => {
    expect(() => loadResponsesEnv(base)).toThrow(ConfigError);
    expect(() => loadResponsesEnv({ ...base, MODEL_BASE_URL: '' })).toThrow(/MODEL_BASE_URL: required with MODEL_ADAPTER=openai-compatible.*MODEL_ADAPTER=development/s);
    expect(loadResponsesEnv({ ...base, MODEL_BASE_URL: 'http://llm:8000/v1' })).toMatchObject({ MODEL_ADAPTER: 'openai-compatible', MODEL_BASE_URL: 'http://llm:8000/v1' });
    expect(loadResponsesEnv({ ...base, MODEL_ADAPTER: 'development' }).MODEL_ADAPTER).toBe('development');
    expect(() => loadResponsesEnv({ ...base, MODEL_ADAPTER: 'canned' })).toThrow(/MODEL_ADAPTER/);
  });

  it('reads the grace period and Redis Cluster seed nodes', () => {
    const env = loadResponsesEnv({ ...base, MODEL_ADAPTER: 'development' });
    expect(env.SHUTDOWN_GRACE_PERIOD_MS).toBe(30000);
    expect(env.REDIS_CLUSTER_NODES).toEqual([]);
    const cluster = loadResponsesEnv({ ...base, MODEL_ADAPTER: 'development', SHUTDOWN_GRACE_PERIOD_MS: '90000', REDIS_CLUSTER_NODES: 'redis-0.redis:6379, redis-1.redis:6379' });
    expect([cluster.SHUTDOWN_GRACE_PERIOD_MS, cluster.REDIS_CLUSTER_NODES]).toEqual([90000, ['redis-0.redis:6379', 'redis-1.redis:6379']]);
    expect(() => loadResponsesEnv({ ...base, MODEL_ADAPTER: 'development', REDIS_CLUSTER_NODES: 'redis-0' })).toThrow(/REDIS_CLUSTER_NODES.*host:port/s);
  });

  it("reads how long a stream's head may be held (0 turns the hold off; negative is refused)", () => {
    const dev = { ...base, MODEL_ADAPTER: 'development' };
    expect(loadResponsesEnv(dev).STREAM_HEAD_HOLD_MS).toBe(DEFAULT_STREAM_HEAD_HOLD_MS);
    expect(loadResponsesEnv({ ...dev, STREAM_HEAD_HOLD_MS: '0' }).STREAM_HEAD_HOLD_MS).toBe(0);
    expect(() => loadResponsesEnv({ ...dev, STREAM_HEAD_HOLD_MS: '-5' })).toThrow(/STREAM_HEAD_HOLD_MS/);
  });

  it('derives WORKER_CONCURRENCY from the heap limit unless it is set', () => {
    const dev = { ...base, MODEL_ADAPTER: 'development' };
    expect(loadResponsesEnv(dev).WORKER_CONCURRENCY).toBe(derivedWorkerConcurrency(getHeapStatistics().heap_size_limit));
    expect(loadResponsesEnv({ ...dev, WORKER_CONCURRENCY: '0' }).WORKER_CONCURRENCY).toBe(derivedWorkerConcurrency());
    expect(loadResponsesEnv({ ...dev, WORKER_CONCURRENCY: '3' }).WORKER_CONCURRENCY).toBe(3);
    expect(() => loadResponsesEnv({ ...dev, WORKER_CONCURRENCY: '10001' })).toThrow(/WORKER_CONCURRENCY/);
    // Half the heap, a budget per turn, within 8–10,000.
    const mib = 1024 * 1024;
    expect(derivedWorkerConcurrency(400 * mib)).toBe(Math.floor((200 * mib) / HEAP_PER_INFLIGHT_TURN_BYTES));
    expect(derivedWorkerConcurrency(400 * mib)).toBe(800);
    expect(derivedWorkerConcurrency(2 * mib)).toBe(8);
    expect(derivedWorkerConcurrency(64 * 1024 * mib)).toBe(10000);
  });

  it('names each role for telemetry', () => {
    expect([serviceNameForRole('api'), serviceNameForRole('worker'), serviceNameForRole('all'), serviceNameForRole(undefined)]).toEqual([
      'ic-responses-api',
      'ic-responses-worker',
      'ic-responses',
      'ic-responses',
    ]);
  });
});
