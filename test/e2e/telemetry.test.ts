/**
 * Telemetry of the deployed processes: every metric in deploy/observability/metrics.txt (the names the
 * chart's dashboard and alerts query) is exported by a live process, each scrape passes
 * `promtool check metrics` (when promtool is installed), each role reports its own service.name,
 * and traces leave out health probes and idle background work and follow OTEL_TRACES_SAMPLER.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { createTestDatabase, deleteRedisKeys, eventually, freePort, seedTenant, startFakeUpstream, type FakeUpstream, type SeededTenant, type TestDatabase } from '@ic/test-support';

const ROOT = path.resolve(__dirname, '../..');
const METRICS_LIST = path.join(ROOT, 'deploy/observability/metrics.txt');
const PROMTOOL = spawnSync('promtool', ['--version']).status === 0 ? 'promtool' : undefined;

interface Service {
  child: ChildProcess;
  exited: Promise<number | null>;
}

function startService(entry: string, env: Record<string, string | undefined>): Service {
  const child = spawn(process.execPath, [path.join(ROOT, entry)], { env: { PATH: process.env.PATH, LOG_LEVEL: 'error', HOST: '127.0.0.1', HEALTH_PORT: '0', ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
  return { child, exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))) };
}

async function stopAll(services: Service[]): Promise<void> {
  for (const service of services) if (service.child.exitCode === null) service.child.kill('SIGTERM');
  await Promise.all(services.map((service) => service.exited));
}

const untilReady = (port: number) => eventually(async () => ((await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.ok ? true : undefined), 20000, `port ${port} to be ready`);
const scrape = async (port: number) => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();

async function postTurn(port: number, token: string, input: string): Promise<{ status: string; id: string }> {
  const reply = await fetch(`http://127.0.0.1:${port}/v1/responses`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'fast', input }),
  });
  return (await reply.json()) as { status: string; id: string };
}

/** `name type` lines of deploy/observability/metrics.txt. */
function listedMetrics(): Array<{ name: string; type: string }> {
  return readFileSync(METRICS_LIST, 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const [name, type] = line.split(/\s+/);
      return { name: name!, type: type! };
    });
}

