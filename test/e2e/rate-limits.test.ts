import OpenAI from 'openai';
import { sql } from '@ic/db';
import { z } from 'zod';
import { startTurnStack, tokenFor, type TurnStack } from '@ic/test-support';

describe('rate limits (Redis-backed)', () => {
  let stack: TurnStack;
  beforeAll(async () => {
    stack = await startTurnStack({ rateLimits: { requestsPerMinute: 8, turnsPerMinute: 2 } });
  });
  afterAll(() => stack.close());

  it('caps turns per smith with a 429 the client can act on, writing nothing', async () => {
    const client = stack.client();
    const conversation = await client.conversations.create();
    await client.responses.create({ model: '', conversation: conversation.id, input: 'one' });
    await client.responses.create({ model: '', conversation: conversation.id, input: 'two' });
    const reply = await fetch(`${stack.baseURL}/responses`, {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.seeded.smithToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: '', conversation: conversation.id, input: 'three' }),
    });
    expect(reply.status).toBe(429);
    expect(Number(reply.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(reply.headers.get('x-ratelimit-remaining-turns')).toBe('0');
    expect(reply.headers.get('x-request-id')).toBeTruthy();
    expect(await reply.json()).toEqual({ error: { message: expect.stringContaining('2 turns per minute'), type: 'rate_limit_error', param: null, code: 'rate_limit_exceeded' } });
    const runs = await stack.db.pool.oneFirst(sql.type(z.object({ n: z.number() }))`SELECT count(*)::int AS n FROM runs WHERE conversation_id = ${conversation.id}`);
    expect(runs).toBe(2);
    const error = await client.responses.create({ model: '', input: 'again' }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
  });

  it('caps requests per token, counting each token separately', async () => {
    const { tenant, smith } = stack.seeded;
    const token = await tokenFor(stack.db.pool, tenant.id, smith.id, ['conversations:read']);
    const statuses: number[] = [];
    for (let k = 0; k < 9; k++) {
      const reply = await fetch(`${stack.baseURL}/conversations`, { headers: { authorization: `Bearer ${token}` } });
      statuses.push(reply.status);
      if (reply.status === 200) expect(Number(reply.headers.get('x-ratelimit-remaining-requests'))).toBe(7 - k);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 429]);
    const other = await tokenFor(stack.db.pool, tenant.id, smith.id, ['conversations:read']);
    expect((await fetch(`${stack.baseURL}/conversations`, { headers: { authorization: `Bearer ${other}` } })).status).toBe(200);
  });
});
