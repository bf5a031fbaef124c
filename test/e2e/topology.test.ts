/**
 * The deployed shape, as separate processes the way Kubernetes runs them: api-gateway, responses
 * (api), responses (worker) and titler, sharing PostgreSQL and Redis; requests go to the gateway or
 * the responses API by path, as the Ingress routes them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import OpenAI from 'openai';
import { createTestDatabase, deleteRedisKeys, eventually, freePort, seedTenant, startFakeUpstream, type FakeUpstream, type SeededTenant, type TestDatabase } from '@ic/test-support';

const ROOT = path.resolve(__dirname, '../..');

describe('services as separate processes', () => {
  let db: TestDatabase;
  let seeded: SeededTenant;
  let upstream: FakeUpstream;
  const children: ChildProcess[] = [];
  const prefix = `ictopo${process.pid}`;
  let gatewayPort: number;
  let responsesPort: number;

  beforeAll(async () => {
    db = await createTestDatabase();
    seeded = await seedTenant(db.pool);
    upstream = await startFakeUpstream({ reply: 'from the upstream', tokenDelayMs: 1 });
    [gatewayPort, responsesPort] = [await freePort(), await freePort()];
    const common = {
      PATH: process.env.PATH,
      DATABASE_URL: db.url,
      REDIS_URL: process.env.REDIS_URL,
      REDIS_PREFIX: prefix,
      MODEL_BASE_URL: upstream.baseURL,
      HOST: '127.0.0.1',
      HEALTH_PORT: '0',
      LOG_LEVEL: 'error',
    };
    const start = (entry: string, env: Record<string, string>) => {
      const child = spawn(process.execPath, [path.join(ROOT, entry)], { env: { ...common, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
      children.push(child);
    };
    start('services/api-gateway/dist/main.js', { PORT: String(gatewayPort) });
    start('services/responses/dist/main.js', { RESPONSES_ROLE: 'api', PORT: String(responsesPort) });
    start('services/responses/dist/main.js', { RESPONSES_ROLE: 'worker' });
    start('services/titler/dist/main.js', {});
    for (const port of [gatewayPort, responsesPort]) {
      await eventually(async () => ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok ? true : undefined), 15000, `port ${port} to be ready`);
    }
  });

  afterAll(async () => {
    const exits = children.map((child) => new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code))));
    for (const child of children) child.kill('SIGTERM');
    const codes = await Promise.all(exits);
    await deleteRedisKeys(process.env.REDIS_URL!, prefix);
    await upstream.close();
    await db.drop();
    expect(codes).toEqual([143, 143, 143, 143]); // every process drains and exits on SIGTERM
  });

  it('creates on the gateway, runs turns through the responses API and workers, and titles through the titler', async () => {
    const gateway = new OpenAI({ apiKey: seeded.smithToken, baseURL: `http://127.0.0.1:${gatewayPort}/v1`, maxRetries: 0 });
    const responses = new OpenAI({ apiKey: seeded.smithToken, baseURL: `http://127.0.0.1:${responsesPort}/v1`, maxRetries: 0 });
    const conversation = await gateway.conversations.create();
    const first = await responses.responses.create({ model: '', conversation: conversation.id, input: 'Which services are running?' });
    expect(first.output_text).toBe('from the upstream');
    const streamed = await responses.responses.stream({ model: '', conversation: conversation.id, input: 'And now?' }).finalResponse();
    expect(streamed.output_text).toBe('from the upstream');
    expect(upstream.requests[1]!.messages.map((message) => message.role)).toEqual(['user', 'assistant', 'user']);

    const items = await gateway.conversations.items.list(conversation.id);
    expect(items.data.map((item) => item.id)).toEqual([`${first.id}.i0`, `${first.id}.o`, `${streamed.id}.i0`, `${streamed.id}.o`]);
    const title = await eventually(async () => ((await gateway.conversations.retrieve(conversation.id)) as unknown as { title: string | null }).title ?? undefined);
    expect(title).toBe('Which services are running?');
  });
});
