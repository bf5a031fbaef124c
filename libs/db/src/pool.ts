import {
  type SerializableValue,
  createPool,
  createSqlTag,
  createTypeParserPreset,
  SchemaValidationError,
  type DatabasePool,
  type Interceptor,
  type QueryResultRow,
} from 'slonik';
import { z } from 'zod';
import { storeMetrics } from '@ic/telemetry';
import { createUnpreparedInterceptor, installPgClientHooks } from './prepared';
import { ASK_ZOD, rowParserFor } from './row-parser';

/** The sql tag every repository uses; `void` types statements that return no rows. */
export const sql = createSqlTag({
  typeAliases: {
    void: z.object({}).strict(),
    id: z.object({ id: z.string() }).strict(),
  },
});

/** Fixed pieces of statements, built once: slonik spends about a microsecond building each fragment. */
export const EMPTY_FRAGMENT = sql.fragment``;
export const ORDER_DIRECTIONS = { asc: sql.fragment`ASC`, desc: sql.fragment`DESC` } as const;

/**
 * Validates every typed query's rows against its zod schema (slonik's documented result parser).
 * Synchronously: no row schema has async refinements, and slonik's async hook costs a promise, a
 * p-limit queue and an async zod parse per row, a measurable share of a CRUD request's CPU.
 * A schema's compiled parser (row-parser.ts) gives zod's value for the usual row at a fraction of the
 * cost; a row it cannot tell about is parsed by zod, which returns its value or its issues.
 */
function createResultParserInterceptor(): Interceptor {
  return {
    name: 'result-parser',
    transformRow: (queryContext, query, row) => {
      const { resultParser } = queryContext;
      if (!resultParser) return row;
      const parsed = rowParserFor(resultParser)?.(row) ?? ASK_ZOD;
      if (parsed !== ASK_ZOD) return parsed as QueryResultRow;
      const result = resultParser.safeParse(row);
      if (!result.success) throw new SchemaValidationError(query, row, result.error.issues);
      return result.data as QueryResultRow;
    },
  };
}

/** Query latency into ic_db_query_duration_seconds: one histogram record per query, by outcome. */
function createQueryMetricsInterceptor(): Interceptor {
  const record = (queryInputTime: bigint | number, outcome: 'ok' | 'error') => {
    const elapsedNs = typeof queryInputTime === 'bigint' ? Number(process.hrtime.bigint() - queryInputTime) : (performance.now() - queryInputTime) * 1e6;
    storeMetrics().dbQuery.record(elapsedNs / 1e9, { outcome });
  };
  return {
    name: 'query-metrics',
    afterQueryExecution: (queryContext) => {
      record(queryContext.queryInputTime, 'ok');
      return null;
    },
    queryExecutionError: (queryContext) => {
      record(queryContext.queryInputTime, 'error');
      return null;
    },
  };
}

export interface DbPoolOptions {
  maximumPoolSize?: number;
  statementTimeoutMs?: number;
  /** Prepare the statements marked `/* prepared: … *\/` (prepared.ts); off behind poolers that cannot. Default true. */
  preparedStatements?: boolean;
}

/**
 * A slonik pool with row validation. int8 is read as a JS number: positions and counters stay far
 * below 2^53, and numbers keep the API layer free of BigInt handling.
 */
export async function createDbPool(url: string, options: DbPoolOptions = {}): Promise<DatabasePool> {
  const typeParsers = [...createTypeParserPreset().filter((parser) => parser.name !== 'int8'), { name: 'int8', parse: Number }];
  const prepare = options.preparedStatements ?? true;
  installPgClientHooks();
  return createPool(url, {
    interceptors: [...(prepare ? [] : [createUnpreparedInterceptor()]), createQueryMetricsInterceptor(), createResultParserInterceptor()],
    typeParsers,
    maximumPoolSize: options.maximumPoolSize ?? 10,
    statementTimeout: options.statementTimeoutMs ?? 30000,
    idleTimeout: 10000,
    connectionTimeout: 10000,
    captureStackTrace: false,
    // slonik's default runs DISCARD ALL on every release: a third of all round trips, and it would drop
    // the prepared statements. Nothing here sets other session state (no SET, temp tables), so
    // there is nothing to reset.
    resetConnection: async () => undefined,
  });
}

export type { DatabasePool, CommonQueryMethods, DatabaseTransactionConnection } from 'slonik';

/** jsonb parameter for values already validated by zod (slonik's SerializableValue rejects `unknown` members). */
export const jsonb = (value: unknown) => sql.jsonb(value as SerializableValue);
