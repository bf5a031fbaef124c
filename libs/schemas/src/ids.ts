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

/**
 * Bytes for ids from the CSPRNG, drawn 4 KiB at a time: one randomBytes call per id cost about 2 µs
 * (an allocation and a call into OpenSSL for a few bytes), a share of every turn's CPU. Node's own
 * randomUUID buffers its entropy the same way. Secrets (API tokens) do not come from this pool, so
 * no future secret sits in memory ahead of its use.
 */
const ENTROPY_POOL_BYTES = 4096;
let entropy = randomBytes(ENTROPY_POOL_BYTES);
let entropyOffset = 0;

function randomByte(): number {
  if (entropyOffset === ENTROPY_POOL_BYTES) {
    entropy = randomBytes(ENTROPY_POOL_BYTES);
    entropyOffset = 0;
  }
  return entropy[entropyOffset++]!;
}

/** Base62 from random bytes; rejection sampling (bytes ≥ 248 skipped) keeps every character equally likely. */
function base62(length: number, nextByte: () => number): string {
  let out = '';
  while (out.length < length) {
    const byte = nextByte();
    if (byte < 248) out += ALPHABET[byte % 62];
  }
  return out;
}

/** Random base62 string for secrets: fresh CSPRNG bytes, none pooled. */
export function randomBase62(length: number): string {
  let bytes = randomBytes(length * 2);
  let at = 0;
  return base62(length, () => {
    if (at === bytes.length) {
      bytes = randomBytes(length * 2);
      at = 0;
    }
    return bytes[at++]!;
  });
}

export function newId(kind: IdKind): string {
  return `${ID_PREFIXES[kind]}_${base62(ID_RANDOM_LENGTH, randomByte)}`;
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
