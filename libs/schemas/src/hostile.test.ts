import { findHostileValue, formatJsonPath, MAX_JSON_DEPTH } from './hostile';

describe('findHostileValue', () => {
  it('names the first string holding U+0000, in document order, keys included', () => {
    expect(findHostileValue({ title: 'ok', metadata: { a: 'x\u0000y', b: '\u0000' } })).toEqual({ problem: 'unstorable_text', path: ['metadata', 'a'] });
    expect(findHostileValue({ metadata: { 'k\u0000': 'v' } })).toEqual({ problem: 'unstorable_text', path: ['metadata', 'k\u0000'] });
    expect(findHostileValue({ input: [{ content: [{ text: 'fine' }, { text: '\u0000' }] }] })).toEqual({ problem: 'unstorable_text', path: ['input', 0, 'content', 1, 'text'] });
    expect(findHostileValue('a\u0000')).toEqual({ problem: 'unstorable_text', path: [] });
  });

  it('refuses lone surrogates but keeps paired ones (emoji)', () => {
    expect(findHostileValue({ text: 'smile 🙂' })).toBeNull();
    expect(findHostileValue({ text: 'half \ud83d' })).toEqual({ problem: 'unstorable_text', path: ['text'] });
    expect(findHostileValue({ text: '\ude42 tail' })).toEqual({ problem: 'unstorable_text', path: ['text'] });
  });

  it('refuses values nested deeper than the limit without overflowing its own stack', () => {
    let deep: unknown = 'leaf';
    for (let depth = 0; depth < 200_000; depth++) deep = [deep];
    const found = findHostileValue({ tools: deep });
    expect(found?.problem).toBe('too_deep');
    expect(found?.path).toHaveLength(MAX_JSON_DEPTH);
    let fine: unknown = 'leaf';
    for (let depth = 0; depth < MAX_JSON_DEPTH - 1; depth++) fine = { a: fine };
    expect(findHostileValue(fine)).toBeNull();
  });

  it('formats the path as the param, with control characters escaped', () => {
    expect(formatJsonPath(['input', 0, 'content', 1, 'text'])).toBe('input[0].content[1].text');
    expect(formatJsonPath(['metadata', 'k\u0000'])).toBe('metadata.k\\u0000');
  });
});
