import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Interceptor } from 'slonik';

/**
 * Server-side prepared statements for the hot statements of the turn path and the CRUD API.
 *
 * Postgres parses and plans an unnamed statement on every execution; for the turn path's big CTEs that
 * is most of their cost (≈1 ms of a ≈1.5 ms statement, and Postgres shares the machine with us).
 * slonik has no prepared-statement API, but node-postgres prepares a statement once per connection when
 * a query carries a `name`. A statement opts in by starting with a marker comment, written in the
 * template itself (an interpolation would become a bound parameter):
 *
 *     sql.type(Row)`/* prepared: runs.accept *\/ WITH …`
 *
 * and every pg client then sends it by a name derived from its text (so a statement whose text varies
 * gets one name per variant, never a clash). Only marked statements are named, and at most
 * MAX_NAMES distinct texts per process, so a statement with unbounded variants cannot grow every
 * connection's server-side cache. A pool created with `preparedStatements: false` (PgBouncer in
 * transaction mode before 1.21, or any pooler that does not track protocol-level prepared statements)
 * strips the marker before the query leaves slonik, and the statement runs unnamed as before.
 */

const MARKER = /^\/\* prepared: ([a-z][\w.]*) \*\//;
const MAX_NAMES = 128;

const names = new Map<string, string | null>();

/** The statement name for a marked text; null once the process holds MAX_NAMES (it then runs unnamed). */
function statementName(text: string, label: string): string | null {
  let name = names.get(text);
  if (name !== undefined) return name;
  name = names.size < MAX_NAMES ? `${label}_${createHash('sha1').update(text).digest('hex').slice(0, 12)}` : null;
  names.set(text, name);
  return name;
}

type QueryFunction = (this: pg.Client, config: unknown, values?: unknown, callback?: unknown) => unknown;
let installed = false;

/**
 * Makes pg's Client send marked statements by name. Installed once per process, around whatever
 * `query` is there (OpenTelemetry's pg instrumentation wraps it first and sees the named query).
 */
export function installPreparedStatements(): void {
  if (installed) return;
  installed = true;
  const prototype = pg.Client.prototype as unknown as { query: QueryFunction };
  const query = prototype.query;
  prototype.query = function namedWhenMarked(this: pg.Client, config: unknown, values?: unknown, callback?: unknown) {
    if (typeof config === 'string' && config.startsWith('/* prepared: ')) {
      const label = MARKER.exec(config)?.[1];
      const name = label === undefined ? null : statementName(config, label);
      if (name !== null) return query.call(this, { name, text: config, values }, callback);
    }
    return query.call(this, config, values, callback);
  };
}

/** For pools that must not prepare: removes the marker, so pg sends the statement unnamed. */
export function createUnpreparedInterceptor(): Interceptor {
  return {
    name: 'unprepared',
    transformQuery: (_context, query) => (query.sql.startsWith('/* prepared: ') ? { ...query, sql: query.sql.replace(MARKER, '') } : query),
  };
}
