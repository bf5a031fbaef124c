import { RunRow, RunStatus, StoredItemBody, type RunError, type RunParams, type StoredItem, type Usage } from '@ic/schemas';
import { z } from 'zod';
import { EMPTY_FRAGMENT, jsonb, sql, type CommonQueryMethods } from '../pool';

/**
 * What `runs.params` is stored against: a run keeps only the parameters whose value differs from this
 * (`{}` for a plain turn instead of ≈ 370 bytes of jsonb), and reads merge it back (`baseline || params`).
 * The echoed parameters were most of a run's row, which Postgres writes three times per turn (accept,
 * claim, stamp): a sixth of a turn's WAL (6.2 → 5.1 KB replaying the statements). Frozen: rows written
 * against it depend on it. When the API's defaults change (`defaultRunParams`), new rows simply store the
 * parameters that differ from this; never edit it. Rows written in full before it read back unchanged.
 */
const PARAMS_BASELINE: Readonly<RunParams> = Object.freeze({
  temperature: null,
  top_p: null,
  max_output_tokens: null,
  tools: [],
  tool_choice: 'auto',
  parallel_tool_calls: true,
  text: { format: { type: 'text' }, verbosity: 'medium' },
  reasoning: { effort: null, summary: null },
  metadata: {},
  user: null,
  safety_identifier: null,
  store: true,
  background: false,
  truncation: 'disabled',
});
const PARAMS_BASELINE_JSON = Object.fromEntries(Object.entries(PARAMS_BASELINE).map(([key, value]) => [key, JSON.stringify(value)]));
const PARAMS_BASELINE_SQL = sql.fragment`${sql.literalValue(JSON.stringify(PARAMS_BASELINE))}::jsonb`;

/** The parameters a run stores: those that differ from PARAMS_BASELINE. */
function storedRunParams(params: RunParams): Partial<RunParams> {
  return Object.fromEntries(Object.entries(params).filter(([key, value]) => JSON.stringify(value) !== PARAMS_BASELINE_JSON[key]));
}

/** A run's parameters as the API echoes them, from what the row stores. */
const paramsOf = (table: string | null) => sql.fragment`${PARAMS_BASELINE_SQL} || ${table === null ? sql.identifier(['params']) : sql.identifier([table, 'params'])}`;

const columns = sql.fragment`
  id, tenant_id, smith_id, conversation_id, conversation_seq, previous_response_id, status, model, instructions,
  ${paramsOf(null)} AS params, input_count, output_count, usage, error, incomplete_details, attempt, idempotency_key, request_hash,
  created_at, started_at, completed_at, cancel_requested_at`;

/**
 * Queued or in progress. Said with completed_at (the constraint runs_open_until_completed holds it to the
 * status) because that is what the partial indexes of open runs are on: a claim then changes no indexed
 * column and is a HOT update.
 */
const OPEN = sql.fragment`completed_at IS NULL`;

// Row schemas built once: zod 3 builds a schema slowly, and the result parser compiles a parser per schema (row-parser.ts).
const IdRow = z.object({ id: z.string() });
const HeadRow = z.object({ id: z.string(), status: z.string() });
const OpenRunStatsRow = z.object({ oldest_queued_age_seconds: z.number(), stuck: z.number() });
const RunnableRow = z.object({ id: z.string(), conversation_id: z.string().nullable(), created_at: z.number() });

/** The columns of `RunRow`, for the NULL placeholders of rows that carry no run. */
const RUN_COLUMN_NAMES = Object.keys(RunRow.shape);
// Built once: joining a fragment per column on every call was a measurable share of a turn's CPU.
const NO_RUN_COLUMNS = sql.join(RUN_COLUMN_NAMES.map(() => sql.fragment`NULL`), sql.fragment`, `);
const CURRENT_RUN_COLUMNS = sql.join(
  RUN_COLUMN_NAMES.map((name) => (name === 'params' ? paramsOf('current') : sql.identifier(['current', name]))),
  sql.fragment`, `,
);

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

