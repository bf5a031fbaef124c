import fc from 'fast-check';
import { expectError, httpRequest, startTurnStack, type HttpReply, type TurnStack } from '@ic/test-support';

/**
 * Every route of the Conversations and Responses APIs, with and without valid auth, fed hostile input
 * in bodies, queries, path parameters and headers: NUL characters, lone surrogates, huge strings,
 * deeply nested JSON, wrong types, bad ids and cursors. Whatever comes in, nothing answers 5xx, every
 * error is OpenAI's envelope with a string message and type, and no body leaks a stack or SQL.
 * Deterministic (fixed seed; FUZZ_SEED / FUZZ_RUNS to explore further, FUZZ_STATS=1 prints what was answered).
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20261201);
const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

const LEAK = /\bat [\w.$<>]+ \(|\.(ts|js):\d+|node_modules|\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b|syntax error at or near|SQLSTATE|violates .* constraint|Error: /;

interface FuzzRequest {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  query?: Array<[string, string]>;
  headers?: Record<string, string>;
  body?: unknown;
  raw?: string;
}

/** A short, printable account of a request (bodies can be megabytes or thousands of levels deep). */
function describeRequest(request: FuzzRequest): string {
  const clip = (text: string) => (text.length > 300 ? `${text.slice(0, 300)}… (${text.length} chars)` : text);
  let body: string;
  try {
    body = clip(JSON.stringify(request.body) ?? 'none');
  } catch {
    body = '(too deep to print)';
  }
  const query = request.query?.map(([key, value]) => `${clip(key)}=${clip(value)}`).join('&');
  return `${request.method} ${clip(request.path)}${query ? `?${query}` : ''} headers=${clip(JSON.stringify(request.headers ?? {}))} body=${request.raw === undefined ? body : clip(request.raw)}`;
}

/** The property every reply must have, whatever was sent. */
function expectHarmless(reply: HttpReply, request: FuzzRequest): void {
  const where = `${describeRequest(request)}\n→ ${reply.status} ${reply.text.slice(0, 400)}`;
  if (reply.status >= 500) throw new Error(`server error for ${where}`);
  if (reply.status >= 400) {
    const error = reply.json?.error;
    const envelope = reply.json && Object.keys(reply.json).join() === 'error' && error && Object.keys(error).sort().join() === 'code,message,param,type';
    if (!envelope || typeof error.message !== 'string' || error.message.length === 0 || typeof error.type !== 'string') throw new Error(`not an error envelope: ${where}`);
    if (!/^application\/json/.test(reply.headers.get('content-type') ?? '')) throw new Error(`error not served as JSON: ${where}`);
    if (LEAK.test(reply.text)) throw new Error(`error body leaks internals: ${where}`);
  }
  if ((reply.headers.get('content-type') ?? '').startsWith('text/event-stream') && /server_error/.test(reply.text)) {
    throw new Error(`stream carries a server_error: ${where}`);
  }
}

const encodeSegment = (value: string) => {
  try {
    return encodeURIComponent(value);
  } catch {
    return '%ED%A0%80'; // a lone surrogate has no UTF-8 form: send the bytes a client would
  }
};

// ---- hostile values -------------------------------------------------------------------------------

const NAMED_STRINGS = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  '\ud800',
  'tail \udfff',
  '🙂',
  '\u202e\u200b',
  '%00',
  '%',
  '%zz',
  '../../etc/passwd',
  "'; DROP TABLE runs; --",
  '$1',
  '{"$ne":null}',
  'null',
  'true',
  '-1',
  '1e400',
  '0x10',
  '99999999999999999999',
  '-99999999999999999999',
  '999999999',
  '2147483648',
  '1.5',
  'NaN',
  'run_AAAAAAAAAAAAAAAAAAAAAAAA',
  'run_AAAAAAAAAAAAAAAAAAAAAAAA.i0',
  'run_AAAAAAAAAAAAAAAAAAAAAAAA.o99999999',
  'cnv_AAAAAAAAAAAAAAAAAAAAAAAA',
  'smt_AAAAAAAAAAAAAAAAAAAAAAAA',
  `run_${'A'.repeat(5000)}`,
  `cnv_${'A'.repeat(70)}`,
  'eyJ2IjoxfQ.c2ln',
  'AAAA.BBBB.CCCC',
];