describe('metrics of the deployed processes (OTEL_PROMETHEUS_PORT)', () => {
  let db: TestDatabase;
  let seeded: SeededTenant;
  let upstream: FakeUpstream;
  const services: Service[] = [];
  const prefix = `ictel${process.pid}`;
  const ports = { gateway: 0, api: 0, metrics: { gateway: 0, api: 0, worker: 0, titler: 0 } };

  beforeAll(async () => {
    db = await createTestDatabase();
    seeded = await seedTenant(db.pool);
    upstream = await startFakeUpstream({ reply: 'measured', tokenDelayMs: 0 });
    ports.gateway = await freePort();
    ports.api = await freePort();
    for (const role of ['gateway', 'api', 'worker', 'titler'] as const) ports.metrics[role] = await freePort();
    const common = { DATABASE_URL: db.url, REDIS_URL: process.env.REDIS_URL, REDIS_PREFIX: prefix, MODEL_BASE_URL: upstream.baseURL, MODEL_MAP: JSON.stringify({ fast: 'upstream-fast' }) };
    services.push(
      startService('services/api-gateway/dist/main.js', { ...common, PORT: String(ports.gateway), OTEL_PROMETHEUS_PORT: String(ports.metrics.gateway) }),
      startService('services/responses/dist/main.js', { ...common, RESPONSES_ROLE: 'api', PORT: String(ports.api), OTEL_PROMETHEUS_PORT: String(ports.metrics.api) }),
      startService('services/responses/dist/main.js', { ...common, RESPONSES_ROLE: 'worker', WORKER_CONCURRENCY: '3', OTEL_PROMETHEUS_PORT: String(ports.metrics.worker) }),
      startService('services/titler/dist/main.js', { ...common, OTEL_PROMETHEUS_PORT: String(ports.metrics.titler) }),
    );
    await untilReady(ports.gateway);
    await untilReady(ports.api);
  });
  afterAll(async () => {
    await stopAll(services);
    await deleteRedisKeys(process.env.REDIS_URL!, prefix);
    await upstream.close();
    await db.drop();
  });

  it('exports every metric the dashboards and alerts use, in scrapes promtool accepts', async () => {
    expect((await postTurn(ports.api, seeded.smithToken, 'count me')).status).toBe('completed');
    await fetch(`http://127.0.0.1:${ports.gateway}/v1/conversations`, { headers: { authorization: `Bearer ${seeded.smithToken}` } });
    const worker = await eventually(async () => {
      const body = await scrape(ports.metrics.worker);
      // BullMQ counts the job once the handler returns, a moment after the reply went out: wait for both.
      return body.includes('ic_turns_finished_total{') && body.includes('bullmq_jobs_completed_total{') ? body : undefined;
    }, 10000, 'turn metrics');
    const scrapes = { worker, gateway: await scrape(ports.metrics.gateway), api: await scrape(ports.metrics.api), titler: await scrape(ports.metrics.titler) };
    const all = Object.values(scrapes).join('\n');

    const missing = listedMetrics().filter(({ name, type }) => {
      const sample = type === 'histogram' ? `${name}_bucket` : name;
      return !all.includes(`# TYPE ${name} ${type}`) || !new RegExp(`^${sample}(\\{|\\s)`, 'm').test(all);
    });
    expect(missing).toEqual([]);

    if (PROMTOOL) {
      for (const [role, body] of Object.entries(scrapes)) {
        const check = spawnSync(PROMTOOL, ['check', 'metrics'], { input: body, encoding: 'utf8' });
        // The start of the scrape goes with a failure, so a reply that is not our exporter's shows what it was.
        const failed = check.status !== 0 ? { scrapeStart: body.slice(0, 300) } : {};
        expect({ role, status: check.status, output: `${check.stdout}${check.stderr}`.trim(), ...failed }).toEqual({ role, status: 0, output: '' });
      }
    } else {
      console.warn('promtool not installed (Debian package prometheus): scrapes not linted');
    }

    // Each role reports its own service.name.
    expect(scrapes.gateway).toMatch(/^target_info\{[^}]*service_name="ic-gateway"/m);
    expect(scrapes.api).toMatch(/^target_info\{[^}]*service_name="ic-responses-api"/m);
    expect(scrapes.worker).toMatch(/^target_info\{[^}]*service_name="ic-responses-worker"/m);
    expect(scrapes.titler).toMatch(/^target_info\{[^}]*service_name="ic-titler"/m);

    // The values behind the contract, not just the names.
    expect(scrapes.api).toMatch(/^ic_turns_accepted_total\{[^}]*\} 1$/m);
    expect(scrapes.api).toMatch(/^http_server_request_duration_seconds_count\{[^}]*http_route="\/v1\/responses"[^}]*\} 1$/m);
    expect(scrapes.api).toMatch(/^ic_turns_waiting\{[^}]*\} 0$/m);
    expect(scrapes.worker).toMatch(/^ic_turns_finished_total\{status="completed"[^}]*\} 1$/m);
    expect(scrapes.worker).toMatch(/^ic_worker_concurrency\{[^}]*\} 3$/m);
    expect(scrapes.worker).toMatch(/^ic_worker_turns_in_flight\{[^}]*\} 0$/m);
    expect(scrapes.worker).toMatch(/^ic_turn_model_tokens_total\{direction="output",model="upstream-fast"[^}]*\} [1-9]\d*$/m);
    expect(scrapes.worker).toMatch(/^bullmq_jobs_completed_total\{[^}]*bullmq_queue_name="turns"[^}]*\} 1$/m);
    // Turn latencies get LLM-sized buckets (10 ms … 120 s), not the SDK's millisecond defaults.
    expect(scrapes.worker).toMatch(/^ic_turn_queue_wait_seconds_bucket\{[^}]*le="0.01"[^}]*\} \d+$/m);
    expect(scrapes.worker).toMatch(/^ic_turn_time_to_first_token_seconds_bucket\{[^}]*le="120"[^}]*\} 1$/m);
    expect(scrapes.worker).not.toMatch(/^ic_turn_duration_seconds_bucket\{[^}]*le="750"/m);
  });

  it("counts the model upstream's throttled answers, by status, on the worker that got them", async () => {
    expect(await scrape(ports.metrics.worker)).toMatch(/^ic_model_upstream_throttled_total\{[^}]*\} 0$/m);
    upstream.throttleFor(300);
    expect((await postTurn(ports.api, seeded.smithToken, 'after a 429')).status).toBe('completed');
    // Usually one 429; a second when the retry, timed by the retry-after-ms the fake reported, lands a
    // millisecond early by the fake's Date.now() (timers round to whole ms). The counter counts each.
    const refused = upstream.throttledCount;
    expect(refused).toBeGreaterThanOrEqual(1);
    expect(refused).toBeLessThanOrEqual(2);
    expect(await scrape(ports.metrics.worker)).toMatch(new RegExp(`^ic_model_upstream_throttled_total\\{[^}]*status="429"[^}]*\\} ${refused}$`, 'm'));
  });

  it("counts the model calls that waited for the request limit the upstream's answers report, by that limit", async () => {
    expect(await scrape(ports.metrics.worker)).toMatch(/^ic_model_upstream_paced_total\{[^}]*\} 0$/m);
    const throttledBefore = upstream.throttledCount;
    // One request, refilled in 500 ms: the first turn's answer says nothing is left, so the second waits.
    upstream.set({ rateLimit: { requests: 1, windowMs: 500, style: 'bucket' } });
    try {
      expect((await postTurn(ports.api, seeded.smithToken, 'spends the limit')).status).toBe('completed');
      expect((await postTurn(ports.api, seeded.smithToken, 'waits for it')).status).toBe('completed');
    } finally {
      upstream.set({ rateLimit: undefined });
    }
    expect(upstream.throttledCount).toBe(throttledBefore);
    expect(await scrape(ports.metrics.worker)).toMatch(/^ic_model_upstream_paced_total\{[^}]*limit="requests"[^}]*\} 1$/m);
  });
});

