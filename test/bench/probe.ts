/**
 * Preloaded (`node -r`) into every process a benchmark starts, and answers its IPC questions:
 *   `{ probe: 'reset' }` starts a measuring window, `{ probe: 'read' }` answers with what happened since.
 *
 * What it counts, and how:
 *  - CPU: `process.cpuUsage()` (user + system) of this process over the window.
 *  - Postgres round trips: calls of pg's `Client.prototype.query`. Every statement slonik sends,
 *    BEGIN/COMMIT included, goes through it, and each is one request/response exchange with the server.
 *  - Redis: ioredis `Redis.prototype.sendCommand` calls are commands; a command sent on its own is one
 *    round trip, a pipeline or MULTI (one socket write, `Pipeline.prototype.exec`) is one round trip
 *    whatever its length. Blocking reads (BullMQ's BZPOPMIN, XREAD BLOCK) count like any command.
 *  - Socket writes: calls of net.Socket's internal write funnel (one write or writev syscall each),
 *    HTTP, Postgres and Redis together.
 * The hooks go in at the first reset, after the service has loaded pg and ioredis (and after
 * OpenTelemetry has patched them, so its own wrappers are measured, not displaced).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';

export interface ProbeReading {
  cpu_ms: number;
  pg_queries: number;
  redis_commands: number;
  redis_round_trips: number;
  /** write/writev calls on TCP sockets (HTTP, Postgres, Redis together): each is a syscall. */
  socket_writes: number;
  rss_mb: number;
  heap_used_mb: number;
  event_loop_delay_p99_ms: number;
  window_ms: number;
}

type Counters = { pg: number; redisCommands: number; redisRoundTrips: number; socketWrites: number };
const counters: Counters = { pg: 0, redisCommands: 0, redisRoundTrips: 0, socketWrites: 0 };
let windowStart = { cpu: process.cpuUsage(), at: performance.now() };
let hooked = false;
const loopDelay = monitorEventLoopDelay({ resolution: 5 });

/* eslint-disable @typescript-eslint/no-require-imports, @typescript-eslint/no-explicit-any -- patches whatever copy the service loaded */
/** Resolved from the service's own script, so another build (BENCH_COMPARE_STACK) is hooked in its own node_modules copy. */
function tryRequire(name: string): any {
  try {
    return createRequire(process.argv[1] ? path.resolve(process.argv[1]) : __filename)(name);
  } catch {
    return undefined;
  }
}

function hook(): void {
  if (hooked) return;
  hooked = true;
  // Node's internal funnel for socket write() and writev(); best effort, absent on other versions.
  const socket = require('node:net').Socket.prototype;
  if (typeof socket._writeGeneric === 'function') {
    const writeGeneric = socket._writeGeneric;
    socket._writeGeneric = function countedWrite(this: unknown, ...args: unknown[]) {
      counters.socketWrites++;
      return writeGeneric.apply(this, args);
    };
  }
  const pg = tryRequire('pg');
  if (pg?.Client?.prototype?.query) {
    const query = pg.Client.prototype.query;
    pg.Client.prototype.query = function countedQuery(this: unknown, ...args: unknown[]) {
      counters.pg++;
      return query.apply(this, args);
    };
  }
  const ioredis = tryRequire('ioredis');
  const Redis = ioredis?.default ?? ioredis?.Redis ?? ioredis;
  if (Redis?.prototype?.sendCommand) {
    const sendCommand = Redis.prototype.sendCommand;
    Redis.prototype.sendCommand = function countedCommand(this: unknown, command: unknown, stream?: unknown) {
      counters.redisCommands++;
      if (!stream) counters.redisRoundTrips++;
      return sendCommand.call(this, command, stream);
    };
  }
  const Pipeline = tryRequire('ioredis/built/Pipeline')?.default;
  if (Pipeline?.prototype?.exec) {
    const exec = Pipeline.prototype.exec;
    Pipeline.prototype.exec = function countedExec(this: unknown, ...args: unknown[]) {
      counters.redisRoundTrips++;
      return exec.apply(this, args);
    };
  }
}
/* eslint-enable @typescript-eslint/no-require-imports, @typescript-eslint/no-explicit-any */

function read(): ProbeReading {
  const cpu = process.cpuUsage(windowStart.cpu);
  const memory = process.memoryUsage();
  return {
    cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
    pg_queries: counters.pg,
    redis_commands: counters.redisCommands,
    redis_round_trips: counters.redisRoundTrips,
    socket_writes: counters.socketWrites,
    rss_mb: Math.round(memory.rss / 1048576),
    heap_used_mb: Math.round(memory.heapUsed / 1048576),
    event_loop_delay_p99_ms: Math.round(loopDelay.percentile(99) / 1e4) / 100,
    window_ms: Math.round(performance.now() - windowStart.at),
  };
}

if (process.send) {
  loopDelay.enable();
  process.on('message', (message: { probe?: string; id?: number }) => {
    if (message?.probe === 'reset') {
      hook();
      counters.pg = counters.redisCommands = counters.redisRoundTrips = counters.socketWrites = 0;
      loopDelay.reset();
      windowStart = { cpu: process.cpuUsage(), at: performance.now() };
      process.send!({ probe: 'reset', id: message.id });
    } else if (message?.probe === 'read') {
      process.send!({ probe: 'reading', id: message.id, reading: read() });
    } else if (message?.probe === 'exit') {
      // A clean exit, so --cpu-prof writes its profile.
      process.exit(0);
    }
  });
  // The IPC channel must not keep a service alive that is shutting down on its own.
  process.channel?.unref();
}
