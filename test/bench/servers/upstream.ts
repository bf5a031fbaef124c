/**
 * Child process of the benchmarks: the fake Chat Completions upstreams and a dummy OTLP/HTTP trace
 * sink, away from both the service under test and the load generator.
 *  - paced:   7 words, 5 ms apart (the first-delta figures);
 *  - instant: the default reply (names how many messages it got and quotes the last one), no delay.
 * Announces `{ upstream: 'ready', paced, instant, sink }` over IPC.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startFakeUpstream } from '@ic/test-support';
import { PACED_DELAY_MS, PACED_REPLY, type UpstreamReady } from '../harness';

async function main(): Promise<void> {
  const paced = await startFakeUpstream({ reply: PACED_REPLY, tokenDelayMs: PACED_DELAY_MS });
  const instant = await startFakeUpstream({ tokenDelayMs: 0 });
  let exports = 0;
  const sink = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      exports++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
  const sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;
  process.on('message', (message: { sink?: string }) => {
    if (message?.sink === 'count') process.send!({ sink: 'count', exports });
  });
  process.on('SIGTERM', () => {
    void Promise.all([paced.close(), instant.close(), new Promise((resolve) => sink.close(resolve))]).then(() => process.exit(0));
  });
  const ready: UpstreamReady = { upstream: 'ready', paced: paced.baseURL, instant: instant.baseURL, sink: sinkUrl };
  process.send!(ready);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
