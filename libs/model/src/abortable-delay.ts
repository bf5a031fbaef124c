import { setTimeout as delay } from 'node:timers/promises';

/** Waits `ms`, or rejects with `onAbort()` as soon as the signal aborts (at once if it already has). */
export async function abortableDelay(ms: number, signal: AbortSignal, onAbort: () => Error): Promise<void> {
  try {
    await delay(ms, undefined, { signal });
  } catch (error) {
    if (signal.aborted) throw onAbort();
    throw error;
  }
}
