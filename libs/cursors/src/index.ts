import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { apiError } from '@ic/schemas';

const CURSOR_VERSION = 1;

/**
 * Opaque, versioned, signed pagination cursors. The payload is a small JSON object validated by a
 * zod schema on the way back in; a cursor that is malformed, tampered with, from another version or
 * for another listing is a 400 `invalid_cursor`, never a 500 and never an unchecked SQL value.
 */
export class CursorCodec {
  /** Imported once: a string secret would be converted into a key on every signature (each listing page). */
  private readonly key: KeyObject;

  constructor(secret: string) {
    this.key = createSecretKey(Buffer.from(secret, 'utf8'));
  }

  encode<T extends object>(kind: string, payload: T): string {
    const body = Buffer.from(JSON.stringify({ v: CURSOR_VERSION, k: kind, p: payload })).toString('base64url');
    return `${body}.${this.sign(body)}`;
  }

  decode<S extends z.ZodTypeAny>(kind: string, cursor: string, schema: S, param = 'cursor'): z.infer<S> {
    const invalid = () => apiError('invalid_cursor', {}, { param });
    const [body, signature, extra] = cursor.split('.');
    if (!body || !signature || extra !== undefined) throw invalid();
    const expected = Buffer.from(this.sign(body));
    const given = Buffer.from(signature);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) throw invalid();
    let envelope: unknown;
    try {
      envelope = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
    } catch {
      throw invalid();
    }
    const parsed = z.object({ v: z.literal(CURSOR_VERSION), k: z.literal(kind), p: schema }).safeParse(envelope);
    if (!parsed.success) throw invalid();
    return parsed.data.p;
  }

  private sign(body: string): string {
    return createHmac('sha256', this.key).update(body).digest('base64url').slice(0, 22);
  }
}
