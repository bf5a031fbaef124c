/**
 * Pagination depth benchmark: keyset pages should cost the same at the start and at the end of a
 * long listing. Seeds one conversation with 100,000 transcript items and one smith with 100,000
 * conversations, then times pages over HTTP against the gateway (median of 30 sequential requests).
 */
import { mintToken, SCOPES } from '@ic/auth';
import { ConversationsService } from '@ic/api-gateway';
import { CursorCodec } from '@ic/cursors';
import { createConversationsRepo, createSmithsRepo, createTenantsRepo, jsonb, sql } from '@ic/db';
import { newId } from '@ic/schemas';
import { startGateway } from '../support/gateway';
import { SEED_RUN_PARAMS } from '../support/transcript';
import { createBenchDatabase, printTable, time, verdict, type BenchOptions, type Timing } from './harness';

const PAGE = 20;
/** A deep page may cost at most this much more than the first one. */
const TARGET_RATIO = 1.5;

export async function run(options: BenchOptions): Promise<Record<string, unknown>> {
  const ITEM_COUNT = options.quick ? 400 : 100_000;
  const TURNS = ITEM_COUNT / 2;
  const CONVERSATION_COUNT = options.quick ? 400 : 100_000;
  const SAMPLES = options.quick ? 3 : 30;
  const startedAt = Date.now();
  const db = await createBenchDatabase();
  try {
    const { pool } = db;
    const seedStart = Date.now();
    const tenant = await createTenantsRepo(pool).insert({ id: newId('tenant'), name: 'bench' });
    const smiths = createSmithsRepo(pool);
    const reader = await smiths.insert({ id: newId('smith'), tenantId: tenant.id, name: 'long transcript', defaultModel: 'dev-echo' });
    const lister = await smiths.insert({ id: newId('smith'), tenantId: tenant.id, name: 'many conversations', defaultModel: 'dev-echo' });
    const readerToken = (await mintToken(pool, { tenantId: tenant.id, kind: 'smith', smithId: reader.id, scopes: [...SCOPES] })).token;
    const listerToken = (await mintToken(pool, { tenantId: tenant.id, kind: 'smith', smithId: lister.id, scopes: [...SCOPES] })).token;
    const conversation = await createConversationsRepo(pool).insert({ id: newId('conversation'), tenantId: tenant.id, smithId: reader.id, title: 'long', metadata: {} });

    // 50,000 completed turns: run g has a user message at position 2(g-1) and the answer right after it,
    // stored exactly as stamping stores them.
    const runId = sql.fragment`'run_bench' || lpad(g::text, 8, '0')`;
    await pool.query(sql.unsafe`
      INSERT INTO runs (id, tenant_id, smith_id, conversation_id, conversation_seq, status, model, params, input_count, output_count,
                        request_hash, created_at, started_at, completed_at)
      SELECT ${runId}, ${tenant.id}, ${reader.id}, ${conversation.id}, g, 'completed', 'dev-echo', ${jsonb(SEED_RUN_PARAMS)}, 1, 1,
             'bench-' || g, now() - (${TURNS} - g) * interval '1 second', now(), now()
      FROM generate_series(1, ${TURNS}) AS g`);
    await pool.query(sql.unsafe`
      INSERT INTO items (id, run_id, direction, ordinal, conversation_id, position, body)
      SELECT ${runId} || '.i0', ${runId}, 'input', 0, ${conversation.id}, 2 * (g - 1),
             jsonb_build_object('type', 'message', 'role', 'user', 'status', 'completed',
                                'content', jsonb_build_array(jsonb_build_object('type', 'input_text', 'text', 'Question ' || g)))
      FROM generate_series(1, ${TURNS}) AS g
      UNION ALL
      SELECT ${runId} || '.o', ${runId}, 'output', 1, ${conversation.id}, 2 * (g - 1) + 1,
             jsonb_build_object('type', 'message', 'role', 'assistant', 'status', 'completed',
                                'content', jsonb_build_array(jsonb_build_object('type', 'output_text', 'text', 'Answer ' || g, 'annotations', '[]'::jsonb)))
      FROM generate_series(1, ${TURNS}) AS g`);
    await pool.query(sql.unsafe`UPDATE conversations SET item_count = ${ITEM_COUNT}, last_run_seq = ${TURNS} WHERE id = ${conversation.id}`);

    // 100,000 conversations of one smith, one per 10 ms (conversation g is the g-th oldest).
    await pool.query(sql.unsafe`
      INSERT INTO conversations (id, tenant_id, smith_id, title, metadata, created_at, updated_at)
      SELECT 'cnv_bench' || lpad(g::text, 8, '0'), ${tenant.id}, ${lister.id}, 'Conversation ' || g, '{}'::jsonb,
             now() - (${CONVERSATION_COUNT} - g) * interval '10 ms', now() - (${CONVERSATION_COUNT} - g) * interval '10 ms'
      FROM generate_series(1, ${CONVERSATION_COUNT}) AS g`);
    await pool.query(sql.unsafe`ANALYZE`);
    const seedMs = Date.now() - seedStart;

    // The cursor of the last page (page 5,000 of 20): cursors are signed, so walk the service to it.
    const walkStart = Date.now();
    const service = new ConversationsService(pool, new CursorCodec(BENCH_CURSOR_SECRET));
    const listerRow = (await smiths.find(lister.id))!;
    const seen = new Set<string>();
    let cursor: string | undefined;
    const target = CONVERSATION_COUNT - PAGE;
    while (seen.size < target) {
      const limit = Math.min(100, target - seen.size);
      const page = await service.list(listerRow, { limit, cursor, order: 'desc', sort_by: 'created_at' });
      for (const row of page.data) seen.add(row.id);
      if (!page.next_cursor) throw new Error(`listing ended after ${seen.size} conversations`);
      cursor = page.next_cursor;
    }
    if (seen.size !== target) throw new Error(`walk saw ${seen.size} distinct conversations, expected ${target}`);
    const lastPageCursor = cursor!;
    const walkMs = Date.now() - walkStart;

    const gateway = await startGateway(pool, { tokenCacheTtlMs: 60_000, cursorSecret: BENCH_CURSOR_SECRET });
    try {
      const get = async (path: string, token: string, check: (body: any) => void) => { // eslint-disable-line @typescript-eslint/no-explicit-any
        const response = await fetch(`${gateway.origin}${path}`, { headers: { authorization: `Bearer ${token}` } });
        const body = await response.json();
        if (response.status !== 200) throw new Error(`${path}: ${response.status} ${JSON.stringify(body)}`);
        check(body);
      };
      const expectPage = (firstId: string, hasMore: boolean) => (body: { data: Array<{ id: string }>; has_more: boolean }) => {
        if (body.data.length !== PAGE || body.data[0]!.id !== firstId || body.has_more !== hasMore) {
          throw new Error(`unexpected page: ${body.data.length} rows from ${body.data[0]?.id}, has_more ${body.has_more}; expected ${firstId}`);
        }
      };
      const itemId = (position: number) => `run_bench${String(Math.floor(position / 2) + 1).padStart(8, '0')}.${position % 2 ? 'o' : 'i0'}`;
      const conversationId = (g: number) => `cnv_bench${String(g).padStart(8, '0')}`;
      const itemsPath = `/v1/conversations/${conversation.id}/items?limit=${PAGE}`;
      const deepAfter = ITEM_COUNT - 100 - 1; // the page after item 99,900 (of 100k) starts at position 99,900

      const timings = {
        items_first_page: await time(() => get(itemsPath, readerToken, expectPage(itemId(0), true)), SAMPLES),
        items_after_99900: await time(() => get(`${itemsPath}&after=${itemId(deepAfter)}`, readerToken, expectPage(itemId(deepAfter + 1), true)), SAMPLES),
        conversations_page_1: await time(() => get(`/v1/conversations?limit=${PAGE}`, listerToken, expectPage(conversationId(CONVERSATION_COUNT), true)), SAMPLES),
        conversations_page_5000: await time(
          () => get(`/v1/conversations?limit=${PAGE}&cursor=${encodeURIComponent(lastPageCursor)}`, listerToken, expectPage(conversationId(PAGE), false)),
          SAMPLES,
        ),
      };
      const ratio = (deep: Timing, shallow: Timing) => Math.round((deep.median_ms / shallow.median_ms) * 100) / 100;
      const result = {
        items_in_conversation: ITEM_COUNT,
        conversations_of_smith: CONVERSATION_COUNT,
        page_size: PAGE,
        ...timings,
        target_ratio_max: TARGET_RATIO,
        items_deep_to_first_ratio: ratio(timings.items_after_99900, timings.items_first_page),
        conversations_deep_to_first_ratio: ratio(timings.conversations_page_5000, timings.conversations_page_1),
        seed_ms: seedMs,
        cursor_walk_ms: walkMs,
        total_ms: Date.now() - startedAt,
      };
      printTable(
        `pagination (median of ${SAMPLES} HTTP requests, ${PAGE} per page)`,
        Object.entries(timings).map(([name, timing]) => ({ page: name, 'median ms': timing.median_ms, 'p90 ms': timing.p90_ms, 'min ms': timing.min_ms })),
      );
      return result;
    } finally {
      await gateway.close();
    }
  } finally {
    await db.drop();
  }
}

const BENCH_CURSOR_SECRET = 'bench-cursor-secret-0123456789';

export function summarize(result: Record<string, unknown>): string[] {
  const items = result.items_deep_to_first_ratio as number;
  const conversations = result.conversations_deep_to_first_ratio as number;
  return [
    `item page at ${result.items_in_conversation} items vs the first page: ×${items} (flat, ≤ ${TARGET_RATIO}: ${verdict(items <= TARGET_RATIO)})`,
    `conversation page ${Math.round((result.conversations_of_smith as number) / PAGE)} vs page 1: ×${conversations} (flat, ≤ ${TARGET_RATIO}: ${verdict(conversations <= TARGET_RATIO)})`,
  ];
}
