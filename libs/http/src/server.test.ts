import { connect } from 'node:net';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHttpServer, DEFAULT_HTTP_TIMEOUTS } from './server';

/** Sends raw bytes and collects everything the server answers until it closes the connection. */
function rawExchange(port: number, request: string): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const [head = '', body = ''] = text.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), headers: head.toLowerCase(), body });
    });
    socket.write(request);
  });
}

describe('createHttpServer', () => {
  let server: Server;
  let port: number;
  beforeAll(async () => {
    server = createHttpServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it.each([
    ['headers over the limit', `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`, 431, 'headers_too_large'],
    ['a URL over the limit', `GET /${'u'.repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 431, 'headers_too_large'],
    ['a header line without a colon', 'GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n', 400, 'malformed_request'],
    ['a malformed request line', 'HELLO\r\n\r\n', 400, 'malformed_request'],
    ['a NUL in a header value', 'GET / HTTP/1.1\r\nHost: x\r\nX-Test: a\u0000b\r\n\r\n', 400, 'malformed_request'],
  ])('answers %s in the error envelope', async (_name, request, status, code) => {
    const reply = await rawExchange(port, request);
    expect(reply.status).toBe(status);
    expect(reply.headers).toContain('content-type: application/json');
    expect(reply.headers).toContain('connection: close');
    expect(reply.headers).toMatch(/x-request-id: req_[0-9a-f]{24}/);
    const parsed = JSON.parse(reply.body) as { error: Record<string, unknown> };
    expect(parsed.error).toEqual({ message: expect.any(String), type: 'invalid_request_error', param: null, code });
  });

  it('keeps idle keep-alive connections open longer than a load balancer does, and headers longer still', () => {
    expect(server.keepAliveTimeout).toBe(DEFAULT_HTTP_TIMEOUTS.keepAliveTimeoutMs);
    expect(server.keepAliveTimeout).toBeGreaterThan(60000);
    expect(server.headersTimeout).toBeGreaterThan(server.keepAliveTimeout);
    expect(server.requestTimeout).toBeGreaterThanOrEqual(server.headersTimeout);
  });

  it('raises a headers timeout at or below the keep-alive timeout, as Node needs behind a proxy', () => {
    const tuned = createHttpServer(() => undefined, { keepAliveTimeoutMs: 120000, headersTimeoutMs: 5000, requestTimeoutMs: 0 });
    expect(tuned.keepAliveTimeout).toBe(120000);
    expect(tuned.headersTimeout).toBe(121000);
    expect(tuned.requestTimeout).toBe(0);
  });

  it('still holds an idle keep-alive connection after Node’s old 5 s default', async () => {
    const socket = connect(port, '127.0.0.1');
    let closedAt: number | null = null;
    socket.on('close', () => {
      closedAt = Date.now();
    });
    await new Promise<void>((resolve) => {
      socket.once('data', () => resolve());
      socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    await new Promise((resolve) => setTimeout(resolve, 5500));
    expect(closedAt).toBeNull();
    socket.destroy();
  });
});
