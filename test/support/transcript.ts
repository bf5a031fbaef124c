import { createItemsRepo, jsonb, sql, type DatabasePool, type NewItem, type TurnToAccept } from '@ic/db';
import { defaultRunParams, inputItemId, newId, outputItemId, type RunParams, type StoredItem } from '@ic/schemas';

/** Run parameters as the responses service stores them for a plain turn. */
export const SEED_RUN_PARAMS: RunParams = defaultRunParams();

export interface SeedTurn {
  input: StoredItem[];
  output: StoredItem[];
}

export interface SeededItem {
  id: string;
  runId: string;
  position: number;
  body: StoredItem;
}

export const userMessage = (text: string): StoredItem => ({ type: 'message', role: 'user', status: 'completed', content: [{ type: 'input_text', text }] });
export const assistantMessage = (text: string): StoredItem => ({
  type: 'message',
  role: 'assistant',
  status: 'completed',
  content: [{ type: 'output_text', text, annotations: [] }],
});

/** `count` plain turns: one user message in, one assistant message out. */
export function plainTurns(count: number, label = 'turn'): SeedTurn[] {
  return Array.from({ length: count }, (_, k) => ({ input: [userMessage(`${label} ${k} question`)], output: [assistantMessage(`${label} ${k} answer`)] }));
}

/**
 * Appends completed turns to a conversation's transcript the way stamping leaves them: a completed run
 * per turn (inserted with SQL), its items through the items repository with conversation_id and
 * consecutive positions, and the conversation's counters advanced. Returns the items in transcript order.
 */
export async function seedTranscript(
  pool: DatabasePool,
  conversation: { id: string; tenant_id: string; smith_id: string },
  turns: SeedTurn[],
): Promise<SeededItem[]> {
  return pool.transaction(async (tx) => {
    const counters = await tx.one(
      sql.unsafe`SELECT item_count, last_run_seq FROM conversations WHERE id = ${conversation.id} FOR UPDATE`,
    );
    let position = Number(counters.item_count);
    let seq = Number(counters.last_run_seq);
    const seeded: SeededItem[] = [];
    const rows: NewItem[] = [];
    for (const turn of turns) {
      const runId = newId('run');
      seq += 1;
      await tx.query(sql.unsafe`
        INSERT INTO runs (id, tenant_id, smith_id, conversation_id, conversation_seq, status, model, params, input_count,
                          output_count, request_hash, started_at, completed_at)
        VALUES (${runId}, ${conversation.tenant_id}, ${conversation.smith_id}, ${conversation.id}, ${seq}, 'completed', 'dev-echo',
                ${jsonb(SEED_RUN_PARAMS)}, ${turn.input.length}, ${turn.output.length}, ${`seed-${runId}`}, now(), now())`);
      const add = (id: string, direction: 'input' | 'output', ordinal: number, body: StoredItem) => {
        rows.push({ id, runId, direction, ordinal, conversationId: conversation.id, position, body });
        seeded.push({ id, runId, position, body });
        position += 1;
      };
      turn.input.forEach((body, k) => add(inputItemId(runId, k), 'input', k, body));
      turn.output.forEach((body, k) => add(outputItemId(runId, k), 'output', turn.input.length + k, body));
    }
    await createItemsRepo(tx).insertMany(rows);
    await tx.query(sql.unsafe`
      UPDATE conversations SET item_count = ${position}, last_run_seq = ${seq}, updated_at = now() WHERE id = ${conversation.id}`);
    return seeded;
  });
}

/** A turn for `runs.accept`: one user message, default params, queue mode; `overrides` for the rest. */
export function turnToAccept(smith: { id: string; tenant_id: string }, conversationId: string | null, text: string, overrides: Partial<TurnToAccept> = {}): TurnToAccept {
  const id = newId('run');
  return {
    id,
    tenantId: smith.tenant_id,
    smithId: smith.id,
    conversationId,
    previousResponseId: null,
    model: 'dev-echo',
    instructions: null,
    params: SEED_RUN_PARAMS,
    inputCount: 1,
    idempotencyKey: null,
    requestHash: `hash-${id}`,
    busyMode: 'queue',
    input: [{ id: inputItemId(id, 0), body: userMessage(text) }],
    ...overrides,
  };
}
