/**
 * The turn path on a Redis Cluster: a private 3-master cluster of redis-servers on loopback, the
 * responses API in this process and a turn worker as a child process (REDIS_CLUSTER_NODES), both
 * talking to the cluster. BullMQ's Lua scripts need every key of a queue in one slot, and a run's
 * event stream is read and written by key; pub/sub wake-ups and cancel signals cross nodes.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import OpenAI from 'openai';
import { redisServerAvailable, startRedisCluster, startTurnStack, type RedisCluster, type TurnStack } from '@ic/test-support';

const WORKER_MAIN = path.resolve(__dirname, '../../services/responses/dist/main.js');
const available = redisServerAvailable();
if (!available) console.warn('redis-cluster.test.ts skipped: redis-server / redis-cli not installed (Debian: apt-get install redis-server)');

/** Every key under `pattern` on every master, with the slot it hashes to. */
function keysWithSlots(cluster: RedisCluster, pattern: string): Array<{ key: string; slot: number; node: string }> {
  const found: Array<{ key: string; slot: number; node: string }> = [];
  for (const node of cluster.nodes) {
    const port = node.split(':')[1]!;
    const keys = spawnSync('redis-cli', ['-p', port, '--scan', '--pattern', pattern], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
    for (const key of keys) {
      const slot = Number(spawnSync('redis-cli', ['-p', port, 'cluster', 'keyslot', key], { encoding: 'utf8' }).stdout.trim());
      found.push({ key, slot, node });
    }
  }
  return found;
}

(available ? describe : describe.skip)('turns on a Redis Cluster (3 masters)', () => {
  let cluster: RedisCluster;
  let stack: TurnStack;
  let client: OpenAI;
  let worker: ChildProcess;
  let workerExit: Promise<number | null>;

  beforeAll(async () => {
    cluster = await startRedisCluster(3);
    stack = await startTurnStack({ redisClusterNodes: cluster.nodes, inProcessWorker: false, upstream: { reply: 'one two three four five', tokenDelayMs: 2 } });
    client = stack.client();
    worker = spawn(process.execPath, [WORKER_MAIN], {
      env: {
        PATH: process.env.PATH,
        RESPONSES_ROLE: 'worker',
        DATABASE_URL: stack.db.url,
        REDIS_CLUSTER_NODES: cluster.nodes.join(','),
        REDIS_PREFIX: stack.prefix,
        MODEL_BASE_URL: stack.upstream.baseURL,
        WORKER_CONCURRENCY: '4',
        HEALTH_PORT: '0',
        LOG_LEVEL: 'error',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    workerExit = new Promise((resolve) => worker.once('exit', (code) => resolve(code)));
  }, 60000);

  afterAll(async () => {
    if (worker && worker.exitCode === null) worker.kill('SIGTERM');
    const code = worker ? await workerExit : null;
    await stack?.close();
    await cluster?.stop();
    expect(code).toBe(143); // the worker drains and exits on SIGTERM
  });
  beforeEach(() => stack.upstream.reset());

  it('runs non-streaming turns in order, each seeing the earlier ones', async () => {
    const conversation = await client.conversations.create();
    const first = await client.responses.create({ model: '', conversation: conversation.id, input: 'first' });
    const second = await client.responses.create({ model: '', conversation: conversation.id, input: 'second' });
    expect([first.status, second.status]).toEqual(['completed', 'completed']);
    expect(second.output_text).toBe('one two three four five');
    const sent = stack.upstream.requests[1]!.messages.map((message) => message.role);
    expect(sent).toEqual(['user', 'assistant', 'user']);
    const items = await client.conversations.items.list(conversation.id);
    expect(items.data.map((item) => item.id)).toEqual([`${first.id}.i0`, `${first.id}.o`, `${second.id}.i0`, `${second.id}.o`]);
  });

  it('streams a turn event by event and resumes its stream with starting_after', async () => {
    const conversation = await client.conversations.create();
    const stream = client.responses.stream({ model: '', conversation: conversation.id, input: 'stream please' });
    const seen: number[] = [];
    stream.on('event', (event) => seen.push(event.sequence_number));
    const final = await stream.finalResponse();
    expect(final.output_text).toBe('one two three four five');
    expect(seen).toEqual(seen.map((_, index) => index));

    const replay = await fetch(`${stack.baseURL}/responses/${final.id}?stream=true&starting_after=${seen.length - 3}`, {
      headers: { authorization: `Bearer ${stack.seeded.smithToken}` },
    });
    const sequenceNumbers = [...(await replay.text()).matchAll(/"sequence_number":(\d+)/g)].map((match) => Number(match[1]));
    expect(sequenceNumbers).toEqual([seen.length - 2, seen.length - 1]);
  });

  it('cancels a running turn across processes (pub/sub on the cluster)', async () => {
    stack.upstream.hangNext();
    const conversation = await client.conversations.create();
    const started = await client.responses.create({ model: '', conversation: conversation.id, input: 'take your time', background: true });
    await stack.upstream.waitForRequests(1);
    expect((await client.responses.cancel(started.id)).status).toBe('cancelled');
    await stack.upstream.waitForAborts(1); // the worker process heard the signal and aborted its upstream call
    expect((await client.responses.retrieve(started.id)).status).toBe('cancelled');
  });

  it("paces a burst to the upstream's reported limit through the mirror kept in the cluster (its keys in one slot)", async () => {
    // OpenAI's bucket: 3 requests, one more every 200 ms; the worker process learns it from the first answer.
    stack.upstream.set({ rateLimit: { requests: 3, windowMs: 600, style: 'bucket' } });
    expect(await client.responses.create({ model: '', input: 'the first answer reports the limit' })).toMatchObject({ status: 'completed' });
    const answers = await Promise.all(Array.from({ length: 6 }, () => client.responses.create({ model: '', input: 'burst' })));
    expect(answers.map((answer) => answer.status)).toEqual(Array(6).fill('completed'));
    expect(stack.upstream.throttledCount).toBe(0);
    const mirrorKeys = keysWithSlots(cluster, `${stack.prefix}:{limits:*}:*`);
    // The deadlines' sorted set is gone once no call is in flight (Redis drops an empty one).
    expect(mirrorKeys.map((entry) => entry.key.replace(/^.*:/, ''))).toContain('state');
    expect(new Set(mirrorKeys.map((entry) => entry.slot)).size).toBe(1);
  });

  it('keeps each queue in one slot and gives each run its own', async () => {
    const queueKeys = keysWithSlots(cluster, `${stack.prefix}:{turns}:*`);
    expect(queueKeys.length).toBeGreaterThan(0);
    expect(new Set(queueKeys.map((entry) => entry.slot)).size).toBe(1);
    const eventKeys = keysWithSlots(cluster, `${stack.prefix}:{run_*}:events`);
    expect(eventKeys.length).toBeGreaterThanOrEqual(4);
    for (const { key, slot } of eventKeys) {
      const runTag = /\{(run_[^}]+)\}/.exec(key)![1]!;
      const tagSlot = Number(spawnSync('redis-cli', ['-p', cluster.nodes[0]!.split(':')[1]!, 'cluster', 'keyslot', runTag], { encoding: 'utf8' }).stdout.trim());
      expect(slot).toBe(tagSlot);
    }
  });
});
