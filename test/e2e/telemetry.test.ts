import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createTestDatabase, deleteRedisKeys, eventually, freePort, seedTenant, type SeededTenant, type TestDatabase } from '@ic/test-support';

const RESPONSES_MAIN = path.resolve(__dirname, '../../services/responses/dist/main.js');

describe('telemetry of a deployed process (OTEL_PROMETHEUS_PORT)', () => {
  let db: TestDatabase;
  let seeded: SeededTenant;
  let child: ChildProcess;
  let apiPort: number;
  let metricsPort: number;
  const prefix = `ictel${process.pid}`;

  beforeAll(async () => {
    db = await createTestDatabase();
    seeded = await seedTenant(db.pool);
    [apiPort, metricsPort] = [await freePort(), await freePort()];
    child = spawn(process.execPath, [RESPONSES_MAIN], {
      env: {
        PATH: process.env.PATH,
        RESPONSES_ROLE: 'all',
        DATABASE_URL: db.url,
        REDIS_URL: process.env.REDIS_URL,
        REDIS_PREFIX: prefix,
        PORT: String(apiPort),
        HOST: '127.0.0.1',
        OTEL_PROMETHEUS_PORT: String(metricsPort),
        DEV_MODEL_TOKEN_DELAY_MS: '0',
        LOG_LEVEL: 'error',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    await eventually(async () => ((await fetch(`http://127.0.0.1:${apiPort}/healthz`)).ok ? true : undefined), 15000, 'the service to listen');
  });
  afterAll(async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    await deleteRedisKeys(process.env.REDIS_URL!, prefix);
    await db.drop();
  });

  it('exports HTTP, queue and turn metrics for dashboards', async () => {
    const reply = await fetch(`http://127.0.0.1:${apiPort}/v1/responses`, {
      method: 'POST',
      headers: { authorization: `Bearer ${seeded.smithToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: '', input: 'count me' }),
    });
    expect(((await reply.json()) as { status: string }).status).toBe('completed');
    const text = await eventually(async () => {
      const body = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      // BullMQ counts the job once the handler returns, a moment after the reply went out: wait for both.
      return body.includes('ic_turns_finished_total') && body.includes('bullmq_jobs_completed_total') ? body : undefined;
    }, 10000, 'turn metrics');
    expect(text).toMatch(/^ic_turns_accepted_total\{[^}]*\} 1$/m);
    expect(text).toMatch(/^ic_turns_finished_total\{status="completed"[^}]*\} 1$/m);
    expect(text).toMatch(/^ic_turn_queue_wait_seconds_count\{[^}]*\} 1$/m);
    expect(text).toMatch(/^http_server_request_duration_count\{[^}]*http_route="\/v1\/responses"[^}]*\} 1$/m);
    expect(text).toMatch(/^bullmq_jobs_completed_total\{[^}]*bullmq_queue_name="turns"[^}]*\} 1$/m);
  });
});
