/**
 * Where the machine's CPU went during a measured window, by process group, from /proc (Linux): the
 * stack under test, this load generator (the openai clients), the fake upstream, Postgres (every
 * `postgres` process: the shared server's backends, WAL writer, checkpointer) and Redis. On this
 * 2-core machine they all share the cores, so a turns/s figure is only meaningful beside them: when the
 * machine is saturated, the stack's own CPU per turn bounds nothing by itself.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Kernel clock ticks per second (USER_HZ): 100 on every Linux this runs on. */
const TICKS_PER_SECOND = 100;

export type CpuGroups = Record<string, number[]>;

interface Snapshot {
  at: number;
  busyTicks: number;
  totalTicks: number;
  cores: number;
  groups: Record<string, number>;
}

export interface MachineCpu {
  /** Share of all cores busy over the window, 0–1. */
  machine_busy: number;
  /** CPU ms per unit of work (e.g. per turn), by group; `other` is everything else on the machine. */
  ms_per_unit: Record<string, number>;
}

const processTicks = (pid: number | string): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime + stime
  } catch {
    return undefined; // gone, or not Linux
  }
};

const commandOf = (pid: string): string => {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
};

/** `pids`: named processes (stack, upstream, …); Postgres and Redis are found by name. Undefined off Linux. */
export function snapshotCpu(pids: Record<string, number | undefined>): Snapshot | undefined {
  let stat: string;
  try {
    stat = readFileSync('/proc/stat', 'utf8');
  } catch {
    return undefined;
  }
  const lines = stat.split('\n');
  // user nice system idle iowait irq softirq steal (guest time is already inside user)
  const all = lines[0]!.split(/\s+/).slice(1, 9).map(Number);
  const idle = (all[3] ?? 0) + (all[4] ?? 0);
  const totalTicks = all.reduce((sum, value) => sum + (Number.isFinite(value) ? value : 0), 0);
  const groups: Record<string, number> = { postgres: 0, redis: 0 };
  for (const [name, pid] of Object.entries(pids)) groups[name] = pid === undefined ? 0 : (processTicks(pid) ?? 0);
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const command = commandOf(pid);
    if (command === 'postgres') groups.postgres! += processTicks(pid) ?? 0;
    else if (command === 'redis-server') groups.redis! += processTicks(pid) ?? 0;
  }
  return { at: performance.now(), busyTicks: totalTicks - idle, totalTicks, cores: lines.filter((line) => /^cpu\d+ /.test(line)).length, groups };
}

/**
 * CPU per unit of work between two snapshots. Postgres processes that start or end inside the window
 * (a new backend) are counted from zero or lost; over a few seconds of steady load that is noise.
 */
export function cpuBetween(before: Snapshot | undefined, after: Snapshot | undefined, units: number): MachineCpu | undefined {
  if (!before || !after || units <= 0) return undefined;
  const msPerTick = 1000 / TICKS_PER_SECOND;
  const perUnit: Record<string, number> = {};
  let named = 0;
  for (const name of Object.keys(after.groups)) {
    const ticks = Math.max(0, after.groups[name]! - (before.groups[name] ?? 0));
    named += ticks;
    perUnit[name] = Math.round(((ticks * msPerTick) / units) * 100) / 100;
  }
  const busy = after.busyTicks - before.busyTicks;
  perUnit.other = Math.round(((Math.max(0, busy - named) * msPerTick) / units) * 100) / 100;
  perUnit.total = Math.round(((busy * msPerTick) / units) * 100) / 100;
  return { machine_busy: Math.round((busy / Math.max(1, after.totalTicks - before.totalTicks)) * 100) / 100, ms_per_unit: perUnit };
}
