/**
 * Title search benchmark (`GET /v1/conversations?q=…`): the first page of a search over one smith's
 * 100,000 conversations (plus another smith's 100,000 and a small smith's 50), with the trigram index
 * and without it in the same run. Rounds alternate which variant goes first; the index is dropped and
 * rebuilt from its own stored definition between variants. Prints EXPLAIN (ANALYZE, BUFFERS) of each
 * case once per variant.
 */
import { mintToken, SCOPES } from '@ic/auth';
import { createSmithsRepo, createTenantsRepo, sql, type DatabasePool } from '@ic/db';
import { newId } from '@ic/schemas';
import { Client } from 'pg';
import { z } from 'zod';
import { startGateway } from '../support/gateway';
import { createBenchDatabase, median, printTable, round2, time, verdict, type BenchOptions } from './harness';

const PAGE = 20;
const INDEX = 'conversations_title_search';
const RARE = 'zanzibar';
const COMMON = 'trip';
const ABSENT = 'qwertyuiop';
const SMALL_SMITH_CONVERSATIONS = 50;
/** A search for a rare word (or for nothing that exists) must beat walking the list by at least this much. */
const TARGET_SPEEDUP = 3;

type Variant = 'with_index' | 'without_index';
interface Case {
  name: string;
  smith: 'big' | 'small';
  q: string;
  /** Rows the first page must hold, and whether more must follow. */
  rows: number;
  hasMore: boolean;
}

