import type { Response } from 'express';
import type { LoggedEvent } from '@ic/queue';
import { toAppError } from '@ic/http';
import type { Logger } from '@ic/telemetry';

/** Server-Sent Events framing as the openai client parses it: `event:` + one JSON `data:` line, blank line. */
export function startEventStream(res: Response): void {
  res.status(200);
  res.setHeader('content-type', 'text/event-stream; charset=utf-8');
  res.setHeader('cache-control', 'no-cache, no-transform');
  res.setHeader('connection', 'keep-alive');
  res.setHeader('x-accel-buffering', 'no');
  res.socket?.setNoDelay(true);
  // Not flushed: the headers leave with the first frames (response.created), in one socket write.
}

/** A frame from the event's stored JSON (one line: JSON text never holds a raw newline), not serialised again. */
export function formatLoggedEvent(event: LoggedEvent): string {
  return `event: ${event.type}\ndata: ${event.json}\n\n`;
}

/** Resolves when the response's socket has room again (or the client went away). */
export function drained(res: Response): Promise<void> {
  if (res.writableEnded || res.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** A comment line: ignored by SSE parsers, keeps proxies and undici's body timeout from closing a quiet stream. */
export function writeKeepAlive(res: Response): void {
  res.write(': keep-alive\n\n');
}

/** Errors mid-stream use the nested shape every openai client version throws on. */
export function writeStreamError(res: Response, error: unknown, sequenceNumber: number, logger: Logger): void {
  const appError = toAppError(error);
  if (appError.status >= 500) logger.error({ err: error }, 'stream relay failed');
  const body = appError.toEnvelope().error;
  res.write(`event: error\ndata: ${JSON.stringify({ type: 'error', sequence_number: sequenceNumber, error: body })}\n\n`);
}
