/** The deployed services as child processes, run from their compiled `dist` (`tsc -b` builds them). */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';

// test/support under jest, test/dist/support when compiled (the benchmarks).
const ROOT = path.resolve(__dirname, path.basename(path.dirname(__dirname)) === 'dist' ? '../../..' : '../..');

export const SERVICE_ENTRIES = {
  'api-gateway': 'services/api-gateway/dist/main.js',
  responses: 'services/responses/dist/main.js',
  titler: 'services/titler/dist/main.js',
} as const;
export type ServiceName = keyof typeof SERVICE_ENTRIES;

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves when the process has exited, with its code or the signal that ended it. */
  readonly exited: Promise<ProcessExit>;
  isRunning(): boolean;
  /** Sends a signal; a process that is already gone is left alone. */
  signal(signal: NodeJS.Signals): void;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<ProcessExit>;
  /** SIGTERM and wait for the drained exit (143 when it shut down cleanly). */
  stop(): Promise<ProcessExit>;
  /**
   * Resolves once the process has logged `message` (pino's `msg`, at a LOG_LEVEL that shows it);
   * rejects if it exits first or `timeoutMs` passes. Unlike polling a port, this cannot be fooled by
   * another process that happens to listen there.
   */
  waitForLog(message: string, timeoutMs?: number): Promise<void>;
}

/**
 * Starts a service with exactly `env` (plus PATH); stderr is inherited so a crash shows in the test output.
 * `root`: another checkout's build of the service (a benchmark's before/after), this one's by default.
 */
export function spawnService(name: ServiceName, env: Record<string, string | undefined>, options: { root?: string } = {}): ServiceProcess {
  const child = spawn(process.execPath, [path.join(options.root ?? ROOT, SERVICE_ENTRIES[name])], {
    env: { PATH: process.env.PATH, LOG_LEVEL: 'error', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = processExit(child);
  // The log (stdout, one JSON object a line) is read only for the messages waitForLog asks about.
  const logged = new Set<string>();
  const logWaiters = new Set<() => void>();
  // TEST_SERVICE_LOGS=1 shows the services' errors (level ≥ 50) on the test's stderr.
  const showErrors = Boolean(process.env.TEST_SERVICE_LOGS);
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      const { msg, level } = JSON.parse(line) as { msg?: unknown; level?: unknown };
      if (showErrors && typeof level === 'number' && level >= 50) process.stderr.write(`[${name} ${child.pid}] ${line}\n`);
      if (typeof msg === 'string' && !logged.has(msg)) {
        logged.add(msg);
        for (const wake of [...logWaiters]) wake();
      }
    } catch {
      // not a log line
    }
  });
  const isRunning = () => child.exitCode === null && child.signalCode === null;
  const signal = (sig: NodeJS.Signals) => {
    if (isRunning()) child.kill(sig);
  };
  return {
    child,
    pid: child.pid ?? -1,
    exited,
    isRunning,
    signal,
    kill: async () => {
      signal('SIGKILL');
      return exited;
    },
    stop: async () => {
      signal('SIGCONT'); // a stopped process cannot handle SIGTERM
      signal('SIGTERM');
      return exited;
    },
    waitForLog: (message, timeoutMs = 60000) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => finish(new Error(`${name} did not log '${message}' within ${timeoutMs} ms`)), timeoutMs);
        const check = () => {
          if (logged.has(message)) finish();
        };
        const finish = (error?: Error) => {
          clearTimeout(timer);
          logWaiters.delete(check);
          if (error) reject(error);
          else resolve();
        };
        logWaiters.add(check);
        void exited.then((exit) => finish(new Error(`${name} exited (${exit.code ?? exit.signal}) before logging '${message}'`)));
        check();
      }),
  };
}

export function processExit(child: ChildProcess): Promise<ProcessExit> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

/** Waits until `GET origin/readyz` answers 200 (the service reaches its database and Redis). */
export async function waitUntilReady(port: number, timeoutMs = 30000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`Service on port ${port} was not ready within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