const hugeString = fc.constantFrom(300, 5000, 70000).map((length) => 'x'.repeat(length));
/** What PostgreSQL cannot store: the issue's 500s. Frequent on purpose, so every route meets them. */
const unstorable = fc.constantFrom('\u0000', 'a\u0000b', 'lone \ud800', '\udc00');
const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: unstorable },
  { weight: 4, arbitrary: fc.constantFrom(...NAMED_STRINGS) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 24 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 12 }) },
  { weight: 1, arbitrary: hugeString },
);

function nested(depth: number, leaf: unknown, asObject: boolean): unknown {
  let value = leaf;
  for (let level = 0; level < depth; level++) value = asObject ? { a: value } : [value];
  return value;
}
const deepValue = fc.tuple(fc.constantFrom(65, 200, 1000), fc.boolean()).map(([depth, asObject]) => nested(depth, 'leaf', asObject));

const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: hostileString },
  {
    weight: 2,
    arbitrary: fc.constantFrom<unknown>(null, true, false, 0, -1, 1.5, 1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, [], {}, [null], { '': '' }, { type: 'message' }, [[[]]]),
  },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: deepValue },
);

/** A hostile value, or the same placed somewhere deep inside an otherwise plausible structure. */
const responseField: Record<string, fc.Arbitrary<unknown>> = {
  input: fc.oneof(
    hostileValue,
    hostileValue.map((content) => [{ role: 'user', content }]),
    hostileValue.map((text) => [{ role: 'user', content: [{ type: 'input_text', text }] }]),
    hostileValue.map((role) => [{ role, content: 'hi' }]),
    fc.tuple(hostileValue, hostileValue).map(([callId, output]) => [{ type: 'function_call_output', call_id: callId, output }]),
    hostileValue.map((url) => [{ role: 'user', content: [{ type: 'input_image', image_url: url }] }]),
  ),
  instructions: hostileValue,
  model: hostileValue,
  conversation: fc.oneof(hostileValue, hostileValue.map((id) => ({ id }))),
  previous_response_id: hostileValue,
  metadata: fc.oneof(
    hostileValue,
    hostileValue.map((value) => ({ k: value })),
    hostileString.map((key) => ({ [key]: 'v' })),
  ),
  tools: fc.oneof(
    hostileValue,
    hostileValue.map((name) => [{ type: 'function', name }]),
    hostileValue.map((parameters) => [{ type: 'function', name: 'f', parameters }]),
    hostileValue.map((description) => [{ type: 'function', name: 'f', description }]),
  ),
  tool_choice: fc.oneof(hostileValue, hostileValue.map((name) => ({ type: 'function', name }))),
  text: fc.oneof(hostileValue, hostileValue.map((schema) => ({ format: { type: 'json_schema', name: 'n', schema } }))),
  stream: hostileValue,
  background: hostileValue,
  store: hostileValue,
  temperature: hostileValue,
  top_p: hostileValue,
  max_output_tokens: hostileValue,
  truncation: hostileValue,
  user: hostileValue,
  safety_identifier: hostileValue,
  include: hostileValue,
  reasoning: hostileValue,
  service_tier: hostileValue,
  prompt_cache_key: hostileValue,
};

const conversationField: Record<string, fc.Arbitrary<unknown>> = {
  title: hostileValue,
  metadata: responseField.metadata!,
  items: fc.oneof(hostileValue, hostileValue.map((item) => [item])),
};

/**
 * 1–2 hostile fields over a valid body (so validation gets past the first field), sometimes an unknown
 * key too; or only odd strings in the free-text fields, which pass validation and reach the database.
 */
