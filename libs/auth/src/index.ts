import { createHash } from 'node:crypto';
import { z } from 'zod';
import { apiError, newId, randomBase62, SmithId, type ApiTokenRow, type SmithRow, type TokenKind } from '@ic/schemas';
import { createSmithsRepo, createTokensRepo, type CommonQueryMethods, type DatabasePool } from '@ic/db';

export const SCOPES = ['conversations:read', 'conversations:write', 'responses:read', 'responses:write'] as const;
export type Scope = (typeof SCOPES)[number];
export const Scope = z.enum(SCOPES);

/** Smith tokens are `ics_…` (browser-safe, one smith); tenant-admin tokens are `ica_…` (server-side only). */
const TOKEN_PREFIX: Record<TokenKind, string> = { smith: 'ics_', tenant_admin: 'ica_' };
const TOKEN_SECRET_LENGTH = 40;
const TOKEN_SHAPE = /^ic[sa]_[0-9A-Za-z]{40}$/;

export const SMITH_HEADER = 'ic-smith-id';

/** Who is calling: derived from a verified token. */
export interface Principal {
  tokenId: string;
  tenantId: string;
  kind: TokenKind;
  /** Set for smith tokens; tenant-admin tokens name the smith per request. */
  smithId: string | null;
  scopes: ReadonlySet<string>;
}

/** SHA-256 suffices: tokens carry 238 bits of randomness, so there is nothing to brute-force. */
export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

export interface MintTokenInput {
  tenantId: string;
  kind: TokenKind;
  smithId: string | null;
  scopes: readonly Scope[];
  label?: string | null;
  expiresAt?: Date | null;
}

/** Creates a token and returns its plaintext once; only the hash is stored. */
export async function mintToken(db: CommonQueryMethods, input: MintTokenInput): Promise<{ token: string; row: ApiTokenRow }> {
  if (input.kind === 'smith' && !input.smithId) throw apiError('invalid_request', { message: 'A smith token needs a smith.' }, { param: 'smith_id' });
  if (input.kind === 'tenant_admin' && input.smithId) throw apiError('invalid_request', { message: 'A tenant-admin token is not bound to one smith.' }, { param: 'smith_id' });
  if (input.smithId) {
    const smith = await createSmithsRepo(db).findInTenant(input.tenantId, input.smithId);
    if (!smith) throw apiError('not_found', { resource: 'Smith', id: input.smithId, within: `tenant '${input.tenantId}'` }, { param: 'smith_id' });
  }
  const token = `${TOKEN_PREFIX[input.kind]}${randomBase62(TOKEN_SECRET_LENGTH)}`;
  const row = await createTokensRepo(db).insert({
    id: newId('token'),
    tenantId: input.tenantId,
    smithId: input.smithId,
    kind: input.kind,
    scopes: [...new Set(input.scopes)],
    secretHash: hashToken(token),
    label: input.label ?? null,
    expiresAt: input.expiresAt ?? null,
  });
  return { token, row };
}

/**
 * A small TTL cache; entries are dropped oldest-first past `maxEntries`. Concurrent misses for one key
 * share a single load, so an expiring entry under load costs one query, not one per request in flight.
 * Refresh-ahead: a hit in the last quarter of an entry's life is answered from the cache and reloads it
 * in the background, so a key in steady use never expires under its requests (which would otherwise all
 * wait for the reload at once, every TTL: the p99 of a busy gateway). The answer is still never older
 * than the TTL, so a revocation takes effect within it as before.
 */
