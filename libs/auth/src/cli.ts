#!/usr/bin/env node
/**
 * Operator CLI: `npm run ic -- <command>`. Talks to DATABASE_URL, or to the embedded dev stack's
 * database when DATABASE_URL is unset and `npm start` is running.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createDbPool, createSmithsRepo, createTenantsRepo, createTokensRepo, type DatabasePool } from '@ic/db';
import { newId } from '@ic/schemas';
import { mintToken, Scope, SCOPES } from './index';

const USAGE = `Usage: npm run ic -- <command> [options]

  tenant create --name <name>
  smith create --tenant <ten_…> --name <name> --model <default model>
  token mint --tenant <ten_…> --kind smith|tenant_admin [--smith <smt_…>] [--scopes a,b] [--expires-in 30d] [--label text]
  token revoke <tok_…>
  list [--tenant <ten_…>]

Scopes: ${SCOPES.join(', ')} (default: all)`;

function databaseUrl(): string {
  if (process.env.DATABASE_URL) return process.env.DATABASE_URL;
  const stateFile = path.resolve(process.cwd(), '.data', 'dev-stack.json');
  if (existsSync(stateFile)) return (JSON.parse(readFileSync(stateFile, 'utf8')) as { databaseUrl: string }).databaseUrl;
  throw new Error('Set DATABASE_URL (or start the embedded stack with `npm start`).');
}

function parseDuration(text: string): number {
  const match = /^(\d+)([smhd])$/.exec(text);
  if (!match) throw new Error(`--expires-in must look like 90s, 15m, 12h or 30d (got '${text}')`);
  const unit = { s: 1000, m: 60000, h: 3600000, d: 86400000 }[match[2] as 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit;
}

function required(values: Record<string, unknown>, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value.length === 0) throw new Error(`--${name} is required\n\n${USAGE}`);
  return value;
}

async function run(pool: DatabasePool, argv: string[]): Promise<unknown> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      tenant: { type: 'string' },
      smith: { type: 'string' },
      model: { type: 'string' },
      kind: { type: 'string' },
      scopes: { type: 'string' },
      'expires-in': { type: 'string' },
      label: { type: 'string' },
    },
  });
  const [noun, verb, arg] = positionals;
  if (noun === 'tenant' && verb === 'create') {
    return createTenantsRepo(pool).insert({ id: newId('tenant'), name: required(values, 'name') });
  }
  if (noun === 'smith' && verb === 'create') {
    return createSmithsRepo(pool).insert({
      id: newId('smith'),
      tenantId: required(values, 'tenant'),
      name: required(values, 'name'),
      defaultModel: required(values, 'model'),
    });
  }
  if (noun === 'token' && verb === 'mint') {
    const kind = required(values, 'kind');
    if (kind !== 'smith' && kind !== 'tenant_admin') throw new Error('--kind must be smith or tenant_admin');
    const scopes = values.scopes ? values.scopes.split(',').map((scope) => Scope.parse(scope.trim())) : [...SCOPES];
    const expiresIn = values['expires-in'];
    const { token, row } = await mintToken(pool, {
      tenantId: required(values, 'tenant'),
      kind,
      smithId: values.smith ?? null,
      scopes,
      label: values.label ?? null,
      expiresAt: expiresIn ? new Date(Date.now() + parseDuration(expiresIn)) : null,
    });
    return { token, note: 'Shown once: only a hash is stored.', ...row };
  }
  if (noun === 'token' && verb === 'revoke') {
    if (!arg) throw new Error(`token revoke needs a token id\n\n${USAGE}`);
    const row = await createTokensRepo(pool).revoke(arg);
    if (!row) throw new Error(`No token ${arg}`);
    return row;
  }
  if (noun === 'list') {
    const tenants = values.tenant ? [await createTenantsRepo(pool).find(values.tenant)].filter((t) => t !== null) : await createTenantsRepo(pool).list();
    return Promise.all(
      tenants.map(async (tenant) => ({
        ...tenant,
        smiths: await createSmithsRepo(pool).listByTenant(tenant.id),
        tokens: await createTokensRepo(pool).list(tenant.id),
      })),
    );
  }
  throw new Error(USAGE);
}

async function main(): Promise<void> {
  const pool = await createDbPool(databaseUrl(), { maximumPoolSize: 2 });
  try {
    const result = await run(pool, process.argv.slice(2));
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    await pool.end();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(1);
});
