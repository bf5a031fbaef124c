import { loadTitlerEnv } from './env';

const base = { DATABASE_URL: 'postgres://ic@db/ic', REDIS_URL: 'redis://redis:6379' };

describe('titler env', () => {
  it('needs a model upstream only for model titles', () => {
    expect(loadTitlerEnv(base).TITLER_MODE).toBe('message');
    expect(() => loadTitlerEnv({ ...base, TITLER_MODE: 'model' })).toThrow(/MODEL_BASE_URL: required/);
    expect(loadTitlerEnv({ ...base, TITLER_MODE: 'model', MODEL_BASE_URL: 'http://llm:8000/v1' }).TITLER_MODE).toBe('model');
  });
});
