import { performance } from 'node:perf_hooks';
import type { Command } from 'ioredis';
import { storeMetrics, telemetryStarted, traceRedisCommand } from '@ic/telemetry';

/** Commands that wait on purpose (BullMQ's blocking pop, subscriptions): their time is not latency. */
const WAITING_COMMANDS = new Set(['bzpopmin', 'bzpopmax', 'brpoplpush', 'blmove', 'brpop', 'blpop', 'xread', 'xreadgroup', 'subscribe', 'unsubscribe', 'psubscribe', 'punsubscribe', 'ssubscribe', 'sunsubscribe', 'monitor']);
const recorded = Symbol('ic.redisCommandRecorded');

/**
 * Records every command's round trip in ic_redis_command_duration_seconds, labelled by command name
 * (a small, fixed set: BullMQ's scripts run as evalsha): one histogram record per command. A command
 * sent inside a traced request or job also gets its client span (libs/telemetry redis-client.ts),
 * blocking ones included (their span shows the wait). Without telemetry started (no spans, no meter)
 * nothing is installed: the hook would time and follow every command for records nobody reads.
 */
export function instrumentRedisCommands(client: { sendCommand(command: Command, ...rest: never[]): unknown }): void {
  if (!telemetryStarted()) return;
  // Looked up on the prototype at call time, not bound once: a wrapper installed on the class later (an
  // APM agent, the benchmark's round-trip probe) still sees every command.
  const prototype = Object.getPrototypeOf(client) as { sendCommand: (this: unknown, command: Command, ...rest: unknown[]) => unknown };
  const send = (command: Command, ...rest: unknown[]) => prototype.sendCommand.call(client, command, ...rest);
  // A single node's address (a cluster's commands go to several: left out there).
  const options = (client as { options?: { host?: unknown; port?: unknown } }).options;
  const target = { host: typeof options?.host === 'string' ? options.host : undefined, port: typeof options?.port === 'number' ? options.port : undefined };
  (client as { sendCommand: (command: Command, ...rest: unknown[]) => unknown }).sendCommand = (command: Command, ...rest: unknown[]) => {
    const tagged = command as Command & { [recorded]?: true };
    if (!tagged[recorded]) {
      tagged[recorded] = true;
      const started = performance.now();
      const span = traceRedisCommand(command.name, target);
      const timed = !WAITING_COMMANDS.has(command.name);
      const settled = (error?: unknown) => {
        if (timed) storeMetrics().redisCommand.record((performance.now() - started) / 1000, { command: command.name });
        span.end(error);
      };
      command.promise.then(() => settled(), settled);
    }
    return send(command, ...rest);
  };
}
