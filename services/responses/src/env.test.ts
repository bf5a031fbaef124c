import { ConfigError } from '@ic/config';
import { loadResponsesEnv, serviceNameForRole } from './env';

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

  it('names each role for telemetry', () => {
    expect([serviceNameForRole('api'), serviceNameForRole('worker'), serviceNameForRole('all'), serviceNameForRole(undefined)]).toEqual([
      'ic-responses-api',
      'ic-responses-worker',
      'ic-responses',
      'ic-responses',
    ]);
  });
});
