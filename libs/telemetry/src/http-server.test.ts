import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { trace } from '@opentelemetry/api';
import { defaultResource } from '@opentelemetry/resources';
import { AlwaysOnSampler, BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace-base';
import { enableHttpServerTelemetry, traceHttpServer } from './http-server';
import { enableLazySpans, PooledRandomIds } from './lazy-span';
import { TailKeepSpanProcessor } from './tail-keep';

const exporter = new InMemorySpanExporter();
let server: Server;
let origin: string;
let releaseSlowReply: () => void = () => undefined;

beforeAll(async () => {
  trace.setGlobalTracerProvider(new BasicTracerProvider({ sampler: new AlwaysOnSampler(), spanProcessors: [new SimpleSpanProcessor(exporter)] }));
  enableHttpServerTelemetry(true);
  server = createServer(
    traceHttpServer(
      (req, res) => {
        if (req.url?.startsWith('/slow')) {
          releaseSlowReply = () => res.end('late');
          return;
        }
        res.statusCode = req.url === '/broken' ? 503 : 200;
        res.end('ok');
      },
      { routeOf: (req) => req.url },
    ),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  enableHttpServerTelemetry(false);
  trace.disable();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => exporter.reset());

const get = (path: string) => fetch(`${origin}${path}`).then((response) => response.text());
const spansEnded = async (count: number) => {
  for (let waited = 0; exporter.getFinishedSpans().length < count && waited < 500; waited += 10) await new Promise((resolve) => setTimeout(resolve, 10));
  await new Promise((resolve) => setTimeout(resolve, 50)); // a second end would show by now
  return exporter.getFinishedSpans();
};

/** A request to a slow path whose client goes away after 100 ms. */
const abandoned = (path: string, headers: Record<string, string> = {}) =>
  new Promise<void>((resolve) => {
    const sent = request(`${origin}${path}`, { headers });
    sent.on('error', () => resolve());
    sent.end();
    setTimeout(() => {
      sent.destroy();
      resolve();
    }, 100);
  });

describe('traceHttpServer: one server span per request, ended once', () => {
  it('ends a completed request with its status and route', async () => {
    await get('/ok');
    await get('/broken');
    const spans = await spansEnded(2);
    expect(spans.map((span) => [span.name, span.attributes['http.response.status_code'], span.status.code])).toEqual([
      ['GET /ok', 200, 0],
      ['GET /broken', 503, 2],
    ]);
  });

  it('ends the span of a request whose client went away, marked aborted and without a status code', async () => {
    await abandoned('/slow');
    const [span, ...more] = await spansEnded(1);
    expect(more).toEqual([]);
    expect(span?.attributes['error.type']).toBe('aborted');
    expect(span?.attributes['http.response.status_code']).toBeUndefined();
    releaseSlowReply();
    expect(await spansEnded(2)).toHaveLength(1);
  });

  it('leaves probes and scrapes untraced', async () => {
    await get('/healthz');
    await get('/metrics');
    expect(await spansEnded(1)).toEqual([]);
  });
});

describe('traceHttpServer under ic_tail (lazy spans, request attributes read only for a kept trace)', () => {
  // Every trace kept (slow from 0 ms), none sampled by ratio: the spans are held, then exported at the decision.
  beforeEach(() => enableLazySpans({ ratio: new TraceIdRatioBasedSampler(0), ids: new PooledRandomIds(), tail: new TailKeepSpanProcessor(new SimpleSpanProcessor(exporter), 0), resource: defaultResource() }));
  afterEach(() => enableLazySpans(undefined));

  it('exports a kept request with its request attributes, the peer read while it was still connected', async () => {
    await abandoned('/slow?page=2', { 'user-agent': 'lazy-test', 'x-forwarded-for': '203.0.113.7, 10.0.0.1' });
    const [span, ...more] = await spansEnded(1);
    expect(more).toEqual([]);
    expect(span?.attributes).toMatchObject({
      'http.request.method': 'GET',
      'url.path': '/slow',
      'url.query': 'page=2',
      'network.peer.address': '127.0.0.1',
      'client.address': '203.0.113.7',
      'user_agent.original': 'lazy-test',
      'server.address': '127.0.0.1',
      'error.type': 'aborted',
    });
    expect(typeof span?.attributes['network.peer.port']).toBe('number');
    releaseSlowReply();
  });
});
