import { performance } from 'node:perf_hooks';
import type { Command } from 'ioredis';
import { storeMetrics } from '@ic/telemetry';

/** Commands that wait on purpose (BullMQ's blocking pop, subscriptions): their time is not latency. */
const WAITING_COMMANDS = new Set(['bzpopmin', 'bzpopmax', 'brpoplpush', 'blmove', 'brpop', 'blpop', 'xread', 'xreadgroup', 'subscribe', 'unsubscribe', 'psubscribe', 'punsubscribe', 'ssubscribe', 'sunsubscribe', 'monitor']);
const recorded = Symbol('ic.redisCommandRecorded');

/**
 * Records every command's round trip in ic_redis_command_duration_seconds, labelled by command name
 * (a small, fixed set: BullMQ's scripts run as evalsha). One histogram record per command; the
 * ioredis OpenTelemetry instrumentation has spans but no metrics.
 */
export function instrumentRedisCommands(client: { sendCommand(command: Command, ...rest: never[]): unknown }): void {
  // Looked up on the prototype at call time, not bound once: a wrapper installed on the class later (an
  // APM agent, the benchmark's round-trip probe) still sees every command.
  const prototype = Object.getPrototypeOf(client) as { sendCommand: (this: unknown, command: Command, ...rest: unknown[]) => unknown };
  const send = (command: Command, ...rest: unknown[]) => prototype.sendCommand.call(client, command, ...rest);
  (client as { sendCommand: (command: Command, ...rest: unknown[]) => unknown }).sendCommand = (command: Command, ...rest: unknown[]) => {
    const tagged = command as Command & { [recorded]?: true };
    if (!tagged[recorded] && !WAITING_COMMANDS.has(command.name)) {
      tagged[recorded] = true;
      const started = performance.now();
      const record = () => storeMetrics().redisCommand.record((performance.now() - started) / 1000, { command: command.name });
      command.promise.then(record, record);
    }
    return send(command, ...rest);
  };
}
