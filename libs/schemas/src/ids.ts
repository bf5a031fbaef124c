import { randomBytes } from 'node:crypto';
import { z } from 'zod';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const ID_RANDOM_LENGTH = 24; // ~143 bits: unguessable, so an id never needs to be a secret

export const ID_PREFIXES = {
  tenant: 'ten',
  smith: 'smt',
  token: 'tok',
  conversation: 'cnv',
  run: 'run',
} as const;
export type IdKind = keyof typeof ID_PREFIXES;

/** Random base62 string; rejection sampling keeps every character equally likely. */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += ALPHABET[byte % 62];
    }
  }
  return out;
}

export function newId(kind: IdKind): string {
  return `${ID_PREFIXES[kind]}_${randomBase62(ID_RANDOM_LENGTH)}`;
}

const idSchema = (kind: IdKind) =>
  z.string().regex(new RegExp(`^${ID_PREFIXES[kind]}_[0-9A-Za-z]{8,64}$`), `must be a ${ID_PREFIXES[kind]}_ id`);

export const TenantId = idSchema('tenant');
export const SmithId = idSchema('smith');
export const TokenId = idSchema('token');
export const ConversationId = idSchema('conversation');
export const RunId = idSchema('run');

/**
 * Item ids follow the run that produced them: `{run}.i{k}` is the k-th input item,
 * `{run}.o` the first output item and `{run}.o{k}` (k ≥ 1) the later ones.
 */
export function inputItemId(runId: string, index: number): string {
  return `${runId}.i${index}`;
}
export function outputItemId(runId: string, index: number): string {
  return index === 0 ? `${runId}.o` : `${runId}.o${index}`;
}
export const ItemId = z.string().regex(/^run_[0-9A-Za-z]{8,64}\.(i\d{1,6}|o\d{0,6})$/, 'must be an item id such as run_….i0');
