import { ConversationId, newId, RunId } from './ids';

describe('newId', () => {
  it('gives well-formed, distinct ids across many refills of its entropy pool, every character about equally often', () => {
    const ids = Array.from({ length: 5000 }, () => newId('run')); // ~124 KB of entropy: about 30 pools
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(RunId.safeParse(id).success).toBe(true);
    expect(ConversationId.safeParse(newId('conversation')).success).toBe(true);
    const counts = new Map<string, number>();
    for (const id of ids) for (const character of id.slice(4)) counts.set(character, (counts.get(character) ?? 0) + 1);
    expect(counts.size).toBe(62);
    // 120,000 characters over 62 symbols: ~1935 each, standard deviation ~44; byte % 62 without the
    // rejection would put the first eight symbols 25 % above the rest, far outside these bounds.
    for (const count of counts.values()) {
      expect(count).toBeGreaterThan(1935 - 250);
      expect(count).toBeLessThan(1935 + 250);
    }
  });
});
