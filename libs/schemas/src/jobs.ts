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