class TtlCache<V> {
  private readonly entries = new Map<string, { value: V; expiresAt: number; refreshAt: number }>();
  private readonly loading = new Map<string, Promise<V>>();
  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 10000,
    private readonly now: () => number = Date.now,
  ) {}

  /** The cached value, or `load()`'s (shared with any caller already waiting for this key). */
  getOrLoad(key: string, load: () => Promise<V>): V | Promise<V> {
    const entry = this.entries.get(key);
    if (entry) {
      const now = this.now();
      if (entry.expiresAt > now) {
        // A failed refresh leaves the entry to serve until it expires; the next miss reports the error.
        if (entry.refreshAt <= now && !this.loading.has(key)) this.load(key, load).catch(() => undefined);
        return entry.value;
      }
      this.entries.delete(key);
    }
    return this.loading.get(key) ?? this.load(key, load);
  }

  private load(key: string, load: () => Promise<V>): Promise<V> {
    const pending = load().then(
      (value) => {
        this.loading.delete(key);
        this.set(key, value);
        return value;
      },
      (error: unknown) => {
        this.loading.delete(key);
        throw error;
      },
    );
    this.loading.set(key, pending);
    return pending;
  }

  private set(key: string, value: V): void {
    if (this.ttlMs <= 0) return;
    if (!this.entries.delete(key) && this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    const now = this.now();
    this.entries.set(key, { value, expiresAt: now + this.ttlMs, refreshAt: now + this.ttlMs * 0.75 });
  }
}

interface TokenEntry {
  /** Built once per lookup and shared by the requests it serves (read-only). */
  principal: Principal;
  revoked: boolean;
  expiresAt: number | null;
}

/**
 * Verifies bearer tokens and resolves the acting smith. Lookups are cached for `cacheTtlMs`, which is
 * also the longest a revoked token keeps working; expiry is checked on every call.
 */
export class Authenticator {
  private readonly tokens: TtlCache<TokenEntry | null>;
  private readonly smiths: TtlCache<SmithRow | null>;

  constructor(
    private readonly pool: DatabasePool,
    cacheTtlMs: number,
    /** The cache's clock (tests move it instead of waiting). */
    now: () => number = Date.now,
  ) {
    this.tokens = new TtlCache(cacheTtlMs, undefined, now);
    this.smiths = new TtlCache(cacheTtlMs, undefined, now);
  }

  async verify(authorization: string | undefined): Promise<Principal> {
    if (!authorization) throw apiError('missing_api_key');
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (!match) throw apiError('invalid_api_key', { malformed: true });
    const token = match[1]!;
    if (!TOKEN_SHAPE.test(token)) throw apiError('invalid_api_key', {});
    const secretHash = hashToken(token);
    const entry = await this.tokens.getOrLoad(secretHash.toString('base64'), async () => {
      const row = await createTokensRepo(this.pool).findBySecretHash(secretHash);
      if (!row) return null;
      const principal: Principal = { tokenId: row.id, tenantId: row.tenant_id, kind: row.kind, smithId: row.smith_id, scopes: new Set(row.scopes) };
      return { principal, revoked: row.revoked_at !== null, expiresAt: row.expires_at };
    });
    if (!entry) throw apiError('invalid_api_key', {});
    if (entry.revoked) throw apiError('token_revoked');
    if (entry.expiresAt !== null && entry.expiresAt <= Date.now()) throw apiError('token_expired');
    return entry.principal;
  }

  /**
   * The smith a request acts for. Smith tokens act for their own smith (a different IC-Smith-Id is
   * refused); tenant-admin tokens must name a smith of their tenant in IC-Smith-Id.
   */
  async actingSmith(principal: Principal, smithHeader: string | undefined): Promise<SmithRow> {
    const requested = smithHeader?.trim() || undefined;
    if (principal.kind === 'smith') {
      if (requested !== undefined && requested !== principal.smithId) {
        throw apiError('smith_mismatch');
      }
      return this.loadSmith(principal.tenantId, principal.smithId!);
    }
    if (requested === undefined) {
      throw apiError('missing_smith_id');
    }
    if (!SmithId.safeParse(requested).success) throw apiError('invalid_smith_id', { requested });
    return this.loadSmith(principal.tenantId, requested);
  }

  private async loadSmith(tenantId: string, smithId: string): Promise<SmithRow> {
    const smith = await this.smiths.getOrLoad(`${tenantId}/${smithId}`, () => createSmithsRepo(this.pool).findInTenant(tenantId, smithId));
    if (!smith) throw apiError('not_found', { resource: 'Smith', id: smithId }, { param: 'IC-Smith-Id' });
    return smith;
  }
}

export function requireScope(principal: Principal, scope: Scope): void {
  if (!principal.scopes.has(scope)) {
    throw apiError('insufficient_scope', { scope });
  }
}