export async function run(options: BenchOptions): Promise<Record<string, unknown>> {
  const CONVERSATIONS = options.quick ? 300 : 100_000;
  /** Every RARE_EVERY-th title of the big smith holds the rare word: 10 of 100,000 (3 of 300 in --quick). */
  const RARE_EVERY = options.quick ? 100 : 10_000;
  const SAMPLES = options.quick ? 3 : 20;
  const ROUNDS = options.quick ? 1 : 4;
  const startedAt = Date.now();
  const db = await createBenchDatabase();
  try {
    const { pool } = db;
    const seedStart = Date.now();
    const tenant = await createTenantsRepo(pool).insert({ id: newId('tenant'), name: 'bench' });
    const smiths = createSmithsRepo(pool);
    const insertSmith = (name: string) => smiths.insert({ id: newId('smith'), tenantId: tenant.id, name, defaultModel: 'dev-echo' });
    const big = await insertSmith('many conversations');
    const other = await insertSmith('another smith as large');
    const small = await insertSmith('a few conversations');
    const tokenOf = async (smithId: string) => (await mintToken(pool, { tenantId: tenant.id, kind: 'smith', smithId, scopes: [...SCOPES] })).token;
    const tokens = { big: await tokenOf(big.id), small: await tokenOf(small.id) };

    // Titles like "Notes on a trip #123": 5 × 8 phrasings, so COMMON is in one title of 8; the other
    // smith's titles hold RARE often, so the big smith's search must not wade through them.
    const seed = (smithId: string, prefix: string, count: number, rareEvery: number) =>
      pool.query(sql.unsafe`
        INSERT INTO conversations (id, tenant_id, smith_id, title, metadata, created_at, updated_at)
        SELECT ${prefix} || lpad(g::text, 8, '0'), ${tenant.id}, ${smithId},
               (ARRAY['Plan for', 'Notes on', 'Question about', 'Help with', 'Ideas for'])[1 + g % 5] || ' ' ||
               (ARRAY['the budget', 'a trip', 'dinner', 'my code', 'the garden', 'taxes', 'a birthday', 'the car'])[1 + (g / 5) % 8] ||
               CASE WHEN g % ${rareEvery} = 7 THEN ' in Zanzibar' ELSE '' END || ' #' || g,
               '{}'::jsonb, now() - (${count} - g) * interval '10 ms', now() - (${count} - g) * interval '10 ms'
        FROM generate_series(1, ${count}) AS g`);
    await seed(big.id, 'cnv_big', CONVERSATIONS, RARE_EVERY);
    await seed(other.id, 'cnv_other', CONVERSATIONS, 10);
    await seed(small.id, 'cnv_small', SMALL_SMITH_CONVERSATIONS, 1_000_000);
    await pool.query(sql.unsafe`ANALYZE conversations`);
    const seedMs = Date.now() - seedStart;

    const rareCount = Math.floor((CONVERSATIONS - 7) / RARE_EVERY) + 1;
    // Mirrors the seed's phrase choice: title g says "a trip" when (g / 5) % 8 = 1.
    const smallCommon = Array.from({ length: SMALL_SMITH_CONVERSATIONS }, (_, k) => k + 1).filter((g) => Math.floor(g / 5) % 8 === 1).length;
    const cases: Case[] = [
      { name: 'rare_word', smith: 'big', q: RARE, rows: Math.min(PAGE, rareCount), hasMore: rareCount > PAGE },
      { name: 'common_word', smith: 'big', q: COMMON, rows: PAGE, hasMore: true },
      { name: 'no_match', smith: 'big', q: ABSENT, rows: 0, hasMore: false },
      { name: 'small_smith', smith: 'small', q: COMMON, rows: Math.min(PAGE, smallCommon), hasMore: smallCommon > PAGE },
    ];
    const smithIds = { big: big.id, small: small.id };
    const indexDefinition = await pool.oneFirst(sql.type(z.object({ indexdef: z.string() }))`SELECT indexdef FROM pg_indexes WHERE indexname = ${INDEX}`);
    // The stored definition is plain DDL text, which slonik will not run verbatim: a pg client does.
    const ddl = new Client({ connectionString: db.url });
    await ddl.connect();
    const setIndex = async (variant: Variant) => {
      await ddl.query(variant === 'with_index' ? indexDefinition.replace(/^CREATE INDEX/, 'CREATE INDEX IF NOT EXISTS') : `DROP INDEX IF EXISTS ${INDEX}`);
      await ddl.query('ANALYZE conversations');
    };

    const gateway = await startGateway(pool, { tokenCacheTtlMs: 60_000 });
    try {
      const firstPage = async (testCase: Case) => {
        const response = await fetch(`${gateway.origin}/v1/conversations?limit=${PAGE}&q=${encodeURIComponent(testCase.q)}`, {
          headers: { authorization: `Bearer ${tokens[testCase.smith]}` },
        });
        const body = (await response.json()) as { data: Array<{ title: string }>; has_more: boolean };
        if (response.status !== 200) throw new Error(`${testCase.name}: ${response.status} ${JSON.stringify(body)}`);
        const wrong = body.data.find((row) => !row.title.toLowerCase().includes(testCase.q));
        if (body.data.length !== testCase.rows || body.has_more !== testCase.hasMore || wrong) {
          throw new Error(`${testCase.name}: ${body.data.length} rows, has_more ${body.has_more}${wrong ? `, '${wrong.title}'` : ''}; expected ${testCase.rows}, ${testCase.hasMore}`);
        }
      };

      const perRound: Record<Variant, Record<string, number[]>> = { with_index: {}, without_index: {} };
      const plans: Record<Variant, Record<string, PlanSummary>> = { with_index: {}, without_index: {} };
      for (let round = 0; round < ROUNDS; round++) {
        const order: Variant[] = round % 2 === 0 ? ['with_index', 'without_index'] : ['without_index', 'with_index'];
        for (const variant of order) {
          await setIndex(variant);
          for (const testCase of cases) {
            const timing = await time(() => firstPage(testCase), SAMPLES, options.quick ? 1 : 3);
            (perRound[variant][testCase.name] ??= []).push(timing.median_ms);
            if (round === 0) plans[variant][testCase.name] = await explain(pool, smithIds[testCase.smith], testCase);
          }
        }
      }
      await setIndex('with_index');

      const figures = Object.fromEntries(
        cases.map((testCase) => {
          const withIndex = round2(median(perRound.with_index[testCase.name]!));
          const withoutIndex = round2(median(perRound.without_index[testCase.name]!));
          return [
            testCase.name,
            {
              with_index_ms: withIndex,
              without_index_ms: withoutIndex,
              speedup: round2(withoutIndex / withIndex),
              plan_with_index: plans.with_index[testCase.name],
              plan_without_index: plans.without_index[testCase.name],
            },
          ];
        }),
      );
      printTable(
        `search: first page of ${PAGE} over HTTP (median of ${ROUNDS} rounds × ${SAMPLES} requests, index dropped and rebuilt between variants)`,
        cases.map((testCase) => {
          const figure = figures[testCase.name] as { with_index_ms: number; without_index_ms: number; speedup: number; plan_with_index: PlanSummary; plan_without_index: PlanSummary };
          return {
            case: `${testCase.name} (q=${testCase.q})`,
            'with index ms': figure.with_index_ms,
            'without ms': figure.without_index_ms,
            speedup: `×${figure.speedup}`,
            'EXPLAIN ms with': figure.plan_with_index.execution_ms,
            'EXPLAIN ms without': figure.plan_without_index.execution_ms,
            'buffers with': figure.plan_with_index.buffers,
            'buffers without': figure.plan_without_index.buffers,
            'uses index': String(figure.plan_with_index.uses_index),
          };
        }),
      );
      return {
        conversations_of_smith: CONVERSATIONS,
        conversations_of_other_smith: CONVERSATIONS,
        conversations_of_small_smith: SMALL_SMITH_CONVERSATIONS,
        rare_word_matches: rareCount,
        page_size: PAGE,
        rounds: ROUNDS,
        samples_per_round: SAMPLES,
        ...figures,
        seed_ms: seedMs,
        total_ms: Date.now() - startedAt,
      };
    } finally {
      await gateway.close();
      await ddl.end();
    }
  } finally {
    await db.drop();
  }
}

