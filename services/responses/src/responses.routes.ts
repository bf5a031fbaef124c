import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import type { Authenticator } from '@ic/auth';
import { authorize, parseOrThrow, type RateLimits } from '@ic/http';
import { apiError, CreateResponseBody, failedTurnError, GetResponseQuery, ListInputItemsQuery, TERMINAL_STATUSES, type RunRow } from '@ic/schemas';
import type { EventCursor } from '@ic/queue';
import type { Logger } from '@ic/telemetry';
import { DEFAULT_STREAM_HEAD_HOLD_MS } from './env';
import { isTerminalEvent } from './events';
import { drained, formatLoggedEvent, startEventStream, writeKeepAlive, writeStreamError } from './sse';
import type { BusyMode, TurnsService } from './turns.service';

export const BUSY_HEADER = 'ic-conversation-busy';
/** A relay rides out Redis/Postgres failures this long before it ends the stream with an `error` event. */
const RELAY_OUTAGE_GRACE_MS = 5000;
const IdempotencyKey = z.string().regex(/^[\x21-\x7e]{1,255}$/, 'Idempotency-Key must be 1–255 visible ASCII characters');

/**
 * Events that only say where a turn stands. A batch of nothing else is held back (up to
 * `streamHeadHoldMs`) to go out with the events after it: every socket write costs the service and
 * the client a syscall and a wake-up, and each of these used to get its own.
 */
const STREAM_HEAD_EVENTS = new Set(['response.created', 'response.queued', 'response.in_progress']);

export interface ResponsesRouterOptions {
  keepAliveMs: number;
  /** STREAM_HEAD_HOLD_MS (DEFAULT_STREAM_HEAD_HOLD_MS when absent); 0 writes every batch at once. */
  streamHeadHoldMs?: number;
  syncWaitMs: number;
  logger: Logger;
  rateLimits?: RateLimits;
}

function busyMode(req: Request): BusyMode {
  const value = req.header(BUSY_HEADER)?.trim().toLowerCase();
  if (value === undefined || value === '' || value === 'queue') return 'queue';
  if (value === 'reject') return 'reject';
  throw apiError('invalid_value', { param: 'IC-Conversation-Busy', reason: `must be 'queue' (wait for the running turn) or 'reject' (answer conversation_locked)` });
}

/**
 * The Responses API over the turn service: JSON, background, and SSE relayed from the run's event log.
 * `closeStreams()` ends every open relay (at shutdown); the runs go on and clients resume with starting_after.
 */
