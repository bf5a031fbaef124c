import { z } from 'zod';
import { AppError } from '@ic/schemas';
import { CursorCodec } from './index';

const codec = new CursorCodec('a-test-secret-of-enough-length');
const Payload = z.object({ at: z.number(), id: z.string() });

function expectInvalid(run: () => unknown) {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).status).toBe(400);
    expect((error as AppError).code).toBe('invalid_cursor');
    return;
  }
  throw new Error('expected an invalid_cursor error');
}

describe('CursorCodec', () => {
  it('round-trips a payload', () => {
    const cursor = codec.encode('conversations', { at: 1, id: 'cnv_x' });
    expect(codec.decode('conversations', cursor, Payload)).toEqual({ at: 1, id: 'cnv_x' });
  });

  it('rejects garbage, tampering, another kind, another secret and a wrong payload shape', () => {
    const cursor = codec.encode('conversations', { at: 1, id: 'cnv_x' });
    const [body, signature] = cursor.split('.') as [string, string];
    const forged = Buffer.from(JSON.stringify({ v: 1, k: 'conversations', p: { at: 2, id: "x' OR 1=1" } })).toString('base64url');
    expectInvalid(() => codec.decode('conversations', 'not-a-cursor', Payload));
    expectInvalid(() => codec.decode('conversations', `${forged}.${signature}`, Payload));
    expectInvalid(() => codec.decode('conversations', `${body}.${signature}x`, Payload));
    expectInvalid(() => codec.decode('items', cursor, Payload));
    expectInvalid(() => new CursorCodec('another-secret-entirely').decode('conversations', cursor, Payload));
    expectInvalid(() => codec.decode('conversations', codec.encode('conversations', { at: 'x' }), Payload));
  });
});