export interface TurnToAccept extends Omit<NewRun, 'conversationSeq'> {
  /** `reject`: refuse while the conversation has an unfinished run (OpenAI's conversation_locked). */
  busyMode: 'queue' | 'reject';
  /** The normalised input items with their ids, in order. */
  input: ReadonlyArray<{ id: string; body: StoredItem }>;
  /**
   * Claim the run's first attempt in the same statement if it is its conversation's head (or a
   * standalone run): the accepting process executes it itself. Not for previous_response_id runs.
   */
  claimIfHead?: boolean;
}

const ACCEPT_REFUSALS = ['conversation_not_found', 'conversation_locked', 'previous_response_not_found', 'previous_response_in_progress'] as const;
const AcceptRow = z.discriminatedUnion('outcome', [
  // `replayed`: a run with this Idempotency-Key already exists and nothing was written.
  RunRow.extend({ outcome: z.enum(['accepted', 'replayed']), is_head: z.boolean(), previous_status: z.null(), transcript_length: z.number().nullable() }),
  z.object({ outcome: z.enum(ACCEPT_REFUSALS), is_head: z.null(), previous_status: RunStatus.nullable(), transcript_length: z.null() }),
]);
export type AcceptResult =
  | {
      outcome: 'accepted' | 'replayed';
      run: RunRow;
      isHead: boolean;
      /**
       * Accepted conversation runs: the conversation's transcript length under the row lock. For a
       * head run every earlier turn is stamped, so this is exactly the history it replays.
       */
      transcriptLength: number | null;
    }
  | { outcome: (typeof ACCEPT_REFUSALS)[number]; previousStatus: RunStatus | null };

const ClaimRow = z.discriminatedUnion('outcome', [
  RunRow.extend({
    outcome: z.literal('claimed'),
    own_input: z.array(StoredItemBody),
    transcript_after: z.array(z.object({ position: z.number(), body: StoredItemBody })).nullable(),
    chain: z.array(StoredItemBody).nullable(),
  }),
  RunRow.extend({ outcome: z.enum(['waiting', 'finished']), own_input: z.null(), transcript_after: z.null(), chain: z.null() }),
  z.object({ outcome: z.literal('missing') }),
]);
export type ClaimResult =
  | {
      outcome: 'claimed';
      run: RunRow;
      /** The run's own input items, in order. */
      input: StoredItem[];
      /** Conversation runs: the transcript items after the `afterPosition` asked for, in order. */
      transcriptAfter: Array<{ position: number; body: StoredItem }> | null;
      /** previous_response_id runs: every item of the chain, oldest run first. */
      chain: StoredItem[] | null;
    }
  /** An earlier turn of the conversation is unfinished: look again shortly. `run` as the statement saw it. */
  | { outcome: 'waiting'; run: RunRow }
  /** Already finished: nothing to run. `run` as the statement saw it. */
  | { outcome: 'finished'; run: RunRow }
  | { outcome: 'missing' };

export interface StampRequest {
  run: Pick<RunRow, 'id' | 'attempt' | 'conversation_id' | 'input_count'>;
  outcome: RunOutcome;
  /** Output items in order; written only for completed and incomplete runs. */
  outputs: ReadonlyArray<{ id: string; body: StoredItem }>;
}

const StampRow = RunRow.extend({
  first_position: z.number().nullable(),
  untitled: z.boolean().nullable(),
  next_run_id: z.string().nullable(),
  next_run_unknown: z.boolean(),
});
export interface StampResult {
  run: RunRow;
  /** Transcript position of the run's first input item (conversation runs that add to the transcript). */
  firstPosition: number | null;
  /** The conversation still wants a generated title. */
  untitled: boolean;
  /** The conversation's next unfinished run as this statement saw it. */
  nextRunId: string | null;
  /** A turn was accepted while this statement ran, so `nextRunId` may miss it: ask again after the commit. */
  nextRunUnknown: boolean;
}