export function responsesRouter(service: TurnsService, authenticator: Authenticator, options: ResponsesRouterOptions): { router: Router; closeStreams(): void } {
  const router = Router();
  const openRelays = new Set<() => void>();

  /**
   * Relays a run's events from after `afterSequence` (through `given`, the cursor a streaming accept
   * opened, when there is one). The headers go out with the first frames, in one write.
   */
  const relay = async (res: Response, run: RunRow, afterSequence: number, given?: EventCursor) => {
    startEventStream(res);
    const cursor = given ?? service.follow(run.id, afterSequence);
    // Frames of the stream's head not written yet, and when they go out even if nothing follows.
    let held = '';
    let heldUntil = 0;
    let open = true;
    const stop = () => {
      open = false;
      cursor.close();
    };
    const endForShutdown = () => {
      stop();
      res.end(held);
    };
    openRelays.add(endForShutdown);
    res.on('close', stop);
    /** What is held goes out now; a keep-alive only when nothing is (and `keepAlive` asks for one). */
    const writeHeldOrKeepAlive = (keepAlive = true) => {
      if (held) res.write(held);
      else if (keepAlive) writeKeepAlive(res);
      held = '';
    };
    let after = afterSequence;
    // A run already finished is replayed without waiting: a quiet log means Postgres has the rest.
    const live = !TERMINAL_STATUSES.includes(run.status);
    const blockMs = live ? options.keepAliveMs : 0;
    const headHoldMs = live ? (options.streamHeadHoldMs ?? DEFAULT_STREAM_HEAD_HOLD_MS) : 0;
    let failingSince: number | null = null;
    try {
      while (open) {
        let batch: Awaited<ReturnType<TurnsService['eventsAfter']>>;
        try {
          batch = held ? await service.eventsAfter(run, cursor, Math.max(0, heldUntil - Date.now()), { quietExpected: true }) : await service.eventsAfter(run, cursor, blockMs);
          failingSince = null;
        } catch (error) {
          // Redis or Postgres blinked: keep the client (and its position) through a short outage.
          failingSince ??= Date.now();
          if (Date.now() - failingSince >= RELAY_OUTAGE_GRACE_MS) throw error;
          if (open) writeHeldOrKeepAlive();
          await new Promise((resolve) => setTimeout(resolve, 500));
          continue;
        }
        const { events, finished, quiet } = batch;
        if (!open) break;
        if (quiet) writeHeldOrKeepAlive();
        // One write per batch, the stored JSON as it is; a slow client holds the relay (not the worker) until its socket drains.
        let frames = held;
        let headOnly = true;
        for (const event of events) {
          frames += formatLoggedEvent(event);
          after = event.sequence_number;
          if (!STREAM_HEAD_EVENTS.has(event.type)) headOnly = false;
          if (isTerminalEvent(event)) break;
        }
        if (headOnly && !finished && events.length > 0 && headHoldMs > 0) {
          if (!held) heldUntil = Date.now() + headHoldMs;
          held = frames;
          continue;
        }
        held = '';
        if (frames && !res.write(frames)) await drained(res);
        if (finished) break;
      }
    } catch (error) {
      if (open) {
        writeHeldOrKeepAlive(false);
        writeStreamError(res, error, after + 1, options.logger);
      }
    } finally {
      openRelays.delete(endForShutdown);
      cursor.close();
    }
    res.end();
  };

  router.post('/v1/responses', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'responses:write');
    await options.rateLimits?.consumeTurn(smith.id, res);
    const body = parseOrThrow(CreateResponseBody, req.body);
    const rawKey = req.header('idempotency-key');
    const idempotencyKey = rawKey === undefined ? null : parseOrThrow(IdempotencyKey, rawKey, 'Idempotency-Key');
    const retryCount = Number.parseInt(req.header('x-stainless-retry-count') ?? '0', 10);
    const { run, cursor } = await service.accept(smith, body, {
      idempotencyKey,
      busyMode: busyMode(req),
      clientRetryCount: Number.isFinite(retryCount) ? retryCount : 0,
      follow: body.stream === true,
    });
    if (body.stream) return relay(res, run, -1, cursor);
    if (body.background) return res.json(await service.present(run));
    let open = true;
    res.on('close', () => {
      open = false;
    });
    // Committed: whatever happens while waiting, the answer is the run (never a retryable status).
    const answer = await service.answerCommitted(run, options.syncWaitMs, () => !open);
    if (!open) return;
    if (answer.status === 'failed') throw failedTurnError(answer.id, answer.error);
    res.json(answer);
  });

  router.get('/v1/responses/:response_id', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'responses:read');
    const query = parseOrThrow(GetResponseQuery, req.query);
    const run = await service.requireRun(smith, req.params.response_id ?? '');
    if (query.stream === 'true') return relay(res, run, query.starting_after ?? -1);
    res.json(await service.present(run));
  });

  router.post('/v1/responses/:response_id/cancel', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'responses:write');
    res.json(await service.cancel(smith, req.params.response_id ?? ''));
  });

  router.delete('/v1/responses/:response_id', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'responses:write');
    res.json(await service.delete(smith, req.params.response_id ?? ''));
  });

  router.get('/v1/responses/:response_id/input_items', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'responses:read');
    const query = parseOrThrow(ListInputItemsQuery, req.query);
    res.json(await service.listInputItems(smith, req.params.response_id ?? '', query));
  });

  return {
    router,
    closeStreams: () => {
      for (const stop of openRelays) stop();
    },
  };
}