function bodyOver(base: Record<string, unknown>, fields: Record<string, fc.Arbitrary<unknown>>, textFields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<unknown> {
  const overlay = fc.dictionary(fc.constantFrom(...Object.keys(fields)), fc.constant(null), { minKeys: 1, maxKeys: 2 }).chain((picked) =>
    fc.record(Object.fromEntries(Object.keys(picked).map((key) => [key, fields[key]!]))),
  );
  return fc.oneof(
    { weight: 6, arbitrary: fc.tuple(overlay, fc.option(fc.tuple(hostileString, hostileValue), { freq: 5 })).map(([fieldsSet, extra]) => ({ ...base, ...fieldsSet, ...(extra ? { [extra[0]]: extra[1] } : {}) })) },
    { weight: 4, arbitrary: fc.record(textFields, { requiredKeys: [] }).map((texts) => ({ ...base, ...texts })) },
    { weight: 1, arbitrary: hostileValue },
  );
}

const responseText = {
  input: fc.oneof(hostileString, hostileString.map((text) => [{ role: 'user', content: [{ type: 'input_text', text }] }])),
  instructions: hostileString,
  metadata: fc.tuple(hostileString, hostileString).map(([key, value]) => ({ [key]: value })),
  user: hostileString,
  prompt_cache_key: hostileString,
};
const conversationText = { title: hostileString, metadata: responseText.metadata };

// ---- the routes -----------------------------------------------------------------------------------

interface Ids {
  conversation: string;
  victimConversation: string;
  run: string;
  victimRun: string;
  item: string;
}

function requestsFor(ids: Ids): fc.Arbitrary<Omit<FuzzRequest, 'headers'>> {
  const id = (real: string) => fc.oneof({ weight: 3, arbitrary: fc.constant(real) }, { weight: 2, arbitrary: hostileString.map(encodeSegment) }, { weight: 1, arbitrary: fc.constantFrom('%', '%zz', '%ED%A0%80', '%00', 'a%2Fb') });
  const query = (names: string[]) =>
    fc.array(fc.tuple(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...names) }, { weight: 1, arbitrary: hostileString }), hostileString), { maxLength: 3 });
  const listQuery = ['limit', 'order', 'after', 'include', 'include[]'];
  return fc.oneof(
    bodyOver({}, conversationField, conversationText).map((body) => ({ method: 'POST' as const, path: '/v1/conversations', body })),
    query(['limit', 'cursor', 'order', 'sort_by', 'q', 'q[]', 'metadata[k]', 'metadata[]', 'metadata[\u0000]']).map((q) => ({ method: 'GET' as const, path: '/v1/conversations', query: q })),
    id(ids.conversation).map((c) => ({ method: 'GET' as const, path: `/v1/conversations/${c}` })),
    fc.tuple(id(ids.conversation), bodyOver({}, conversationField, conversationText)).map(([c, body]) => ({ method: 'POST' as const, path: `/v1/conversations/${c}`, body })),
    id(ids.victimConversation).map((c) => ({ method: 'DELETE' as const, path: `/v1/conversations/${c}` })),
    fc.tuple(id(ids.conversation), query(listQuery)).map(([c, q]) => ({ method: 'GET' as const, path: `/v1/conversations/${c}/items`, query: q })),
    fc.tuple(id(ids.conversation), id(ids.item), query(['include', 'include[]'])).map(([c, i, q]) => ({ method: 'GET' as const, path: `/v1/conversations/${c}/items/${i}`, query: q })),
    fc.tuple(id(ids.conversation), hostileValue).map(([c, body]) => ({ method: 'POST' as const, path: `/v1/conversations/${c}/items`, body })),
    fc.tuple(id(ids.conversation), id(ids.item)).map(([c, i]) => ({ method: 'DELETE' as const, path: `/v1/conversations/${c}/items/${i}` })),
    { weight: 4, arbitrary: bodyOver({ model: '', conversation: ids.conversation, input: 'hello', background: true }, responseField, responseText).map((body) => ({ method: 'POST' as const, path: '/v1/responses', body })) },
    fc.tuple(id(ids.run), query(['stream', 'starting_after', 'include', 'include[]', 'include_obfuscation'])).map(([r, q]) => ({ method: 'GET' as const, path: `/v1/responses/${r}`, query: q })),
    fc.tuple(id(ids.run), hostileValue).map(([r, body]) => ({ method: 'POST' as const, path: `/v1/responses/${r}/cancel`, body })),
    id(ids.victimRun).map((r) => ({ method: 'DELETE' as const, path: `/v1/responses/${r}` })),
    fc.tuple(id(ids.run), query(listQuery)).map(([r, q]) => ({ method: 'GET' as const, path: `/v1/responses/${r}/input_items`, query: q })),
    fc.constantFrom('/healthz', '/readyz', '/v1', '/v1/', '/v1/unknown', '/').map((path) => ({ method: 'GET' as const, path })),
  );
}