export function createRunsRepo(db: CommonQueryMethods) {
  return {
    find: (id: string) => db.maybeOne(sql.type(RunRow)`/* prepared: runs.find */ SELECT ${columns} FROM runs WHERE id = ${id}`),

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

    /** The conversation's oldest unfinished run: the only one allowed to execute. */
    headOfConversation: (conversationId: string) =>
      db.maybeOne(sql.type(HeadRow)`
        SELECT id, status FROM runs WHERE conversation_id = ${conversationId} AND ${OPEN}
        ORDER BY conversation_seq LIMIT 1`),

    /**
     * Accepts a turn in one statement (atomic on its own): takes the conversation's row lock and next
     * turn number, refuses in `reject` mode while a run is open, checks previous_response_id, inserts the
     * run (queued) and its input items. An existing run with the same Idempotency-Key is returned
     * instead, with nothing written; a concurrent duplicate key fails on the unique index.
     *
     * `isHead`: no earlier unfinished run existed, so the run may be enqueued at once. False when one
     * did, or when another turn of the conversation committed while this statement waited for the row
     * lock (its snapshot cannot see that run): then ask `headOfConversation` after the commit.
     */
    accept: async (turn: TurnToAccept): Promise<AcceptResult> => {
      const conversationId = turn.conversationId;
      const input = turn.input.map((item, ordinal) => ({ id: item.id, ordinal, body: item.body }));
      const row = await db.one(sql.type(AcceptRow)`/* prepared: runs.accept */
        WITH existing AS (
          SELECT ${columns} FROM runs
          WHERE ${turn.idempotencyKey}::text IS NOT NULL AND smith_id = ${turn.smithId} AND idempotency_key = ${turn.idempotencyKey}
        ),
        seen AS (
          -- the conversation as this statement's snapshot has it
          SELECT last_run_seq,
                 EXISTS (SELECT 1 FROM runs WHERE conversation_id = ${conversationId} AND ${OPEN}) AS has_open_run
          FROM conversations
          WHERE id = ${conversationId} AND smith_id = ${turn.smithId} AND deleted_at IS NULL
        ),
        previous AS (
          SELECT status FROM runs WHERE id = ${turn.previousResponseId} AND smith_id = ${turn.smithId} AND deleted_at IS NULL
        ),
        conversation AS (
          UPDATE conversations SET last_run_seq = conversations.last_run_seq + 1
          FROM seen
          WHERE conversations.id = ${conversationId} AND conversations.smith_id = ${turn.smithId} AND conversations.deleted_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM existing)
            -- re-evaluated on the newest row version after waiting for the lock: a turn committed since
            -- the snapshot shows as a changed last_run_seq
            AND NOT (${turn.busyMode === 'reject'} AND (seen.has_open_run OR conversations.last_run_seq <> seen.last_run_seq))
          RETURNING conversations.last_run_seq, conversations.item_count,
                    seen.last_run_seq + 1 = conversations.last_run_seq AND NOT seen.has_open_run AS is_head
        ),
        claiming AS (
          -- the first attempt is claimed with the accept: a head (or standalone) run, when asked for
          SELECT ${turn.claimIfHead === true && turn.previousResponseId === null} AND coalesce((SELECT is_head FROM conversation), true) AS now
        ),
        inserted AS (
          INSERT INTO runs (id, tenant_id, smith_id, conversation_id, conversation_seq, previous_response_id, status, attempt, started_at,
                            model, instructions, params, input_count, idempotency_key, request_hash)
          SELECT ${turn.id}, ${turn.tenantId}, ${turn.smithId}, ${conversationId}, conversation.last_run_seq, ${turn.previousResponseId},
                 CASE WHEN claiming.now THEN 'in_progress' ELSE 'queued' END, CASE WHEN claiming.now THEN 1 ELSE 0 END,
                 CASE WHEN claiming.now THEN now() END,
                 ${turn.model}, ${turn.instructions}, ${jsonb(storedRunParams(turn.params))}, ${turn.inputCount}, ${turn.idempotencyKey},
                 ${turn.requestHash}
          FROM claiming LEFT JOIN conversation ON true
          WHERE NOT EXISTS (SELECT 1 FROM existing)
            AND (${conversationId}::text IS NULL OR conversation.last_run_seq IS NOT NULL)
            AND (${turn.previousResponseId}::text IS NULL OR EXISTS (SELECT 1 FROM previous WHERE status IN ('completed', 'incomplete')))
          RETURNING ${columns}
        ),
        input AS (
          INSERT INTO items (id, run_id, direction, ordinal, body)
          SELECT t.id, inserted.id, 'input', t.ordinal, t.body
          FROM inserted, jsonb_to_recordset(${jsonb(input)}) AS t(id text, ordinal integer, body jsonb)
        )
        SELECT 'accepted' AS outcome, coalesce((SELECT is_head FROM conversation), true) AS is_head, NULL AS previous_status,
               (SELECT item_count FROM conversation) AS transcript_length, inserted.*
        FROM inserted
        UNION ALL
        SELECT 'replayed', false, NULL, NULL, existing.* FROM existing
        UNION ALL
        SELECT CASE
                 WHEN ${conversationId}::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM seen) THEN 'conversation_not_found'
                 WHEN ${conversationId}::text IS NOT NULL AND ${turn.busyMode === 'reject'} THEN 'conversation_locked'
                 WHEN ${conversationId}::text IS NOT NULL THEN 'conversation_not_found'
                 WHEN (SELECT status FROM previous) IN ('queued', 'in_progress') THEN 'previous_response_in_progress'
                 ELSE 'previous_response_not_found'
               END,
               NULL, (SELECT status FROM previous), NULL,
               ${NO_RUN_COLUMNS}
        WHERE NOT EXISTS (SELECT 1 FROM inserted) AND NOT EXISTS (SELECT 1 FROM existing)`);
      if (row.outcome === 'accepted' || row.outcome === 'replayed') {
        const { outcome, is_head: isHead, previous_status: _previous, transcript_length: transcriptLength, ...run } = row;
        return { outcome, run, isHead, transcriptLength };
      }
      return { outcome: row.outcome, previousStatus: row.previous_status };
    },

    /**
     * Claims the run for a new attempt (as `claim`) and, in the same statement, reads what the turn
     * replays: its own input, and either the conversation's transcript after `afterPosition` (the
     * caller's cache holds the rest; pass -1 for all of it) or the previous_response_id chain's items.
     * The statement's snapshot sees every earlier turn stamped, since none of them may be unfinished.
     */
    claimWithHistory: async (id: string, transcriptCache: { conversationId: string; afterPosition: number } | null): Promise<ClaimResult> => {
      const afterPosition = sql.fragment`CASE WHEN claimed.conversation_id = ${transcriptCache?.conversationId ?? null} THEN ${transcriptCache?.afterPosition ?? -1} ELSE -1 END`;
      const row = await db.one(sql.type(ClaimRow)`/* prepared: runs.claim */
        WITH claimed AS (
          UPDATE runs SET status = 'in_progress', attempt = attempt + 1, started_at = coalesce(started_at, now())
          WHERE id = ${id} AND ${OPEN}
            AND NOT EXISTS (
              SELECT 1 FROM runs AS earlier
              WHERE earlier.conversation_id = runs.conversation_id AND earlier.conversation_seq < runs.conversation_seq
                AND earlier.completed_at IS NULL)
          RETURNING ${columns}
        )
        SELECT 'claimed' AS outcome, claimed.*,
          (SELECT coalesce(jsonb_agg(body ORDER BY ordinal), '[]') FROM items WHERE run_id = claimed.id AND direction = 'input') AS own_input,
          CASE WHEN claimed.conversation_id IS NOT NULL THEN (
            SELECT coalesce(jsonb_agg(jsonb_build_object('position', position, 'body', body) ORDER BY position), '[]')
            FROM items WHERE conversation_id = claimed.conversation_id AND position > ${afterPosition}
          ) END AS transcript_after,
          CASE WHEN claimed.previous_response_id IS NOT NULL THEN (
            WITH RECURSIVE chain (id, previous_response_id, depth) AS (
              SELECT r.id, r.previous_response_id, 0 FROM runs r WHERE r.id = claimed.previous_response_id
              UNION ALL
              SELECT r.id, r.previous_response_id, c.depth + 1 FROM runs r JOIN chain c ON r.id = c.previous_response_id
            )
            SELECT coalesce(jsonb_agg(i.body ORDER BY c.depth DESC, i.ordinal), '[]') FROM chain c JOIN items i ON i.run_id = c.id
          ) END AS chain
        FROM claimed
        UNION ALL
        SELECT CASE WHEN current.id IS NULL THEN 'missing' WHEN current.status IN ('queued', 'in_progress') THEN 'waiting' ELSE 'finished' END,
               ${CURRENT_RUN_COLUMNS}, NULL, NULL, NULL
        FROM (SELECT 1) AS one LEFT JOIN runs AS current ON current.id = ${id}
        WHERE NOT EXISTS (SELECT 1 FROM claimed)`);
      if (row.outcome === 'missing') return { outcome: 'missing' };
      if (row.outcome !== 'claimed') {
        const { outcome, own_input: _input, transcript_after: _after, chain: _chain, ...run } = row;
        return { outcome, run };
      }
      const { outcome, own_input: input, transcript_after: transcriptAfter, chain, ...run } = row;
      return { outcome, run, input, transcriptAfter, chain };
    },

    /**
     * Stamps a run in one statement, only if \`attempt\` still owns it (null otherwise, and nothing is
     * written): sets the outcome, and for completed and incomplete conversation runs reserves the
     * transcript positions (bumping updated_at), attaches the input items and inserts the outputs.
     * Every conversation run takes the conversation's row lock, so a turn accepted concurrently
     * shows up either in \`nextRunId\` or as \`nextRunUnknown\`.
     */
    stamp: async ({ run, outcome, outputs }: StampRequest): Promise<StampResult | null> => {
      const addsToTranscript = outcome.status === 'completed' || outcome.status === 'incomplete';
      const reserved = addsToTranscript ? run.input_count + outputs.length : 0;
      // Outputs follow the inputs: ordinal input_count + k, transcript position first_position + ordinal.
      const written = addsToTranscript ? outputs.map((output, index) => ({ id: output.id, ordinal: run.input_count + index, body: output.body })) : [];
      const row = await db.maybeOne(sql.type(StampRow)`/* prepared: runs.stamp */
        WITH finished AS (
          UPDATE runs SET status = ${outcome.status}, output_count = ${outcome.outputCount},
            usage = ${outcome.usage ? jsonb(outcome.usage) : null},
            error = ${outcome.error ? jsonb(outcome.error) : null},
            incomplete_details = ${outcome.incompleteDetails ? jsonb(outcome.incompleteDetails) : null},
            completed_at = now(),
            -- store: false keeps a standalone run only as long as it takes to answer it
            deleted_at = CASE WHEN (${paramsOf(null)} ->> 'store')::boolean OR conversation_id IS NOT NULL THEN NULL ELSE now() END
          WHERE id = ${run.id} AND status = 'in_progress' AND attempt = ${run.attempt}
          RETURNING ${columns}
        ),
        seen AS (SELECT last_run_seq FROM conversations WHERE id = ${run.conversation_id}),
        conversation AS (
          UPDATE conversations
          SET item_count = item_count + ${reserved}, updated_at = CASE WHEN ${addsToTranscript} THEN now() ELSE updated_at END
          WHERE id = (SELECT conversation_id FROM finished)
          RETURNING item_count - ${reserved} AS first_position, title_source IS NULL AS untitled, last_run_seq
        ),
        attached AS (
          UPDATE items SET conversation_id = ${run.conversation_id}, position = conversation.first_position + items.ordinal
          FROM conversation
          WHERE ${addsToTranscript} AND items.run_id = ${run.id} AND items.direction = 'input' AND items.conversation_id IS NULL
        ),
        outputs AS (
          INSERT INTO items (id, run_id, direction, ordinal, conversation_id, position, body)
          SELECT t.id, finished.id, 'output', t.ordinal, finished.conversation_id, conversation.first_position + t.ordinal, t.body
          FROM finished LEFT JOIN conversation ON true, jsonb_to_recordset(${jsonb(written)}) AS t(id text, ordinal integer, body jsonb)
        ),
        next_run AS (
          SELECT id FROM runs
          WHERE conversation_id = (SELECT conversation_id FROM finished) AND ${OPEN} AND id <> ${run.id}
          ORDER BY conversation_seq LIMIT 1
        )
        SELECT finished.*, conversation.first_position, conversation.untitled,
               (SELECT id FROM next_run) AS next_run_id,
               coalesce(conversation.last_run_seq <> (SELECT last_run_seq FROM seen), false) AS next_run_unknown
        FROM finished LEFT JOIN conversation ON true`);
      if (!row) return null;
      const { first_position: firstPosition, untitled, next_run_id: nextRunId, next_run_unknown: nextRunUnknown, ...finished } = row;
      return {
        run: finished,
        firstPosition: addsToTranscript ? firstPosition : null,
        untitled: untitled ?? false,
        nextRunId,
        nextRunUnknown,
      };
    },

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
      db.maybeOneFirst(sql.type(IdRow)`
        UPDATE runs SET deleted_at = now() WHERE id = ${id} AND smith_id = ${smithId} AND deleted_at IS NULL RETURNING id`),

    /**
     * Queue health from the source of truth, for the sweeper's gauges: the age of the oldest run not
     * yet claimed, and how many runs have been in progress longer than `stuckAfterMs`. Reads only the
     * open runs (partial index runs_unfinished_by_age).
     */
    openRunStats: (stuckAfterMs: number) =>
      db.one(sql.type(OpenRunStatsRow)`
        SELECT
          coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued')), 0)::float8 AS oldest_queued_age_seconds,
          count(*) FILTER (WHERE status = 'in_progress' AND started_at < now() - make_interval(secs => ${stuckAfterMs} / 1000.0))::int AS stuck
        FROM runs
        WHERE ${OPEN}`),

    /**
     * Runs that should be executing but may have lost their job (Redis flushed, enqueue failed after
     * commit): per conversation only the head, plus standalone runs, older than `olderThanMs`, oldest
     * first, after the `after` keyset bound (so a sweep can page through any number of open runs).
     */
    listRunnableOlderThan: (olderThanMs: number, limit: number, after: { createdAt: number; id: string } | null = null) =>
      db.any(sql.type(RunnableRow)`
        SELECT id, conversation_id, created_at FROM (
          SELECT DISTINCT ON (coalesce(conversation_id, id)) id, conversation_id, created_at
          FROM runs
          WHERE ${OPEN} AND created_at < now() - make_interval(secs => ${olderThanMs} / 1000.0)
          ORDER BY coalesce(conversation_id, id), conversation_seq NULLS FIRST
        ) AS heads
        ${after ? sql.fragment`WHERE (created_at, id) > (to_timestamp(${after.createdAt} / 1000.0), ${after.id})` : EMPTY_FRAGMENT}
        ORDER BY created_at, id
        LIMIT ${limit}`),

  };
}
