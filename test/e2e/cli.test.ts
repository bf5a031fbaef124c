/** The operator CLI (libs/auth/dist/cli.js, as `npm run ic` runs it) against a test database and a live gateway. */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from '@ic/db';
import { createTestDatabase, expectError, httpRequest, seedTenant, startGateway, type RunningGateway, type TestDatabase } from '../support';

// Each CLI run is a fresh node process loading the db stack: allow for a loaded machine.
jest.setTimeout(90_000);

const CLI = path.resolve(__dirname, '../../libs/auth/dist/cli.js');

let db: TestDatabase;
let gateway: RunningGateway;
let cwd: string;

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npx tsc -b\` before the tests.`);
  db = await createTestDatabase();
  gateway = await startGateway(db.pool, { tokenCacheTtlMs: 0 });
  // An empty working directory, so the CLI cannot fall back to a dev stack's .data/dev-stack.json.
  cwd = mkdtempSync(path.join(os.tmpdir(), 'ic-cli-test-'));
});
afterAll(async () => {
  await gateway?.close();
  await db?.drop();
  if (cwd) rmSync(cwd, { recursive: true, force: true });
});

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

function ic(args: string[], env: Record<string, string | undefined> = { DATABASE_URL: db.url }): Promise<CliResult> {
  const childEnv: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
  for (const [name, value] of Object.entries(env)) if (value !== undefined) childEnv[name] = value;
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd, env: childEnv, timeout: 20_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      let json: unknown;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

function ok(result: CliResult) {
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
  expect(result.json).toBeDefined();
  return result.json;
}

const count = (table: 'tenants' | 'smiths' | 'api_tokens') => db.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM ${sql.identifier([table])}`);

describe('operator CLI', () => {
  it('creates a tenant and a smith, mints tokens that work, lists them and revokes one', async () => {
    const tenant = ok(await ic(['tenant', 'create', '--name', 'Acme Travel']));
    expect(tenant).toEqual({ id: expect.stringMatching(/^ten_/), name: 'Acme Travel', created_at: expect.any(Number) });

    const smith = ok(await ic(['smith', 'create', '--tenant', tenant.id, '--name', 'Expenses', '--model', 'dev-echo']));
    expect(smith).toMatchObject({ id: expect.stringMatching(/^smt_/), tenant_id: tenant.id, name: 'Expenses', default_model: 'dev-echo' });

    const mintedAt = Date.now();
    const smithToken = ok(
      await ic(['token', 'mint', '--tenant', tenant.id, '--kind', 'smith', '--smith', smith.id, '--expires-in', '2h', '--label', 'console', '--scopes', 'conversations:read, conversations:write']),
    );
    expect(smithToken).toMatchObject({
      token: expect.stringMatching(/^ics_[0-9A-Za-z]{40}$/),
      id: expect.stringMatching(/^tok_/),
      kind: 'smith',
      tenant_id: tenant.id,
      smith_id: smith.id,
      scopes: ['conversations:read', 'conversations:write'],
      label: 'console',
      revoked_at: null,
    });
    expect(smithToken.expires_at).toBeGreaterThanOrEqual(mintedAt + 2 * 3_600_000 - 1000);
    expect(smithToken.expires_at).toBeLessThanOrEqual(Date.now() + 2 * 3_600_000 + 1000);
    expect(smithToken).not.toHaveProperty('secret_hash');

    const adminToken = ok(await ic(['token', 'mint', '--tenant', tenant.id, '--kind', 'tenant_admin']));
    expect(adminToken).toMatchObject({ token: expect.stringMatching(/^ica_[0-9A-Za-z]{40}$/), kind: 'tenant_admin', smith_id: null, expires_at: null });
    expect(adminToken.scopes).toEqual(['conversations:read', 'conversations:write', 'responses:read', 'responses:write']);

    // The minted tokens work against the gateway: the smith token for its smith, the admin token naming it.
    const created = await httpRequest(gateway.origin, 'POST', '/v1/conversations', { token: smithToken.token, body: { title: 'from the CLI token' } });
    expect(created.status).toBe(200);
    expect(created.json.smith_id).toBe(smith.id);
    const listed = await httpRequest(gateway.origin, 'GET', '/v1/conversations', { token: adminToken.token, headers: { 'IC-Smith-Id': smith.id } });
    expect(listed.json.data.map((c: { id: string }) => c.id)).toEqual([created.json.id]);
    // Scopes were honoured: the smith token lacks responses:*, so nothing else widened it.
    expect(smithToken.scopes).not.toContain('responses:write');

    // list shows tenants with their smiths and tokens, never a secret.
    const everything = ok(await ic(['list']));
    const entry = everything.find((t: { id: string }) => t.id === tenant.id);
    expect(entry.smiths.map((s: { id: string }) => s.id)).toEqual([smith.id]);
    expect(entry.tokens.map((t: { id: string }) => t.id).sort()).toEqual([smithToken.id, adminToken.id].sort());
    const scoped = ok(await ic(['list', '--tenant', tenant.id]));
    expect(scoped.map((t: { id: string }) => t.id)).toEqual([tenant.id]);
    for (const output of [JSON.stringify(everything), JSON.stringify(scoped)]) {
      expect(output).not.toContain(smithToken.token);
      expect(output).not.toContain(adminToken.token);
      expect(output).not.toContain('secret');
    }

    // Revocation: the token stops working (this gateway caches nothing) and a second revoke keeps the first time.
    const revoked = ok(await ic(['token', 'revoke', smithToken.id]));
    expect(revoked).toMatchObject({ id: smithToken.id, revoked_at: expect.any(Number) });
    expectError(await httpRequest(gateway.origin, 'GET', '/v1/conversations', { token: smithToken.token }), 401, { code: 'token_revoked' });
    expect(ok(await ic(['token', 'revoke', smithToken.id])).revoked_at).toBe(revoked.revoked_at);
    expect((await httpRequest(gateway.origin, 'GET', '/v1/conversations', { token: adminToken.token, headers: { 'IC-Smith-Id': smith.id } })).status).toBe(200);
  });

  it('a token minted with --expires-in stops working when it expires', async () => {
    const { tenant, smith } = await seedTenant(db.pool);
    const minted = ok(await ic(['token', 'mint', '--tenant', tenant.id, '--kind', 'smith', '--smith', smith.id, '--expires-in', '1s']));
    for (;;) {
      const sentAt = Date.now();
      const reply = await httpRequest(gateway.origin, 'GET', '/v1/conversations', { token: minted.token });
      if (reply.status === 401) {
        expect(reply.json.error.code).toBe('token_expired');
        expect(Date.now()).toBeGreaterThanOrEqual(minted.expires_at);
        break;
      }
      expect(reply.status).toBe(200);
      expect(sentAt).toBeLessThan(minted.expires_at);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });

  it('refuses bad input with exit code 1 and a message, writing nothing', async () => {
    const { tenant, smith } = await seedTenant(db.pool);
    const { tenant: elsewhere } = await seedTenant(db.pool);
    const before = { tenants: await count('tenants'), smiths: await count('smiths'), tokens: await count('api_tokens') };
    const failures: Array<[string[], RegExp]> = [
      [['tenant', 'create'], /--name is required/],
      [['smith', 'create', '--tenant', tenant.id, '--name', 'S'], /--model is required/],
      [['smith', 'create', '--tenant', 'ten_doesnotexist00', '--name', 'S', '--model', 'm'], /foreign key|smiths_tenant_id_fkey/],
      [['token', 'mint', '--tenant', tenant.id, '--kind', 'root'], /--kind must be smith or tenant_admin/],
      [['token', 'mint', '--tenant', tenant.id, '--kind', 'smith'], /needs a smith/],
      [['token', 'mint', '--tenant', tenant.id, '--kind', 'tenant_admin', '--smith', smith.id], /not bound to one smith/],
      [['token', 'mint', '--tenant', elsewhere.id, '--kind', 'smith', '--smith', smith.id], /not found/],
      [['token', 'mint', '--tenant', tenant.id, '--kind', 'smith', '--smith', smith.id, '--expires-in', 'forever'], /--expires-in must look like/],
      [['token', 'mint', '--tenant', tenant.id, '--kind', 'smith', '--smith', smith.id, '--scopes', 'everything'], /everything|Invalid enum/],
      [['token', 'revoke', 'tok_doesnotexist0000'], /No token tok_doesnotexist0000/],
      [['frobnicate'], /Usage:/],
      [['tenant', 'create', '--name', 'x', '--unknown-flag'], /unknown-flag/i],
    ];
    // A few at a time: each is a node process.
    for (let start = 0; start < failures.length; start += 4) {
      const batch = failures.slice(start, start + 4);
      const results = await Promise.all(batch.map(([args]) => ic(args)));
      results.forEach((result, k) => {
        const [args, message] = batch[k]!;
        expect({ args, code: result.code, stdout: result.stdout }).toEqual({ args, code: 1, stdout: '' });
        expect(result.stderr).toMatch(message);
      });
    }
    expect({ tenants: await count('tenants'), smiths: await count('smiths'), tokens: await count('api_tokens') }).toEqual(before);
  });

  it('without DATABASE_URL or a running dev stack it says what to set', async () => {
    const result = await ic(['list'], {});
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/DATABASE_URL/);
  });
});
