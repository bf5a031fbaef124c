import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Whether `redis-server` and `redis-cli` are on PATH (Debian package redis-server / redis-tools). */
export const redisServerAvailable = (): boolean =>
  spawnSync('redis-server', ['--version']).status === 0 && spawnSync('redis-cli', ['--version']).status === 0;

const portIsFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const server = createServer()
      .once('error', () => resolve(false))
      .listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });

/** A loopback port whose cluster-bus companion (port + 10000) is free too. */
async function clusterPort(taken: Set<number>): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    if (taken.has(port) || taken.has(port + 10000)) continue;
    if ((await portIsFree(port)) && (await portIsFree(port + 10000))) {
      taken.add(port).add(port + 10000);
      return port;
    }
  }
}

export interface RedisCluster {
  /** `127.0.0.1:port` of each master, for REDIS_CLUSTER_NODES. */
  nodes: string[];
  stop(): Promise<void>;
}

/**
 * A private Redis Cluster of `masters` redis-servers on loopback (no replicas, no persistence), its
 * slots assigned with `redis-cli --cluster create`. Throws if the cluster does not come up.
 */
export async function startRedisCluster(masters = 3): Promise<RedisCluster> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ic-redis-cluster-'));
  const taken = new Set<number>();
  const ports: number[] = [];
  for (let index = 0; index < masters; index += 1) ports.push(await clusterPort(taken));
  const servers: ChildProcess[] = ports.map((port) =>
    spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '5000', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: 'ignore' },
    ),
  );
  const stop = async () => {
    await Promise.all(
      servers.map((server) =>
        server.exitCode !== null ? undefined : new Promise<void>((resolve) => (server.once('exit', () => resolve()), server.kill('SIGTERM'))),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const nodes = ports.map((port) => `127.0.0.1:${port}`);
    await waitFor(() => ports.every((port) => cli(port, 'ping') === 'PONG'), 'redis-servers to start');
    const created = spawnSync('redis-cli', ['--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
    if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stdout}${created.stderr}`);
    await waitFor(() => ports.every((port) => cli(port, 'cluster', 'info').includes('cluster_state:ok')), 'the cluster state to be ok');
    return { nodes, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

function cli(port: number, ...args: string[]): string {
  return spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout?.trim() ?? '';
}

async function waitFor(check: () => boolean, what: string, timeoutMs = 15000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
