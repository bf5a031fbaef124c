import { z } from 'zod';
import { ConversationId, RunId } from './ids';

/**
 * The queue boundary. Every job name maps to its payload schema and default options; producers are
 * typed from it and consumers parse `job.data` with it. Payloads carry ids only (no text, no tokens).
 * Names are versioned: keep a retired name here until its jobs have drained.
 */
export const jobCatalog = {
  'turn.execute.v1': {
    queue: 'turns',
    // conversationId lets the worker ask for only the transcript items its cache lacks, in the claim itself.
    schema: z.object({ runId: RunId, conversationId: ConversationId.optional() }).strict(),
    options: { attempts: 4, backoff: { type: 'exponential' as const, delay: 500 } },
  },
  'titler.generate.v1': {
    queue: 'titles',
    schema: z.object({ conversationId: ConversationId }).strict(),
    options: { attempts: 3, backoff: { type: 'exponential' as const, delay: 1000 } },
  },
} as const;

export type JobName = keyof typeof jobCatalog;
export type JobPayload<N extends JobName> = z.infer<(typeof jobCatalog)[N]['schema']>;

/**
 * A back-off hold one process shares with the others calling the same model upstream (a pub/sub
 * signal, not a job: it is parsed when it comes out of Redis all the same).
 */
export const UpstreamHold = z.object({
  /** The adapter that met the answer: it ignores its own hold when the broadcast comes back. */
  origin: z.string().min(1).max(64),
  /** Which upstream (a digest of its base URL): a process calling another one ignores the hold. */
  upstream: z.string().min(1).max(64),
  /** The model whose limit tripped (a 429), or null for every call (a 503). */
  model: z.string().min(1).max(512).nullable(),
  /** Milliseconds of quiet, counted from when the hold was sent. */
  ms: z.number().int().positive(),
});
export type UpstreamHold = z.infer<typeof UpstreamHold>;

/**
 * Shared pacing (libs/model SharedRateLimitPacer, kept in Redis by libs/queue): one mirror of a model's
 * request and token limits for every process calling the upstream, so N worker pods send what the
 * limits admit in all instead of each finding its share by meeting 429s.
 */
export interface UpstreamLimitStore {
  /** Takes a place for one call: one request and `tokens`, due after `waitMs`. */
  take(key: string, call: { tokens: number; maxWaitMs: number; expireMs: number }): Promise<UpstreamLimitTake>;
  /** What the answer to a call reported (`seq` 0: a call sent before the limits were known), or that none will come; resolves with where the limits stand then. */
  answer(key: string, answer: UpstreamLimitAnswer): Promise<UpstreamLimitMirror>;
}

/** One limit as the store holds it: its level now (below zero: owed to calls already placed), all ever taken, its refill rate. */
export const UpstreamLimitLevel = z.object({ level: z.number(), total: z.number(), perMs: z.number().positive() });
export type UpstreamLimitLevel = z.infer<typeof UpstreamLimitLevel>;

/** Where a model's limits stand (a limit not reported yet is absent). */
export const UpstreamLimitMirror = z.object({ requests: UpstreamLimitLevel.optional(), tokens: UpstreamLimitLevel.optional() });
export type UpstreamLimitMirror = z.infer<typeof UpstreamLimitMirror>;

/** The store's reply to a take (parsed when it comes out of Redis). */
export const UpstreamLimitTake = z.discriminatedUnion('kind', [
  /** No answer has reported a limit yet (or the mirror expired): the call goes unpaced. */
  z.object({ kind: z.literal('unknown') }),
  /**
   * The place is taken: send after `waitMs`, held for `limit` when it is above 0. `takenThrough` is each
   * known limit's total taken, this call included (its place in that line, for re-timing the wait as
   * the mirror moves); `tokenSlack` (≤ 0) is how far short of its tokens the call may go (a call bigger
   * than the whole limit goes once the limit is full).
   */
  z.object({
    kind: z.literal('taken'),
    seq: z.number().int().positive(),
    waitMs: z.number().int().nonnegative(),
    limit: z.enum(['requests', 'tokens']),
    takenThrough: z.object({ requests: z.number().optional(), tokens: z.number().optional() }),
    tokenSlack: z.number().nonpositive(),
  }),
  /** The place would come after more than `maxWaitMs`: nothing was taken. */
  z.object({ kind: z.literal('too-long'), waitMs: z.number().int().nonnegative(), limit: z.enum(['requests', 'tokens']) }),
]);
export type UpstreamLimitTake = z.infer<typeof UpstreamLimitTake>;

/** One limit as an answer reported it, with the refill rate the process reckons from its readings. */
export interface UpstreamLimitReading {
  limit: number;
  remaining: number;
  perMs: number;
}

export interface UpstreamLimitAnswer {
  /** The take's seq, or 0 for a call the store never saw. */
  seq: number;
  /** The call never went (aborted while it waited for its place): what it took goes back. */
  unsent?: boolean;
  /** An unseen call the answering process counted in flight: what to give back if it was refused or admitted first, and its reading does not reset the level. */
  giveBack?: { requests: number; tokens: number };
  /** How long ago the upstream admitted the call (as the local pacer reckons it). */
  sinceAdmittedMs: number;
  refused: boolean;
  requests?: UpstreamLimitReading;
  tokens?: UpstreamLimitReading;
  /** The answering process (a random id) and the call's ticket there: orders one process's unseen calls. */
  origin?: string;
  ticket?: number;
  /** This process's calls in flight that the store never saw (sent while the limits were unknown). */
  unseenInFlight: { requests: number; tokens: number };
}
