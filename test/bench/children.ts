/**
 * The processes a benchmark measures run as children of the load generator, so the load generator
 * never steals their event loop: the single-process stack (deploy/dist/stack.js), the api-gateway
 * (services/api-gateway/dist/main.js), the bare baseline, the fake upstream. Each gets the probe
 * preloaded (CPU, Postgres and Redis round trips over a window, via IPC), and optionally `--cpu-prof`.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { ProbeReading } from './probe';

// Children always run the compiled scripts (test/dist/bench), also when this module runs from source under jest.
const DIST_BENCH = path.basename(path.dirname(__dirname)) === 'dist' ? __dirname : path.resolve(__dirname, '../dist/bench');
const ROOT = path.resolve(DIST_BENCH, '../../..');
export const SCRIPTS = {
  stack: path.join(ROOT, 'deploy/dist/stack.js'),
  gateway: path.join(ROOT, 'services/api-gateway/dist/main.js'),
  baseline: path.join(DIST_BENCH, 'servers/baseline.js'),
  upstream: path.join(DIST_BENCH, 'servers/upstream.js'),
};
const PROBE = path.join(DIST_BENCH, 'probe.js');

export interface ChildOptions {
  name: string;
  script: string;
  env: Record<string, string | undefined>;
  /** Where `--cpu-prof` writes this child's profile (named after the child); none when absent. */
  profileDir?: string;
}

export interface BenchChild {
  name: string;
  process: ChildProcess;
  /** Starts a measuring window in the child. */
  reset(): Promise<void>;
  /** What the child did since the last reset. */
  read(): Promise<ProbeReading>;
  /** Waits for a message the child sends of its own (servers/* announce where they listen). */
  message<T>(predicate: (message: unknown) => message is T, timeoutMs?: number): Promise<T>;
  /** SIGTERM (the service's own graceful shutdown), SIGKILL after a deadline. */
  stop(): Promise<void>;
}

let nextRequestId = 1;

export function startChild(options: ChildOptions): BenchChild {
  const execArgv = ['-r', PROBE];
  if (options.profileDir) {
    mkdirSync(options.profileDir, { recursive: true });
    execArgv.push('--cpu-prof', `--cpu-prof-dir=${options.profileDir}`, `--cpu-prof-name=${options.name}.${Date.now()}.cpuprofile`);
  }
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'warn' };
  for (const [key, value] of Object.entries(options.env)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  const child = fork(options.script, [], { env, execArgv, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  let stderrTail = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderrTail = (stderrTail + chunk.toString()).slice(-4000);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const ask = <T>(request: { probe: string }, expect: string): Promise<T> => {
    const id = nextRequestId++;
    return new Promise<T>((resolve, reject) => {
      const onMessage = (message: { probe?: string; id?: number; reading?: ProbeReading }) => {
        if (message?.probe !== expect || message.id !== id) return;
        child.off('message', onMessage);
        resolve(message as T);
      };
      child.on('message', onMessage);
      child.send({ ...request, id }, (error) => error && reject(new Error(`${options.name}: ${error.message}\n${stderrTail}`)));
    });
  };

  return {
    name: options.name,
    process: child,
    reset: async () => {
      await ask({ probe: 'reset' }, 'reset');
    },
    read: async () => (await ask<{ reading: ProbeReading }>({ probe: 'read' }, 'reading')).reading,
    message: <T>(predicate: (message: unknown) => message is T, timeoutMs = 30000) =>
      new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${options.name} sent nothing in ${timeoutMs} ms\n${stderrTail}`)), timeoutMs);
        const onMessage = (message: unknown) => {
          if (!predicate(message)) return;
          clearTimeout(timer);
          child.off('message', onMessage);
          resolve(message);
        };
        child.on('message', onMessage);
        void exited.then((code) => reject(new Error(`${options.name} exited (${code}) before it was ready\n${stderrTail}`)));
      }),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Polls `url` until it answers 200 (the child is listening and its dependencies are reachable). */
export async function waitUntilReady(child: BenchChild, url: string, timeoutMs = 60000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitCode: number | null = null;
  child.process.once('exit', (code) => (exitCode = code ?? -1));
  for (;;) {
    if (exitCode !== null) throw new Error(`${child.name} exited with ${exitCode} before it was ready`);
    try {
      const response = await fetch(url);
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${child.name} was not ready at ${url} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
