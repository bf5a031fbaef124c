import { z } from 'zod';
import { createDbPool, sql } from '@ic/db';
import { apiError, AppError, ERROR_CATALOG } from '@ic/schemas';
import { createTestDatabase, freePort, type TestDatabase } from '@ic/test-support';
import { toAppError } from './index';

/** The error a real query raises, to feed the mapper what PostgreSQL and slonik really throw. */
async function failureOf(query: Promise<unknown>): Promise<unknown> {
  try {
    await query;
  } catch (error) {
    return error;
  }
  throw new Error('expected the query to fail');
}

describe('toAppError on real PostgreSQL failures', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db.drop());

  it('maps U+0000 in text (22021) and in jsonb (22P05) to a 400, not a 500', async () => {
    const inText = toAppError(await failureOf(db.pool.query(sql.unsafe`SELECT ${'a\u0000b'}::text`)));
    expect(inText).toMatchObject({ status: 400, code: 'invalid_characters', type: 'invalid_request_error' });
    const inJsonb = toAppError(await failureOf(db.pool.query(sql.unsafe`SELECT ${sql.jsonb({ note: 'a\u0000b' })}`)));
    expect(inJsonb).toMatchObject({ status: 400, code: 'invalid_characters' });
  });

  it('maps an administrator shutdown of the backend (57P01) to a 503 with Retry-After', async () => {
    const pid = await db.pool.connect(async (connection) => {
      const backendPid = await connection.oneFirst(sql.type(z.object({ pid: z.number() }))`SELECT pg_backend_pid() AS pid`);
      const sleeping = failureOf(connection.query(sql.unsafe`SELECT pg_sleep(30)`));
      await db.pool.query(sql.unsafe`SELECT pg_terminate_backend(${backendPid})`);
      const error = await sleeping;
      const mapped = toAppError(error);
      expect(mapped).toMatchObject({ status: 503, type: 'service_unavailable', code: 'service_unavailable' });
      expect(mapped.headers['retry-after']).toBe('1');
      return backendPid;
    }).catch((error: unknown) => error);
    // The pool may report the dead connection again on release; either way the mapping held above.
    expect(pid).toBeDefined();
  });

  it('maps an unreachable database to a 503', async () => {
    const port = await freePort();
    const mapped = toAppError(await failureOf(createDbPool(`postgres://postgres@127.0.0.1:${port}/none`)));
    expect(mapped).toMatchObject({ status: 503, code: 'service_unavailable' });
  });
});

describe('toAppError on errors only an overloaded or restarting server gives', () => {
  const pgError = (code: string) => Object.assign(new Error(`pg says ${code}`), { code, severity: 'FATAL' });

  it.each(['53300', '57P01', '57P02', '57P03', '08006', '08001', '08P01'])('maps SQLSTATE %s to a 503', (code) => {
    expect(toAppError(pgError(code))).toMatchObject({ status: 503, code: 'service_unavailable' });
    // slonik wraps driver errors; the code is found on the cause too.
    expect(toAppError(new Error('wrapped', { cause: pgError(code) }))).toMatchObject({ status: 503 });
  });

  it('maps refused sockets and pool timeouts to a 503, and anything unknown to a bare 500', () => {
    expect(toAppError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })).status).toBe(503);
    expect(toAppError(new Error('timeout exceeded when trying to connect')).status).toBe(503);
    const unknown = toAppError(new Error('SELECT secret FROM somewhere failed at /app/x.ts:1'));
    expect(unknown.toEnvelope()).toEqual({ error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: 'server_error' } });
  });
});

describe('the error catalog', () => {
  it('gives every code a status that matches its type', () => {
    for (const [code, entry] of Object.entries(ERROR_CATALOG)) {
      const serverSide = entry.type === 'server_error' || entry.type === 'service_unavailable';
      expect({ code, statusClass: Math.floor(entry.status / 100) }).toEqual({ code, statusClass: serverSide ? 5 : 4 });
    }
  });

  it('builds AppErrors whose code is the catalog key', () => {
    const error = apiError('response_not_cancellable', { status: 'completed' });
    expect(error).toBeInstanceOf(AppError);
    expect(error.toEnvelope()).toEqual({ error: { message: 'Cannot cancel a response that is already completed.', type: 'invalid_request_error', param: 'response_id', code: 'response_not_cancellable' } });
    expect(apiError('not_found', { resource: 'Conversation', id: 'cnv_x' }, { param: 'conversation_id' }).toEnvelope().error).toMatchObject({ param: 'conversation_id', message: "Conversation with id 'cnv_x' not found." });
  });
});