/** Header values a real client can put on the wire (fetch refuses CR, LF and NUL itself). */
const headerValue = hostileString.filter((value) => /^[\t\x20-\x7e\x80-\xff]*$/.test(value) && value.length <= 6000);

function headersFor(seeded: TurnStack['seeded']): fc.Arbitrary<Record<string, string>> {
  const auth = fc.oneof(
    { weight: 6, arbitrary: fc.constant({ authorization: `Bearer ${seeded.smithToken}` }) },
    { weight: 2, arbitrary: fc.oneof(fc.constant(seeded.smith.id), headerValue).map((smith) => ({ authorization: `Bearer ${seeded.adminToken}`, 'ic-smith-id': smith })) },
    { weight: 1, arbitrary: fc.constant({}) },
    { weight: 2, arbitrary: headerValue.map((value) => ({ authorization: value })) },
    { weight: 1, arbitrary: headerValue.map((value) => ({ authorization: `Bearer ${value}` })) },
  );
  // At most one odd header per request, so the others do not stop it before the body is read.
  const oddHeader: Record<string, fc.Arbitrary<string>> = {
    'ic-api-version': headerValue,
    'x-request-id': headerValue,
    'content-type': fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', 'application/json; charset=utf-16', 'application/merge-patch+json', 'multipart/form-data'),
    'idempotency-key': headerValue,
    'ic-conversation-busy': fc.oneof(fc.constantFrom('queue', 'reject'), headerValue),
    'x-stainless-retry-count': fc.oneof(fc.constantFrom('1', '-1', '1e309', '99999999999999999999'), headerValue),
  };
  const extra = fc.oneof(
    { weight: 3, arbitrary: fc.constant({}) },
    { weight: 2, arbitrary: fc.constantFrom(...Object.keys(oddHeader)).chain((name) => oddHeader[name]!.map((value) => ({ [name]: value }))) },
  );
  return fc.tuple(auth, extra).map(([a, e]) => ({ ...e, ...a }));
}

async function send(stack: TurnStack, request: FuzzRequest): Promise<HttpReply> {
  const origin = new URL(stack.baseURL).origin;
  const query = request.query && request.query.length > 0 ? `?${new URLSearchParams(request.query).toString()}` : '';
  const contentType = request.headers?.['content-type'];
  return httpRequest(origin, request.method, `${request.path}${query}`, {
    body: request.raw === undefined ? request.body : undefined,
    raw: request.raw,
    // httpRequest sets application/json for bodies; a fuzzed content-type replaces it.
    headers: { ...request.headers, ...(contentType ? { 'content-type': contentType } : {}) },
  });
}

