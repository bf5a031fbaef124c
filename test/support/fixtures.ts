import { mintToken, SCOPES, type Scope } from '@ic/auth';
import { createSmithsRepo, createTenantsRepo, type DatabasePool } from '@ic/db';
import { newId, type SmithRow, type TenantRow } from '@ic/schemas';

export interface SeededTenant {
  tenant: TenantRow;
  smith: SmithRow;
  /** Smith token with every scope. */
  smithToken: string;
  /** Tenant-admin token with every scope. */
  adminToken: string;
}

export async function seedTenant(pool: DatabasePool, options: { defaultModel?: string } = {}): Promise<SeededTenant> {
  const tenant = await createTenantsRepo(pool).insert({ id: newId('tenant'), name: 'test tenant' });
  const smith = await seedSmith(pool, tenant.id, options.defaultModel);
  const smithToken = await tokenFor(pool, tenant.id, smith.id, [...SCOPES]);
  const { token: adminToken } = await mintToken(pool, { tenantId: tenant.id, kind: 'tenant_admin', smithId: null, scopes: [...SCOPES] });
  return { tenant, smith, smithToken, adminToken };
}

export function seedSmith(pool: DatabasePool, tenantId: string, defaultModel = 'dev-echo'): Promise<SmithRow> {
  return createSmithsRepo(pool).insert({ id: newId('smith'), tenantId, name: 'test smith', defaultModel });
}

export async function tokenFor(pool: DatabasePool, tenantId: string, smithId: string, scopes: Scope[], expiresAt: Date | null = null): Promise<string> {
  return (await mintToken(pool, { tenantId, kind: 'smith', smithId, scopes, expiresAt })).token;
}
