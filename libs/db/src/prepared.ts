import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Interceptor } from 'slonik';
import { traceDbStatement } from '@ic/telemetry';

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
type Callback = (error: unknown, result?: unknown) => void;
let installed = false;

/**
 * The one hook on pg's `Client.prototype.query`, installed once per process: marked statements are
 * sent by name (prepared once per connection), and every statement inside a traced request or job
 * gets its client span (libs/telemetry db-client.ts). Streams (submittable queries) pass untouched.
 */
export function installPgClientHooks(): void {
  if (installed) return;
  installed = true;
  const prototype = pg.Client.prototype as unknown as { query: QueryFunction };
  const query = prototype.query;
  prototype.query = function namedAndTraced(this: pg.Client, config: unknown, values?: unknown, callback?: unknown) {
    const text = typeof config === 'string' ? config : (config as { text?: unknown } | null)?.text;
    if (typeof text !== 'string' || typeof (config as { submit?: unknown }).submit === 'function') return query.call(this, config, values, callback);
    const label = text.startsWith('/* prepared: ') ? MARKER.exec(text)?.[1] : undefined;
    const name = label === undefined ? null : statementName(text, label);
    const sent = name !== null && typeof config === 'string' ? { name, text, values } : config;
    const call = traceDbStatement(text, label, { database: this.database, host: this.host, port: this.port });
    // pg takes (config, callback) as well as (config, values, callback).
    const done = (typeof values === 'function' ? values : callback) as Callback | undefined;
    if (done) {
      const traced: Callback = (error, result) => {
        call.end(error ?? undefined);
        done(error, result);
      };
      return typeof values === 'function' ? query.call(this, sent, traced) : query.call(this, sent, values, traced);
    }
    const result = (sent === config ? query.call(this, config, values) : query.call(this, sent)) as Promise<unknown>;
    return result.then(
      (value) => {
        call.end();
        return value;
      },
      (error: unknown) => {
        call.end(error);
        throw error;
      },
    );
  };
}

/** For pools that must not prepare: removes the marker, so pg sends the statement unnamed. */
export function createUnpreparedInterceptor(): Interceptor {
  return {
    name: 'unprepared',
    transformQuery: (_context, query) => (query.sql.startsWith('/* prepared: ') ? { ...query, sql: query.sql.replace(MARKER, '') } : query),
  };
}