describe('hostile input on every route', () => {
  let stack: TurnStack;
  let ids: Ids;

  beforeAll(async () => {
    stack = await startTurnStack({ upstream: { reply: 'ok', tokenDelayMs: 0 } });
    const client = stack.client();
    const conversation = await client.conversations.create({ metadata: { k: 'v' } });
    const victim = await client.conversations.create();
    const run = await client.responses.create({ model: '', conversation: conversation.id, input: 'first turn' });
    const victimRun = await client.responses.create({ model: '', conversation: conversation.id, input: 'second turn' });
    ids = { conversation: conversation.id, victimConversation: victim.id, run: run.id, victimRun: victimRun.id, item: `${run.id}.i0` };
  }, 60000);
  afterAll(() => stack.close());

  const smith = () => ({ authorization: `Bearer ${stack.seeded.smithToken}` });
  const post = (path: string, body: unknown) => send(stack, { method: 'POST', path, body, headers: smith() });

  it('refuses NUL characters with a 400 naming the field, wherever they are', async () => {
    expectError(await post('/v1/conversations', { title: 'a\u0000b' }), 400, { code: 'invalid_characters', param: 'title' });
    expectError(await post('/v1/conversations', { metadata: { folder: 'w\u0000rk' } }), 400, { code: 'invalid_characters', param: 'metadata.folder' });
    expectError(await post('/v1/conversations', { metadata: { 'fol\u0000der': 'work' } }), 400, { code: 'invalid_characters', param: 'metadata.fol\\u0000der' });
    expectError(await post(`/v1/conversations/${ids.conversation}`, { title: '\u0000' }), 400, { code: 'invalid_characters', param: 'title' });
    const filtered = await send(stack, { method: 'GET', path: '/v1/conversations', query: [['metadata[folder]', 'w\u0000rk']], headers: smith() });
    expectError(filtered, 400, { code: 'invalid_characters', param: 'metadata[folder]' });
    expectError(await send(stack, { method: 'GET', path: '/v1/conversations', query: [['q', 'w\u0000rk']], headers: smith() }), 400, { code: 'invalid_characters', param: 'q' });
    const turn = { model: '', conversation: ids.conversation };
    expectError(await post('/v1/responses', { ...turn, input: 'hi\u0000' }), 400, { code: 'invalid_characters', param: 'input' });
    expectError(await post('/v1/responses', { ...turn, input: [{ role: 'user', content: [{ type: 'input_text', text: 'x\u0000' }] }] }), 400, { code: 'invalid_characters', param: 'input[0].content[0].text' });
    expectError(await post('/v1/responses', { ...turn, input: 'hi', instructions: 'be \u0000 brief' }), 400, { code: 'invalid_characters', param: 'instructions' });
    expectError(await post('/v1/responses', { ...turn, input: 'hi', tools: [{ type: 'function', name: 'f', description: '\u0000' }] }), 400, { code: 'invalid_characters', param: 'tools[0].description' });
    expectError(await post('/v1/responses', { ...turn, input: 'hi', metadata: { k: '\u0000' } }), 400, { code: 'invalid_characters', param: 'metadata.k' });
    expectError(await post('/v1/responses', { ...turn, input: 'lone \ud800 surrogate' }), 400, { code: 'invalid_characters', param: 'input' });
    expectError(await send(stack, { method: 'GET', path: '/v1/responses/run_%00abc', headers: smith() }), 400, { code: 'invalid_characters' });
  });

  it('refuses JSON nested deeper than any real request, even a megabyte deep', async () => {
    const tooDeep = await post('/v1/responses', { model: '', conversation: ids.conversation, input: 'hi', tools: [{ type: 'function', name: 'f', parameters: nested(100, 1, true) }] });
    expectError(tooDeep, 400, { code: 'nesting_too_deep' });
    const megabyteDeep = '['.repeat(400_000) + ']'.repeat(400_000);
    const reply = await send(stack, { method: 'POST', path: '/v1/conversations', raw: megabyteDeep, headers: smith() });
    expect(reply.status).toBe(400);
    expectHarmless(reply, { method: 'POST', path: '/v1/conversations', raw: megabyteDeep });
  });

  it('refuses cursors and numbers that are out of range or not integers', async () => {
    // The largest accepted position replays nothing and ends with the run's terminal event, not a server_error.
    const farAhead = await send(stack, { method: 'GET', path: `/v1/responses/${ids.run}`, query: [['stream', 'true'], ['starting_after', '999999999']], headers: smith() });
    expect(farAhead.status).toBe(200);
    expect(farAhead.text).not.toMatch(/server_error/);
    for (const startingAfter of ['99999999999999999999', '-2', '1.5', '1e3', 'abc', '']) {
      const reply = await send(stack, { method: 'GET', path: `/v1/responses/${ids.run}`, query: [['stream', 'true'], ['starting_after', startingAfter]], headers: smith() });
      expectError(reply, 400, { param: 'starting_after' });
    }
    for (const limit of ['0', '101', '1e2', '99999999999999999999', '-1', '1.5']) {
      expectError(await send(stack, { method: 'GET', path: '/v1/conversations', query: [['limit', limit]], headers: smith() }), 400, { param: 'limit' });
      expectError(await send(stack, { method: 'GET', path: `/v1/conversations/${ids.conversation}/items`, query: [['limit', limit]], headers: smith() }), 400, { param: 'limit' });
    }
    expectError(await send(stack, { method: 'GET', path: '/v1/conversations', query: [['cursor', 'AAAA.BBBB']], headers: smith() }), 400, { code: 'invalid_cursor' });
    const badSearches: Array<[Array<[string, string]>, string]> = [
      [[['q', 'x'.repeat(201)]], 'q'],
      [[['q', 'a'], ['q', 'b']], 'q'],
      [[['q[]', 'a']], 'q[]'],
      [[['q[k]', 'a']], 'q[k]'],
    ];
    for (const [query, param] of badSearches) {
      expectError(await send(stack, { method: 'GET', path: '/v1/conversations', query, headers: smith() }), 400, { param });
    }
  });

  it('answers bodies that are not JSON, too large or in another encoding in the envelope', async () => {
    const cases: Array<{ raw: string; contentType?: string; status: number }> = [
      { raw: '{', status: 400 },
      { raw: '{"title": "x",}', status: 400 },
      { raw: '"just a string"', status: 400 },
      { raw: 'null', status: 400 },
      { raw: '[]', status: 400 },
      { raw: '123', status: 400 },
      { raw: JSON.stringify({ title: 'x'.repeat(2_000_000) }), status: 413 },
      { raw: 'title=x', contentType: 'application/x-www-form-urlencoded', status: 415 },
      { raw: '{"title":"x"}', contentType: 'text/plain', status: 415 },
      { raw: '{"title":"x"}', contentType: 'application/json; charset=latin1', status: 415 },
    ];
    for (const { raw, contentType, status } of cases) {
      const request: FuzzRequest = { method: 'POST', path: '/v1/conversations', raw, headers: { ...smith(), ...(contentType ? { 'content-type': contentType } : {}) } };
      const reply = await send(stack, request);
      expectError(reply, status);
      expectHarmless(reply, request);
    }
  });

  it('never answers 5xx, a bare body or internals to generated hostile requests', async () => {
    const statuses = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.tuple(requestsFor(ids), headersFor(stack.seeded)).map(([request, headers]) => {
          const full: FuzzRequest = { ...request, headers };
          return Object.assign(full, { [fc.toStringMethod]: () => describeRequest(full) });
        }),
        async (request) => {
          const reply = await send(stack, request);
          const outcome = `${request.method} ${request.path.split('/').slice(0, 3).join('/')} → ${reply.status}`;
          statuses.set(outcome, (statuses.get(outcome) ?? 0) + 1);
          expectHarmless(reply, request);
        },
      ),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
    if (process.env.FUZZ_STATS) console.log([...statuses].sort().map(([k, v]) => `${k}: ${v}`).join('\n'));
  }, 120000);
});
