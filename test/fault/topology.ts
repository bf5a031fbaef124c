/**
 * The deployed shape for fault runs: api-gateway, responses API and turn workers as separate processes
 * on a private PostgreSQL cluster and a private Redis server, which the scenarios stop and start.
 */
import { randomBytes } from 'node:crypto';
import OpenAI from 'openai';
import { createDbPool, type DatabasePool } from '@ic/db';
import { createBullmqBackend, type QueueBackend } from '@ic/queue';
import { createLogger } from '@ic/telemetry';
import {
  freePort,
  seedTenant,
  spawnService,
  type FakeUpstream,
  type PrivatePostgres,
  type PrivateRedis,
  type ServiceName,
  type ServiceProcess,
} from '@ic/test-support';

export interface FaultTopologyOptions {
  postgres: PrivatePostgres;
  redis: PrivateRedis;
  upstream: FakeUpstream;
  /** Turn worker processes started with the topology. */
  workers: number;
  workerConcurrency: number;
  /** WORKER_LOCK_DURATION_MS: how soon a dead or paused worker's turn is re-delivered. */
  lockDurationMs: number;
}

export class FaultTopology {
  readonly workers: ServiceProcess[] = [];
  private readonly services: ServiceProcess[] = [];
  private pool: DatabasePool | undefined;
  private backend: QueueBackend | undefined;

  private constructor(
    readonly options: FaultTopologyOptions,
    readonly databaseUrl: string,
    readonly prefix: string,
    readonly token: string,
    readonly gatewayURL: string,
    readonly responsesURL: string,
  ) {}

  static async start(options: FaultTopologyOptions): Promise<FaultTopology> {
    const name = `fault_${randomBytes(4).toString('hex')}`;
    const databaseUrl = await options.postgres.createDatabase(name);
    const seedPool = await createDbPool(databaseUrl, { maximumPoolSize: 2 });
    const seeded = await seedTenant(seedPool, { defaultModel: 'fake-model' });
    await seedPool.end();
    const [gatewayPort, responsesPort] = [await freePort(), await freePort()];
    const topology = new FaultTopology(options, databaseUrl, name, seeded.smithToken, `http://127.0.0.1:${gatewayPort}/v1`, `http://127.0.0.1:${responsesPort}/v1`);
    await Promise.all([
      topology.startService('api-gateway', { PORT: String(gatewayPort) }, 'api-gateway listening'),
      topology.startService(
        'responses',
        {
          RESPONSES_ROLE: 'api',
          PORT: String(responsesPort),
          // Find runs whose job was lost soon, so a run settles within the suite's patience.
          SWEEP_INTERVAL_MS: '1000',
          SWEEP_MIN_AGE_MS: '3000',
          // A relay that has nothing to send re-checks Postgres at this pace; short, so a replay of a broken log ends soon.
          STREAM_KEEPALIVE_MS: '1000',
        },
        'responses api listening',
      ),
    ]);
    await Promise.all(Array.from({ length: options.workers }, () => topology.spawnWorker()));
    return topology;
  }

  /** Starts a service and waits for its own "ready" log line (a port another process holds is an error, not a false start). */
  private async startService(name: ServiceName, env: Record<string, string>, readyMessage: string): Promise<ServiceProcess> {
    const service = spawnService(name, { ...this.commonEnv(), ...env });
    this.services.push(service);
    await service.waitForLog(readyMessage, 60000);
    return service;
  }

  private commonEnv(): Record<string, string> {
    return {
      DATABASE_URL: this.databaseUrl,
      REDIS_URL: this.options.redis.url,
      REDIS_PREFIX: this.prefix,
      MODEL_BASE_URL: this.options.upstream.baseURL,
      MODEL_API_KEY: 'fault-upstream-key',
      HOST: '127.0.0.1',
      RATE_LIMIT_REQUESTS_PER_MINUTE: '0',
      RATE_LIMIT_TURNS_PER_MINUTE: '0',
      TOKEN_CACHE_TTL_MS: '60000',
      LOG_LEVEL: 'info', // readiness is read from the log
    };
  }

  /** Starts one more turn worker process and waits until it is ready (reaches Postgres and Redis). */
  async spawnWorker(overrides: { concurrency?: number } = {}): Promise<ServiceProcess> {
    const worker = await this.startService(
      'responses',
      {
        RESPONSES_ROLE: 'worker',
        HEALTH_PORT: '0', // any free port: readiness is read from the log
        WORKER_CONCURRENCY: String(overrides.concurrency ?? this.options.workerConcurrency),
        WORKER_LOCK_DURATION_MS: String(this.options.lockDurationMs),
      },
      'turn worker started',
    );
    this.workers.push(worker);
    return worker;
  }

  /** The Conversations API (gateway process). */
  conversations(): OpenAI {
    return new OpenAI({ apiKey: this.token, baseURL: this.gatewayURL, maxRetries: 0, timeout: 120000 });
  }

  /** The Responses API (responses api process); no automatic retries, so every answer is seen as sent. */
  responses(): OpenAI {
    return new OpenAI({ apiKey: this.token, baseURL: this.responsesURL, maxRetries: 0, timeout: 120000 });
  }

  async createConversations(count: number): Promise<string[]> {
    const client = this.conversations();
    const ids: string[] = [];
    for (let i = 0; i < count; i++) ids.push((await client.conversations.create()).id);
    return ids;
  }

  /** A test-side pool on the scenario's database; release it before stopping Postgres. */
  async db(): Promise<DatabasePool> {
    this.pool ??= await createDbPool(this.databaseUrl, { maximumPoolSize: 4 });
    return this.pool;
  }

  async releaseDb(): Promise<void> {
    const pool = this.pool;
    this.pool = undefined;
    await pool?.end();
  }

  /** The run event logs in Redis, read through the queue library's own interface. */
  async eventLog(): Promise<QueueBackend['events']> {
    this.backend ??= await createBullmqBackend({ url: this.options.redis.url, prefix: this.prefix, logger: createLogger('fault-audit', 'silent') });
    return this.backend.events;
  }

  /** SIGTERMs every process still running; each must drain and exit 143. Returns their exits. */
  async close(): Promise<Array<{ code: number | null; signal: NodeJS.Signals | null }>> {
    const exits = await Promise.all(this.services.filter((service) => service.isRunning()).map((service) => service.stop()));
    await this.releaseDb();
    await this.backend?.close();
    return exits;
  }

  /** Last resort in afterAll: nothing may outlive the test. */
  killAll(): void {
    for (const service of this.services) service.signal('SIGKILL');
  }
}
