import { RunRow, type RunError, type RunParams, type RunStatus, type Usage } from '@ic/schemas';
import { z } from 'zod';
import { jsonb, sql, type CommonQueryMethods } from '../pool';

const columns = sql.fragment`
  id, tenant_id, smith_id, conversation_id, conversation_seq, previous_response_id, status, model, instructions,
  params, input_count, output_count, usage, error, incomplete_details, attempt, idempotency_key, request_hash,
  created_at, started_at, completed_at, cancel_requested_at`;

const OPEN = sql.fragment`status IN ('queued', 'in_progress')`;

export interface NewRun {
  id: string;
  tenantId: string;
  smithId: string;
  conversationId: string | null;
  conversationSeq: number | null;
  previousResponseId: string | null;
  model: string;
  instructions: string | null;
  params: RunParams;
  inputCount: number;
  idempotencyKey: string | null;
  requestHash: string;
}

export interface RunOutcome {
  status: Extract<RunStatus, 'completed' | 'incomplete' | 'failed' | 'cancelled'>;
  outputCount: number;
  usage: Usage | null;
  error: RunError | null;
  incompleteDetails: { reason: string } | null;
}

export function createRunsRepo(db: CommonQueryMethods) {
  return {
    insert: (run: NewRun) =>
      db.one(sql.type(RunRow)`
        INSERT INTO runs (id, tenant_id, smith_id, conversation_id, conversation_seq, previous_response_id, status, model,
                          instructions, params, input_count, idempotency_key, request_hash)
        VALUES (${run.id}, ${run.tenantId}, ${run.smithId}, ${run.conversationId}, ${run.conversationSeq}, ${run.previousResponseId},
                'queued', ${run.model}, ${run.instructions}, ${jsonb(run.params)}, ${run.inputCount}, ${run.idempotencyKey},
                ${run.requestHash})
        RETURNING ${columns}`),

    find: (id: string) => db.maybeOne(sql.type(RunRow)`SELECT ${columns} FROM runs WHERE id = ${id}`),

    findForSmith: (smithId: string, id: string) =>
      db.maybeOne(sql.type(RunRow)`SELECT ${columns} FROM runs WHERE id = ${id} AND smith_id = ${smithId} AND deleted_at IS NULL`),

    findByIdempotencyKey: (smithId: string, key: string) =>
      db.maybeOne(sql.type(RunRow)`SELECT ${columns} FROM runs WHERE smith_id = ${smithId} AND idempotency_key = ${key}`),

    /** The newest run of this smith with the same request body created since `sinceMs` (epoch ms). */
    findRecentByRequestHash: (smithId: string, requestHash: string, sinceMs: number) =>
      db.maybeOne(sql.type(RunRow)`
        SELECT ${columns} FROM runs
        WHERE smith_id = ${smithId} AND request_hash = ${requestHash} AND created_at >= to_timestamp(${sinceMs} / 1000.0)
          AND idempotency_key IS NULL AND deleted_at IS NULL
        ORDER BY created_at DESC LIMIT 1`),

    hasOpenRun: (conversationId: string) =>
      db.exists(sql.unsafe`SELECT 1 FROM runs WHERE conversation_id = ${conversationId} AND ${OPEN}`),

    /** The conversation's oldest unfinished run: the only one allowed to execute. */
    headOfConversation: (conversationId: string) =>
      db.maybeOne(sql.type(z.object({ id: z.string(), status: z.string() }))`
        SELECT id, status FROM runs WHERE conversation_id = ${conversationId} AND ${OPEN}
        ORDER BY conversation_seq LIMIT 1`),

    /**
     * Moves a run to in_progress for a new attempt, but only while no earlier turn of its conversation
     * is unfinished (turns run in order). Null when it is finished or must wait; `find` tells which.
     */
    claim: (id: string) =>
      db.maybeOne(sql.type(RunRow)`
        UPDATE runs SET status = 'in_progress', attempt = attempt + 1, started_at = coalesce(started_at, now())
        WHERE id = ${id} AND ${OPEN}
          AND NOT EXISTS (
            SELECT 1 FROM runs AS earlier
            WHERE earlier.conversation_id = runs.conversation_id AND earlier.conversation_seq < runs.conversation_seq
              AND earlier.status IN ('queued', 'in_progress'))
        RETURNING ${columns}`),

    /** Finishes the run only if `attempt` still owns it; false means another attempt already did. */
    finish: (id: string, attempt: number, outcome: RunOutcome) =>
      db.maybeOne(sql.type(RunRow)`
        UPDATE runs SET status = ${outcome.status}, output_count = ${outcome.outputCount},
          usage = ${outcome.usage ? jsonb(outcome.usage) : null},
          error = ${outcome.error ? jsonb(outcome.error) : null},
          incomplete_details = ${outcome.incompleteDetails ? jsonb(outcome.incompleteDetails) : null},
          completed_at = now(),
          -- store: false keeps a standalone run only as long as it takes to answer it
          deleted_at = CASE WHEN (params->>'store')::boolean OR conversation_id IS NOT NULL THEN NULL ELSE now() END
        WHERE id = ${id} AND status = 'in_progress' AND attempt = ${attempt}
        RETURNING ${columns}`),

    /** Cancels a run no worker has picked up yet. */
    cancelIfQueued: (id: string) =>
      db.maybeOne(sql.type(RunRow)`
        UPDATE runs SET status = 'cancelled', cancel_requested_at = now(), completed_at = now()
        WHERE id = ${id} AND status = 'queued'
        RETURNING ${columns}`),

    requestCancel: (id: string) =>
      db.maybeOne(sql.type(RunRow)`
        UPDATE runs SET cancel_requested_at = coalesce(cancel_requested_at, now())
        WHERE id = ${id} AND ${OPEN}
        RETURNING ${columns}`),

    softDelete: (smithId: string, id: string) =>
      db.maybeOneFirst(sql.type(z.object({ id: z.string() }))`
        UPDATE runs SET deleted_at = now() WHERE id = ${id} AND smith_id = ${smithId} AND deleted_at IS NULL RETURNING id`),

    /**
     * Queue health from the source of truth, for the sweeper's gauges: the age of the oldest run not
     * yet claimed, and how many runs have been in progress longer than `stuckAfterMs`. Reads only the
     * open runs (partial index runs_open_by_age).
     */
    openRunStats: (stuckAfterMs: number) =>
      db.one(sql.type(z.object({ oldest_queued_age_seconds: z.number(), stuck: z.number() }))`
        SELECT
          coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued')), 0)::float8 AS oldest_queued_age_seconds,
          count(*) FILTER (WHERE status = 'in_progress' AND started_at < now() - make_interval(secs => ${stuckAfterMs} / 1000.0))::int AS stuck
        FROM runs
        WHERE ${OPEN}`),

    /**
     * Runs that should be executing but may have lost their job (Redis flushed, enqueue failed after
     * commit): per conversation only the head, plus standalone runs, older than `olderThanMs`.
     */
    listRunnableOlderThan: (olderThanMs: number, limit: number) =>
      db.anyFirst(sql.type(z.object({ id: z.string() }))`
        SELECT id FROM (
          SELECT DISTINCT ON (coalesce(conversation_id, id)) id, created_at
          FROM runs
          WHERE ${OPEN} AND created_at < now() - make_interval(secs => ${olderThanMs} / 1000.0)
          ORDER BY coalesce(conversation_id, id), conversation_seq NULLS FIRST
        ) AS heads
        ORDER BY created_at
        LIMIT ${limit}`),

    /** The ids of a previous_response_id chain ending at `lastId`, oldest first. */
    chainEndingAt: (lastId: string) =>
      db.anyFirst(sql.type(z.object({ id: z.string() }))`
        WITH RECURSIVE chain (id, previous_response_id, depth) AS (
          SELECT id, previous_response_id, 0 FROM runs WHERE id = ${lastId}
          UNION ALL
          SELECT r.id, r.previous_response_id, c.depth + 1 FROM runs r JOIN chain c ON r.id = c.previous_response_id
        )
        SELECT id FROM chain ORDER BY depth DESC`),
  };
}
