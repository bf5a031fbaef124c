import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import OpenAI from 'openai';
import { Authenticator } from '@ic/auth';
import { createDbPool, sql, type DatabasePool } from '@ic/db';
import { createBaseApp, finishApp } from '@ic/http';
import { createModelAdapter } from '@ic/model';
import { createLogger } from '@ic/telemetry';
import { eventually, startTurnStack, type TurnStack } from '@ic/test-support';
import { z } from 'zod';
import { ResponsesRuntime } from './runtime';

/**
 * A TCP proxy to Postgres that the test can cut: open connections are reset and new ones refused, like a
 * database that went away. `loseReplyTo(marker)`: the next statement whose text holds `marker` runs
 * (and commits), but its connection breaks before the reply gets back — a commit in doubt.
 */
async function startCuttableProxy(target: URL) {
  const sockets = new Set<net.Socket>();
  let cut = false;
  let loseReplyMarker: string | null = null;
  const server = net.createServer((client) => {
    if (cut) return client.destroy();
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    let losingReply = false;
    client.on('data', (chunk: Buffer) => {
      if (loseReplyMarker !== null && chunk.includes(loseReplyMarker)) {
        loseReplyMarker = null;
        losingReply = true;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      // ReadyForQuery ('Z', length 5, status) ends the reply and follows the commit: drop the chunk holding it, break the connection.
      const endsWithReadyForQuery = chunk.length >= 6 && chunk[chunk.length - 6] === 0x5a && chunk.readInt32BE(chunk.length - 5) === 5;
      if (losingReply && endsWithReadyForQuery) {
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as AddressInfo).port);
  return {
    url: url.toString(),
    cut() {
      cut = true;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      cut = false;
    },
    loseReplyTo(marker: string) {
      loseReplyMarker = marker;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('a committed turn is never answered with a retryable status', () => {
  let stack: TurnStack;
  let proxy: Awaited<ReturnType<typeof startCuttableProxy>>;
  let apiPool: DatabasePool;
  let server: Server;
  let client: OpenAI;

  beforeAll(async () => {
    // The worker (in the stack) reaches Postgres directly; the API under test goes through the proxy.
    stack = await startTurnStack();
    proxy = await startCuttableProxy(new URL(stack.db.url));
    apiPool = await createDbPool(proxy.url, { maximumPoolSize: 4 });
    const logger = createLogger('test', 'silent');
    // Tokens are cached, so authentication still works while the API's database is unreachable.
    const authenticator = new Authenticator(apiPool, 600000);
    const runtime = new ResponsesRuntime({
      pool: apiPool,
      backend: stack.backend,
      authenticator,
      logger,
      model: createModelAdapter({ adapter: 'openai-compatible', baseUrl: stack.upstream.baseURL, apiKey: 'unused', timeoutMs: 10000, devTokenDelayMs: 0 }),
      resolveModel: (name) => name,
      eventsTtlSeconds: 120,
      keepAliveMs: 1000,
      syncWaitMs: 30000,
      retryDedupWindowMs: 60000,
      contextTokens: 128000,
      waitOutageGraceMs: 3000,
    });
    const app = createBaseApp({ logger, corsOrigins: ['*'], bodyLimit: '1mb', authenticator, ready: async () => undefined });
    app.use(runtime.router());
    finishApp(app, logger);
    server = await new Promise((resolve) => {
      const listening = app.listen(0, '127.0.0.1', () => resolve(listening));
    });
    // maxRetries as the client ships: any 5xx would be retried (and the turn run twice).
    client = new OpenAI({ apiKey: stack.seeded.smithToken, baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, maxRetries: 2 });
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await apiPool.end().catch(() => undefined);
    await proxy.close();
    await stack.close();
  });

  it('rides out a short Postgres outage during the wait and answers with the finished response', async () => {
    stack.upstream.set({ reply: 'worth the wait', firstTokenDelayMs: 1500 });
    const noRetries = client.withOptions({ maxRetries: 0 });
    const pending = noRetries.responses.create({ model: '', input: 'blink' });
    await stack.upstream.waitForRequests(1);
    proxy.cut();
    setTimeout(() => proxy.restore(), 1000);
    const answer = await pending;
    expect(answer.status).toBe('completed');
    expect(answer.output_text).toBe('worth the wait');
    stack.upstream.reset();
  }, 30000);

  it('answers 200 with the run as last known when Postgres goes away while a non-streaming request waits', async () => {
    stack.upstream.hangNext(2); // the model starts answering, then stalls
    const pending = client.responses.create({ model: '', input: 'wait for me' });
    await stack.upstream.waitForRequests(1);
    proxy.cut();

    const answer = await pending;
    expect(answer.id).toMatch(/^run_/);
    expect(answer.status).toBe('in_progress');
    expect(answer.output).toEqual([]);
    // The client did not retry: one run (besides the earlier test's completed one), one upstream call.
    proxy.restore();
    const runs = await stack.db.pool.any(sql.type(z.object({ id: z.string() }))`SELECT id FROM runs WHERE status <> 'completed'`);
    expect(runs.map((run) => run.id)).toEqual([answer.id]);
    expect(stack.upstream.requests).toHaveLength(1);

    // The run is not lost: it can be read (and cancelled) once the database is back.
    const current = await eventually(async () => (await client.responses.retrieve(answer.id)).status);
    expect(current).toBe('in_progress');
    expect((await client.responses.cancel(answer.id)).status).toBe('cancelled');
  }, 30000);

  it('answers with the run when the accept statement committed but its reply was lost (commit in doubt)', async () => {
    stack.upstream.set({ reply: 'saved after all' });
    const before = await stack.db.pool.oneFirst(sql.type(z.object({ count: z.number() }))`SELECT count(*)::int AS count FROM runs`);
    // The accept statement's text holds this CTE name; the statement commits, the connection breaks before the reply.
    proxy.loseReplyTo('existing AS');
    const answer = await client.withOptions({ maxRetries: 0 }).responses.create({ model: '', input: 'in doubt' });
    expect(answer.status).toBe('completed');
    expect(answer.output_text).toBe('saved after all');
    const after = await stack.db.pool.oneFirst(sql.type(z.object({ count: z.number() }))`SELECT count(*)::int AS count FROM runs`);
    expect(after).toBe(before + 1);
    stack.upstream.reset();
  }, 30000);
});
