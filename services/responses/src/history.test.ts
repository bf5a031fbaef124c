import type { StoredItem } from '@ic/schemas';
import { assistantMessage as assistant, userMessage as user } from '@ic/test-support';
import { estimateTokens, truncateHistory } from './history';

const call = (id: string): StoredItem => ({ type: 'function_call', call_id: id, name: 'lookup', arguments: '{}', status: 'completed' });
const output = (id: string): StoredItem => ({ type: 'function_call_output', call_id: id, output: 'x'.repeat(200), status: 'completed' });

const sum = (items: readonly StoredItem[]) => items.reduce((total, item) => total + estimateTokens(item), 0);

describe('truncateHistory', () => {
  const prior = [user('one'), assistant('a'.repeat(400)), user('two'), call('c1'), output('c1'), assistant('b'), user('three'), assistant('c')];
  const input = [user('now')];

  it('keeps everything when it fits', () => {
    expect(truncateHistory(prior, input, 100000)).toEqual({ kept: prior, dropped: 0 });
  });

  it('drops whole turns from the start, never separating a tool call from its output', () => {
    const budget = sum([...prior.slice(2), ...input]); // fits once the first turn is gone
    const { kept, dropped } = truncateHistory(prior, input, budget);
    expect(dropped).toBe(2);
    expect(kept[0]).toEqual(user('two'));
    const tighter = truncateHistory(prior, input, budget - 1);
    expect(tighter.kept[0]).toEqual(user('three'));
    expect(tighter.kept.some((item) => item.type === 'function_call_output')).toBe(false);
  });

  it('keeps no history rather than the turn input when even that does not fit', () => {
    expect(truncateHistory(prior, input, 1)).toEqual({ kept: [], dropped: prior.length });
  });
});
