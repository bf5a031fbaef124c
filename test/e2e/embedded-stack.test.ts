import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { eventually } from '@ic/test-support';

const STACK_MAIN = path.resolve(__dirname, '../../deploy/dist/stack.js');

interface RunningStack {
  child: ChildProcess;
  baseURL: string;
  /** The console link `npm start` prints. */
  consoleLink: string | null;
}

/** `npm start`'s process: embedded PostgreSQL, in-process queue, development model — no Redis, no upstream. */
async function startStack(dataDir: string, pgPort: number): Promise<RunningStack> {
  const child = spawn(process.execPath, [STACK_MAIN], {
    env: { PATH: process.env.PATH, PORT: '0', STACK_DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(pgPort), DEV_MODEL_TOKEN_DELAY_MS: '1', LOG_LEVEL: 'error' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const banner = await new Promise<string>((resolve, reject) => {
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      // The banner's last line.
      if (/tokens are kept in/.test(output)) resolve(output);
    });
    child.once('exit', (code) => reject(new Error(`stack exited early with ${code}: ${output}`)));
  });
  const baseURL = /running at (http:\/\/\S+\/v1)/.exec(banner)?.[1];
  if (!baseURL) throw new Error(`no base URL in the banner: ${banner}`);
  return { child, baseURL, consoleLink: /console: +(\S+)/.exec(banner)?.[1] ?? null };
}

const stop = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });

describe('embedded default stack (npm start)', () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'ic-stack-'));
  chmodSync(dataDir, 0o755); // the embedded server runs as the postgres user when we are root
  // Below Linux's ephemeral range (32768–60999), from which every outgoing connection and every other
  // test's freePort() draw: a port in it (this used 56000–58000) can be taken by the time the embedded
  // server binds it, which failed a CI run ("stack exited early with 1").
  const pgPort = 20000 + Math.floor(Math.random() * 10000);
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('answers turns with the development model, titles them, and keeps everything across a restart', async () => {
    let stack = await startStack(dataDir, pgPort);
    const state = JSON.parse(readFileSync(path.join(dataDir, 'dev-stack.json'), 'utf8')) as { smithToken: string; adminToken: string; smithId: string };
    // The console link carries the smith token in the fragment (never sent to the server), not the query.
    const origin = stack.baseURL.replace(/\/v1$/, '');
    expect(stack.consoleLink).toBe(`${origin}/console#token=${state.smithToken}`);
    const consolePage = await fetch(stack.consoleLink!);
    expect(consolePage.status).toBe(200);
    expect(await consolePage.text()).toContain('<div id="app"></div>');
    let client = new OpenAI({ apiKey: state.smithToken, baseURL: stack.baseURL, maxRetries: 0 });
    const conversation = await client.conversations.create();
    const first = await client.responses.create({ model: '', conversation: conversation.id, input: 'Plan my trip to Oslo' });
    expect(first.output_text).toContain('Turn 1');
    const streamed = await client.responses.stream({ model: '', conversation: conversation.id, input: 'And Bergen?' }).finalResponse();
    expect(streamed.output_text).toContain('Turn 2');
    expect(streamed.output_text).toContain('Plan my trip to Oslo');
    await eventually(async () => ((await client.conversations.retrieve(conversation.id)) as unknown as { title: string | null }).title ?? undefined);
    expect(await stop(stack.child)).toBe(143);

    stack = await startStack(dataDir, pgPort);
    const again = JSON.parse(readFileSync(path.join(dataDir, 'dev-stack.json'), 'utf8')) as { smithToken: string };
    expect(again.smithToken).toBe(state.smithToken);
    client = new OpenAI({ apiKey: state.adminToken, baseURL: stack.baseURL, maxRetries: 0, defaultHeaders: { 'IC-Smith-Id': state.smithId } });
    const items = await client.conversations.items.list(conversation.id);
    expect(items.data).toHaveLength(4);
    expect((await client.conversations.retrieve(conversation.id)) as unknown as { title: string }).toMatchObject({ title: 'Plan my trip to Oslo' });
    expect(await stop(stack.child)).toBe(143);
  }, 60000);
});
