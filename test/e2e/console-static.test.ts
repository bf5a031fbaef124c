/**
 * The api-gateway serving the console at /console: cache headers (hashed assets for a year, the page
 * revalidated), the Content-Security-Policy, the 404 that says how to build it, and CONSOLE_ENABLED.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CONSOLE_BUILD_DIR, CONSOLE_CSP, loadGatewayEnv } from '@ic/api-gateway';
import { createTestDatabase, expectError, httpRequest, startGateway, type RunningGateway, type TestDatabase } from '../support';

let db: TestDatabase;
let gateway: RunningGateway;
let disabled: RunningGateway;
let unbuilt: RunningGateway;
const emptyDir = mkdtempSync(path.join(os.tmpdir(), 'ic-console-unbuilt-'));

beforeAll(async () => {
  if (!existsSync(path.join(CONSOLE_BUILD_DIR, 'index.html'))) {
    throw new Error(`The console is not built (${CONSOLE_BUILD_DIR}): run \`npm run build:console\` (npm test does).`);
  }
  db = await createTestDatabase();
  [gateway, disabled, unbuilt] = await Promise.all([
    startGateway(db.pool),
    startGateway(db.pool, { console: false }),
    startGateway(db.pool, { consoleDir: emptyDir }),
  ]);
});

afterAll(async () => {
  await Promise.all([gateway?.close(), disabled?.close(), unbuilt?.close()]);
  await db?.drop();
  rmSync(emptyDir, { recursive: true, force: true });
});

describe('GET /console', () => {
  it.each(['/console', '/console/'])('%s serves the page, revalidated on every load, under the CSP', async (pagePath) => {
    const page = await httpRequest(gateway.origin, 'GET', pagePath);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('cache-control')).toBe('no-cache');
    expect(page.headers.get('content-security-policy')).toBe(CONSOLE_CSP);
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    expect(page.headers.get('referrer-policy')).toBe('no-referrer');
    expect(page.text).toContain('<div id="app"></div>');
    // Scripts only from files of its own (the CSP refuses inline ones).
    expect(page.text).not.toMatch(/<script(?![^>]*\ssrc=)[^>]*>/);
  });

  it('serves the hashed assets the page names with a year-long immutable cache', async () => {
    const page = await httpRequest(gateway.origin, 'GET', '/console');
    const assets = [...page.text.matchAll(/(?:src|href)="(\/console\/assets\/[^"]+)"/g)].map((match) => match[1]!);
    expect(assets.some((asset) => asset.endsWith('.js'))).toBe(true);
    expect(assets.some((asset) => asset.endsWith('.css'))).toBe(true);
    for (const asset of assets) {
      const reply = await httpRequest(gateway.origin, 'GET', asset);
      expect({ asset, status: reply.status }).toEqual({ asset, status: 200 });
      expect(reply.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      expect(reply.headers.get('content-security-policy')).toBe(CONSOLE_CSP);
      expect(reply.headers.get('content-type')).toMatch(asset.endsWith('.js') ? /javascript/ : /^text\/css/);
    }
  });

  it('answers an unknown asset with a 404 in the envelope, never the page', async () => {
    expectError(await httpRequest(gateway.origin, 'GET', '/console/assets/missing-0000.js'), 404, { code: 'unknown_route' });
    expectError(await httpRequest(gateway.origin, 'GET', '/console/../package.json'), 404);
  });

  it('leaves the API as it was: /v1 still asks for a token', async () => {
    expectError(await httpRequest(gateway.origin, 'GET', '/v1/conversations'), 401, { code: 'missing_api_key' });
  });

  it('is absent when the console is turned off (CONSOLE_ENABLED=false)', async () => {
    expectError(await httpRequest(disabled.origin, 'GET', '/console'), 404, { code: 'unknown_route' });
    expectError(await httpRequest(disabled.origin, 'GET', '/console/assets/index.js'), 404, { code: 'unknown_route' });
  });

  it('says how to build it when it is not built', async () => {
    const reply = await httpRequest(unbuilt.origin, 'GET', '/console');
    expectError(reply, 404, { code: 'console_not_built', type: 'not_found_error' });
    expect(reply.json.error.message).toContain('npm run build:console');
  });
});

describe('CONSOLE_ENABLED', () => {
  const base = { DATABASE_URL: 'postgres://localhost/ingram' };
  it('defaults to on and accepts the usual spellings of off', () => {
    expect(loadGatewayEnv(base).CONSOLE_ENABLED).toBe(true);
    expect(loadGatewayEnv({ ...base, CONSOLE_ENABLED: 'false' }).CONSOLE_ENABLED).toBe(false);
    expect(loadGatewayEnv({ ...base, CONSOLE_ENABLED: '0' }).CONSOLE_ENABLED).toBe(false);
    expect(() => loadGatewayEnv({ ...base, CONSOLE_ENABLED: 'maybe' })).toThrow(/CONSOLE_ENABLED/);
  });
});
