/**
 * Preloaded (`node -r`) into a process a benchmark forks: answers `{ memory: 'read', gc?: true }` on
 * the IPC channel with its `process.memoryUsage()` and its peak RSS so far (VmHWM, Linux), after a
 * full garbage collection when asked (the process must run with --expose-gc for that).
 */
import { readFileSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';

export interface MemoryReading {
  rss_mb: number;
  heap_used_mb: number;
  external_mb: number;
  /** Peak resident set since the process started (null where /proc is unavailable). */
  rss_peak_mb: number | null;
  /** CPU time (user + system) since the process started. */
  cpu_ms: number;
  /** V8's heap limit (what a derived WORKER_CONCURRENCY is computed from). */
  heap_limit_mb: number;
}

const mb = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10;

function peakRssMb(): number | null {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    return match ? Math.round((Number(match[1]) / 1024) * 10) / 10 : null;
  } catch {
    return null;
  }
}

if (process.send) {
  process.on('message', (message: { memory?: string; gc?: boolean }) => {
    if (message?.memory !== 'read') return;
    const collect = (globalThis as { gc?: () => void }).gc;
    if (message.gc && collect) collect();
    const usage = process.memoryUsage();
    const reading: MemoryReading = { rss_mb: mb(usage.rss), heap_used_mb: mb(usage.heapUsed), external_mb: mb(usage.external), rss_peak_mb: peakRssMb(), cpu_ms: Math.round((process.cpuUsage().user + process.cpuUsage().system) / 1000), heap_limit_mb: mb(getHeapStatistics().heap_size_limit) };
    process.send?.({ memory: reading });
  });
  // The IPC channel must not keep the process alive once the service has shut down.
  process.channel?.unref();
}
