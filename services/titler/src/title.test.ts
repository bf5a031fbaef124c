import { cleanModelTitle, titleFromMessage, TITLE_MAX_CHARS } from './title';

describe('titleFromMessage', () => {
  it('collapses whitespace and trims', () => {
    expect(titleFromMessage('  What did I\n\n spend\ton travel?  ')).toBe('What did I spend on travel?');
  });

  it('keeps short messages whole and returns null for messages without text', () => {
    expect(titleFromMessage('Hi')).toBe('Hi');
    expect(titleFromMessage(' \n\t ')).toBeNull();
  });

  it('cuts long messages at a word boundary, with an ellipsis, within the limit', () => {
    const message = 'Please help me plan a two week trip through Norway in June, including ferries, trains and a few hikes';
    const title = titleFromMessage(message)!;
    expect(title).toBe('Please help me plan a two week trip through Norway in June…');
    expect(Array.from(title).length).toBeLessThanOrEqual(TITLE_MAX_CHARS);
    expect(message.startsWith(title.slice(0, -1))).toBe(true);
  });

  it('cuts a single very long word rather than returning almost nothing, and counts characters not UTF-16 units', () => {
    expect(Array.from(titleFromMessage('x'.repeat(500))!)).toHaveLength(TITLE_MAX_CHARS);
    const emoji = '😀'.repeat(100);
    const title = titleFromMessage(emoji)!;
    expect(Array.from(title)).toHaveLength(TITLE_MAX_CHARS);
    expect(title.endsWith('…')).toBe(true);
  });
});

describe('cleanModelTitle', () => {
  it('takes the first line and drops quotes, a "Title:" label and trailing punctuation', () => {
    expect(cleanModelTitle('\n"Travel spending in May."\nExplanation: …')).toBe('Travel spending in May');
    expect(cleanModelTitle('Title: Norway trip!')).toBe('Norway trip');
    expect(cleanModelTitle('   ')).toBeNull();
  });
});