/** A stand-in OTLP/HTTP collector: keeps the spans of every JSON export it receives. */
interface CollectedSpan {
  name: string;
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  attributes: Record<string, unknown>;
}

async function startCollector(): Promise<{ url: string; spans: CollectedSpan[]; close(): Promise<void> }> {
  const spans: CollectedSpan[] = [];
  type KeyValue = { key: string; value: Record<string, unknown> };
  const server: Server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => {
      const payload = JSON.parse(body) as { resourceSpans?: Array<{ resource: { attributes: KeyValue[] }; scopeSpans: Array<{ spans: Array<{ name: string; traceId: string; spanId: string; parentSpanId?: string; attributes?: KeyValue[] }> }> }> };
      for (const resourceSpans of payload.resourceSpans ?? []) {
        const service = String(resourceSpans.resource.attributes.find((attribute) => attribute.key === 'service.name')?.value.stringValue);
        for (const scope of resourceSpans.scopeSpans) {
          for (const span of scope.spans) {
            const attributes = Object.fromEntries((span.attributes ?? []).map((attribute) => [attribute.key, Object.values(attribute.value)[0]]));
            spans.push({ name: span.name, service, traceId: span.traceId, spanId: span.spanId, parentSpanId: span.parentSpanId || undefined, attributes });
          }
        }
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${port}`, spans, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe('traces of a deployed process (OTEL_EXPORTER_OTLP_ENDPOINT)', () => {
  let db: TestDatabase;
  let seeded: SeededTenant;
  let upstream: FakeUpstream;
  const prefix = `ictrace${process.pid}`;
  let serviceCount = 0;

  beforeAll(async () => {
    db = await createTestDatabase();
    seeded = await seedTenant(db.pool);
    upstream = await startFakeUpstream({ reply: 'traced', tokenDelayMs: 0 });
  });
  afterAll(async () => {
    for (let count = 1; count <= serviceCount; count += 1) await deleteRedisKeys(process.env.REDIS_URL!, `${prefix}${count}`);
    await upstream.close();
    await db.drop();
  });

  async function withTracedService(sampler: Record<string, string>, run: (port: number, collector: Awaited<ReturnType<typeof startCollector>>) => Promise<void>): Promise<void> {
    const collector = await startCollector();
    const port = await freePort();
    const service = startService('services/responses/dist/main.js', {
      DATABASE_URL: db.url,
      REDIS_URL: process.env.REDIS_URL,
      REDIS_PREFIX: `${prefix}${(serviceCount += 1)}`,
      MODEL_BASE_URL: upstream.baseURL,
      RESPONSES_ROLE: 'all',
      PORT: String(port),
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
      // Background work at full speed: the sweeper every 100 ms, BullMQ's stalled-job check every second.
      SWEEP_INTERVAL_MS: '100',
      WORKER_LOCK_DURATION_MS: '1000',
      // The queue's path (job spans between request and turn); eagerly run turns have a test of their own.
      EAGER_TURNS: 'false',
      ...sampler,
    });
    try {
      await untilReady(port);
      await run(port, collector);
    } finally {
      await stopAll([service]);
      await collector.close();
    }
  }

  it('traces requests and turns, but not probes or idle background work', async () => {
    await withTracedService({ OTEL_TRACES_SAMPLER: 'parentbased_always_on' }, async (port, collector) => {
      for (let probe = 0; probe < 5; probe += 1) {
        await fetch(`http://127.0.0.1:${port}/readyz`);
        await fetch(`http://127.0.0.1:${port}/healthz`);
      }
      // Idle for a while: sweeps, stalled-job checks and worker polls run many times over.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      expect(collector.spans.map((span) => span.name)).toEqual([]);

      expect((await postTurn(port, seeded.smithToken, 'trace me')).status).toBe('completed');
      await eventually(async () => {
        const seen = new Set(collector.spans.map((span) => span.name));
        return seen.has('turn.execute') && [...seen].some((name) => name.startsWith('POST /v1/responses')) ? seen : undefined;
      }, 10000, 'the turn to be traced');
      // The model call: one client span (libs/telemetry http-client.ts) under the turn's span.
      const modelCalls = collector.spans.filter((span) => String(span.attributes['url.full'] ?? '').endsWith('/chat/completions'));
      expect(modelCalls).toHaveLength(1);
      expect(modelCalls[0]!.name).toBe('POST');
      expect(modelCalls[0]!.attributes).toMatchObject({ 'http.request.method': 'POST', 'http.response.status_code': 200, 'server.address': '127.0.0.1' });
      const turnSpan = collector.spans.find((span) => span.name === 'turn.execute');
      expect(modelCalls[0]!.parentSpanId).toBe(turnSpan?.spanId);
      expect(new Set(collector.spans.map((span) => span.service))).toEqual(new Set(['ic-responses']));
      expect(collector.spans.filter((span) => /\/(readyz|healthz)/.test(`${span.name} ${String(span.attributes['url.path'] ?? '')}`))).toEqual([]);
      // Postgres statements are pg's spans, children of the request or job that ran them; slonik's own
      // wrappers around them are not recorded.
      expect(collector.spans.filter((span) => span.name.startsWith('slonik.'))).toEqual([]);
      const turnTraceId = () => collector.spans.find((span) => span.name === 'POST /v1/responses')?.traceId;
      const isStatement = (span: (typeof collector.spans)[number]) => span.attributes['db.system'] === 'postgresql' || span.attributes['db.system.name'] === 'postgresql';
      const orphans = () => {
        const spanIds = new Set(collector.spans.map((span) => span.spanId));
        return collector.spans.filter((span) => isStatement(span) && !spanIds.has(span.parentSpanId ?? ''));
      };
      expect(collector.spans.filter(isStatement).length).toBeGreaterThan(0);
      // A statement's parent (the job's span) can end, and so be exported, after the turn's own spans.
      await eventually(async () => (orphans().length === 0 ? true : undefined), 5000, 'every statement span\'s parent to be exported').catch(() => undefined);
      expect(orphans()).toEqual([]);
      // A statement's span is named by its prepared label, under the request or job that ran it.
      const acceptSpan = collector.spans.find((span) => isStatement(span) && span.name === 'runs.accept');
      expect(acceptSpan?.attributes).toMatchObject({ 'db.system.name': 'postgresql', 'db.query.summary': 'runs.accept', 'db.operation.name': 'WITH', 'server.address': '127.0.0.1' });
      expect(String(acceptSpan?.attributes['db.query.text'])).toContain('INSERT INTO runs');
      expect(collector.spans.find((span) => span.spanId === acceptSpan?.parentSpanId)?.name).toBe('POST /v1/responses');
      const claimSpan = collector.spans.find((span) => isStatement(span) && span.name === 'runs.claim');
      expect(claimSpan?.parentSpanId).toBe(collector.spans.find((span) => span.name === 'turn.execute')?.parentSpanId);
      // Redis commands: a client span each (libs/telemetry redis-client.ts), inside the request or the job,
      // named by the command, without its arguments (the event log's carry message text).
      const commands = collector.spans.filter((span) => span.attributes['db.system.name'] === 'redis');
      expect(commands.length).toBeGreaterThan(0);
      const evalsha = commands.find((span) => span.name === 'evalsha');
      expect(evalsha?.attributes).toMatchObject({ 'db.operation.name': 'EVALSHA', 'server.address': '127.0.0.1' });
      expect(commands.filter((span) => span.attributes['db.query.text'] !== undefined || span.attributes['db.statement'] !== undefined)).toEqual([]);
      expect(new Set(commands.map((span) => span.traceId))).toEqual(new Set([turnTraceId()]));
      // One server span per request (libs/telemetry http-server.ts), with the semantic-convention attributes.
      const accepted = collector.spans.filter((span) => span.name === 'POST /v1/responses');
      expect(accepted).toHaveLength(1);
      expect(accepted[0]!.attributes).toMatchObject({
        'http.request.method': 'POST',
        'http.route': '/v1/responses',
        'http.response.status_code': 200,
        'url.path': '/v1/responses',
        'url.scheme': 'http',
        'server.address': '127.0.0.1',
        'server.port': port,
      });
    });
  });

  it('continues the caller\'s trace (W3C traceparent)', async () => {
    await withTracedService({ OTEL_TRACES_SAMPLER: 'parentbased_always_on' }, async (port, collector) => {
      const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
      await fetch(`http://127.0.0.1:${port}/v1/responses/resp_missing`, {
        headers: { authorization: `Bearer ${seeded.smithToken}`, traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
      });
      const span = await eventually(async () => collector.spans.find((candidate) => candidate.name === 'GET /v1/responses/:response_id'), 10000, 'the request span');
      expect(span).toMatchObject({ traceId, parentSpanId: '00f067aa0ba902b7' });
      expect(span.attributes['http.response.status_code']).toBe(404);
    });
  });

  it('by default (ic_tail) exports slow or failing traces whole and a share of the rest', async () => {
    // Well apart, so a loaded machine neither makes the fast read slow nor the slow turn fast.
    upstream.set({ firstTokenDelayMs: 2500 });
    try {
      await withTracedService({ OTEL_TRACES_SAMPLER_ARG: '0', TRACE_SLOW_MS: '2000' }, async (port, collector) => {
        // The model answers after 2.5 s: the turn and the request waiting for it are slow, so both are kept whole.
        const turn = await postTurn(port, seeded.smithToken, 'a slow one');
        expect(turn.status).toBe('completed');
        await eventually(async () => {
          const seen = new Set(collector.spans.map((span) => span.name));
          return seen.has('turn.execute') && seen.has('POST /v1/responses') ? true : undefined;
        }, 10000, 'the slow turn to be exported');
        // Kept whole, though our own spans of a trace not sampled by id are recorded lazily (lazy-span.ts):
        // the request's statements and the model call are there, each under its parent, in one trace.
        const request = collector.spans.find((span) => span.name === 'POST /v1/responses');
        expect(request?.attributes).toMatchObject({ 'http.route': '/v1/responses', 'http.response.status_code': 200, 'url.path': '/v1/responses' });
        const accept = await eventually(async () => collector.spans.find((span) => span.name === 'runs.accept'), 5000, 'the accept statement');
        expect(accept.parentSpanId).toBe(request?.spanId);
        expect(accept.attributes).toMatchObject({ 'db.query.summary': 'runs.accept', 'db.system.name': 'postgresql' });
        const modelCall = await eventually(async () => collector.spans.find((span) => String(span.attributes['url.full'] ?? '').endsWith('/chat/completions')), 5000, 'the model call');
        expect(modelCall.parentSpanId).toBe(collector.spans.find((span) => span.name === 'turn.execute')?.spanId);
        expect(modelCall.attributes).toMatchObject({ 'http.response.status_code': 200 });
        const command = collector.spans.find((span) => span.attributes['db.system.name'] === 'redis');
        expect(command).toBeDefined();
        // BullMQ's spans, started as lazily as ours, carry the trace from the request to the worker's job.
        const named = (name: string) => collector.spans.find((span) => span.name === name);
        const [addJob, processJob, execute] = ['add turns.turn.execute.v1', 'process turns', 'turn.execute'].map(named);
        expect(addJob?.parentSpanId).toBe(request?.spanId);
        expect(processJob?.parentSpanId).toBe(addJob?.spanId);
        expect(execute?.parentSpanId).toBe(processJob?.spanId);
        expect(new Set([request, accept, modelCall, command, addJob, processJob, execute].map((span) => span?.traceId)).size).toBe(1);
        // A fast, successful read is recorded but not exported (ratio 0).
        upstream.set({ firstTokenDelayMs: 0 });
        const read = await fetch(`http://127.0.0.1:${port}/v1/responses/${turn.id}`, { headers: { authorization: `Bearer ${seeded.smithToken}` } });
        expect(read.status).toBe(200);
        await new Promise((resolve) => setTimeout(resolve, 1000));
        expect(collector.spans.map((span) => span.name)).not.toContain('GET /v1/responses/:response_id');
      });
    } finally {
      upstream.set({ firstTokenDelayMs: 0 });
    }
  });

  it('by default (ic_tail) exports a trace sampled by id whole, from the request to the model call', async () => {
    await withTracedService({ OTEL_TRACES_SAMPLER_ARG: '1' }, async (port, collector) => {
      // Fast and fine, so only the ratio exports it; our spans of a sampled trace are recorded lazily too.
      expect((await postTurn(port, seeded.smithToken, 'sampled by id')).status).toBe('completed');
      const named = (name: string) => collector.spans.find((span) => span.name === name);
      const names = ['POST /v1/responses', 'runs.accept', 'add turns.turn.execute.v1', 'process turns', 'turn.execute', 'runs.claim', 'runs.stamp'];
      // BullMQ's job span ends after ours (when the job is moved to completed) and leaves in a later export.
      await eventually(async () => (names.every(named) ? true : undefined), 10000, 'the sampled turn to be exported');
      const [request, accept, addJob, processJob, execute, claim] = names.map(named);
      const modelCall = collector.spans.find((span) => String(span.attributes['url.full'] ?? '').endsWith('/chat/completions'));
      expect(request?.attributes).toMatchObject({ 'http.route': '/v1/responses', 'http.response.status_code': 200 });
      expect(accept?.parentSpanId).toBe(request?.spanId);
      expect(addJob?.parentSpanId).toBe(request?.spanId);
      expect(processJob?.parentSpanId).toBe(addJob?.spanId);
      expect(execute?.parentSpanId).toBe(processJob?.spanId);
      expect(claim?.parentSpanId).toBe(processJob?.spanId);
      expect(modelCall?.parentSpanId).toBe(execute?.spanId);
      expect(modelCall?.attributes).toMatchObject({ 'http.response.status_code': 200 });
      expect(new Set([request, accept, addJob, processJob, execute, claim, modelCall].map((span) => span?.traceId)).size).toBe(1);
    });
  });

  it('traces a turn run by the process that accepted it under the request, claimed by the accept itself', async () => {
    await withTracedService({ OTEL_TRACES_SAMPLER_ARG: '1', EAGER_TURNS: 'true' }, async (port, collector) => {
      expect((await postTurn(port, seeded.smithToken, 'run me here')).status).toBe('completed');
      const named = (name: string) => collector.spans.find((span) => span.name === name);
      const names = ['POST /v1/responses', 'runs.accept', 'add turns.turn.execute.v1', 'turn.execute', 'runs.stamp'];
      await eventually(async () => (names.every(named) ? true : undefined), 10000, 'the turn to be exported');
      const [request, accept, leaseJob, execute, stamp] = names.map(named);
      const modelCall = collector.spans.find((span) => String(span.attributes['url.full'] ?? '').endsWith('/chat/completions'));
      expect(accept?.parentSpanId).toBe(request?.spanId);
      // The lease job (due only if this process dies) is added under the request; no worker processed it.
      expect(leaseJob?.parentSpanId).toBe(request?.spanId);
      expect(execute?.parentSpanId).toBe(request?.spanId);
      expect(modelCall?.parentSpanId).toBe(execute?.spanId);
      expect(stamp?.parentSpanId).toBe(execute?.spanId);
      expect(collector.spans.map((span) => span.name)).not.toContain('runs.claim');
      expect(collector.spans.map((span) => span.name)).not.toContain('process turns');
      expect(new Set([request, accept, leaseJob, execute, stamp, modelCall].map((span) => span?.traceId)).size).toBe(1);
    });
  });

  it('follows OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG', async () => {
    await withTracedService({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' }, async (port, collector) => {
      expect((await postTurn(port, seeded.smithToken, 'do not trace me')).status).toBe('completed');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(collector.spans).toEqual([]);
    });
  });
});
