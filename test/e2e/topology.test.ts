/**
 * The deployed shape, as separate processes the way Kubernetes runs them: api-gateway, responses
 * (api), two responses (worker) and titler, sharing PostgreSQL and Redis; requests go to the gateway or
 * the responses API by path, as the Ingress routes them.
 */
import OpenAI from 'openai';
import {
  createTestDatabase,
  deleteRedisKeys,
  eventually,
  freePort,
  seedTenant,
  spawnService,
  startFakeUpstream,
  waitUntilReady,
  type FakeUpstream,
  type SeededTenant,
  type ServiceName,
  type ServiceProcess,
  type TestDatabase,
} from '@ic/test-support';

describe('services as separate processes', () => {
  let db: TestDatabase;
  let seeded: SeededTenant;
  let upstream: FakeUpstream;
  const children: ServiceProcess[] = [];
  const prefix = `ictopo${process.pid}`;
  let gatewayPort: number;
  let responsesPort: number;

  beforeAll(async () => {
    db = await createTestDatabase();
    seeded = await seedTenant(db.pool);
    upstream = await startFakeUpstream({ reply: 'from the upstream', tokenDelayMs: 1 });
    [gatewayPort, responsesPort] = [await freePort(), await freePort()];
    const common = {
      DATABASE_URL: db.url,
      REDIS_URL: process.env.REDIS_URL,
      REDIS_PREFIX: prefix,
      MODEL_BASE_URL: upstream.baseURL,
      HOST: '127.0.0.1',
      HEALTH_PORT: '0',
      LOG_LEVEL: 'error',
    };
    const start = (name: ServiceName, env: Record<string, string>) => children.push(spawnService(name, { ...common, ...env }));
    start('api-gateway', { PORT: String(gatewayPort) });
    start('responses', { RESPONSES_ROLE: 'api', PORT: String(responsesPort) });
    start('responses', { RESPONSES_ROLE: 'worker' });
    start('responses', { RESPONSES_ROLE: 'worker' });
    start('titler', {});
    for (const port of [gatewayPort, responsesPort]) await waitUntilReady(port, 15000);
  });

  afterAll(async () => {
    const codes = (await Promise.all(children.map((child) => child.stop()))).map((exit) => exit.code);
    await deleteRedisKeys(process.env.REDIS_URL!, prefix);
    await upstream.close();
    await db.drop();
    expect(codes).toEqual([143, 143, 143, 143, 143]); // every process drains and exits on SIGTERM
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

  it("holds every worker's model calls once one worker meets the upstream's rate limit", async () => {
    const responses = new OpenAI({ apiKey: seeded.smithToken, baseURL: `http://127.0.0.1:${responsesPort}/v1`, maxRetries: 0 });
    upstream.reset();
    const heldUntil = Date.now() + 1500;
    upstream.throttleFor(1500);
    const turn = () => responses.responses.create({ model: '', input: 'burst' });
    const first = turn();
    await eventually(async () => (upstream.throttledCount === 1 ? true : undefined));
    // Spread over both worker processes by the queue: without the shared hold, the worker that has
    // not met the limit yet sends its turns straight into it.
    const rest = await Promise.all(Array.from({ length: 8 }, turn));
    for (const response of [await first, ...rest]) expect(response.status).toBe('completed');
    expect(upstream.throttledCount).toBe(1);
    for (const arrived of upstream.requestTimes.slice(1)) expect(arrived).toBeGreaterThanOrEqual(heldUntil);
  });
});