interface PlanSummary {
  uses_index: boolean;
  buffers: number;
  execution_ms: number;
}

/** EXPLAIN (ANALYZE, BUFFERS) of the first page, spelled as the conversations repository spells it; printed on stderr. */
async function explain(pool: DatabasePool, smithId: string, testCase: Case): Promise<PlanSummary> {
  const query = sql.fragment`
    SELECT id, title FROM conversations
    WHERE smith_id = ${smithId} AND deleted_at IS NULL AND lower(title) LIKE '%' || lower(${testCase.q}) || '%'
    ORDER BY created_at DESC, id DESC LIMIT ${PAGE + 1}`;
  const text = await pool.anyFirst(sql.type(z.object({ 'QUERY PLAN': z.string() }))`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${query}`);
  const plan = text.join('\n');
  const indexExists = await pool.exists(sql.unsafe`SELECT 1 FROM pg_indexes WHERE indexname = ${INDEX}`);
  process.stderr.write(`\nsearch ${testCase.name} (q=${testCase.q}) ${indexExists ? 'with' : 'without'} the trigram index:\n${plan}\n`);
  const topBuffers = /Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?/.exec(plan);
  return {
    uses_index: plan.includes(INDEX),
    buffers: Number(topBuffers?.[1] ?? 0) + Number(topBuffers?.[2] ?? 0),
    execution_ms: Number(/Execution Time: ([\d.]+) ms/.exec(plan)?.[1] ?? NaN),
  };
}

export function summarize(result: Record<string, unknown>): string[] {
  return ['rare_word', 'common_word', 'no_match', 'small_smith'].map((name) => {
    const figure = result[name] as { with_index_ms: number; without_index_ms: number; speedup: number; plan_with_index: PlanSummary };
    const line = `${name.replace('_', ' ')} first page: ${figure.with_index_ms} ms with the trigram index vs ${figure.without_index_ms} ms without (×${figure.speedup}; index in plan: ${figure.plan_with_index.uses_index})`;
    // Common words fill a page from the sort-order index at once; only rare ones need the trigram index.
    return name === 'rare_word' || name === 'no_match' ? `${line}, ≥ ×${TARGET_SPEEDUP}: ${verdict(figure.speedup >= TARGET_SPEEDUP)}` : line;
  });
}
