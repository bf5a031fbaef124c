import { ApiTokenRow, SmithRow, TenantRow, type TokenKind } from '@ic/schemas';
import { sql, type CommonQueryMethods } from '../pool';

export function createTenantsRepo(db: CommonQueryMethods) {
  return {
    insert: (tenant: { id: string; name: string }) =>
      db.one(sql.type(TenantRow)`INSERT INTO tenants (id, name) VALUES (${tenant.id}, ${tenant.name}) RETURNING id, name, created_at`),
    list: () => db.any(sql.type(TenantRow)`SELECT id, name, created_at FROM tenants ORDER BY created_at, id`),
    find: (id: string) => db.maybeOne(sql.type(TenantRow)`SELECT id, name, created_at FROM tenants WHERE id = ${id}`),
  };
}

const smithColumns = sql.fragment`id, tenant_id, name, default_model, created_at`;

export function createSmithsRepo(db: CommonQueryMethods) {
  return {
    insert: (smith: { id: string; tenantId: string; name: string; defaultModel: string }) =>
      db.one(sql.type(SmithRow)`
        INSERT INTO smiths (id, tenant_id, name, default_model)
        VALUES (${smith.id}, ${smith.tenantId}, ${smith.name}, ${smith.defaultModel})
        RETURNING ${smithColumns}`),
    find: (id: string) => db.maybeOne(sql.type(SmithRow)`SELECT ${smithColumns} FROM smiths WHERE id = ${id}`),
    findInTenant: (tenantId: string, id: string) =>
      db.maybeOne(sql.type(SmithRow)`SELECT ${smithColumns} FROM smiths WHERE id = ${id} AND tenant_id = ${tenantId}`),
    listByTenant: (tenantId: string) =>
      db.any(sql.type(SmithRow)`SELECT ${smithColumns} FROM smiths WHERE tenant_id = ${tenantId} ORDER BY created_at, id`),
    setDefaultModel: (id: string, model: string) =>
      db.maybeOne(sql.type(SmithRow)`UPDATE smiths SET default_model = ${model} WHERE id = ${id} RETURNING ${smithColumns}`),
  };
}

const tokenColumns = sql.fragment`id, tenant_id, smith_id, kind, scopes, label, created_at, expires_at, revoked_at`;

export function createTokensRepo(db: CommonQueryMethods) {
  return {
    insert: (token: {
      id: string;
      tenantId: string;
      smithId: string | null;
      kind: TokenKind;
      scopes: string[];
      secretHash: Buffer;
      label: string | null;
      expiresAt: Date | null;
    }) =>
      db.one(sql.type(ApiTokenRow)`
        INSERT INTO api_tokens (id, tenant_id, smith_id, kind, scopes, secret_hash, label, expires_at)
        VALUES (${token.id}, ${token.tenantId}, ${token.smithId}, ${token.kind}, ${sql.array(token.scopes, 'text')},
                ${sql.binary(token.secretHash)}, ${token.label}, ${token.expiresAt ? sql.timestamp(token.expiresAt) : null})
        RETURNING ${tokenColumns}`),
    findBySecretHash: (secretHash: Buffer) =>
      db.maybeOne(sql.type(ApiTokenRow)`SELECT ${tokenColumns} FROM api_tokens WHERE secret_hash = ${sql.binary(secretHash)}`),
    revoke: (id: string) =>
      db.maybeOne(sql.type(ApiTokenRow)`
        UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = ${id} RETURNING ${tokenColumns}`),
    list: (tenantId?: string) =>
      db.any(sql.type(ApiTokenRow)`
        SELECT ${tokenColumns} FROM api_tokens
        WHERE ${tenantId ? sql.fragment`tenant_id = ${tenantId}` : sql.fragment`true`}
        ORDER BY created_at, id`),
  };
}
