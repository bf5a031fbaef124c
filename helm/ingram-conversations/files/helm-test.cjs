// `helm test`: proves a release works end to end, run by node in the service image (cwd /app).
// PostgreSQL and Redis answer; the operator CLI mints a short-lived smith token; the api-gateway
// creates a conversation and reads it back with it; the responses API authenticates the same token;
// then the conversation is deleted and the token revoked. Any failure exits 1 with the reason.
'use strict';
const { execFileSync } = require('node:child_process');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const step = (message) => console.log(`✓ ${message}`);
const cli = (...args) =>
  JSON.parse(execFileSync(process.execPath, ['libs/auth/dist/cli.js', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 30000 }));

/** One HTTP call; retried while the Service has no ready endpoint yet (connection refused/reset). */
async function call(base, method, path, token, body) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      const res = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(15000),
      });
      const text = await res.text();
      let json;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.status, json, text };
    } catch (error) {
      if (attempt >= 10) throw new Error(`${method} ${base}${path}: ${error.cause?.code ?? error.message}`);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}
function expect(what, condition, res) {
  if (!condition) throw new Error(`${what}: got HTTP ${res.status} ${res.text.slice(0, 500)}`);
}

async function main() {
  const gateway = env('GATEWAY_URL');
  const responses = env('RESPONSES_URL');

  for (const [name, base] of [['api-gateway', gateway], ['responses API', responses]]) {
    const res = await call(base, 'GET', '/readyz', '');
    expect(`${name} /readyz`, res.status === 200, res);
    step(`${name} is ready (${base})`);
  }

  const Redis = require('ioredis');
  const redisUrl = env('REDIS_URL');
  const clusterNodes = (process.env.REDIS_CLUSTER_NODES ?? '').split(',').filter(Boolean);
  let redis;
  if (clusterNodes.length > 0) {
    // REDIS_URL then only carries credentials and TLS, as in the services.
    const url = new URL(redisUrl);
    const redisOptions = { connectTimeout: 10000, username: decodeURIComponent(url.username) || undefined, password: decodeURIComponent(url.password) || undefined, tls: url.protocol === 'rediss:' ? {} : undefined };
    const nodes = clusterNodes.map((node) => ({ host: node.slice(0, node.lastIndexOf(':')), port: Number(node.slice(node.lastIndexOf(':') + 1)) }));
    redis = new Redis.Cluster(nodes, { lazyConnect: true, redisOptions, clusterRetryStrategy: () => null });
  } else {
    redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2, connectTimeout: 10000, retryStrategy: () => null });
  }
  let redisError;
  redis.on('error', (error) => (redisError = error));
  try {
    await redis.connect();
    const pong = await redis.ping();
    if (pong !== 'PONG') throw new Error(`answered ${pong} to PING`);
  } catch (error) {
    throw new Error(`Redis (${clusterNodes.length > 0 ? `cluster ${clusterNodes.join(',')}` : 'REDIS_URL'}) is not reachable: ${(redisError ?? error).message}`);
  } finally {
    redis.disconnect();
  }
  step(`Redis${clusterNodes.length > 0 ? ' Cluster' : ''} answers PING`);

  let tenantId = process.env.TEST_TENANT_ID;
  let smithId = process.env.TEST_SMITH_ID;
  if (!tenantId) {
    tenantId = cli('tenant', 'create', '--name', `helm-test ${process.env.RELEASE_NAME ?? ''}`.trim()).id;
    smithId = cli('smith', 'create', '--tenant', tenantId, '--name', 'helm-test', '--model', 'default').id;
    step(`PostgreSQL: created tenant ${tenantId} and smith ${smithId}`);
  }
  const minted = cli('token', 'mint', '--tenant', tenantId, '--kind', 'smith', '--smith', smithId, '--scopes', 'conversations:read,conversations:write,responses:read', '--expires-in', '15m', '--label', 'helm test');
  step(`PostgreSQL: minted token ${minted.id} (expires in 15 minutes)`);

  let conversationId;
  try {
    const created = await call(gateway, 'POST', '/v1/conversations', minted.token, { metadata: { created_by: 'helm-test' } });
    expect('POST /v1/conversations', created.status === 200 && /^cnv_/.test(created.json?.id ?? ''), created);
    conversationId = created.json.id;
    step(`api-gateway created conversation ${conversationId}`);

    const read = await call(gateway, 'GET', `/v1/conversations/${conversationId}`, minted.token);
    expect(`GET /v1/conversations/${conversationId}`, read.status === 200 && read.json?.id === conversationId && read.json?.metadata?.created_by === 'helm-test', read);
    step('api-gateway read it back');

    // The responses API accepts the token (not 401) and looks the response up in the database: a 404
    // naming response_id (a Service pointing at the api-gateway would answer 404 unknown_route).
    const missing = await call(responses, 'GET', '/v1/responses/resp_helmtest0000000000000000', minted.token);
    expect('GET /v1/responses/<unknown> should be the responses API\'s 404 for response_id', missing.status === 404 && missing.json?.error?.param === 'response_id', missing);
    step('responses API authenticated the token and answered 404 for an unknown response');
  } finally {
    if (conversationId) {
      const deleted = await call(gateway, 'DELETE', `/v1/conversations/${conversationId}`, minted.token);
      expect(`DELETE /v1/conversations/${conversationId}`, deleted.status === 200, deleted);
      step('deleted the conversation');
    }
    cli('token', 'revoke', minted.id);
    step(`revoked token ${minted.id}`);
  }
}

main().then(
  () => console.log('helm test: the release works'),
  (error) => {
    console.error(`helm test failed: ${error.message}`);
    process.exit(1);
  },
);
