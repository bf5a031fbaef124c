/**
 * The bare baseline the gateway's CRUD is measured against: Express + `pg`, nothing else. It runs the
 * same SQL as the gateway on the same database and does the minimum a real endpoint must: a bearer
 * token lookup by SHA-256 (cached for the same TTL as the gateway's, then revocation, expiry and scope
 * checks), the acting smith (cached likewise), the query, and the JSON the API returns.
 * No zod, no slonik, no request id, CORS, rate limit or version header.
 * Env: DATABASE_URL, PORT, DATABASE_POOL_SIZE (default: pg's 10), TOKEN_CACHE_TTL_MS (default 5000).
 */
import { createHash } from 'node:crypto';
import express, { type Request, type Response } from 'express';
import pg from 'pg';
import { newId } from '@ic/schemas';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: Number(process.env.DATABASE_POOL_SIZE ?? 10) });
const ttlMs = Number(process.env.TOKEN_CACHE_TTL_MS ?? 5000);

interface Caller {
  smithId: string;
  tenantId: string;
  scopes: Set<string>;
  revoked: boolean;
  expiresAt: number | null;
}
const callers = new Map<string, { caller: Caller | null; until: number }>();

async function authenticate(req: Request, res: Response, scope: string): Promise<Caller | null> {
  const token = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
  if (!token) return reject(res, 401);
  const key = createHash('sha256').update(token).digest();
  const cacheKey = key.toString('base64');
  let entry = callers.get(cacheKey);
  if (!entry || entry.until <= Date.now()) {
    const { rows } = await pool.query(
      'SELECT id, tenant_id, smith_id, kind, scopes, label, created_at, expires_at, revoked_at FROM api_tokens WHERE secret_hash = $1',
      [key],
    );
    const row = rows[0];
    let caller: Caller | null = null;
    if (row) {
      const smith = await pool.query('SELECT id, tenant_id, name, default_model, created_at FROM smiths WHERE id = $1 AND tenant_id = $2', [row.smith_id, row.tenant_id]);
      if (smith.rows[0]) {
        caller = { smithId: row.smith_id, tenantId: row.tenant_id, scopes: new Set(row.scopes), revoked: row.revoked_at !== null, expiresAt: row.expires_at?.getTime() ?? null };
      }
    }
    entry = { caller, until: Date.now() + ttlMs };
    callers.set(cacheKey, entry);
  }
  const caller = entry.caller;
  if (!caller || caller.revoked || (caller.expiresAt !== null && caller.expiresAt <= Date.now())) return reject(res, 401);
  if (!caller.scopes.has(scope)) return reject(res, 403);
  return caller;
}

function reject(res: Response, status: number): null {
  res.status(status).json({ error: { message: 'denied', type: 'invalid_request_error', param: null, code: null } });
  return null;
}

const COLUMNS = 'id, tenant_id, smith_id, title, title_source, metadata, created_at, updated_at';
const present = (row: { id: string; created_at: Date; updated_at: Date; title: string | null; smith_id: string; metadata: unknown }) => ({
  id: row.id,
  object: 'conversation',
  created_at: Math.floor(row.created_at.getTime() / 1000),
  updated_at: Math.floor(row.updated_at.getTime() / 1000),
  title: row.title,
  smith_id: row.smith_id,
  metadata: row.metadata,
});

const app = express();
app.use(express.json());

app.get('/v1/conversations/:id', async (req, res) => {
  const caller = await authenticate(req, res, 'conversations:read');
  if (!caller) return;
  const { rows } = await pool.query(`SELECT ${COLUMNS} FROM conversations WHERE id = $1 AND smith_id = $2 AND deleted_at IS NULL`, [req.params.id, caller.smithId]);
  if (!rows[0]) return void res.status(404).json({ error: { message: 'not found', type: 'invalid_request_error', param: null, code: null } });
  res.json(present(rows[0]));
});

app.get('/v1/conversations', async (req, res) => {
  const caller = await authenticate(req, res, 'conversations:read');
  if (!caller) return;
  const limit = Math.min(100, Math.max(1, Number(req.query.limit ?? 20)));
  const { rows } = await pool.query(
    `SELECT ${COLUMNS} FROM conversations WHERE smith_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT $2`,
    [caller.smithId, limit + 1],
  );
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  const hasMore = rows.length > limit;
  res.json({
    object: 'list',
    data: page.map(present),
    next_cursor: hasMore && last ? Buffer.from(JSON.stringify({ at: last.created_at.getTime(), id: last.id })).toString('base64url') : null,
    has_more: hasMore,
  });
});

app.post('/v1/conversations', async (req, res) => {
  const caller = await authenticate(req, res, 'conversations:write');
  if (!caller) return;
  const body = (req.body ?? {}) as { title?: string; metadata?: Record<string, string> };
  const title = typeof body.title === 'string' ? body.title : null;
  const { rows } = await pool.query(
    `INSERT INTO conversations (id, tenant_id, smith_id, title, title_source, metadata) VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING ${COLUMNS}`,
    [newId('conversation'), caller.tenantId, caller.smithId, title, title === null ? null : 'user', JSON.stringify(body.metadata ?? {})],
  );
  res.json(present(rows[0]));
});

app.get('/healthz', (_req, res) => {
  res.json({ status: 'ok' });
});

const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1');
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  void pool.end().then(() => process.exit(0));
});
